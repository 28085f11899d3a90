//! What the service tells a C client without its asking, and the memory error a C client can
//! report: `devmap_client_notices` copies out the notices (a mapping revoked by a forced
//! disable, a pin dropped with it, memory lost under a mapping), which name a mapping or pins
//! by the handle `devmap_client_mapping_handle` and `devmap_client_pins_handle` give; and
//! `devmap_client_inject_error` reports a memory error on a served namespace, as `ndctl
//! inject-error` does; `devmap_client_enable` and `devmap_client_disable` have the service
//! enable and disable a namespace.

use std::ffi::{c_char, c_int};

use crate::client::{devmap_client, devmap_client_mapping, devmap_client_pins};
use crate::error::{call, handle, nonnull, out_array, utf8};

/// A notice: a mapping was taken from this client (a forced disable, the service stopping);
/// every access to it raises SIGBUS.
pub const DEVMAP_NOTICE_MAPPING_REVOKED: u32 = 1;
/// A notice: a pin was dropped (a forced disable).
pub const DEVMAP_NOTICE_PIN_DROPPED: u32 = 2;
/// A notice: memory under a mapping failed; `len` bytes at `addr` are lost (SIGBUS there).
pub const DEVMAP_NOTICE_MEMORY_LOST: u32 = 3;

/// One notice from the service.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct devmap_notice {
    /// `DEVMAP_NOTICE_*`.
    pub what: u32,
    /// The handle of the mapping or pins it concerns (`devmap_client_mapping_handle`,
    /// `devmap_client_pins_handle`).
    pub handle: u32,
    /// This process's address of the first byte concerned.
    pub addr: u64,
    /// Bytes concerned.
    pub len: u64,
    /// The pfn of the first byte concerned, or 0.
    pub pfn: u64,
}

/// Stores what an injected or reported error did in `*out`, unless `out` is NULL.
///
/// # Safety
///
/// `out` must be NULL or writable.
unsafe fn store_injected(out: *mut devmap_injected, done: &devmap::service::proto::Injected) {
    if !out.is_null() {
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe {
            out.write(devmap_injected {
                pages: done.pages,
                revoked: done.revoked,
                told: done.told,
                elapsed_ns: done.elapsed_ns,
            })
        };
    }
}

/// What `devmap_client_inject_error` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct devmap_injected {
    /// Pages poisoned.
    pub pages: u32,
    /// Mappings that lost a page, summed over the pages.
    pub revoked: u32,
    /// Owners told, summed over the pages.
    pub told: u32,
    /// Nanoseconds until the last page was revoked everywhere and every owner told.
    pub elapsed_ns: u64,
}

/// Copies up to `cap` of the notices the service sent this connection unasked, oldest first,
/// into `out` (NULL when `cap` is 0), and stores how many it copied in `*out_len`; those not
/// copied stay for the next call, so call until `*out_len` is 0. Notices arrive between
/// replies: this reads any waiting on the socket without blocking.
///
/// Returns 0; -EFAULT; -EPIPE / -ECONNRESET if the service is gone. Thread-safe.
///
/// # Safety
///
/// `client` must be NULL or a live connection handle; `out` NULL or `cap` writable entries;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_notices(
    client: *const devmap_client,
    out: *mut devmap_notice,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let c = unsafe { handle(client, "client") }?;
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable entries at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let mut pending = c.pending.lock();
        pending.extend(c.client.notices()?);
        let n = pending.len().min(out.len());
        for (slot, notice) in out.iter_mut().zip(pending.drain(..n)) {
            slot.write(devmap_notice {
                what: u32::from(notice.what),
                handle: notice.handle,
                addr: notice.addr,
                len: notice.len,
                pfn: notice.pfn,
            });
        }
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { out_len.write(n) };
        Ok(())
    })
}

/// Stores the service's handle of the mapping, as a notice names it, in `*out`.
///
/// Returns 0 or -EFAULT. Thread-safe (reads only).
///
/// # Safety
///
/// `map` must be NULL or a live mapping handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_mapping_handle(
    map: *const devmap_client_mapping,
    out: *mut u32,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let m = unsafe { handle(map, "map") }?;
        let out = nonnull(out, "out")?;
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(m.map.handle()) };
        Ok(())
    })
}

/// Stores the service's handle of the pins, as a notice names it, in `*out`: 0 for fast pins
/// (`devmap_client_pins_is_fast`), which a notice names by their mapping's address.
///
/// Returns 0 or -EFAULT. Thread-safe (reads only).
///
/// # Safety
///
/// `pins` must be NULL or a live pins handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_pins_handle(
    pins: *const devmap_client_pins,
    out: *mut u32,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let p = unsafe { handle(pins, "pins") }?;
        let out = nonnull(out, "out")?;
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(p.pins.handle()) };
        Ok(())
    })
}

