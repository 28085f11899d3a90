//! `devmap.Mapping`: a shared mapping of a device (the VMA), whose bytes are exported through
//! the buffer protocol as a writable `memoryview`, with pins by address, `read_mc` and
//! poison owners.

use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use devmap::dax::{DaxMapping, PoisonNotice};
use devmap::{DaxError, GupFlags, PAGE_SIZE};
use parking_lot::RwLock;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::cell::DeviceCell;
use crate::dicts::notice_dict;
use crate::errors::{self, Kind, closed, instance, invalid};
use crate::pins::Pins;

/// A shared mapping of part of a device, at an address aligned to the device align. Its bytes
/// are the object's buffer: `memoryview(mapping)` (or `mapping.view`) reads and writes them in
/// place, and a first touch of a leaf runs devmap's fault path. While a memoryview of it is
/// alive, `close()` raises BufferError. Bytes lost to a memory error raise SIGBUS when touched
/// through the memoryview, as they would in C: read them with `read_mc`, which raises
/// `MemoryLost` instead.
#[pyclass(module = "devmap", frozen)]
#[derive(Debug)]
pub struct Mapping {
    /// The library mapping: `None` once closed.
    state: RwLock<Option<DaxMapping>>,
    /// Live buffer exports (memoryviews); `close()` refuses while any is alive.
    exports: AtomicUsize,
    addr: usize,
    len: u64,
    offset: u64,
    id: u64,
    /// The device, kept until after the mapping is dropped (fields drop in order).
    device: Arc<DeviceCell>,
}

impl Mapping {
    /// A mapping object over `m`, keeping `device` alive.
    pub(crate) fn new(m: DaxMapping, device: Arc<DeviceCell>) -> Mapping {
        Mapping {
            addr: m.addr(),
            len: m.len(),
            offset: m.offset(),
            id: m.id().get(),
            state: RwLock::new(Some(m)),
            exports: AtomicUsize::new(0),
            device,
        }
    }

    /// Runs `f` on the open mapping with the GIL released, the mapping's lock taken and given
    /// back inside (never held while waiting for the GIL); raises if the mapping is closed.
    fn detached<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&DaxMapping) -> T + Send,
    ) -> PyResult<T> {
        py.detach(|| self.state.read().as_ref().map(f))
            .ok_or_else(|| closed("mapping"))
    }

    /// Runs `f` on the open mapping, or raises if it is closed (with the GIL held: `f` must be
    /// quick and must not release the GIL).
    fn with<T>(&self, f: impl FnOnce(&DaxMapping) -> PyResult<T>) -> PyResult<T> {
        let state = self.state.read();
        let m = state.as_ref().ok_or_else(|| closed("mapping"))?;
        f(m)
    }

    /// `[offset, offset + length)` checked against the mapping, `length` defaulting to the
    /// rest of it.
    fn span(&self, offset: u64, length: Option<u64>) -> PyResult<(u64, u64)> {
        let len = match length {
            Some(l) => l,
            None => self.len.saturating_sub(offset),
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok((offset, len)),
            _ => Err(invalid(format!(
                "{len} bytes at offset {offset} run past the end of the mapping ({} bytes)",
                self.len
            ))),
        }
    }

    /// A `read_mc` refusal as `MemoryLost` with the lost bytes' offset, address and length.
    fn lost(&self, py: Python<'_>, e: DaxError) -> PyErr {
        let DaxError::MemoryLost { addr, len } = e else {
            return errors::dax(e);
        };
        let offset = addr.wrapping_sub(self.addr) as u64;
        let make = || -> PyResult<PyErr> {
            let errno = devmap::errno::dax(&e);
            let exc = instance(py, Kind::MemoryLost, errno, &errors::reason(&e))?;
            exc.setattr("offset", offset)?;
            exc.setattr("addr", addr)?;
            exc.setattr("length", len)?;
            Ok(PyErr::from_value(exc))
        };
        make().unwrap_or_else(|err| err)
    }
}

#[pymethods]
impl Mapping {
    /// The first user address (a multiple of the device align).
    #[getter]
    fn addr(&self) -> usize {
        self.addr
    }

    /// The mapping's length in bytes.
    #[getter]
    fn length(&self) -> u64 {
        self.len
    }

