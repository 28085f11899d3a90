//! `devmap.Region` (a region file holding namespaces, as ndctl's regions hold them) and
//! `devmap.estimate` (what a namespace's memmap costs).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use devmap::dax::{DaxOptions, Granularity};
use devmap::namespace::{Access, InfoFlags, Namespace, Region as LibRegion};
use devmap::{DeviceSpace, Order, Pfn, PfnRange};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::cell::{Held, RegionCell};
use crate::device::Device;
use crate::dicts::{label_dict, uuid_text};
use crate::errors::{self, Kind, error, invalid, libc_errno};

/// A region file holding namespaces: `Region.create(path, size)` makes one (a sparse file),
/// `Region.open(path)` opens one. Managing it (`manage=True`, the default) holds the region's
/// exclusive lock until `close()`; read-only handles may list a region another process manages.
#[pyclass(module = "devmap", frozen)]
#[derive(Debug)]
pub struct Region {
    cell: Arc<RegionCell>,
}

impl Region {
    fn wrap(r: LibRegion) -> Region {
        Region {
            cell: Arc::new(RegionCell {
                path: r.path().to_path_buf(),
                region: Mutex::new(Some(r)),
                enabled: AtomicUsize::new(0),
            }),
        }
    }
}

/// Why `destroy_namespace` refused.
enum Destroy {
    /// The last enable did not end with a disable.
    Unclean,
    /// The info block cannot be read: why.
    Unreadable(String),
    /// The region refused.
    Region(devmap::namespace::RegionError),
}

#[pymethods]
impl Region {
    /// Creates a region file of `size` bytes at `path` (refused if it exists) and manages it.
    #[staticmethod]
    fn create(py: Python<'_>, path: PathBuf, size: &Bound<'_, PyAny>) -> PyResult<Region> {
        let size = crate::size_arg("size", size)?;
        let r = py
            .detach(|| LibRegion::create(&path, size))
            .map_err(errors::region)?;
        Ok(Region::wrap(r))
    }

    /// Opens the region at `path`: managed (exclusive lock; BusyError if another process
    /// manages it) or read-only.
    #[staticmethod]
    #[pyo3(signature = (path, manage = true))]
    fn open(py: Python<'_>, path: PathBuf, manage: bool) -> PyResult<Region> {
        let access = if manage { Access::Manage } else { Access::Read };
        let r = py
            .detach(|| LibRegion::open(&path, access))
            .map_err(errors::region)?;
        Ok(Region::wrap(r))
    }

