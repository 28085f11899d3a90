//! Device spaces and device-dax devices over the four backings (their mappings are in
//! `mapping.rs`).

use std::ffi::{c_char, c_int};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use devmap::backing::{Backing, HugePageSize};
use devmap::dax::{DaxOptions, Faults, Granularity};
use devmap::namespace::EnabledNamespace;
use devmap::{DaxDevice, DeviceSpace, InitMode, Layout, Order};

use crate::error::{Failure, Result, call, call_void, handle, nonnull, path};

/// Descriptor layout: one 64-byte descriptor per 4 KiB page (16 GiB per TiB).
pub const DEVMAP_LAYOUT_FLAT: u32 = 0;
/// Descriptor layout: the kernel's vmemmap with tail-page dedup (4 GiB per TiB at 2 MiB).
pub const DEVMAP_LAYOUT_VMEMMAP: u32 = 1;
/// Descriptor layout: one descriptor per folio, tails computed (32 MiB per TiB at 2 MiB).
pub const DEVMAP_LAYOUT_HEADS: u32 = 2;

/// Memmap initialisation on the calling thread.
pub const DEVMAP_INIT_SYNC: u32 = 0;
/// Memmap initialisation on `init_threads` threads (the caller's included) before the call
/// returns.
pub const DEVMAP_INIT_PARALLEL: u32 = 1;
/// Memmap initialisation in the background on `init_threads` threads; every lookup first
/// initialises what it needs, so the device is usable at once.
pub const DEVMAP_INIT_ASYNC: u32 = 2;

/// Touches caught with userfaultfd where the backing supports it (memfd, hugetlb), else
/// faulted explicitly.
pub const DEVMAP_FAULTS_AUTO: u32 = 0;
/// Touches caught with userfaultfd; refused (`-EOPNOTSUPP`) for files and device-dax.
pub const DEVMAP_FAULTS_USERFAULTFD: u32 = 1;
/// Touches are never caught: the kernel maps the backing's bytes at a touch, and every leaf's
/// metadata is faulted in when a mapping is made (as for a file device).
pub const DEVMAP_FAULTS_EXPLICIT: u32 = 2;

/// A 4 KiB memory error costs every mapping only the 4 KiB page (memfd devices that catch
/// touches; elsewhere the whole leaf).
pub const DEVMAP_GRANULARITY_PAGE: u32 = 0;
/// A 4 KiB memory error costs every mapping the whole leaf it is in (the kernel's).
pub const DEVMAP_GRANULARITY_LEAF: u32 = 1;

/// How to build a device: fill it with `devmap_device_options_init`, then change fields. Its
/// size is part of the ABI: ABI 2 appended `fault_around` and `zero_ahead`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct devmap_device_options {
    /// Size of every folio and every fault, in bytes: 4096, 2097152 (2 MiB) or 1073741824
    /// (1 GiB).
    pub align: u64,
    /// `DEVMAP_LAYOUT_*`.
    pub layout: u32,
    /// `DEVMAP_INIT_*`.
    pub init: u32,
    /// Threads for `DEVMAP_INIT_PARALLEL` and `DEVMAP_INIT_ASYNC`; 0 = one per core; at most
    /// 1024 or the cores, whichever is more (-EINVAL above).
    pub init_threads: u32,
    /// `DEVMAP_FAULTS_*`.
    pub faults: u32,
    /// Threads serving caught touches: 1 to 256 (-EINVAL otherwise, as in Python).
    pub handlers: u32,
    /// `DEVMAP_GRANULARITY_*`.
    pub granularity: u32,
    /// The most 4 KiB leaves a caught touch faults in at once (fault-around: the touched leaf
    /// and its neighbours, the window growing on sequential touches): a power of two from 1
    /// (off) to 512 (-EINVAL otherwise); 128 by default. Ignored at larger aligns and where
    /// touches are not caught.
    pub fault_around: u32,
    /// Leaves allocated and zeroed ahead of sequential touchers by a background thread, at
    /// most: 0 (off, the default) to 1 GiB of leaves (512 at 2 MiB, 1 at 1 GiB); a caught
    /// touch maps the ready leaves after its own with it. -EINVAL above that, at a 4096 align, and on a device that does not catch touches (a file,
    /// device-dax or namespace device, or `DEVMAP_FAULTS_EXPLICIT`).
    pub zero_ahead: u32,
}

