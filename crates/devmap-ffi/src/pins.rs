//! Pins by user address, in folio-range form (one entry per folio) and page-array form (one
//! entry per 4 KiB page), and their unpin.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use devmap::{ByAddress, ExtentLimits, Folios, GupFlags, Pages, Pinned};

use crate::device::devmap_device;
use crate::errno;
use crate::error::{Failure, Result, call, fill, handle, nonnull, out_array};
use crate::mapping::devmap_mapping;

/// Pin flag: the caller will write to the pages (`FOLL_WRITE`).
pub const DEVMAP_PIN_WRITE: u32 = 1 << 0;
/// Pin flag: the pin may last indefinitely (`FOLL_LONGTERM`).
pub const DEVMAP_PIN_LONGTERM: u32 = 1 << 1;
/// Pin flag: fault nothing in (`FOLL_NOFAULT`): the pin fails with -EFAULT on a leaf not
/// faulted in.
pub const DEVMAP_PIN_NOFAULT: u32 = 1 << 3;

/// One pinned folio, or the part of it a pin covers: what a VFIO or RDMA registration takes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct devmap_folio {
    /// User address of the first pinned page.
    pub addr: usize,
    /// Pfn of the first pinned page.
    pub pfn: u64,
    /// Pfn of the folio's head.
    pub head: u64,
    /// The folio's order (0 = 4 KiB, 9 = 2 MiB, 18 = 1 GiB).
    pub order: u32,
    /// Pages pinned in this folio, from `pfn`.
    pub nr_pages: u64,
}

/// One pinned 4 KiB page.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct devmap_page {
    /// Its user address.
    pub addr: usize,
    /// Its pfn.
    pub pfn: u64,
}

/// Pins taken by `devmap_pin_folios` or `devmap_pin_pages`: held until `devmap_unpin`. They
/// hold their device (not their mapping: pins outlive the mapping, as DMA does).
#[derive(Debug)]
pub struct devmap_pins {
    // Declared before `device`, so the pins go before the device can.
    pins: Pins,
    device: Arc<devmap_device>,
}

/// One contiguous piece of pinned memory, ready for `VFIO_IOMMU_MAP_DMA` or `ibv_reg_mr`:
/// user address, device offset and pfn all run on for `len` bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct devmap_extent {
    /// User address of the first byte.
    pub addr: usize,
    /// Device byte offset of the first byte.
    pub offset: u64,
    /// Pfn of the first byte.
    pub pfn: u64,
    /// Bytes (a multiple of 4 KiB).
    pub len: u64,
}

/// What a pinned device holds now (`devmap_device_pin_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct devmap_pin_stats {
    /// Bytes of the folios with at least one pin, each counted once, whole.
    pub pinned_bytes: u64,
    /// Pin references, one per page per pin call, as the kernel counts them.
    pub pin_refs: u64,
    /// `pin_refs` x 4 KiB: what an accounting that charges every pin would charge.
    pub referenced_bytes: u64,
}

/// The two forms.
#[derive(Debug)]
enum Pins {
    Folios(Pinned<Folios, ByAddress>),
    Pages(Pinned<Pages, ByAddress>),
}

impl devmap_pins {
    /// The folio-range pins, or -EINVAL for page-array pins.
    pub(crate) fn folios(&self) -> Result<&Pinned<Folios, ByAddress>> {
        match &self.pins {
            Pins::Folios(f) => Ok(f),
            Pins::Pages(_) => Err(Failure::new(
                errno::own::WRONG_FORM,
                "these pins are in page-array form (devmap_pin_pages): use devmap_pins_pages",
            )),
        }
    }

    /// The page-array pins, or -EINVAL for folio-range pins.
    pub(crate) fn pages(&self) -> Result<&Pinned<Pages, ByAddress>> {
        match &self.pins {
            Pins::Pages(p) => Ok(p),
            Pins::Folios(_) => Err(Failure::new(
                errno::own::WRONG_FORM,
                "these pins are in folio-range form (devmap_pin_folios): use devmap_pins_folios",
            )),
        }
    }
}

/// The library's flags from `DEVMAP_PIN_*`.
pub(crate) fn gup_flags(flags: u32) -> Result<GupFlags> {
    let known = DEVMAP_PIN_WRITE | DEVMAP_PIN_LONGTERM | DEVMAP_PIN_NOFAULT;
    if flags & !known != 0 {
        return Err(Failure::invalid(format!(
            "pin flags {flags:#x} hold bits that are not DEVMAP_PIN_*"
        )));
    }
    let mut out = GupFlags::NONE;
    for (bit, flag) in [
        (DEVMAP_PIN_WRITE, GupFlags::WRITE),
        (DEVMAP_PIN_LONGTERM, GupFlags::LONGTERM),
        (DEVMAP_PIN_NOFAULT, GupFlags::NOFAULT),
    ] {
        if flags & bit != 0 {
            out = out | flag;
        }
    }
    Ok(out)
}

