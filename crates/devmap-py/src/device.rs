//! `devmap.Device`: a device-dax device over a memfd, a hugetlb memfd or a file (or a namespace
//! enabled from a region), its mappings, memory failure and poison.

use std::sync::Arc;
use std::time::Duration;

use devmap::backing::Backing;
use devmap::dax::{DaxOptions, Granularity};
use devmap::memory_failure::{
    HandledBy, MfFlags, MfReport, memory_failure, memory_failure_at as mf_at,
};
use devmap::{DaxDevice, DeviceSpace, Layout};
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::cell::{DeviceCell, Held};
use crate::dicts::notice_dict;
use crate::errors::{self, Kind, error, invalid, libc_errno};
use crate::mapping::Mapping;

/// How a memfd, hugetlb or file device is built, from the keyword arguments they share.
struct Opts {
    opts: DaxOptions,
    init: &'static str,
}

impl Opts {
    /// The options the shared keyword arguments name, not yet checked: a constructor with
    /// options of its own sets them, then calls [`checked`](Self::checked).
    fn parse(
        align: crate::Align,
        layout: &str,
        init: &str,
        granularity: &str,
        faults: &str,
        handlers: Option<usize>,
        zero_ahead: usize,
    ) -> PyResult<Opts> {
        let mut opts = DaxOptions::new(align.device()?);
        opts.zero_ahead = zero_ahead;
        opts.layout = crate::named_arg(layout)?;
        opts.init = crate::named_arg(init)?;
        opts.granularity = crate::named_arg(granularity)?;
        opts.faults = crate::named_arg(faults)?;
        if let Some(h) = handlers {
            opts.handlers = h;
        }
        Ok(Opts {
            init: opts.init.name(),
            opts,
        })
    }

    /// The options, once the library accepts them.
    fn checked(self) -> PyResult<Opts> {
        self.opts.validate().map_err(errors::dax)?;
        Ok(self)
    }
}

/// A device-dax device: a pgmap of compound folios of its align over the bytes of a backing.
/// Build one with `Device.memfd`, `Device.hugetlb` or `Device.file` (or `Region.enable`);
/// `close()` (or leaving a `with` block) tears it down once its mappings are closed and its
/// pins released.
#[pyclass(module = "devmap", frozen)]
#[derive(Debug)]
pub struct Device {
    pub(crate) cell: Arc<DeviceCell>,
}

impl Device {
    /// A device over `backing`, built and initialised with the GIL released.
    fn build(py: Python<'_>, backing: Backing, o: Opts) -> PyResult<Device> {
        let layout = o.opts.layout;
        let dev = py
            .detach(|| DaxDevice::with_options(&DeviceSpace::new(), backing, o.opts))
            .map_err(errors::dax)?;
        Ok(Device::from_held(Held::Device(dev), layout, o.init))
    }

    /// A device object over what it holds.
    pub(crate) fn from_held(held: Held, layout: Layout, init: &'static str) -> Device {
        Device {
            cell: Arc::new(DeviceCell {
                held: RwLock::new(Some(held)),
                layout,
                init,
            }),
        }
    }

    /// The byte range `[offset, offset + length)` of a device of `size` bytes, `length`
    /// defaulting to the rest of it.
    fn range(size: u64, offset: u64, length: Option<u64>) -> PyResult<(u64, u64)> {
        let len = match length {
            Some(l) => l,
            None => size.checked_sub(offset).ok_or_else(|| {
                invalid(format!(
                    "offset {offset} is past the end of the device ({size} bytes)"
                ))
            })?,
        };
        Ok((offset, len))
    }
}