/// Reports a memory error this process met at `addr` of the mapping `map` (its
/// `BUS_MCEERR_AR` SIGBUS; call it from a thread, not the signal handler): the service handles
/// it as `memory_failure` with this mapping current, so every client mapping the page loses
/// it and is told, this one too (`DEVMAP_NOTICE_MEMORY_LOST` at `addr`'s page). Stores what it
/// did in `*out` (NULL: not stored).
///
/// Returns 0; -EFAULT; -EINVAL (`addr` outside the mapping); -EBADF (the mapping was taken by
/// a forced disable); -EPIPE / -ECONNRESET (the service is gone). Thread-safe.
///
/// # Safety
///
/// `map` must be NULL or a live mapping handle; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_report_error(
    map: *const devmap_client_mapping,
    addr: *const std::ffi::c_void,
    out: *mut devmap_injected,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let m = unsafe { handle(map, "map") }?;
        let done = m.map.report_memory_error(addr as usize)?;
        // SAFETY: the caller promises `out` is NULL or writable.
        unsafe { store_injected(out, &done) };
        Ok(())
    })
}

/// Reports a memory error on `count` pages from byte `offset` (a multiple of 4 KiB) of the
/// served namespace `name` (of the region file `region`; NULL or "": the one served region
/// holding it), as `ndctl inject-error` does: every client mapping the pages loses them
/// (SIGBUS at each on its next touch) and is told with a `DEVMAP_NOTICE_MEMORY_LOST` at its
/// own address; the pages are recorded in the namespace's badblocks. Stores what it did in
/// `*out` (NULL: not stored).
///
/// Returns 0; -EFAULT; -EINVAL (an offset off a page, a count of 0, pages past the data);
/// -ENOENT; -ENXIO (not enabled); -EPIPE / -ECONNRESET (the service is gone). Thread-safe.
///
/// # Safety
///
/// `client` must be NULL or a live connection handle; `region` NULL or a NUL-terminated
/// string; `name` a NUL-terminated string; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_inject_error(
    client: *const devmap_client,
    region: *const c_char,
    name: *const c_char,
    offset: u64,
    count: u64,
    out: *mut devmap_injected,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let c = unsafe { handle(client, "client") }?;
        // SAFETY: the caller promises NULL or a NUL-terminated string.
        let region = unsafe { opt_utf8(region, "region") }?;
        // SAFETY: the caller promises a NUL-terminated string.
        let name = unsafe { utf8(name, "name") }?;
        let done = c.client.inject_error(region, name, offset, count)?;
        // SAFETY: the caller promises `out` is NULL or writable.
        unsafe { store_injected(out, &done) };
        Ok(())
    })
}

/// Enables the namespace `name` of the region file `region` (NULL or "": the one served region
/// holding it) in the service, which keeps it enabled for its clients until a disable or its
/// end; stores in `*warm` (NULL: not stored) whether the enable adopted the memmap a clean
/// disable left. A namespace enabled already is left as it is.
///
/// Returns 0; -EFAULT; -ENOENT; -EINVAL (several regions hold the name: name the region);
/// -EBUSY (enabled by another process); -EPIPE / -ECONNRESET (the service is gone).
/// Thread-safe.
///
/// # Safety
///
/// `client` must be NULL or a live connection handle; `region` NULL or a NUL-terminated
/// string; `name` a NUL-terminated string; `warm` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_enable(
    client: *const devmap_client,
    region: *const c_char,
    name: *const c_char,
    warm: *mut bool,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let c = unsafe { handle(client, "client") }?;
        // SAFETY: the caller promises NULL or a NUL-terminated string.
        let region = unsafe { opt_utf8(region, "region") }?;
        // SAFETY: the caller promises a NUL-terminated string.
        let name = unsafe { utf8(name, "name") }?;
        let was_warm = c.client.enable(region, name)?;
        if !warm.is_null() {
            // SAFETY: non-null, and the caller promises it is writable.
            unsafe { warm.write(was_warm) };
        }
        Ok(())
    })
}

/// Disables the namespace `name` (of `region`, as for `devmap_client_enable`) in the service.
/// While clients map or pin it the service refuses (-EBUSY, the message naming their pids)
/// unless `force`, which takes their mappings and pins and tells each client.
///
/// Returns 0; -EFAULT; -ENOENT; -ENXIO (not enabled); -EBUSY; -EPIPE / -ECONNRESET.
/// Thread-safe.
///
/// # Safety
///
/// `client` must be NULL or a live connection handle; `region` NULL or a NUL-terminated
/// string; `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_disable(
    client: *const devmap_client,
    region: *const c_char,
    name: *const c_char,
    force: bool,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let c = unsafe { handle(client, "client") }?;
        // SAFETY: the caller promises NULL or a NUL-terminated string.
        let region = unsafe { opt_utf8(region, "region") }?;
        // SAFETY: the caller promises a NUL-terminated string.
        let name = unsafe { utf8(name, "name") }?;
        Ok(c.client.disable(region, name, force)?)
    })
}

/// A string argument that may be NULL (or empty: the same for the service).
///
/// # Safety
///
/// `p` must be NULL or a NUL-terminated string valid for `'a`.
unsafe fn opt_utf8<'a>(p: *const c_char, what: &str) -> crate::error::Result<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string.
    unsafe { utf8(p, what) }.map(Some)
}