/// Pins and stores the handle.
///
/// # Safety
///
/// As for `devmap_pin_folios`.
unsafe fn pin(
    map: *const devmap_mapping,
    out: *mut *mut devmap_pins,
    flags: u32,
    take: impl FnOnce(&devmap_mapping, GupFlags) -> Result<Pins>,
) -> Result<()> {
    // SAFETY: the caller promises NULL or a live handle.
    let m = unsafe { handle(map, "map") }?;
    let out = nonnull(out, "out")?;
    let pins = take(m, gup_flags(flags)?)?;
    let handle = Box::new(devmap_pins {
        pins,
        device: Arc::clone(m.device()),
    });
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { out.write(Box::into_raw(handle)) };
    Ok(())
}

/// `pin_user_pages_fast` in folio-range form: pins the `nr_pages` 4 KiB pages from `addr`
/// (rounded down to its page; the range must lie in the mapping), faulting in every leaf not
/// yet faulted unless `DEVMAP_PIN_NOFAULT`, one reference update per folio; stores the pins'
/// handle in `*out`. Read the entries with `devmap_pins_folios` (or `devmap_pins_extents`).
///
/// Ownership: the caller owns the pins and gives them back with `devmap_unpin`, which frees
/// the handle. They hold the device and outlive the mapping (DMA keeps going after munmap).
/// Thread-safety: the mapping may be pinned from several threads at once; a pins handle may
/// be read from several threads at once, and must not be read while it is being unpinned.
///
/// Returns 0; -EFAULT (a NULL pointer, an `addr` outside the mapping or a range running past
/// its end, a hole with `DEVMAP_PIN_NOFAULT`); -EINVAL (unknown flags, `nr_pages` 0);
/// -EHWPOISON (a folio holding a poisoned page); -ENXIO (the device is being torn down). On
/// error nothing stays pinned.
///
/// # Safety
///
/// `map` must be NULL or a live mapping handle, `out` NULL or a writable `devmap_pins *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_pin_folios(
    map: *const devmap_mapping,
    addr: *const c_void,
    nr_pages: u64,
    flags: u32,
    out: *mut *mut devmap_pins,
) -> c_int {
    call(|| {
        // SAFETY: this function's contract is `pin`'s.
        unsafe {
            pin(map, out, flags, |m, flags| {
                Ok(Pins::Folios(m.map().pin_user_folios(
                    addr as usize,
                    nr_pages,
                    flags,
                )?))
            })
        }
    })
}

/// As `devmap_pin_folios`, in page-array form: one entry per 4 KiB page, read with
/// `devmap_pins_pages`. Ownership, thread-safety and errors as for `devmap_pin_folios`.
///
/// # Safety
///
/// As for `devmap_pin_folios`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_pin_pages(
    map: *const devmap_mapping,
    addr: *const c_void,
    nr_pages: u64,
    flags: u32,
    out: *mut *mut devmap_pins,
) -> c_int {
    call(|| {
        // SAFETY: this function's contract is `pin`'s.
        unsafe {
            pin(map, out, flags, |m, flags| {
                Ok(Pins::Pages(m.map().pin_user_pages(
                    addr as usize,
                    nr_pages,
                    flags,
                )?))
            })
        }
    })
}

/// Copies the folio entries of folio-range pins into `out` (`cap` entries; `out` may be NULL
/// when `cap` is 0) and stores how many there are in `*out_len`. If `cap` is too small the
/// first `cap` are copied and -ENOSPC is returned, `*out_len` still the count needed.
///
/// Returns 0, -ENOSPC, -EFAULT, or -EINVAL for page-array pins. Thread-safe (reads only).
///
/// # Safety
///
/// `pins` must be NULL or a live pins handle; `out` NULL or `cap` writable entries;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_pins_folios(
    pins: *const devmap_pins,
    out: *mut devmap_folio,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let f = unsafe { handle(pins, "pins") }?.folios()?;
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable entries at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let entries = f.with_addresses().map(|(addr, f)| devmap_folio {
            addr,
            pfn: f.range().start().raw(),
            head: f.head().raw(),
            order: f.order().get(),
            nr_pages: f.range().len(),
        });
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(f.len(), entries, out, out_len) }
    })
}