/// What `devmap_device_get_info` reports. ABI 2 appended the three zero-ahead counts.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct devmap_device_info {
    /// Bytes of the device.
    pub size: u64,
    /// The device align in bytes.
    pub align: u64,
    /// Live mappings of the device.
    pub nr_mappings: u64,
    /// Leaves faulted in so far, by any path.
    pub leaves_mapped: u64,
    /// Whether touches are caught with userfaultfd.
    pub catches_touches: bool,
    /// Whether no teardown has begun (or the last timed one gave up).
    pub is_live: bool,
    /// `DEVMAP_GRANULARITY_*` in effect (the one asked for, or LEAF where PAGE cannot apply).
    pub granularity: u32,
    /// Leaves the zero-ahead pool allocated and zeroed before their touch (`zero_ahead`).
    pub zeroed_ahead: u64,
    /// Leaves a fault took ready from the pool: a caught touch's own, or one mapped after it.
    pub zero_ahead_hits: u64,
    /// Leaves the pool could not allocate ahead (no huge page or memory left); their touches
    /// allocate them as without the pool.
    pub zero_ahead_failed: u64,
}

/// A device space: the pfn space devices are placed in, and what `devmap_memory_failure`
/// looks pfns up in. Reference-counted: every device made in it holds it.
#[derive(Debug)]
pub struct devmap_space {
    space: DeviceSpace,
}

/// A device-dax device. The handle is one reference; each mapping and each pin handle made
/// from it holds another, so the device is torn down when the last of them is freed. The
/// library device holds its space itself (a handle, not a borrow), so the C space handle may
/// be freed first.
#[derive(Debug)]
pub struct devmap_device {
    served: Served,
}

/// What a device handle serves: a device of its own, or a namespace of a region enabled as
/// one (`devmap_namespace_enable`).
#[derive(Debug)]
enum Served {
    Device(DaxDevice),
    /// Boxed: an enabled namespace carries its label and region path, several times a device.
    Namespace(Box<EnabledNamespace>),
}

impl devmap_space {
    /// The space.
    pub(crate) fn space(&self) -> &DeviceSpace {
        &self.space
    }
}

impl devmap_device {
    /// The device.
    pub(crate) fn dev(&self) -> &DaxDevice {
        match &self.served {
            Served::Device(d) => d,
            Served::Namespace(ns) => ns.device(),
        }
    }

    /// The enabled namespace the handle serves, if it serves one.
    pub(crate) fn namespace(&self) -> Option<&EnabledNamespace> {
        match &self.served {
            Served::Namespace(ns) => Some(ns),
            Served::Device(_) => None,
        }
    }

    /// Hands the enabled namespace to `disable`. A handle that serves no namespace is
    /// dropped, and `-EINVAL` returned.
    pub(crate) fn disable(
        self,
        disable: impl FnOnce(EnabledNamespace) -> Result<()>,
    ) -> Result<()> {
        match self.served {
            Served::Namespace(ns) => disable(*ns),
            Served::Device(d) => {
                drop(d);
                Err(Failure::invalid("the device is not an enabled namespace"))
            }
        }
    }
}

/// A device handle serving an enabled namespace.
pub(crate) fn enabled(ns: EnabledNamespace) -> devmap_device {
    devmap_device {
        served: Served::Namespace(Box::new(ns)),
    }
}

/// The C options of `opts` (the library's defaults, for `devmap_device_options_init`), with
/// `align` as given and threads left to the library (0).
fn c_options(align: u64, opts: &DaxOptions) -> devmap_device_options {
    devmap_device_options {
        align,
        layout: match opts.layout {
            Layout::Flat => DEVMAP_LAYOUT_FLAT,
            Layout::Vmemmap => DEVMAP_LAYOUT_VMEMMAP,
            Layout::Heads => DEVMAP_LAYOUT_HEADS,
        },
        init: match opts.init {
            InitMode::Sync => DEVMAP_INIT_SYNC,
            InitMode::Parallel { .. } => DEVMAP_INIT_PARALLEL,
            InitMode::Async { .. } => DEVMAP_INIT_ASYNC,
        },
        init_threads: 0,
        faults: match opts.faults {
            Faults::Auto => DEVMAP_FAULTS_AUTO,
            Faults::Userfaultfd => DEVMAP_FAULTS_USERFAULTFD,
            Faults::Explicit => DEVMAP_FAULTS_EXPLICIT,
        },
        handlers: u32::try_from(opts.handlers).unwrap_or(u32::MAX),
        granularity: match opts.granularity {
            Granularity::Page => DEVMAP_GRANULARITY_PAGE,
            Granularity::Leaf => DEVMAP_GRANULARITY_LEAF,
        },
        fault_around: u32::try_from(opts.fault_around).unwrap_or(u32::MAX),
        zero_ahead: u32::try_from(opts.zero_ahead).unwrap_or(u32::MAX),
    }
}

