//! A client of `devmap serve` from C: `devmap_client` (a connection to the service's socket),
//! `devmap_client_ns` (a namespace opened through it), `devmap_client_mapping` (a window of
//! that namespace mapped in this process, its first touches resolved by the service) and
//! `devmap_client_pins` (pages pinned in the service by client address, with the extents to
//! register for DMA). Each wraps the library's `devmap::client` object, which holds its
//! connection, so the handles may be freed in any order: the connection closes when the last
//! of them goes.

use std::ffi::{c_char, c_int, c_void};

use devmap::client::{Client, Mapping, Namespace, Pins};

use crate::error::{Result, call, call_void, fill, handle, nonnull, out_array, path, utf8};
use crate::pins::{devmap_extent, gup_flags};

/// A connection to a running `devmap serve`. Requests on one connection are sent and
/// answered one at a time (concurrent calls wait for each other).
#[derive(Debug)]
pub struct devmap_client {
    pub(crate) client: Client,
    /// Notices taken from the connection and not yet copied out (`devmap_client_notices`).
    pub(crate) pending: parking_lot::Mutex<Vec<devmap::service::proto::Notice>>,
}

/// A namespace opened through the service: the file its bytes live in, ready to be mapped.
/// It holds its connection.
#[derive(Debug)]
pub struct devmap_client_ns {
    ns: Namespace,
}

/// A window of a served namespace mapped in this process (shared with every other client's
/// window of the same bytes) and attached in the service. It holds its connection.
#[derive(Debug)]
pub struct devmap_client_mapping {
    pub(crate) map: Mapping,
}

/// Pages pinned in the service for this client, with the extents to register for DMA. They
/// hold their connection; the service unpins them when that connection ends.
#[derive(Debug)]
pub struct devmap_client_pins {
    pub(crate) pins: Pins,
}

/// What `devmap_client_ns_get_info` reports.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct devmap_client_ns_info {
    /// Bytes a mapping can cover (the namespace's data bytes).
    pub size: u64,
    /// The align in bytes: offsets and lengths of mappings are multiples of it, and mappings
    /// are placed at addresses aligned to it.
    pub align: u64,
    /// Whether the service resolves this namespace's first touches (its region is on tmpfs);
    /// else every leaf's metadata is set when a window is mapped.
    pub caught: bool,
}

/// Connects to the service listening on the Unix socket `socket` (the `--socket` of
/// `devmap serve`) and stores the connection's handle in `*out`. A watcher thread of the
/// connection fences every mapping of it if the service goes away, so that a touch the
/// service would have resolved raises SIGBUS instead of waiting for ever.
///
/// Ownership: the caller owns the handle and releases it with `devmap_client_free`; the
/// namespaces, mappings and pins made through it hold the connection too.
/// Thread-safety: a connection may be used from several threads at once (requests are
/// serialised).
///
/// Returns 0; -EFAULT for a NULL `socket` or `out`; -ENOENT, -ECONNREFUSED or the system's
/// errno if nothing listens on `socket` (is `devmap serve --socket PATH` running?).
///
/// # Safety
///
/// `socket` must be NULL or a NUL-terminated string; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_connect(
    socket: *const c_char,
    out: *mut *mut devmap_client,
) -> c_int {
    call(|| {
        let out = nonnull(out, "out")?;
        // SAFETY: the caller promises NULL or a NUL-terminated string.
        let socket = unsafe { path(socket, "socket") }?;
        let client = Client::connect(socket)?;
        let pending = parking_lot::Mutex::new(Vec::new());
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(Box::into_raw(Box::new(devmap_client { client, pending }))) };
        Ok(())
    })
}

/// Frees a connection handle (NULL is ignored). The connection closes once the namespaces,
/// mappings and pins made through it are freed too.
///
/// Thread-safety: not concurrently with any other call on this handle.
/// # Safety
///
/// `client` must be NULL or a handle from `devmap_client_connect` not yet freed; it must
/// not be used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_free(client: *mut devmap_client) {
    call_void(|| {
        if !client.is_null() {
            // SAFETY: the caller gives back the box `devmap_client_connect` made.
            drop(unsafe { Box::from_raw(client) });
        }
    });
}