    /// The region file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.cell.path.clone()
    }

    /// The region's size in bytes.
    #[getter]
    fn size(&self) -> PyResult<u64> {
        self.cell.with(|r| Ok(r.size()))
    }

    /// The region's uuid.
    #[getter]
    fn uuid(&self) -> PyResult<String> {
        self.cell.with(|r| Ok(uuid_text(&r.uuid())))
    }

    /// Whether this handle manages the region (holds its lock).
    #[getter]
    fn managed(&self) -> PyResult<bool> {
        self.cell.with(|r| Ok(r.access() == Access::Manage))
    }

    /// Whether the handle is closed.
    #[getter]
    fn closed(&self) -> bool {
        self.cell.region.lock().is_none()
    }

    /// The namespaces, in offset order, as dicts: name, uuid, offset, size, align, mode, map,
    /// data_offset, data_bytes.
    fn namespaces<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.cell
            .with(|r| r.namespaces().iter().map(|l| label_dict(py, l)).collect())
    }

    /// What namespaces of `align` could take of the free space: (total, largest), largest
    /// being the biggest `create_namespace(name, largest, align=align)` that fits (what
    /// `devmap create-namespace` makes without a size). Counted as the kernel lays namespaces
    /// out (`Region::namespace_room`): each free run from its first `max(align, 2M)`
    /// boundary, in whole ones, since a namespace starts there and the kernel truncates
    /// what is past its last whole one.
    #[pyo3(signature = (align = crate::Align::DEFAULT))]
    #[pyo3(text_signature = "($self, align='2M')")]
    fn free_space(&self, align: crate::Align) -> PyResult<(u64, u64)> {
        let align = align.0;
        if !align.is_power_of_two() || align < devmap::PAGE_SIZE {
            return Err(invalid(format!(
                "align {align} is not a power of two of at least 4K: use '4K', '2M' or '1G'"
            )));
        }
        self.cell
            .with(|r| r.namespace_room(align).map_err(crate::errors::region))
    }

    /// Carves a namespace of `size` bytes (a multiple of `align`, info block included) out of
    /// the region, first fit, as `ndctl create-namespace` does. Returns its dict.
    #[pyo3(signature = (name, size, mode = "devdax", align = crate::Align::DEFAULT, map = "dev"))]
    #[pyo3(text_signature = "($self, name, size, mode='devdax', align='2M', map='dev')")]
    fn create_namespace<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        size: &Bound<'_, PyAny>,
        mode: &str,
        align: crate::Align,
        map: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let size = crate::size_arg("size", size)?;
        let align = align.0;
        let (mode, map) = (crate::named_arg(mode)?, crate::named_arg(map)?);
        let label = self
            .cell
            .detached(py, |r| r.create_namespace(name, size, align, mode, map))?
            .map_err(errors::region)?;
        label_dict(py, &label)
    }

    /// Destroys the namespace `name` (its label, then its info block). Refused unless `force`
    /// if its last enable did not end with a disable, or its info block cannot be read.
    #[pyo3(signature = (name, force = false))]
    fn destroy_namespace(&self, py: Python<'_>, name: &str, force: bool) -> PyResult<()> {
        let outcome = self.cell.detached(py, |r| {
            if !force && let Ok(label) = r.namespace(name) {
                let label = label.clone();
                match r.info_block(&label) {
                    Ok(b) if b.generation > 1 && !b.flags.contains(InfoFlags::CLEAN) => {
                        return Err(Destroy::Unclean);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(Destroy::Unreadable(errors::reason(&e))),
                }
            }
            r.destroy_namespace(name).map_err(Destroy::Region)
        })?;
        outcome.map_err(|e| match e {
            Destroy::Unclean => error(
                Kind::Busy,
                libc_errno::EBUSY,
                format!(
                    "namespace {name:?} was not disabled cleanly (the process that last enabled \
                     it ended without disabling it, or it is enabled now): check its data, then \
                     destroy it with force=True"
                ),
            ),
            Destroy::Unreadable(why) => error(
                Kind::Base,
                libc_errno::EUCLEAN,
                format!("namespace {name:?}: {why}: destroy it anyway with force=True"),
            ),
            Destroy::Region(e) => errors::region(e),
        })
    }

    /// The bad pages recorded on disk for namespace `name`, as merged (offset, length) byte
    /// ranges from the start of its data.
    fn badblocks(&self, name: &str) -> PyResult<Vec<(u64, u64)>> {
        self.cell.with(|r| {
            let label = r.namespace(name).map_err(errors::region)?.clone();
            let list = r.badblocks(&label).map_err(errors::region)?;
            let mut out: Vec<(u64, u64)> = Vec::new();
            for p in list.pages() {
                let at = p * devmap::PAGE_SIZE;
                match out.last_mut() {
                    Some((start, len)) if *start + *len == at => *len += devmap::PAGE_SIZE,
                    _ => out.push((at, devmap::PAGE_SIZE)),
                }
            }
            Ok(out)
        })
    }

    /// Enables the devdax namespace `name` as a device over its data bytes in the region file,
    /// with the bad pages its list records poisoned again. Closing the device disables the
    /// namespace, writing its bad pages to disk. A file device: leaves are faulted by
    /// `Mapping.populate` and pins, and a memory error costs the whole leaf.
    #[pyo3(signature = (name, layout = "heads", init = "parallel"))]
    fn enable(&self, py: Python<'_>, name: &str, layout: &str, init: &str) -> PyResult<Device> {
        let layout_v = crate::named_arg(layout)?;
        let init_v = crate::named_arg::<devmap::InitMode>(init)?;
        let mut opts = DaxOptions::new(Order::PMD);
        opts.layout = layout_v;
        opts.init = init_v;
        opts.granularity = Granularity::Leaf;
        let ns = self
            .cell
            .detached(py, |r| r.enable(&DeviceSpace::new(), name, opts))?
            .map_err(errors::region)?;
        self.cell.enabled.fetch_add(1, Ordering::SeqCst);
        Ok(Device::from_held(
            Held::Namespace(Box::new(ns), Arc::clone(&self.cell)),
            layout_v,
            init_v.name(),
        ))
    }

    /// Releases the region (and its lock): refused with BusyError while namespaces enabled
    /// from it are still open. Closing twice does nothing.
    fn close(&self) -> PyResult<()> {
        let mut region = self.cell.region.lock();
        let enabled = self.cell.enabled.load(Ordering::SeqCst);
        if enabled > 0 && region.is_some() {
            return Err(error(
                Kind::Busy,
                libc_errno::EBUSY,
                format!(
                    "{enabled} namespace(s) of this region are enabled: close their devices first"
                ),
            ));
        }
        drop(region.take());
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*exc))]
    fn __exit__(&self, py: Python<'_>, exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close().map_err(|e| errors::chained(py, e, exc))?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<devmap.Region {}{}>",
            self.cell.path.display(),
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// What the memmap of a namespace of `size` bytes at `align` costs in `layout`, computed
/// without allocating (`devmap estimate`): a dict of size, align, layout, map, mode,
/// vmemmap_shift, metadata_bytes (DRAM: the four items that follow), descriptor_bytes,
/// pte_table_bytes, pmd_table_bytes, section_usage_bytes, device_bytes and
/// descriptors_initialized.
#[pyfunction]
#[pyo3(signature = (size, align = crate::Align::DEFAULT, layout = "heads", map = "mem", mode = "devdax"))]
#[pyo3(text_signature = "(size, align='2M', layout='heads', map='mem', mode='devdax')")]
pub(crate) fn estimate<'py>(
    py: Python<'py>,
    size: &Bound<'_, PyAny>,
    align: crate::Align,
    layout: &str,
    map: &str,
    mode: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let size = crate::size_arg("size", size)?;
    let align = align.0;
    let layout = crate::named_arg(layout)?;
    let ns = Namespace::new(size, align, crate::named_arg(mode)?, crate::named_arg(map)?)
        .map_err(|e| invalid(errors::reason(&e)))?;
    let range = PfnRange::new(Pfn::new(0), ns.pages()).map_err(|e| invalid(errors::reason(&e)))?;
    let cost = ns
        .pgmap_config(range, layout)
        .map_err(|e| invalid(errors::reason(&e)))?
        .estimate_cost()
        .map_err(|e| invalid(errors::reason(&e)))?;
    let d = PyDict::new(py);
    d.set_item("size", ns.size())?;
    d.set_item("align", ns.align())?;
    d.set_item("layout", layout.name())?;
    d.set_item("map", ns.map().name())?;
    d.set_item("mode", ns.mode().name())?;
    d.set_item("vmemmap_shift", ns.vmemmap_shift().get())?;
    d.set_item("metadata_bytes", cost.metadata_bytes)?;
    d.set_item("descriptor_bytes", cost.descriptor_bytes)?;
    d.set_item("pte_table_bytes", cost.pte_table_bytes)?;
    d.set_item("pmd_table_bytes", cost.pmd_table_bytes)?;
    d.set_item("section_usage_bytes", cost.section_usage_bytes)?;
    d.set_item("device_bytes", cost.device_bytes)?;
    d.set_item("descriptors_initialized", cost.descriptors_initialized)?;
    Ok(d)
}
