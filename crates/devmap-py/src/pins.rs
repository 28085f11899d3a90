//! `devmap.Pins`: pages or folios pinned by user address, what a VFIO or RDMA registration
//! takes, until `unpin()`.

use std::sync::Arc;

use devmap::{
    ByAddress, Extent as LibExtent, ExtentLimits, Folios, Order, PAGE_SIZE, Pages, Pinned,
    PinnedFolio as LibFolio,
};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::cell::DeviceCell;
use crate::errors::{self, closed};

/// One pinned folio (or the part of it a pin covers): where it is mapped and which pfns it is.
#[pyclass(module = "devmap", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct PinnedFolio {
    /// The user address of the first pinned page.
    pub addr: usize,
    /// The first pinned pfn.
    pub pfn: u64,
    /// The folio's head pfn.
    pub head: u64,
    /// The folio's order (log2 of its pages: 0, 9 or 18).
    pub order: u32,
    /// Pages of the folio the pin covers.
    pub nr_pages: u64,
    /// Bytes the pin covers (`nr_pages * 4096`).
    pub length: u64,
}

#[pymethods]
impl PinnedFolio {
    fn __repr__(&self) -> String {
        format!(
            "PinnedFolio(addr={:#x}, pfn={:#x}, head={:#x}, order={}, nr_pages={})",
            self.addr, self.pfn, self.head, self.order, self.nr_pages
        )
    }
}

impl PinnedFolio {
    fn from_user(addr: usize, f: &LibFolio) -> PinnedFolio {
        PinnedFolio {
            addr,
            pfn: f.range().start().raw(),
            head: f.head().raw(),
            order: f.order().get(),
            nr_pages: f.range().len(),
            length: f.range().len() * PAGE_SIZE,
        }
    }
}

/// A run of pinned bytes contiguous in user addresses, device offsets and pfns: one entry of
/// a DMA registration (a VFIO map, an RDMA memory region).
#[pyclass(module = "devmap", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct Extent {
    /// The user address of the first byte.
    pub addr: usize,
    /// The device offset of the first byte.
    pub offset: u64,
    /// The first pfn.
    pub pfn: u64,
    /// Length in bytes (a multiple of 4 KiB).
    pub length: u64,
}

#[pymethods]
impl Extent {
    fn __repr__(&self) -> String {
        format!(
            "Extent(addr={:#x}, offset={}, pfn={:#x}, length={})",
            self.addr, self.offset, self.pfn, self.length
        )
    }
}

impl From<&LibExtent> for Extent {
    fn from(e: &LibExtent) -> Extent {
        Extent {
            addr: e.addr,
            offset: e.offset,
            pfn: e.pfn.raw(),
            length: e.len,
        }
    }
}

/// What is pinned.
#[derive(Debug)]
pub(crate) enum Held {
    /// One entry per folio.
    Folios(Pinned<Folios, ByAddress>),
    /// One entry per page.
    Pages(Pinned<Pages, ByAddress>),
}

/// Pages pinned by user address: `.folios` (one entry per folio), `.pages` ((addr, pfn) per
/// page), `.extents(...)`. The pins hold their folios (and the device) until `unpin()`, the
/// end of a `with` block, or the object's deallocation; their methods raise once unpinned.
#[pyclass(module = "devmap", frozen)]
#[derive(Debug)]
pub struct Pins {
    held: Mutex<Option<Held>>,
    /// The device align, for grouping pages into folios.
    align: Order,
    /// Kept until after the pins are released (fields drop in order).
    _device: Arc<DeviceCell>,
}

impl Pins {
    /// Pins of folios, keeping `device` alive.
    pub(crate) fn from_folios(p: Pinned<Folios, ByAddress>, device: Arc<DeviceCell>) -> Pins {
        Pins::new(Held::Folios(p), device)
    }

    /// Pins of pages, keeping `device` alive.
    pub(crate) fn from_pages(p: Pinned<Pages, ByAddress>, device: Arc<DeviceCell>) -> Pins {
        Pins::new(Held::Pages(p), device)
    }

    fn new(held: Held, device: Arc<DeviceCell>) -> Pins {
        let align = device.with(|d| Ok(d.align())).unwrap_or(Order::BASE);
        Pins {
            held: Mutex::new(Some(held)),
            align,
            _device: device,
        }
    }

    /// Runs `f` on the held pins, or raises if they are released.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Held) -> PyResult<T>) -> PyResult<T> {
        let held = self.held.lock();
        let held = held
            .as_ref()
            .ok_or_else(|| closed("pin (it is unpinned)"))?;
        f(held)
    }
}

