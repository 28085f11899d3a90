//! Memory errors: `memory_failure` by pfn and by address, the device's badblocks list,
//! clearing poison, and reads that report lost bytes instead of dying of SIGBUS.

use std::ffi::{c_int, c_void};

use devmap::Pfn;
use devmap::memory_failure::{HandledBy, MfFlags, MfReport, memory_failure, memory_failure_at};

use crate::device::{devmap_device, devmap_space};
use crate::error::{Result, call, fill, handle, nonnull, out_array};
use crate::mapping::devmap_mapping;

/// `memory_failure` flag: an access met the error (`MF_ACTION_REQUIRED`), as opposed to a
/// scrub finding it. With `devmap_memory_failure_at`, the mapping holding the address is the
/// current one (its owner gets `BUS_MCEERR_AR`).
pub const DEVMAP_MF_ACTION_REQUIRED: u32 = 1 << 0;
/// `memory_failure` flag, devmap's own: flag and record the page even if nothing ever mapped
/// its folio, where the kernel (and devmap without it) returns -EBUSY and flags nothing. For
/// errors known before anything maps the device.
pub const DEVMAP_MF_RECORD_UNMAPPED: u32 = 1 << 1;
/// `memory_failure` flag, devmap's own: tell every mapping that lost the page, with
/// `DEVMAP_MF_ACTION_REQUIRED` as passed, instead of the current and early-kill ones.
pub const DEVMAP_MF_TELL_ALL: u32 = 1 << 2;

/// The error was handled by the pgmap's own callback (fsdax).
pub const DEVMAP_MF_HANDLED_BY_CALLBACK: u32 = 0;
/// The error was handled by the generic path: the leaf revoked from every mapping that had it.
pub const DEVMAP_MF_HANDLED_BY_GENERIC: u32 = 1;

/// What `devmap_memory_failure` and `devmap_memory_failure_at` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct devmap_mf_report {
    /// The failed 4 KiB page.
    pub pfn: u64,
    /// The head of its folio.
    pub head: u64,
    /// `DEVMAP_MF_HANDLED_BY_*`.
    pub handled_by: u32,
    /// Mappings that had the leaf and lost it (all of it, or the poisoned page).
    pub nr_mappings: u32,
    /// Bytes the mappings lost, summed over them: 4 KiB each at PAGE granularity, the leaf at
    /// LEAF.
    pub lost_bytes: u64,
    /// Pins on the folio when the error was handled: they stay (DMA cannot be revoked).
    pub pins: u32,
    /// Nanoseconds from the call until every mapping was revoked and told.
    pub elapsed_ns: u64,
}

/// One range of bad bytes of a device.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct devmap_badblock {
    /// Byte offset in the device.
    pub offset: u64,
    /// Bytes (a multiple of 4 KiB).
    pub len: u64,
}

/// The library's flags from `DEVMAP_MF_*`.
fn mf_flags(flags: u32) -> Result<MfFlags> {
    let known = [
        (DEVMAP_MF_ACTION_REQUIRED, MfFlags::ACTION_REQUIRED),
        (DEVMAP_MF_RECORD_UNMAPPED, MfFlags::RECORD_UNMAPPED),
        (DEVMAP_MF_TELL_ALL, MfFlags::TELL_ALL),
    ];
    let all = known.iter().fold(0, |acc, (bit, _)| acc | bit);
    if flags & !all != 0 {
        return Err(crate::error::Failure::invalid(format!(
            "memory-failure flags {flags:#x} hold bits that are not DEVMAP_MF_*"
        )));
    }
    Ok(known
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .fold(MfFlags::NONE, |acc, (_, f)| acc | *f))
}

/// Stores `report` in `out` if it is not null.
///
/// # Safety
///
/// `out` must be NULL or writable.
unsafe fn put_report(out: *mut devmap_mf_report, r: &MfReport) {
    if out.is_null() {
        return;
    }
    let report = devmap_mf_report {
        pfn: r.pfn.raw(),
        head: r.head.raw(),
        handled_by: match r.handled_by {
            HandledBy::Callback => DEVMAP_MF_HANDLED_BY_CALLBACK,
            HandledBy::Generic => DEVMAP_MF_HANDLED_BY_GENERIC,
        },
        nr_mappings: r.revoked.len() as u32,
        lost_bytes: r.revoked.iter().map(|n| n.len()).sum(),
        pins: r.pins,
        elapsed_ns: r.elapsed.as_nanos() as u64,
    };
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { out.write(report) };
}