#[pymethods]
impl Device {
    /// A device over a new memfd (shmem, 4 KiB pages, sparse: it costs what is touched) of
    /// `size` bytes. First touches of its mappings are caught (userfaultfd) and run the fault
    /// path; a memory error costs 4 KiB (`granularity="page"`). At a 4K align a caught touch
    /// maps up to `fault_around` leaves (a power of two, 1 to 512): the touched one and its
    /// neighbours, the window growing on sequential touches. With `zero_ahead=N` (2M or 1G
    /// align) a background thread allocates and zeroes up to N leaves ahead of sequential
    /// touchers, and a touch that finds its leaf ready only has it mapped, with the ready
    /// leaves after it.
    #[staticmethod]
    #[pyo3(signature = (size, align = crate::Align::DEFAULT, layout = "heads", init = "parallel", granularity = "page", faults = "auto", handlers = None, zero_ahead = 0, fault_around = DaxOptions::DEFAULT_FAULT_AROUND))]
    #[pyo3(
        text_signature = "(size, align='2M', layout='heads', init='parallel', granularity='page', faults='auto', handlers=None, zero_ahead=0, fault_around=128)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn memfd(
        py: Python<'_>,
        size: &Bound<'_, PyAny>,
        align: crate::Align,
        layout: &str,
        init: &str,
        granularity: &str,
        faults: &str,
        handlers: Option<usize>,
        zero_ahead: usize,
        fault_around: usize,
    ) -> PyResult<Device> {
        let size = crate::size_arg("size", size)?;
        let mut o = Opts::parse(
            align,
            layout,
            init,
            granularity,
            faults,
            handlers,
            zero_ahead,
        )?;
        o.opts.fault_around = fault_around;
        let o = o.checked()?;
        let backing = Backing::memfd(size).map_err(errors::backing)?;
        Device::build(py, backing, o)
    }

    /// A device over a new hugetlb memfd of `size` bytes in huge pages of `page_size` (2M or
    /// 1G; by default the align if it is one of those, else 2M), taken from the kernel's pool
    /// when mapped. `zero_ahead` as for `Device.memfd`.
    #[staticmethod]
    #[pyo3(signature = (size, align = crate::Align::DEFAULT, page_size = None, layout = "heads", init = "parallel", granularity = "page", faults = "auto", handlers = None, zero_ahead = 0))]
    #[pyo3(
        text_signature = "(size, align='2M', page_size=None, layout='heads', init='parallel', granularity='page', faults='auto', handlers=None, zero_ahead=0)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn hugetlb(
        py: Python<'_>,
        size: &Bound<'_, PyAny>,
        align: crate::Align,
        page_size: Option<&Bound<'_, PyAny>>,
        layout: &str,
        init: &str,
        granularity: &str,
        faults: &str,
        handlers: Option<usize>,
        zero_ahead: usize,
    ) -> PyResult<Device> {
        let size = crate::size_arg("size", size)?;
        let o = Opts::parse(
            align,
            layout,
            init,
            granularity,
            faults,
            handlers,
            zero_ahead,
        )?
        .checked()?;
        let page = match crate::opt_size_arg("page_size", page_size)? {
            Some(p) => p,
            None => o.opts.align.bytes().max(devmap::Order::PMD.bytes()),
        };
        let page = crate::huge_page_arg(page)?;
        let backing = Backing::hugetlb(size, page).map_err(errors::backing)?;
        Device::build(py, backing, o)
    }

    /// A device over a regular file: the existing file at `path` (its size is the device's),
    /// or with `size` a new sparse file of that many bytes (refused if `path` exists). A file
    /// device does not catch touches: leaves are faulted by `Mapping.populate` and by pins,
    /// and a memory error costs the whole leaf.
    #[staticmethod]
    #[pyo3(signature = (path, size = None, align = crate::Align::DEFAULT, layout = "heads", init = "parallel", granularity = "page", faults = "auto", handlers = None))]
    #[pyo3(
        text_signature = "(path, size=None, align='2M', layout='heads', init='parallel', granularity='page', faults='auto', handlers=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn file(
        py: Python<'_>,
        path: std::path::PathBuf,
        size: Option<&Bound<'_, PyAny>>,
        align: crate::Align,
        layout: &str,
        init: &str,
        granularity: &str,
        faults: &str,
        handlers: Option<usize>,
    ) -> PyResult<Device> {
        let size = crate::opt_size_arg("size", size)?;
        // A file device catches no touches, so it has no zero-ahead pool.
        let o = Opts::parse(align, layout, init, granularity, faults, handlers, 0)?.checked()?;
        let backing = match size {
            Some(len) => Backing::create_file(&path, len),
            None => Backing::open_file(&path),
        }
        .map_err(errors::backing)?;
        Device::build(py, backing, o)
    }

    /// The device's size in bytes.
    #[getter]
    fn size(&self) -> PyResult<u64> {
        self.cell.with(|d| Ok(d.size()))
    }

    /// The device align in bytes: the size of every folio and every fault.
    #[getter]
    fn align(&self) -> PyResult<u64> {
        self.cell.with(|d| Ok(d.align().bytes()))
    }

    /// The memmap layout: "flat", "vmemmap" or "heads".
    #[getter]
    fn layout(&self) -> &'static str {
        self.cell.layout.name()
    }

    /// How the memmap was initialised: "sync", "parallel" or "async".
    #[getter]
    fn init(&self) -> &'static str {
        self.cell.init
    }

    /// The backing, as shown to people ("memfd", "2 MiB hugetlb memfd", "file PATH").
    #[getter]
    fn backing(&self) -> PyResult<String> {
        self.cell.with(|d| Ok(d.backing().kind().to_string()))
    }

    /// Whether first touches of the device's mappings are caught (userfaultfd).
    #[getter]
    fn catches_touches(&self) -> PyResult<bool> {
        self.cell.with(|d| Ok(d.catches_touches()))
    }

    /// What a 4 KiB memory error costs a mapping: "page" (4 KiB) or "leaf" (the whole leaf).
    #[getter]
    fn granularity(&self) -> PyResult<&'static str> {
        self.cell.with(|d| {
            Ok(match d.granularity() {
                Granularity::Page => "page",
                Granularity::Leaf => "leaf",
            })
        })
    }

    /// For a device enabled from a region, its namespace: the region's dict of it (name,
    /// uuid, offset, size, align, mode, map, data_offset, data_bytes) with was_clean (whether
    /// its previous enable ended with a disable) and enable_path ("host", "cold" or "warm":
    /// how the memmap was got). None for other devices.
    #[getter]
    fn namespace<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let held = self.cell.held.read();
        let Some(Held::Namespace(ns, _)) = held.as_ref() else {
            return Ok(None);
        };
        let d = crate::dicts::label_dict(py, ns.label())?;
        d.set_item("was_clean", ns.was_clean())?;
        d.set_item("enable_path", ns.path().name())?;
        Ok(Some(d))
    }

    /// Whether the device is closed.
    #[getter]
    fn closed(&self) -> bool {
        self.cell.held.read().is_none()
    }

    /// Number of open mappings of the device.
    #[getter]
    fn nr_mappings(&self) -> PyResult<usize> {
        self.cell.with(|d| Ok(d.nr_mappings()))
    }

    /// The device's pfn ranges, in device order, as (first pfn, number of pfns).
    fn ranges(&self) -> PyResult<Vec<(u64, u64)>> {
        self.cell.with(|d| {
            Ok(d.ranges()
                .iter()
                .map(|r| (r.start().raw(), r.len()))
                .collect())
        })
    }

    /// The pfn holding byte `offset` of the device, or None past its end.
    fn pfn_at(&self, offset: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let offset = crate::size_arg("offset", offset)?;
        self.cell.with(|d| Ok(d.pfn_at(offset).map(|p| p.raw())))
    }

    /// What faults did so far: user_faults, leaves_mapped, raced, sigbus, fault_around
    /// (leaves mapped with a touched one, among leaves_mapped: its 4 KiB neighbours, or the
    /// ready leaves after it with a zero-ahead pool), zeroed_ahead (leaves the zero-ahead pool
    /// prepared), zero_ahead_hits (leaves faults took ready from the pool: a touched one, or
    /// one mapped after it) and zero_ahead_failed (leaves it could not allocate ahead).
    fn fault_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.cell.with(|d| Ok(d.fault_stats()))?;
        let out = PyDict::new(py);
        out.set_item("user_faults", s.user_faults)?;
        out.set_item("leaves_mapped", s.leaves_mapped)?;
        out.set_item("raced", s.raced)?;
        out.set_item("sigbus", s.sigbus)?;
        out.set_item("fault_around", s.fault_around)?;
        out.set_item("zeroed_ahead", s.zeroed_ahead)?;
        out.set_item("zero_ahead_hits", s.zero_ahead_hits)?;
        out.set_item("zero_ahead_failed", s.zero_ahead_failed)?;
        Ok(out)
    }

    /// The device's pins now: pinned_bytes (folios with a pin, each counted once, whole),
    /// pin_refs (one per page per pin, as the kernel counts them) and referenced_bytes
    /// (`pin_refs` pages: what a memlock accounting charging every pin would charge).
    fn pin_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.cell.detached(py, |d| d.pin_stats())?;
        let out = PyDict::new(py);
        out.set_item("pinned_bytes", s.pinned_bytes)?;
        out.set_item("pin_refs", s.pin_refs)?;
        out.set_item("referenced_bytes", s.referenced_bytes)?;
        Ok(out)
    }

    /// Maps `length` bytes of the device from `offset` (both multiples of the align; by default
    /// the whole device), shared, at an address aligned to the align.
    #[pyo3(signature = (offset = None, length = None))]
    fn mmap(
        &self,
        offset: Option<&Bound<'_, PyAny>>,
        length: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Mapping> {
        let offset = crate::opt_size_arg("offset", offset)?.unwrap_or(0);
        let length = crate::opt_size_arg("length", length)?;
        let m = self.cell.with(|d| {
            let (offset, len) = Device::range(d.size(), offset, length)?;
            d.mmap(offset, len, true).map_err(errors::dax)
        })?;
        Ok(Mapping::new(m, Arc::clone(&self.cell)))
    }

    /// Reports a memory error in the 4 KiB page holding byte `offset` of the device
    /// (`memory_failure(pfn)`): the page is flagged poisoned and revoked from every mapping
    /// that has its leaf; the early-kill owners are told (`on_poison(..., early_kill=True)`;
    /// by offset no mapping is current), or every owner with `tell_all`. A page nothing ever
    /// mapped is BusyError (-EBUSY, nothing flagged) unless `record_unmapped`; a page poisoned
    /// already is handled again. Returns the report as a dict: pfn, head, handled_by, revoked
    /// (one dict per mapping that lost the page: mapping, pfn, addr, length, shift,
    /// action_required), notices (the same, one per owner told), pins, elapsed_ns.
    #[pyo3(signature = (offset, action_required = false, record_unmapped = false, tell_all = false))]
    fn memory_failure<'py>(
        &self,
        py: Python<'py>,
        offset: &Bound<'_, PyAny>,
        action_required: bool,
        record_unmapped: bool,
        tell_all: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let offset = crate::size_arg("offset", offset)?;
        let (space, pfn) = self.cell.with(|d| {
            let pfn = d.pfn_at(offset).ok_or_else(|| {
                invalid(format!(
                    "offset {offset} is past the end of the device ({} bytes)",
                    d.size()
                ))
            })?;
            Ok((d.space().clone(), pfn))
        })?;
        let report = py
            .detach(|| {
                memory_failure(
                    &space,
                    pfn,
                    flags(action_required, record_unmapped, tell_all),
                )
            })
            .map_err(errors::mf)?;
        report_dict(py, &report)
    }

    /// Clears the poison of `[offset, offset + length)` (multiples of 4 KiB) once the bytes
    /// are rewritten or discarded (`ndctl clear-errors`): the pages' flags, their badblocks
    /// entries and every mapping's markers, so the next touch maps them again. Returns how many
    /// pages were poisoned.
    fn clear_poison(
        &self,
        py: Python<'_>,
        offset: &Bound<'_, PyAny>,
        length: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let offset = crate::size_arg("offset", offset)?;
        let length = crate::size_arg("length", length)?;
        self.cell
            .detached(py, |d| d.clear_poison(offset, length))?
            .map_err(errors::dax)
    }

    /// The device's bad pages as merged (offset, length) ranges in bytes, in order.
    fn badblocks(&self) -> PyResult<Vec<(u64, u64)>> {
        self.cell.with(|d| Ok(d.badblocks()))
    }

    /// Tears the device down: refused with BusyError while mappings are open or pins are
    /// held (waiting up to `timeout` seconds for pins to go; None waits for ever). A namespace
    /// device is disabled instead, at once or not at all: its bad pages and, for `map="dev"`,
    /// its memmap written to its region for the next enable. Closing twice does nothing.
    #[pyo3(signature = (timeout = 1.0))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = timeout
            .map(|t| {
                Duration::try_from_secs_f64(t)
                    .map_err(|_| invalid(format!("timeout {t} is not a number of seconds")))
            })
            .transpose()?;
        // All under the GIL released: the lock is taken and given back inside.
        let outcome = py.detach(|| {
            let mut guard = self.cell.held.write();
            let Some(held) = guard.as_ref() else {
                return Ok(None);
            };
            let dev = held.device();
            let open = dev.nr_mappings();
            if open > 0 {
                return Err(Refused::Mappings(open));
            }
            match held {
                // The region's disable finishes the memmap on the live device, then tears it
                // down, waiting for pins without a limit: refuse while any is held.
                Held::Namespace(..) => {
                    let refs = dev.pin_stats().pin_refs;
                    if refs > 0 {
                        return Err(Refused::Pins(refs));
                    }
                }
                Held::Device(_) => dev.close(timeout).map_err(Refused::Dax)?,
            }
            Ok(guard.take())
        });
        match outcome {
            Ok(Some(Held::Namespace(ns, region))) => region.disable(py, *ns),
            Ok(Some(Held::Device(dev))) => {
                py.detach(move || drop(dev));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(Refused::Mappings(open)) => Err(error(
                Kind::Busy,
                libc_errno::EBUSY,
                format!("{open} mapping(s) of the device are still open: close them first"),
            )),
            Err(Refused::Pins(refs)) => Err(error(
                Kind::Busy,
                libc_errno::EBUSY,
                format!("{refs} pin reference(s) on the device are still held: unpin them first"),
            )),
            Err(Refused::Dax(e)) => Err(errors::dax(e)),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*exc))]
    fn __exit__(&self, py: Python<'_>, exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py, Some(1.0))
            .map_err(|e| errors::chained(py, e, exc))?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.cell.with(|d| {
            Ok(format!(
                "<devmap.Device {} size={} align={} layout={}>",
                d.backing().kind(),
                d.size(),
                d.align().bytes(),
                self.cell.layout.name()
            ))
        }) {
            Ok(s) => s,
            Err(_) => "<devmap.Device closed>".to_owned(),
        }
    }
}