/// A C count as a `usize`, or `-EINVAL` naming `what` (never on a 32- or 64-bit target).
fn count(value: u32, what: &str) -> Result<usize> {
    usize::try_from(value).map_err(|_| Failure::invalid(format!("{what} {value} is too large")))
}

/// The library's options from the C ones, each field checked.
pub(crate) fn options(o: &devmap_device_options) -> Result<DaxOptions> {
    let align = Order::from_bytes(o.align)?;
    if ![Order::BASE, Order::PMD, Order::PUD].contains(&align) {
        return Err(Failure::invalid(format!(
            "align {} is not 4096, 2 MiB or 1 GiB",
            o.align
        )));
    }
    let mut opts = DaxOptions::new(align);
    opts.layout = match o.layout {
        DEVMAP_LAYOUT_FLAT => Layout::Flat,
        DEVMAP_LAYOUT_VMEMMAP => Layout::Vmemmap,
        DEVMAP_LAYOUT_HEADS => Layout::Heads,
        other => return Err(Failure::invalid(format!("unknown layout {other}"))),
    };
    let threads = NonZeroUsize::new(o.init_threads as usize);
    opts.init = match (o.init, threads) {
        (DEVMAP_INIT_SYNC, _) => InitMode::Sync,
        (DEVMAP_INIT_PARALLEL, None) => InitMode::parallel_default(),
        (DEVMAP_INIT_PARALLEL, Some(threads)) => InitMode::Parallel { threads },
        (DEVMAP_INIT_ASYNC, None) => InitMode::async_default(),
        (DEVMAP_INIT_ASYNC, Some(workers)) => InitMode::Async { workers },
        (other, _) => return Err(Failure::invalid(format!("unknown init mode {other}"))),
    };
    opts.faults = match o.faults {
        DEVMAP_FAULTS_AUTO => Faults::Auto,
        DEVMAP_FAULTS_USERFAULTFD => Faults::Userfaultfd,
        DEVMAP_FAULTS_EXPLICIT => Faults::Explicit,
        other => return Err(Failure::invalid(format!("unknown faults mode {other}"))),
    };
    opts.handlers = o.handlers as usize;
    opts.granularity = match o.granularity {
        DEVMAP_GRANULARITY_PAGE => Granularity::Page,
        DEVMAP_GRANULARITY_LEAF => Granularity::Leaf,
        other => return Err(Failure::invalid(format!("unknown granularity {other}"))),
    };
    opts.fault_around = count(o.fault_around, "fault_around")?;
    opts.zero_ahead = count(o.zero_ahead, "zero_ahead")?;
    opts.validate()?;
    Ok(opts)
}

/// Fills `*out` with the default options for a device of `align` bytes (4096, 2 MiB or
/// 1 GiB): Heads layout, parallel init on every core, touches caught where possible, one
/// handler thread per core, PAGE granularity, a fault-around window of 128 leaves, no leaves
/// zeroed ahead. The align is checked when the device is made.
///
/// Returns 0, or -EFAULT if `out` is NULL. Thread-safe.
///
/// # Safety
///
/// `out` must be NULL or point to a writable `devmap_device_options`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_options_init(
    align: u64,
    out: *mut devmap_device_options,
) -> c_int {
    call(|| {
        let out = nonnull(out, "out")?;
        let value = c_options(align, &DaxOptions::new(Order::BASE));
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(value) };
        Ok(())
    })
}

/// Makes an empty device space and stores a handle to it in `*out`.
///
/// Ownership: the caller owns the handle and releases it with `devmap_space_free`; devices
/// made in the space hold it too, so it may be freed before them.
/// Thread-safety: a space may be used from several threads at once.
///
/// Returns 0, or -EFAULT if `out` is NULL.
///
/// # Safety
///
/// `out` must be NULL or point to a writable `devmap_space *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_space_new(out: *mut *mut devmap_space) -> c_int {
    call(|| {
        let out = nonnull(out, "out")?;
        let space = Arc::new(devmap_space {
            space: DeviceSpace::new(),
        });
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(Arc::into_raw(space).cast_mut()) };
        Ok(())
    })
}

/// Releases the caller's reference to a space (NULL is ignored). The space goes when no
/// device holds it either.
///
/// Thread-safety: not concurrently with any other call on this handle.
/// # Safety
///
/// `space` must be NULL or a handle from `devmap_space_new` not yet freed; it must not be
/// used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_space_free(space: *mut devmap_space) {
    call_void(|| {
        if !space.is_null() {
            // SAFETY: the caller gives back the reference `devmap_space_new` made.
            drop(unsafe { Arc::from_raw(space.cast_const()) });
        }
    });
}