/// `memory_failure(pfn, flags)`: handles a memory error in the 4 KiB page `pfn` of `space`,
/// in the kernel's order: flags the page hwpoisoned, revokes it from every mapping that has
/// its leaf (4 KiB at PAGE granularity, the leaf at LEAF), and records it in the device's
/// badblocks list. A later touch of the lost bytes raises SIGBUS; `devmap_read_mc` reports
/// them instead. A page poisoned already is handled again (0), as the kernel handles device
/// pages. Stores what was done in `*out_report` (may be NULL).
///
/// Returns 0; -ENXIO (no live device holds the pfn, or it holds memmap, not data);
/// -EBUSY (nothing ever mapped the page's folio, so nothing was flagged: pass
/// `DEVMAP_MF_RECORD_UNMAPPED` to flag and record it anyway); -EINVAL (unknown flags);
/// -EFAULT (NULL `space`). Thread-safe.
///
/// # Safety
///
/// `space` must be NULL or a live space handle, `out_report` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_memory_failure(
    space: *const devmap_space,
    pfn: u64,
    flags: u32,
    out_report: *mut devmap_mf_report,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let space = unsafe { handle(space, "space") }?;
        let report = memory_failure(space.space(), Pfn::new(pfn), mf_flags(flags)?)?;
        // SAFETY: the caller promises NULL or writable.
        unsafe { put_report(out_report, &report) };
        Ok(())
    })
}

/// As `devmap_memory_failure` for the page at user address `addr` of any live device-dax
/// mapping of the process (an error reported by address, as a SIGBUS is).
///
/// Returns 0; -EFAULT (no live mapping holds `addr`); -ENXIO; -EBUSY; -EINVAL (unknown
/// flags). Thread-safe.
///
/// # Safety
///
/// `out_report` must be NULL or writable. `addr` is only looked up, never dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_memory_failure_at(
    addr: *const c_void,
    flags: u32,
    out_report: *mut devmap_mf_report,
) -> c_int {
    call(|| {
        let report = memory_failure_at(addr as usize, mf_flags(flags)?)?;
        // SAFETY: the caller promises NULL or writable.
        unsafe { put_report(out_report, &report) };
        Ok(())
    })
}

/// Clears the poison of device bytes `[offset, offset + len)` (multiples of 4 KiB) once
/// their owner has rewritten or discarded them (`ndctl clear-errors`): the pages' poison,
/// their badblocks entries, and every mapping's markers, so the next touch maps them again.
/// Stores how many pages were poisoned in `*out_cleared` (may be NULL).
///
/// Returns 0, -EFAULT, -EINVAL (unaligned or past the end). Thread-safe.
///
/// # Safety
///
/// `dev` must be NULL or a live device handle, `out_cleared` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_clear_poison(
    dev: *const devmap_device,
    offset: u64,
    len: u64,
    out_cleared: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let d = unsafe { handle(dev, "dev") }?.dev();
        let cleared = d.clear_poison(offset, len)?;
        if !out_cleared.is_null() {
            // SAFETY: non-null, and the caller promises it is writable.
            unsafe { out_cleared.write(cleared) };
        }
        Ok(())
    })
}

/// Copies the device's bad byte ranges (merged, in offset order: every page reported and
/// not cleared) into `out` (`cap` entries; NULL when `cap` is 0) and stores their count in
/// `*out_len`; -ENOSPC with the first `cap` copied if `cap` is too small.
///
/// Returns 0, -ENOSPC, -EFAULT. Thread-safe.
///
/// # Safety
///
/// `dev` must be NULL or a live device handle; `out` NULL or `cap` writable entries;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_badblocks(
    dev: *const devmap_device,
    out: *mut devmap_badblock,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let d = unsafe { handle(dev, "dev") }?.dev();
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable entries at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let bad = d.badblocks();
        let entries = bad
            .iter()
            .map(|&(offset, len)| devmap_badblock { offset, len });
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(bad.len(), entries, out, out_len) }
    })
}

/// Copies `len` bytes at byte `offset` of the mapping into `buf`, or copies nothing and
/// returns -EHWPOISON if any of them is lost to a memory error: a read that cannot die of
/// SIGBUS (the kernel's `copy_mc`). Leaves not faulted in are faulted first.
///
/// Returns 0; -EHWPOISON; -EFAULT (NULL `map`, NULL `buf` with `len` > 0, or a range outside
/// the mapping); -ENXIO (torn down). Thread-safe.
///
/// # Safety
///
/// `map` must be NULL or a live mapping handle; `buf` NULL or `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_read_mc(
    map: *const devmap_mapping,
    offset: u64,
    buf: *mut c_void,
    len: usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let m = unsafe { handle(map, "map") }?.map();
        let buf: &mut [u8] = if len == 0 {
            &mut []
        } else {
            let p = nonnull(buf.cast::<u8>(), "buf")?;
            // SAFETY: non-null, and the caller promises `len` writable bytes that nothing
            // else touches during the call. Bytes are valid whatever they hold.
            unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) }
        };
        Ok(m.read_mc(offset, buf)?)
    })
}