/// Why `close()` refused.
enum Refused {
    /// Mappings are open.
    Mappings(usize),
    /// Pins are held on a namespace device.
    Pins(u64),
    /// The teardown refused (pins still held after the timeout).
    Dax(devmap::DaxError),
}

/// The memory-failure flags.
fn flags(action_required: bool, record_unmapped: bool, tell_all: bool) -> MfFlags {
    [
        (action_required, MfFlags::ACTION_REQUIRED),
        (record_unmapped, MfFlags::RECORD_UNMAPPED),
        (tell_all, MfFlags::TELL_ALL),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(MfFlags::NONE, |acc, (_, f)| acc | f)
}

/// A memory-failure report as a dict.
fn report_dict<'py>(py: Python<'py>, r: &MfReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("pfn", r.pfn.raw())?;
    d.set_item("head", r.head.raw())?;
    d.set_item(
        "handled_by",
        match r.handled_by {
            HandledBy::Callback => "callback",
            HandledBy::Generic => "generic",
        },
    )?;
    let dicts = |ns: &[devmap::dax::PoisonNotice]| {
        ns.iter()
            .map(|n| notice_dict(py, n))
            .collect::<PyResult<Vec<_>>>()
    };
    d.set_item("revoked", dicts(&r.revoked)?)?;
    d.set_item("notices", dicts(&r.notices)?)?;
    d.set_item("pins", r.pins)?;
    d.set_item(
        "elapsed_ns",
        u64::try_from(r.elapsed.as_nanos()).unwrap_or(u64::MAX),
    )?;
    Ok(d)
}

/// Reports a memory error at user address `addr` of a live device-dax mapping (as a SIGBUS
/// reports one), as `Device.memory_failure` does for a device offset. With
/// `action_required`, the mapping holding `addr` is the current one: its owner is told with
/// action_required set, whether or not it is early-kill.
#[pyfunction]
#[pyo3(signature = (addr, action_required = false, record_unmapped = false, tell_all = false))]
pub(crate) fn memory_failure_at<'py>(
    py: Python<'py>,
    addr: usize,
    action_required: bool,
    record_unmapped: bool,
    tell_all: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let report = py
        .detach(|| mf_at(addr, flags(action_required, record_unmapped, tell_all)))
        .map_err(errors::mf)?;
    report_dict(py, &report)
}