/// Copies the page entries of page-array pins into `out`, as `devmap_pins_folios` does for
/// folios.
///
/// Returns 0, -ENOSPC, -EFAULT, or -EINVAL for folio-range pins. Thread-safe (reads only).
///
/// # Safety
///
/// As for `devmap_pins_folios`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_pins_pages(
    pins: *const devmap_pins,
    out: *mut devmap_page,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let p = unsafe { handle(pins, "pins") }?.pages()?;
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable entries at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let entries = p.with_addresses().map(|(addr, pfn)| devmap_page {
            addr,
            pfn: pfn.raw(),
        });
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(p.len(), entries, out, out_len) }
    })
}

/// Stores the number of 4 KiB pages the pins hold in `*out` (either form).
///
/// Returns 0 or -EFAULT. Thread-safe (reads only).
///
/// # Safety
///
/// `pins` must be NULL or a live pins handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_pins_nr_pages(pins: *const devmap_pins, out: *mut u64) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let p = unsafe { handle(pins, "pins") }?;
        let out = nonnull(out, "out")?;
        let n = match &p.pins {
            Pins::Folios(f) => f.nr_pages(),
            Pins::Pages(p) => p.len() as u64,
        };
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(n) };
        Ok(())
    })
}

/// `unpin_user_pages_dirty_lock`: gives every pin back, marking each folio dirty once if
/// `make_dirty`, and frees the handle (either form).
///
/// Returns 0, or -EFAULT for NULL. Must be the last call on `pins`: not concurrent with any
/// other call on the same handle.
///
/// # Safety
///
/// `pins` must be NULL or a pins handle not yet unpinned; it must not be used after this
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_unpin(pins: *mut devmap_pins, make_dirty: bool) -> c_int {
    call(|| {
        let pins = nonnull(pins, "pins")?;
        // SAFETY: the caller gives back the box `devmap_pin_*` made.
        let devmap_pins { pins, device } = *unsafe { Box::from_raw(pins.as_ptr()) };
        match pins {
            Pins::Folios(f) => f.unpin(make_dirty),
            Pins::Pages(p) => p.unpin(make_dirty),
        }
        drop(device);
        Ok(())
    })
}

/// Exports the pins (either form) as the fewest contiguous extents, in address order, for a
/// DMA registration: neighbouring folios merge when user address, device offset and pfn all
/// run on, up to `max_bytes` each (0 = no cap), cut only between folios; at most
/// `max_extents` of them (0 = no limit). Copies them into `out` (`cap` entries; NULL when
/// `cap` is 0) and stores their count in `*out_len`; if `cap` is too small the first `cap`
/// are copied, -ENOSPC is returned and `*out_len` is the count needed.
///
/// Returns 0; -ENOSPC (array too small); -E2BIG (more than `max_extents` needed: nothing is
/// copied, `*out_len` untouched); -EINVAL (`max_bytes` below the pinned part of one folio:
/// extents are never cut inside a folio); -EFAULT. Thread-safe (reads only). One pass over
/// the folios, no descriptor read.
///
/// # Safety
///
/// `pins` must be NULL or a live pins handle; `out` NULL or `cap` writable entries;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_pins_extents(
    pins: *const devmap_pins,
    max_extents: usize,
    max_bytes: u64,
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
        let limits = ExtentLimits::new(max_extents, max_bytes);
        let extents = match &p.pins {
            Pins::Folios(f) => f.extents(limits),
            Pins::Pages(p) => p.extents(limits),
        }
        .map_err(Failure::from)?;
        let entries = extents.iter().map(|e| devmap_extent {
            addr: e.addr,
            offset: e.offset,
            pfn: e.pfn.raw(),
            len: e.len,
        });
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(extents.len(), entries, out, out_len) }
    })
}

/// Stores what is pinned on the device now in `*out`: counted by walking its folios (no
/// lock, nothing written; O(folios)), a snapshot that pins taken or dropped meanwhile may or
/// may not be in. For sizing `RLIMIT_MEMLOCK` or an IOMMU budget, not for every pin.
///
/// Returns 0 or -EFAULT. Thread-safe.
///
/// # Safety
///
/// `dev` must be NULL or a live device handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_pin_stats(
    dev: *const devmap_device,
    out: *mut devmap_pin_stats,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let d = unsafe { handle(dev, "dev") }?.dev();
        let out = nonnull(out, "out")?;
        let s = d.pin_stats();
        let stats = devmap_pin_stats {
            pinned_bytes: s.pinned_bytes,
            pin_refs: s.pin_refs,
            referenced_bytes: s.referenced_bytes,
        };
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(stats) };
        Ok(())
    })
}