    /// The device offset the mapping starts at.
    #[getter]
    fn offset(&self) -> u64 {
        self.offset
    }

    /// The mapping's id in its device (what memory-failure notices name).
    #[getter]
    fn id(&self) -> u64 {
        self.id
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
            .ok_or_else(|| PyBufferError::new_err("the mapping is closed"))?;
        // SAFETY: the window is the `DaxMapping`'s, which drops only in `close()` (refused
        // while `exports` is non-zero; the read lock held here keeps `close()` out until the
        // export is counted) or when this object is deallocated, which the export's reference
        // to it prevents.
        unsafe { export_window(slf.as_any(), view, flags, m.bytes(), &this.exports) }
    }

    /// Ends one export.
    ///
    /// # Safety
    ///
    /// Called by Python once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::SeqCst);
    }

    /// Copies `length` bytes from `offset` (bounds-checked; a first touch faults the leaf in).
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
        let owned;
        let bytes: &[u8] = if let Ok(b) = data.cast::<PyBytes>() {
            b.as_bytes()
        } else {
            owned = PyBuffer::<u8>::get(data)?.to_vec(py)?;
            &owned
        };
        self.span(offset, Some(bytes.len() as u64))?;
        self.with(|m| m.bytes().write(offset, bytes).map_err(errors::backing))
    }

    /// Copies `length` bytes from `offset` without risking SIGBUS: refuses with
    /// `MemoryLost` (its `offset`, `addr` and `length` say what is lost) if any of them is lost
    /// to a memory error, copying nothing.
    fn read_mc<'py>(
        &self,
        py: Python<'py>,
        offset: &Bound<'_, PyAny>,
        length: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let offset = crate::size_arg("offset", offset)?;
        let length = crate::size_arg("length", length)?;
        let (offset, len) = self.span(offset, Some(length))?;
        let got = self.detached(py, |m| {
            let mut buf = vec![0u8; len as usize];
            m.read_mc(offset, &mut buf).map(|()| buf)
        })?;
        match got {
            Ok(bytes) => Ok(PyBytes::new(py, &bytes)),
            Err(e) => Err(self.lost(py, e)),
        }
    }

    /// Faults in every leaf `[offset, offset + length)` touches (by default the whole mapping).
    /// Returns (leaves mapped now, leaves mapped already).
    #[pyo3(signature = (offset = None, length = None))]
    fn populate(
        &self,
        py: Python<'_>,
        offset: Option<&Bound<'_, PyAny>>,
        length: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(u64, u64)> {
        let offset = crate::opt_size_arg("offset", offset)?.unwrap_or(0);
        let length = crate::opt_size_arg("length", length)?;
        let (offset, len) = self.span(offset, length)?;
        let addr = self.addr + offset as usize;
        self.detached(py, |m| m.populate(addr, len))?
            .map(|p| (p.mapped, p.already))
            .map_err(errors::dax)
    }

    /// Whether the leaf holding byte `offset` is faulted in.
    fn is_faulted(&self, offset: &Bound<'_, PyAny>) -> PyResult<bool> {
        let offset = crate::size_arg("offset", offset)?;
        let addr = self.addr.wrapping_add(offset as usize);
        self.with(|m| Ok(m.is_faulted(addr)))
    }

    /// Pins the pages of `[offset, offset + length)` by user address (`pin_user_pages_fast`;
    /// by default the whole mapping), faulting in leaves not yet faulted unless `nofault`.
    /// With `folios` one entry per folio (what a DMA registration takes), else one per page.
    /// Release with `unpin()`, a `with` block, or by dropping the object.
    #[pyo3(signature = (offset = None, length = None, folios = true, nofault = false, write = true, longterm = false))]
    #[allow(clippy::too_many_arguments)]
    fn pin(
        &self,
        py: Python<'_>,
        offset: Option<&Bound<'_, PyAny>>,
        length: Option<&Bound<'_, PyAny>>,
        folios: bool,
        nofault: bool,
        write: bool,
        longterm: bool,
    ) -> PyResult<Pins> {
        let offset = crate::opt_size_arg("offset", offset)?.unwrap_or(0);
        let length = crate::opt_size_arg("length", length)?;
        let (offset, len) = self.span(offset, length)?;
        if len == 0 {
            return Err(invalid("nothing to pin: the length is 0"));
        }
        let first = offset - offset % PAGE_SIZE;
        let nr_pages = (offset + len - first).div_ceil(PAGE_SIZE);
        let addr = self.addr + first as usize;
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
        let device = Arc::clone(&self.device);
        if folios {
            self.detached(py, |m| m.pin_user_folios(addr, nr_pages, flags))?
                .map(|p| Pins::from_folios(p, device))
                .map_err(errors::dax)
        } else {
            self.detached(py, |m| m.pin_user_pages(addr, nr_pages, flags))?
                .map(|p| Pins::from_pages(p, device))
                .map_err(errors::dax)
        }
    }

    /// Names who is told when memory under this mapping fails: `callback(notice)` is called
    /// with a dict (mapping, pfn, addr, length, shift, action_required) from the thread that
    /// handles the error, when the kernel's rules pick this mapping: an error reported with
    /// `memory_failure_at(addr, action_required=True)` at an address of this mapping
    /// (action_required set), or, with `early_kill` (`PR_MCE_KILL_EARLY`), any error in a leaf
    /// it has (action_required clear). Otherwise it learns of the loss when it touches it.
    /// An exception the callback raises is reported as unraisable. TypeError if `callback` is
    /// not callable (checked now, not when memory fails).
    #[pyo3(signature = (callback, early_kill = false))]
    fn on_poison(&self, py: Python<'_>, callback: Py<PyAny>, early_kill: bool) -> PyResult<()> {
        if !callback.bind(py).is_callable() {
            return Err(PyTypeError::new_err(format!(
                "on_poison needs a callable taking the notice dict, not {}: pass a function \
                 or a bound method such as list.append",
                callback.bind(py).get_type().name()?
            )));
        }
        let owner = move |n: &PoisonNotice| {
            Python::attach(|py| {
                let r = notice_dict(py, n).and_then(|d| callback.call1(py, (d,)));
                if let Err(e) = r {
                    e.write_unraisable(py, None);
                }
            });
        };
        self.with(|m| {
            m.set_owner(Arc::new(owner));
            m.set_early_kill(early_kill);
            Ok(())
        })
    }

    /// Unmaps: refused with BufferError while a memoryview of the mapping is alive. Pins taken
    /// through it stay. Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = self.state.write();
        let live = self.exports.load(Ordering::SeqCst);
        if live > 0 && state.is_some() {
            return Err(PyBufferError::new_err(format!(
                "{live} memoryview(s) of this mapping are still alive: release them \
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
            "<devmap.Mapping id={} addr={:#x} length={} offset={}{}>",
            self.id,
            self.addr,
            self.len,
            self.offset,
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// Fills `view` with `window`'s bytes for the buffer protocol (one-dimensional, unsigned bytes,
/// writable: the bytes are shared device memory, writable by design, as an mmap of them is in
/// C) and counts the export in `exports`. What `Mapping` and `ClientMapping` export.
///
/// # Safety
///
/// `view` is the `Py_buffer` Python handed to `obj`'s `__getbuffer__` slot. `window` stays
/// mapped while `exports` is non-zero and while `obj` lives (the export holds a reference to
/// `obj`, `view.obj`, which `PyBuffer_FillInfo` sets), and nothing can unmap it between this
/// call and the count.
pub(crate) unsafe fn export_window(
    obj: &Bound<'_, PyAny>,
    view: *mut ffi::Py_buffer,
    flags: c_int,
    window: &devmap::backing::Mmap,
    exports: &std::sync::atomic::AtomicUsize,
) -> PyResult<()> {
    let len = ffi::Py_ssize_t::try_from(window.len())
        .map_err(|_| PyBufferError::new_err("the mapping is too large for a buffer"))?;
    let buf = window.as_ptr().as_ptr().cast::<c_void>();
    // SAFETY: as the caller promises: `view` is Python's to fill, and `buf`/`len` are a window
    // that outlives the export.
    let rc = unsafe { ffi::PyBuffer_FillInfo(view, obj.as_ptr(), buf, len, 0, flags) };
    if rc != 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    exports.fetch_add(1, Ordering::SeqCst);
    Ok(())
}