/// Makes the device and stores its handle.
///
/// # Safety
///
/// `space`, `opts` and `out` as for `devmap_device_create_memfd`.
unsafe fn create(
    space: *const devmap_space,
    opts: *const devmap_device_options,
    out: *mut *mut devmap_device,
    backing: impl FnOnce() -> Result<Backing>,
) -> Result<()> {
    // SAFETY: the caller promises `opts` is NULL or readable.
    let opts = options(unsafe { handle(opts, "opts") }?)?;
    let out = nonnull(out, "out")?;
    // SAFETY: the caller promises `space` is NULL or a live handle.
    let space = unsafe { handle(space, "space") }?;
    let backing = backing()?;
    let device = Arc::new(devmap_device {
        served: Served::Device(DaxDevice::with_options(space.space(), backing, opts)?),
    });
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { out.write(Arc::into_raw(device).cast_mut()) };
    Ok(())
}

/// Makes a device-dax device over a new sparse memfd of `size` bytes (a multiple of the
/// align) in `space`, and stores its handle in `*out`.
///
/// Ownership: the caller owns the handle and releases it with `devmap_device_free`, in any
/// order with the mappings and pins made from it: each holds the device, which is torn down
/// when the last of them is freed.
/// Thread-safety: a device may be used from several threads at once.
///
/// Returns 0; -EFAULT for a NULL pointer; -EINVAL for bad options or a size that is not a
/// multiple of the align; -ENOMEM, or the system's errno, if the memfd cannot be made.
///
/// # Safety
///
/// `space` must be NULL or a live space handle, `opts` NULL or a readable options struct,
/// `out` NULL or a writable `devmap_device *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_create_memfd(
    space: *const devmap_space,
    size: u64,
    opts: *const devmap_device_options,
    out: *mut *mut devmap_device,
) -> c_int {
    // SAFETY: this function's contract is `create`'s.
    call(|| unsafe { create(space, opts, out, || Ok(Backing::memfd(size)?)) })
}

/// Makes a device over a new hugetlb memfd of `size` bytes with huge pages of `page_size`
/// bytes (2 MiB or 1 GiB; the align must be at least that), and stores its handle in `*out`.
/// The pages come from the kernel's pool (`/proc/sys/vm/nr_hugepages`): a short pool shows
/// as -ENOMEM when the device is mapped.
///
/// Ownership and thread-safety as for `devmap_device_create_memfd`.
///
/// Returns 0, -EFAULT, -EINVAL (a page size not 2 MiB or 1 GiB, a size not a multiple of
/// it), or the system's errno.
///
/// # Safety
///
/// As for `devmap_device_create_memfd`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_create_hugetlb(
    space: *const devmap_space,
    size: u64,
    page_size: u64,
    opts: *const devmap_device_options,
    out: *mut *mut devmap_device,
) -> c_int {
    // SAFETY: this function's contract is `create`'s.
    call(|| unsafe {
        create(space, opts, out, || {
            let page = match page_size {
                x if x == Order::PMD.bytes() => HugePageSize::Size2M,
                x if x == Order::PUD.bytes() => HugePageSize::Size1G,
                other => {
                    return Err(Failure::invalid(format!(
                        "huge page size {other} is not 2 MiB or 1 GiB"
                    )));
                }
            };
            Ok(Backing::hugetlb(size, page)?)
        })
    })
}

/// Makes a device over the regular file at `path` and stores its handle in `*out`: with
/// `size` 0 the file must exist and its length is the device's size; otherwise a new sparse
/// file of `size` bytes is created (-EEXIST if the path exists). A file device does not
/// catch touches: the metadata of every leaf of a mapping is faulted in when the mapping is
/// made, and a touch maps the bytes.
///
/// Ownership and thread-safety as for `devmap_device_create_memfd`.
///
/// Returns 0, -EFAULT, -EINVAL, or the system's errno (-ENOENT, -EEXIST, -EACCES, ...).
///
/// # Safety
///
/// As for `devmap_device_create_memfd`, and `path` must be NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_create_file(
    space: *const devmap_space,
    path: *const c_char,
    size: u64,
    opts: *const devmap_device_options,
    out: *mut *mut devmap_device,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let path: &Path = unsafe { self::path(path, "path") }?;
        // SAFETY: this function's contract is `create`'s.
        unsafe {
            create(space, opts, out, || {
                Ok(if size == 0 {
                    Backing::open_file(path)?
                } else {
                    Backing::create_file(path, size)?
                })
            })
        }
    })
}