/// Asks the service what it holds (its clients, and per enabled namespace its mappings, pins
/// and faults served) as NUL-terminated JSON: copies it into `out` (`cap` bytes; NULL when
/// `cap` is 0) and stores its length, NUL included, in `*out_len`. If `cap` is too small the
/// first `cap` bytes are copied (not NUL-terminated), -ENOSPC is returned and `*out_len` is
/// the size needed: call again with that (each call asks the service again, and the status
/// may have grown meanwhile: loop while -ENOSPC).
///
/// Returns 0; -ENOSPC; -EFAULT; the service's errno, or -EPIPE / -ECONNRESET if it is gone.
/// Thread-safe.
///
/// # Safety
///
/// `client` must be NULL or a live connection handle; `out` NULL or `cap` writable bytes;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_status(
    client: *const devmap_client,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let c = unsafe { handle(client, "client") }?;
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable bytes at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let json = c.client.status()?;
        let bytes = json.bytes().chain([0]).map(|b| b as c_char);
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(json.len() + 1, bytes, out, out_len) }
    })
}

/// Opens the enabled namespace `name` of the region file `region` (NULL or "": the one served
/// region holding it) and stores its handle in `*out`. The service passes the file the
/// namespace's bytes live in; nothing is mapped yet.
///
/// Ownership: the caller owns the handle and releases it with `devmap_client_ns_free`; it
/// holds the connection, so the connection handle may be freed first.
/// Thread-safety: a namespace handle may be used from several threads at once.
///
/// Returns 0; -EFAULT (NULL `client`, `name` or `out`); -EINVAL (a string not UTF-8, or a
/// name several served regions hold: name the region); -ENOENT (no served region has it);
/// -ENXIO (not enabled: `devmap serve --enable NAME`); -EPIPE / -ECONNRESET (the service is
/// gone).
///
/// # Safety
///
/// `client` must be NULL or a live connection handle; `region` NULL or a NUL-terminated
/// string; `name` NULL or a NUL-terminated string; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_open(
    client: *const devmap_client,
    region: *const c_char,
    name: *const c_char,
    out: *mut *mut devmap_client_ns,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let c = unsafe { handle(client, "client") }?;
        let out = nonnull(out, "out")?;
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let name = unsafe { utf8(name, "name") }?;
        let region = if region.is_null() {
            None
        } else {
            // SAFETY: non-null, and the caller promises a NUL-terminated string.
            Some(unsafe { utf8(region, "region") }?)
        };
        let ns = c.client.open(region, name)?;
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(Box::into_raw(Box::new(devmap_client_ns { ns }))) };
        Ok(())
    })
}

/// Frees a namespace handle (NULL is ignored). Mappings made from it stay valid.
///
/// Thread-safety: not concurrently with any other call on this handle.
/// # Safety
///
/// `ns` must be NULL or a handle from `devmap_client_open` not yet freed; it must not be
/// used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_ns_free(ns: *mut devmap_client_ns) {
    call_void(|| {
        if !ns.is_null() {
            // SAFETY: the caller gives back the box `devmap_client_open` made.
            drop(unsafe { Box::from_raw(ns) });
        }
    });
}

/// Stores the namespace's size, align and whether the service resolves its touches in
/// `*out`.
///
/// Returns 0 or -EFAULT. Thread-safe.
///
/// # Safety
///
/// `ns` must be NULL or a live namespace handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_ns_get_info(
    ns: *const devmap_client_ns,
    out: *mut devmap_client_ns_info,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let ns = &unsafe { handle(ns, "ns") }?.ns;
        let out = nonnull(out, "out")?;
        let info = devmap_client_ns_info {
            size: ns.size(),
            align: ns.align(),
            caught: ns.caught(),
        };
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(info) };
        Ok(())
    })
}

