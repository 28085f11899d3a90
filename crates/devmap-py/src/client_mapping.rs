//! `devmap.ClientMapping`: a window of a served namespace mapped in this process (its bytes
//! exported through the buffer protocol as a writable `memoryview`, shared with every other
//! client's window of them), and `devmap.ClientPins`: pages of it pinned in the service, with
//! the extents to register for DMA.

use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

use devmap::client::{Mapping as LibMapping, Pins as LibPins};
use devmap::{GupFlags, PAGE_SIZE};
use parking_lot::{Mutex, RwLock};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::errors::{self, closed, invalid};
use crate::pins::Extent;

/// A window of a served namespace, mapped shared at an address aligned to the namespace's
/// align and attached in the service. Its bytes are the object's buffer: `memoryview(m)` (or
/// `m.view`) reads and writes them in place; where the service resolves touches, the first
/// touch of each leaf waits for it. If the service goes away, every access raises SIGBUS.
/// While a memoryview of it is alive, `close()` raises BufferError.
#[pyclass(module = "devmap", frozen)]
#[derive(Debug)]
pub struct ClientMapping {
    /// The library mapping: `None` once closed.
    state: RwLock<Option<LibMapping>>,
    /// Live buffer exports (memoryviews); `close()` refuses while any is alive.
    exports: AtomicUsize,
    addr: usize,
    len: u64,
    offset: u64,
    handle: u32,
}

impl ClientMapping {
    /// A mapping object over `m`, which maps the namespace from `offset`.
    pub(crate) fn new(m: LibMapping, offset: u64) -> ClientMapping {
        ClientMapping {
            handle: m.handle(),
            addr: m.addr(),
            len: m.len(),
            offset,
            state: RwLock::new(Some(m)),
            exports: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the open mapping with the GIL released, the mapping's lock taken and given
    /// back inside (never held while waiting for the GIL); raises if the mapping is closed.
    fn detached<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&LibMapping) -> T + Send,
    ) -> PyResult<T> {
        py.detach(|| self.state.read().as_ref().map(f))
            .ok_or_else(|| closed("client mapping"))
    }

    /// `[offset, offset + length)` checked against the mapping, `length` defaulting to the
    /// rest of it.
    fn span(&self, offset: u64, length: Option<u64>) -> PyResult<(u64, u64)> {
        let len = length.unwrap_or(self.len.saturating_sub(offset));
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok((offset, len)),
            _ => Err(invalid(format!(
                "{len} bytes at offset {offset} run past the end of the mapping ({} bytes)",
                self.len
            ))),
        }
    }
}

#[pymethods]
impl ClientMapping {
    /// The first address (a multiple of the namespace's align).
    #[getter]
    fn addr(&self) -> usize {
        self.addr
    }

    /// The service's handle of this mapping, as a notice's `handle` names it.
    #[getter]
    fn handle(&self) -> u32 {
        self.handle
    }

    /// The mapping's length in bytes (also `len(m)`).
    #[getter]
    fn length(&self) -> u64 {
        self.len
    }

    /// The namespace offset the mapping starts at.
    #[getter]
    fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the mapping is closed.
    #[getter]
    fn closed(&self) -> bool {
        self.state.read().is_none()
    }