/// Makes a device over the device-dax character device at `path` (e.g. `/dev/dax0.0`),
/// whose size is the device's, and stores its handle in `*out`. Touches are not caught, as
/// for files.
///
/// Ownership and thread-safety as for `devmap_device_create_memfd`.
///
/// Returns 0, -EFAULT, -EINVAL, -ENODEV (not a device-dax device), or the system's errno.
///
/// # Safety
///
/// As for `devmap_device_create_file`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_create_devdax(
    space: *const devmap_space,
    path: *const c_char,
    opts: *const devmap_device_options,
    out: *mut *mut devmap_device,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let path: &Path = unsafe { self::path(path, "path") }?;
        // SAFETY: this function's contract is `create`'s.
        unsafe { create(space, opts, out, || Ok(Backing::open_devdax(path)?)) }
    })
}

/// Releases the caller's reference to a device (NULL is ignored). Once no mapping or pin
/// handle holds it either, the device is torn down: its pfns go back to the space and its
/// handler threads stop. Never blocks on the caller's own handles, whatever the order.
///
/// Thread-safety: not concurrently with any other call on this handle (other handles of the
/// same device, and other threads using them, are unaffected).
/// # Safety
///
/// `dev` must be NULL or a device handle not yet freed; it must not be used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_free(dev: *mut devmap_device) {
    call_void(|| {
        if !dev.is_null() {
            // SAFETY: the caller gives back the reference the create function made.
            drop(unsafe { Arc::from_raw(dev.cast_const()) });
        }
    });
}

/// A new reference to the device behind `dev`.
///
/// # Safety
///
/// `dev` must be NULL or a live device handle.
pub(crate) unsafe fn device_ref(dev: *const devmap_device) -> Result<Arc<devmap_device>> {
    nonnull(dev.cast_mut(), "dev")?;
    // SAFETY: a live handle is a pointer from `Arc::into_raw` whose reference the caller
    // holds: counting one more and taking it leaves the caller's untouched.
    unsafe {
        Arc::increment_strong_count(dev);
        Ok(Arc::from_raw(dev))
    }
}

/// Stores what the device is in `*out`.
///
/// Returns 0 or -EFAULT. Thread-safe.
///
/// # Safety
///
/// `dev` must be NULL or a live device handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_get_info(
    dev: *const devmap_device,
    out: *mut devmap_device_info,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let d = unsafe { handle(dev, "dev") }?.dev();
        let out = nonnull(out, "out")?;
        let faults = d.fault_stats();
        let info = devmap_device_info {
            size: d.size(),
            align: d.align().bytes(),
            nr_mappings: d.nr_mappings() as u64,
            leaves_mapped: faults.leaves_mapped,
            catches_touches: d.catches_touches(),
            is_live: d.is_live(),
            granularity: match d.granularity() {
                Granularity::Page => DEVMAP_GRANULARITY_PAGE,
                _ => DEVMAP_GRANULARITY_LEAF,
            },
            zeroed_ahead: faults.zeroed_ahead,
            zero_ahead_hits: faults.zero_ahead_hits,
            zero_ahead_failed: faults.zero_ahead_failed,
        };
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(info) };
        Ok(())
    })
}

/// Stores in `*out_pfn` the pfn holding byte `offset` of the device (what
/// `devmap_memory_failure` takes).
///
/// Returns 0, -EFAULT, or -EINVAL for an offset past the device's end. Thread-safe.
///
/// # Safety
///
/// `dev` must be NULL or a live device handle, `out_pfn` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_pfn_at(
    dev: *const devmap_device,
    offset: u64,
    out_pfn: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let d = unsafe { handle(dev, "dev") }?.dev();
        let out = nonnull(out_pfn, "out_pfn")?;
        let pfn = d.pfn_at(offset).ok_or_else(|| {
            Failure::invalid(format!(
                "offset {offset} is past the end of the device ({} bytes)",
                d.size()
            ))
        })?;
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(pfn.raw()) };
        Ok(())
    })
}

/// Tears the device down now, waiting up to `timeout_ms` milliseconds for its mappings and
/// pins to go (it does not free the handle: call `devmap_device_free` after). From the start
/// of the call, new mappings, faults and pins fail with -ENXIO.
///
/// Returns 0 (also when torn down already); -EBUSY if mappings or pins remain when the time
/// is up, and the device stays live; -EFAULT. Thread-safe.
///
/// # Safety
///
/// `dev` must be NULL or a live device handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_device_close(dev: *const devmap_device, timeout_ms: u64) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let d = unsafe { handle(dev, "dev") }?.dev();
        Ok(d.close(Some(Duration::from_millis(timeout_ms)))?)
    })
}