/// Maps `len` bytes of the namespace from byte `offset` (both multiples of its align), shared,
/// at an address aligned to the align, and attaches the window in the service; stores the
/// mapping's handle in `*out_map`, and its address and length in `*out_addr` and `*out_len`
/// (each may be NULL). Every client's window of the same bytes sees the same memory. Where the
/// service resolves touches, the first touch of each leaf waits for it; if the service goes
/// away, every access to the window raises SIGBUS.
///
/// Ownership: the caller owns the mapping and releases it with `devmap_client_mapping_free`,
/// which detaches it in the service and unmaps it; it holds the connection, so the namespace
/// and connection handles may be freed first.
/// Thread-safety: a mapping may be used from several threads at once.
///
/// Returns 0; -EFAULT for a NULL `ns` or `out_map`; -EINVAL for an offset or length not a
/// multiple of the align, zero, or past the end (the message says what would fit); -ENXIO if
/// the namespace was disabled; -ENOMEM or the system's errno if the window cannot be mapped
/// or registered with a userfaultfd; -EPIPE / -ECONNRESET if the service is gone.
///
/// # Safety
///
/// `ns` must be NULL or a live namespace handle; `out_map`, `out_addr`, `out_len` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_map(
    ns: *const devmap_client_ns,
    offset: u64,
    len: u64,
    out_map: *mut *mut devmap_client_mapping,
    out_addr: *mut *mut c_void,
    out_len: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let ns = &unsafe { handle(ns, "ns") }?.ns;
        let out_map = nonnull(out_map, "out_map")?;
        let map = ns.map(offset, len)?;
        let (addr, mapped) = (map.addr(), map.len());
        let handle = Box::new(devmap_client_mapping { map });
        // SAFETY: each pointer is non-null (checked) or skipped when null, and the caller
        // promises the non-null ones are writable.
        unsafe {
            out_map.write(Box::into_raw(handle));
            if !out_addr.is_null() {
                out_addr.write(addr as *mut c_void);
            }
            if !out_len.is_null() {
                out_len.write(mapped);
            }
        }
        Ok(())
    })
}

/// Frees the handle (NULL is ignored); the mapping is detached in the service, then unmapped,
/// once every pins handle taken through it is unpinned as well (a pin keeps its mapping, as
/// the kernel keeps pinned pages past a `munmap`; here the addresses stay mapped until then).
/// The caller must not touch the mapping's addresses after this.
///
/// Thread-safety: not concurrently with any other call on this handle, nor with touches of
/// its addresses.
/// # Safety
///
/// `map` must be NULL or a handle from `devmap_client_map` not yet freed; it must not be
/// used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_mapping_free(map: *mut devmap_client_mapping) {
    call_void(|| {
        if !map.is_null() {
            // SAFETY: the caller gives back the box `devmap_client_map` made.
            drop(unsafe { Box::from_raw(map) });
        }
    });
}

/// Pins `nr_pages` 4 KiB pages from `addr` (rounded down to its page; the range must lie in
/// the mapping) in the service, as `pin_user_pages_fast` would: leaves not yet faulted are
/// faulted first unless `DEVMAP_PIN_NOFAULT`; `flags` are `DEVMAP_PIN_*`. With `folios` the
/// service holds them one entry per folio, else one per page (the extents are the same).
/// Stores the pins' handle in `*out`; read them with `devmap_client_pins_extents`.
///
/// Ownership: the caller owns the pins and gives them back with `devmap_client_unpin`, which
/// frees the handle. They hold the connection and outlive the mapping; the service drops them
/// when this client's connection ends.
/// Thread-safety: a mapping may be pinned from several threads at once; a pins handle may be
/// read from several threads at once, and must not be read while it is being unpinned.
///
/// Returns 0; -EFAULT (a NULL pointer, an `addr` outside the mapping or a range running past
/// its end, a hole with `DEVMAP_PIN_NOFAULT`); -EINVAL (unknown flags, `nr_pages` 0);
/// -E2BIG (more extents than one reply carries: pin less at once); -EHWPOISON (a poisoned
/// page); -EPIPE / -ECONNRESET (the service is gone). On error nothing stays pinned.
///
/// # Safety
///
/// `map` must be NULL or a live mapping handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_pin(
    map: *const devmap_client_mapping,
    addr: *const c_void,
    nr_pages: u64,
    flags: u32,
    folios: bool,
    out: *mut *mut devmap_client_pins,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let m = &unsafe { handle(map, "map") }?.map;
        let out = nonnull(out, "out")?;
        let pins = m.pin(addr as usize, nr_pages, gup_flags(flags)?, folios)?;
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(Box::into_raw(Box::new(devmap_client_pins { pins }))) };
        Ok(())
    })
}