    /// `memoryview(self)`: the mapped bytes, writable, in place.
    #[getter]
    fn view<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py()
            .import("builtins")?
            .getattr("memoryview")?
            .call1((slf,))
    }

    fn __len__(&self) -> usize {
        self.len as usize
    }

    /// Exports the mapped bytes: one-dimensional, unsigned bytes, writable.
    ///
    /// # Safety
    ///
    /// Called by Python with a `Py_buffer` to fill, as the buffer protocol says.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let state = this.state.read();
        let m = state
            .as_ref()
            .ok_or_else(|| PyBufferError::new_err("the client mapping is closed"))?;
        // SAFETY: the window is the library mapping's, which drops only in `close()` (refused
        // while `exports` is non-zero; the read lock held here keeps `close()` out until the
        // export is counted) or when this object is deallocated, which the export's reference
        // to it prevents.
        unsafe {
            crate::mapping::export_window(slf.as_any(), view, flags, m.bytes(), &this.exports)
        }
    }

    /// Ends one export.
    ///
    /// # Safety
    ///
    /// Called by Python once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::SeqCst);
    }

    /// Copies `length` bytes from `offset` (bounds-checked; by default the rest of the
    /// mapping).
    #[pyo3(signature = (offset = None, length = None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: Option<&Bound<'_, PyAny>>,
        length: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let offset = crate::opt_size_arg("offset", offset)?.unwrap_or(0);
        let length = crate::opt_size_arg("length", length)?;
        let (offset, len) = self.span(offset, length)?;
        let bytes = self
            .detached(py, |m| {
                let mut buf = vec![0u8; len as usize];
                m.bytes().read(offset, &mut buf).map(|()| buf)
            })?
            .map_err(errors::backing)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Writes `data` (any bytes-like object) at `offset`.
    fn write(
        &self,
        py: Python<'_>,
        offset: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let offset = crate::size_arg("offset", offset)?;
        let bytes: Vec<u8> = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().to_vec(),
            Err(_) => PyBuffer::<u8>::get(data)?.to_vec(py)?,
        };
        self.span(offset, Some(bytes.len() as u64))?;
        self.detached(py, |m| m.bytes().write(offset, &bytes))?
            .map_err(errors::backing)
    }

    /// Pins `nr_pages` 4 KiB pages from the client address `addr` (rounded down to its page;
    /// by default the mapping's first address and the pages from there to its end) in the
    /// service, faulting in leaves not yet faulted unless `nofault`. With `folios` the
    /// service holds them one entry per folio, else one per page (the extents are the same).
    /// Release with `unpin()`, a `with` block, or by dropping the object.
    #[pyo3(signature = (addr = None, nr_pages = None, write = false, folios = true, longterm = false, nofault = false))]
    #[allow(clippy::too_many_arguments)]
    fn pin(
        &self,
        py: Python<'_>,
        addr: Option<usize>,
        nr_pages: Option<u64>,
        write: bool,
        folios: bool,
        longterm: bool,
        nofault: bool,
    ) -> PyResult<ClientPins> {
        let addr = addr.unwrap_or(self.addr);
        let nr_pages = match nr_pages {
            Some(n) => n,
            None => {
                let end = self.addr as u64 + self.len;
                let first = (addr as u64) - (addr as u64) % PAGE_SIZE;
                if first < self.addr as u64 || first >= end {
                    return Err(invalid(format!(
                        "address {addr:#x} is not inside this mapping ({:#x}..{end:#x}): pass \
                         an address in it, or nr_pages",
                        self.addr
                    )));
                }
                (end - first) / PAGE_SIZE
            }
        };
        let mut flags = GupFlags::NONE;
        for (on, f) in [
            (write, GupFlags::WRITE),
            (nofault, GupFlags::NOFAULT),
            (longterm, GupFlags::LONGTERM),
        ] {
            if on {
                flags = flags | f;
            }
        }
        let pins = self
            .detached(py, |m| m.pin(addr, nr_pages, flags, folios))?
            .map_err(errors::client)?;
        Ok(ClientPins::new(pins))
    }

    /// Reports a memory error this process met at `addr` of this mapping (its SIGBUS): every
    /// client mapping the page loses it and is told, this one too. Returns a dict: pages,
    /// revoked (mappings that lost the page), told, elapsed_ns.
    fn report_memory_error<'py>(
        &self,
        py: Python<'py>,
        addr: usize,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let done = self
            .detached(py, |m| m.report_memory_error(addr))?
            .map_err(errors::client)?;
        injected(py, &done)
    }

    /// Detaches the mapping in the service and unmaps it: refused with BufferError while a
    /// memoryview of it is alive. Pins taken through it stay, and keep the
    /// window mapped until they are unpinned. Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = self.state.write();
        let live = self.exports.load(Ordering::SeqCst);
        if live > 0 && state.is_some() {
            return Err(PyBufferError::new_err(format!(
                "{live} memoryview(s) of this client mapping are still alive: release them \
                 (memoryview.release() or del) before closing it"
            )));
        }
        let m = state.take();
        drop(state);
        py.detach(move || drop(m));
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*exc))]
    fn __exit__(&self, py: Python<'_>, exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py).map_err(|e| errors::chained(py, e, exc))?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<devmap.ClientMapping addr={:#x} length={} offset={}{}>",
            self.addr,
            self.len,
            self.offset,
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// Pages pinned in the service for this client: `extents()` is what to register for DMA
/// (client address, namespace offset and pfn running on through each). The service holds
/// them until `unpin()`, the end of a `with` block, the object's deallocation, or this
/// client's end.
#[pyclass(module = "devmap", frozen)]
#[derive(Debug)]
pub struct ClientPins {
    held: Mutex<Option<LibPins>>,
    nr_pages: u64,
    handle: u32,
    fast: bool,
    extents: Vec<Extent>,
}

impl ClientPins {
    fn new(p: LibPins) -> ClientPins {
        let extents = p
            .extents()
            .iter()
            .map(|e| Extent {
                addr: e.addr as usize,
                offset: e.offset,
                pfn: e.pfn,
                length: e.len,
            })
            .collect();
        ClientPins {
            nr_pages: p.nr_pages(),
            handle: p.handle(),
            fast: p.is_fast(),
            extents,
            held: Mutex::new(Some(p)),
        }
    }
}

#[pymethods]
impl ClientPins {
    /// Pages pinned.
    #[getter]
    fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// The service's handle of these pins, as a notice's `handle` names it; 0 for fast pins.
    #[getter]
    fn handle(&self) -> u32 {
        self.handle
    }

    /// Whether the pins were taken in this process with no request (DESIGN §9.5).
    #[getter]
    fn fast(&self) -> bool {
        self.fast
    }

    /// Whether the pins were given back.
    #[getter]
    fn unpinned(&self) -> bool {
        self.held.lock().is_none()
    }

    /// The fewest extents covering exactly the pinned bytes, in address order, as the service
    /// reported them (`offset` is a namespace offset). TornDownError once unpinned.
    fn extents(&self) -> PyResult<Vec<Extent>> {
        if self.unpinned() {
            return Err(closed("client pin (it is unpinned)"));
        }
        Ok(self.extents.clone())
    }

    /// Gives the pins back in the service, marking each folio dirty once first if `dirty`.
    /// Unpinning twice does nothing; an error of the service (gone, say) is raised once.
    #[pyo3(signature = (dirty = false))]
    fn unpin(&self, py: Python<'_>, dirty: bool) -> PyResult<()> {
        let held = self.held.lock().take();
        match held {
            Some(p) => py.detach(move || p.unpin(dirty)).map_err(errors::client),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*exc))]
    fn __exit__(&self, py: Python<'_>, exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.unpin(py, false)
            .map_err(|e| errors::chained(py, e, exc))?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<devmap.ClientPins {} pages, {} extent(s){}>",
            self.nr_pages,
            self.extents.len(),
            if self.unpinned() { ", unpinned" } else { "" }
        )
    }
}

/// What an injected or reported memory error did, as the dict Python callers get: pages,
/// revoked (mappings that lost a page), told, elapsed_ns.
pub(crate) fn injected<'py>(
    py: Python<'py>,
    done: &devmap::service::proto::Injected,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let d = pyo3::types::PyDict::new(py);
    d.set_item("pages", done.pages)?;
    d.set_item("revoked", done.revoked)?;
    d.set_item("told", done.told)?;
    d.set_item("elapsed_ns", done.elapsed_ns)?;
    Ok(d)
}