#[pymethods]
impl Pins {
    /// One entry per pinned folio, in address order. For a pin by page the pages are grouped
    /// by the folio (leaf of the device align) holding them.
    #[getter]
    fn folios(&self) -> PyResult<Vec<PinnedFolio>> {
        let align = self.align;
        self.with(|h| {
            Ok(match h {
                Held::Folios(f) => f
                    .with_addresses()
                    .map(|(addr, f)| PinnedFolio::from_user(addr, &f))
                    .collect(),
                Held::Pages(p) => {
                    let mut out: Vec<PinnedFolio> = Vec::new();
                    for (addr, pfn) in p.with_addresses() {
                        let head = pfn.align_down(align).raw();
                        match out.last_mut() {
                            Some(last)
                                if last.head == head && last.pfn + last.nr_pages == pfn.raw() =>
                            {
                                last.nr_pages += 1;
                                last.length += PAGE_SIZE;
                            }
                            _ => out.push(PinnedFolio {
                                addr,
                                pfn: pfn.raw(),
                                head,
                                order: align.get(),
                                nr_pages: 1,
                                length: PAGE_SIZE,
                            }),
                        }
                    }
                    out
                }
            })
        })
    }

    /// One (addr, pfn) per pinned page, in address order.
    #[getter]
    fn pages(&self) -> PyResult<Vec<(usize, u64)>> {
        self.with(|h| {
            Ok(match h {
                Held::Pages(p) => p.with_addresses().map(|(a, pfn)| (a, pfn.raw())).collect(),
                Held::Folios(f) => f
                    .with_addresses()
                    .flat_map(|(addr, f)| {
                        (0..f.range().len()).map(move |i| {
                            (addr + (i * PAGE_SIZE) as usize, f.range().start().raw() + i)
                        })
                    })
                    .collect(),
            })
        })
    }

    /// The fewest extents covering exactly the pinned bytes, in address order, each at most
    /// `max_bytes` long (cut only between folios) and at most `max_extents` of them (None or 0:
    /// no limit, as 0 is in C): InvalidArgument if a folio's pinned part is longer than
    /// `max_bytes` or more extents are needed than allowed.
    #[pyo3(signature = (max_extents = None, max_bytes = None))]
    fn extents(
        &self,
        py: Python<'_>,
        max_extents: Option<usize>,
        max_bytes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Extent>> {
        // 0 is no limit, as None is, and as in C's devmap_pins_extents.
        let limits = ExtentLimits::new(
            max_extents.unwrap_or(0),
            crate::opt_size_arg("max_bytes", max_bytes)?.unwrap_or(0),
        );
        // The GIL released, the pins' lock taken and given back inside it.
        py.detach(|| {
            self.held.lock().as_ref().map(|h| match h {
                Held::Folios(f) => f.extents(limits),
                Held::Pages(p) => p.extents(limits),
            })
        })
        .ok_or_else(|| closed("pin (it is unpinned)"))?
        .map(|v| v.iter().map(Extent::from).collect())
        .map_err(errors::gup)
    }

    /// Pages pinned.
    #[getter]
    fn nr_pages(&self) -> PyResult<u64> {
        self.with(|h| {
            Ok(match h {
                Held::Pages(p) => p.len() as u64,
                Held::Folios(f) => f.nr_pages(),
            })
        })
    }

    /// Whether the pins were given back (`unpin`, or leaving a `with` block).
    #[getter]
    fn unpinned(&self) -> bool {
        self.held.lock().is_none()
    }

    fn __len__(&self) -> PyResult<usize> {
        self.with(|h| {
            Ok(match h {
                Held::Pages(p) => p.len(),
                Held::Folios(f) => f.len(),
            })
        })
    }

    /// Gives every pin back (`unpin_user_pages_dirty_lock`), marking each folio dirty once if
    /// `dirty`. Unpinning twice does nothing.
    #[pyo3(signature = (dirty = false))]
    fn unpin(&self, py: Python<'_>, dirty: bool) {
        let held = self.held.lock().take();
        py.detach(move || match held {
            Some(Held::Folios(f)) => f.unpin(dirty),
            Some(Held::Pages(p)) => p.unpin(dirty),
            None => {}
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.unpin(py, false);
        false
    }

    fn __repr__(&self) -> String {
        match self.with(|h| {
            Ok(match h {
                Held::Pages(p) => format!("<devmap.Pins {} pages>", p.len()),
                Held::Folios(f) => {
                    format!("<devmap.Pins {} folios, {} pages>", f.len(), f.nr_pages())
                }
            })
        }) {
            Ok(s) => s,
            Err(_) => "<devmap.Pins released>".to_owned(),
        }
    }
}