/// Stores the number of 4 KiB pages the pins hold in `*out`.
///
/// Returns 0 or -EFAULT. Thread-safe (reads only).
///
/// # Safety
///
/// `pins` must be NULL or a live pins handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_pins_nr_pages(
    pins: *const devmap_client_pins,
    out: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let p = unsafe { handle(pins, "pins") }?;
        let out = nonnull(out, "out")?;
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(p.pins.nr_pages()) };
        Ok(())
    })
}

/// Stores 1 in `*out` if the pins were taken in this process with no request (fast pins,
/// DESIGN §9.5: their handle is 0, and a forced disable names them by their mapping's
/// address), else 0.
///
/// Returns 0 or -EFAULT. Thread-safe (reads only).
///
/// # Safety
///
/// `pins` must be NULL or a live pins handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_pins_is_fast(
    pins: *const devmap_client_pins,
    out: *mut c_int,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let p = unsafe { handle(pins, "pins") }?;
        let out = nonnull(out, "out")?;
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(c_int::from(p.pins.is_fast())) };
        Ok(())
    })
}

/// Copies the pins' extents, as the service reported them (the fewest covering exactly the
/// pinned bytes, in address order; client address, namespace offset and pfn run on through
/// each), into `out` (`cap` entries; NULL when `cap` is 0) and stores their count in
/// `*out_len`. If `cap` is too small the first `cap` are copied, -ENOSPC is returned and
/// `*out_len` is the count needed. An extent's `offset` is a namespace offset.
///
/// Returns 0, -ENOSPC or -EFAULT. Thread-safe (reads only; no request is sent).
///
/// # Safety
///
/// `pins` must be NULL or a live pins handle; `out` NULL or `cap` writable entries;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_pins_extents(
    pins: *const devmap_client_pins,
    out: *mut devmap_extent,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let p = unsafe { handle(pins, "pins") }?;
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable entries at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let extents = p.pins.extents();
        let entries = extents.iter().map(|e| devmap_extent {
            addr: e.addr as usize,
            offset: e.offset,
            pfn: e.pfn,
            len: e.len,
        });
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(extents.len(), entries, out, out_len) }
    })
}

/// Gives the pins back in the service, marking each folio dirty once first if `make_dirty`,
/// and frees the handle, whatever the answer (a service gone has dropped the pins already).
///
/// Returns 0; -EFAULT for NULL; the service's errno, or -EPIPE / -ECONNRESET if it is gone
/// (the handle is freed all the same). Must be the last call on `pins`: not concurrent with
/// any other call on the same handle.
///
/// # Safety
///
/// `pins` must be NULL or a pins handle not yet unpinned; it must not be used after this
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_unpin(
    pins: *mut devmap_client_pins,
    make_dirty: bool,
) -> c_int {
    call(|| -> Result<()> {
        let pins = nonnull(pins, "pins")?;
        // SAFETY: the caller gives back the box `devmap_client_pin` made.
        let devmap_client_pins { pins } = *unsafe { Box::from_raw(pins.as_ptr()) };
        pins.unpin(make_dirty)?;
        Ok(())
    })
}
