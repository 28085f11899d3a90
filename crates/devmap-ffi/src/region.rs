//! Regions and namespaces on disk: a region file holds namespaces, each with its label and
//! info block, as `devmap create-region`, `create-namespace`, `list` and `destroy-namespace`
//! make and read them, and enabling a namespace as a device and disabling it again
//! (`enable-namespace`, `disable-namespace`).

use std::ffi::{c_char, c_int};
use std::sync::Arc;

use devmap::dax::DaxOptions;
use devmap::namespace::{Access, EnablePath, Region};
use devmap::{MemmapLocation, NamespaceMode, Order};
use parking_lot::Mutex;

use crate::device::{devmap_device, devmap_device_options, devmap_space, enabled, options};
use crate::errno;
use crate::error::{
    Failure, Result, call, call_void, fill, handle, nonnull, out_array, path, utf8,
};

/// Open a region to list it only: no lock, so another process may manage it meanwhile.
pub const DEVMAP_REGION_READ: u32 = 0;
/// Open a region to create and destroy namespaces: takes its exclusive lock (one process at
/// a time).
pub const DEVMAP_REGION_MANAGE: u32 = 1;

/// Namespace mode: device-dax.
pub const DEVMAP_MODE_DEVDAX: u32 = 0;
/// Namespace mode: filesystem DAX.
pub const DEVMAP_MODE_FSDAX: u32 = 1;

/// Memmap location: host memory (ndctl `--map mem`).
pub const DEVMAP_MAP_MEM: u32 = 0;
/// Memmap location: on the device (ndctl `--map dev`).
pub const DEVMAP_MAP_DEV: u32 = 1;

/// An enable that initialised the memmap in host memory (`DEVMAP_MAP_MEM`, or the Vmemmap
/// layout).
pub const DEVMAP_ENABLE_HOST: u32 = 0;
/// An enable that initialised the memmap in the namespace's room on the device.
pub const DEVMAP_ENABLE_COLD: u32 = 1;
/// An enable that adopted the memmap the last clean disable left on the device: nothing
/// initialised.
pub const DEVMAP_ENABLE_WARM: u32 = 2;

/// Bytes of a namespace name, its NUL included: names are 1 to 64 bytes.
pub const DEVMAP_NAME_LEN: usize = 65;

/// An open region file. Thread-safe: calls on one region are serialised.
#[derive(Debug)]
pub struct devmap_region {
    region: Mutex<Region>,
}

/// One namespace of a region, as `devmap_namespace_list` reports it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct devmap_namespace_info {
    /// Its name, NUL-terminated.
    pub name: [c_char; DEVMAP_NAME_LEN],
    /// Bytes of the namespace, info block included.
    pub size: u64,
    /// Its align in bytes.
    pub align: u64,
    /// Its first byte in the region.
    pub offset: u64,
    /// Where its data starts, from the namespace's first byte.
    pub data_offset: u64,
    /// Bytes of data.
    pub data_bytes: u64,
    /// `DEVMAP_MODE_*`.
    pub mode: u32,
    /// `DEVMAP_MAP_*`.
    pub map: u32,
}

/// What `devmap_namespace_enable` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct devmap_enable_info {
    /// Whether the namespace had been disabled cleanly before (false after a crash, a device
    /// freed without `devmap_namespace_disable`, or on its first enable).
    pub was_clean: bool,
    /// `DEVMAP_ENABLE_*`: how the memmap was made.
    pub path: u32,
}

/// What `devmap_region_get_info` reports.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct devmap_region_info {
    /// Bytes of the region.
    pub size: u64,
    /// Namespaces in it.
    pub nr_namespaces: u64,
    /// Free bytes usable at 4 KiB alignment.
    pub available: u64,
    /// The largest namespace of 4 KiB alignment that fits (it starts on 2 MiB, as
    /// `nd_pfn_init` requires).
    pub largest: u64,
    /// `DEVMAP_REGION_READ` or `DEVMAP_REGION_MANAGE`.
    pub access: u32,
}

/// The library's mode from `DEVMAP_MODE_*`.
pub(crate) fn mode(mode: u32) -> Result<NamespaceMode> {
    match mode {
        DEVMAP_MODE_DEVDAX => Ok(NamespaceMode::Devdax),
        DEVMAP_MODE_FSDAX => Ok(NamespaceMode::Fsdax),
        other => Err(Failure::invalid(format!("unknown namespace mode {other}"))),
    }
}

/// The library's memmap location from `DEVMAP_MAP_*`.
pub(crate) fn map(map: u32) -> Result<MemmapLocation> {
    match map {
        DEVMAP_MAP_MEM => Ok(MemmapLocation::Mem),
        DEVMAP_MAP_DEV => Ok(MemmapLocation::Dev),
        other => Err(Failure::invalid(format!("unknown memmap location {other}"))),
    }
}

/// Stores a new region handle in `out`.
///
/// # Safety
///
/// `out` must be writable.
unsafe fn put(out: std::ptr::NonNull<*mut devmap_region>, region: Region) {
    let handle = Box::new(devmap_region {
        region: Mutex::new(region),
    });
    // SAFETY: non-null by its type, writable by this function's contract.
    unsafe { out.write(Box::into_raw(handle)) };
}

/// Creates a region file of `size` bytes at `path` (sparse; -EEXIST if the path exists),
/// writes its label index, and stores a managing handle to it in `*out`.
///
/// Ownership: the caller owns the handle and releases it with `devmap_region_free`, which
/// releases the region's lock.
/// Thread-safety: a region may be used from several threads at once (calls are serialised).
///
/// Returns 0, -EFAULT, -EINVAL (too small), -EEXIST, or the system's errno.
///
/// # Safety
///
/// `path` must be NULL or a NUL-terminated string, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_region_create(
    path: *const c_char,
    size: u64,
    out: *mut *mut devmap_region,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let path = unsafe { self::path(path, "path") }?;
        let out = nonnull(out, "out")?;
        let region = Region::create(path, size)?;
        // SAFETY: the caller promises `out` is writable.
        unsafe { put(out, region) };
        Ok(())
    })
}

/// Opens the region at `path` with `access` (`DEVMAP_REGION_READ` or
/// `DEVMAP_REGION_MANAGE`), validating its labels, and stores a handle in `*out`.
///
/// Ownership and thread-safety as for `devmap_region_create`.
///
/// Returns 0; -EFAULT; -EINVAL (unknown access); -ENOENT; -EBUSY (another process manages
/// it); -EPROTO (not a devmap region, or corrupt); -EOPNOTSUPP (a newer format).
///
/// # Safety
///
/// As for `devmap_region_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_region_open(
    path: *const c_char,
    access: u32,
    out: *mut *mut devmap_region,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let path = unsafe { self::path(path, "path") }?;
        let out = nonnull(out, "out")?;
        let access = match access {
            DEVMAP_REGION_READ => Access::Read,
            DEVMAP_REGION_MANAGE => Access::Manage,
            other => return Err(Failure::invalid(format!("unknown region access {other}"))),
        };
        let region = Region::open(path, access)?;
        // SAFETY: the caller promises `out` is writable.
        unsafe { put(out, region) };
        Ok(())
    })
}

/// Closes a region (NULL is ignored), releasing its lock if it was managed.
///
/// Thread-safety: not concurrently with any other call on this handle.
/// # Safety
///
/// `region` must be NULL or a region handle not yet freed; it must not be used after this
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_region_free(region: *mut devmap_region) {
    call_void(|| {
        if !region.is_null() {
            // SAFETY: the caller gives back the box `devmap_region_*` made.
            drop(unsafe { Box::from_raw(region) });
        }
    });
}

/// Stores what the region is in `*out`.
///
/// Returns 0 or -EFAULT. Thread-safe.
///
/// # Safety
///
/// `region` must be NULL or a live region handle, `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_region_get_info(
    region: *const devmap_region,
    out: *mut devmap_region_info,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let r = unsafe { handle(region, "region") }?.region.lock();
        let out = nonnull(out, "out")?;
        let (available, _) = r.free_space(devmap::PAGE_SIZE)?;
        let start = devmap::namespace::data_align(devmap::PAGE_SIZE);
        let (_, largest) = r.free_space(start)?;
        let info = devmap_region_info {
            size: r.size(),
            nr_namespaces: r.namespaces().len() as u64,
            available,
            largest,
            access: match r.access() {
                Access::Read => DEVMAP_REGION_READ,
                Access::Manage => DEVMAP_REGION_MANAGE,
            },
        };
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(info) };
        Ok(())
    })
}

/// Creates a namespace `name` (1 to 64 bytes of UTF-8) of `size` bytes (a multiple of
/// `align`: 4096, 2 MiB or 1 GiB) with `mode` (`DEVMAP_MODE_*`) and memmap location `map`
/// (`DEVMAP_MAP_*`), as `ndctl create-namespace` does: its info block, then its label.
///
/// Returns 0; -EFAULT; -EINVAL (bad name, size, align or constant); -EEXIST (name taken);
/// -ENOSPC (no room, or the region is full); -EROFS (opened read-only); the system's errno.
/// Thread-safe.
///
/// # Safety
///
/// `region` must be NULL or a live region handle, `name` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_namespace_create(
    region: *const devmap_region,
    name: *const c_char,
    size: u64,
    align: u64,
    mode: u32,
    map: u32,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let region = unsafe { handle(region, "region") }?;
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let name = unsafe { utf8(name, "name") }?;
        let (mode, map) = (self::mode(mode)?, self::map(map)?);
        region
            .region
            .lock()
            .create_namespace(name, size, align, mode, map)?;
        Ok(())
    })
}

/// Copies the region's namespaces (in offset order) into `out` (`cap` entries; NULL when
/// `cap` is 0) and stores their count in `*out_len`; -ENOSPC with the first `cap` copied if
/// `cap` is too small.
///
/// Returns 0, -ENOSPC, -EFAULT. Thread-safe.
///
/// # Safety
///
/// `region` must be NULL or a live region handle; `out` NULL or `cap` writable entries;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_namespace_list(
    region: *const devmap_region,
    out: *mut devmap_namespace_info,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let r = unsafe { handle(region, "region") }?.region.lock();
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable entries at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let labels = r.namespaces();
        let entries = labels.iter().map(|l| {
            let ns = l.namespace;
            let mut name = [0 as c_char; DEVMAP_NAME_LEN];
            for (dst, src) in name
                .iter_mut()
                .zip(l.name.bytes().take(DEVMAP_NAME_LEN - 1))
            {
                *dst = src as c_char;
            }
            devmap_namespace_info {
                name,
                size: ns.size(),
                align: ns.align(),
                offset: l.offset,
                data_offset: ns.data_offset(),
                data_bytes: ns.data_bytes(),
                mode: match ns.mode() {
                    NamespaceMode::Devdax => DEVMAP_MODE_DEVDAX,
                    NamespaceMode::Fsdax => DEVMAP_MODE_FSDAX,
                },
                map: match ns.map() {
                    MemmapLocation::Mem => DEVMAP_MAP_MEM,
                    MemmapLocation::Dev => DEVMAP_MAP_DEV,
                },
            }
        });
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(labels.len(), entries, out, out_len) }
    })
}

/// Destroys the namespace `name`: its label, then its info block (its bytes stay in the
/// file until another namespace is created over them).
///
/// Returns 0; -EFAULT; -ENOENT (no such namespace); -EROFS (opened read-only); the system's
/// errno. Thread-safe.
///
/// # Safety
///
/// As for `devmap_namespace_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_namespace_destroy(
    region: *const devmap_region,
    name: *const c_char,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let region = unsafe { handle(region, "region") }?;
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let name = unsafe { utf8(name, "name") }?;
        region.region.lock().destroy_namespace(name)?;
        Ok(())
    })
}

/// Enables the device-dax namespace `name` of a managed region as a device in `space`, as
/// `devmap enable-namespace` does: its device serves the namespace's data bytes in the region
/// file, with the namespace's align; the pages its badblocks list records are poisoned again;
/// its info block is marked in use. `opts` (NULL for the defaults) gives the layout, init,
/// faults and granularity; its `align` is ignored, and its `zero_ahead` must be 0. Stores the
/// device's handle in `*out_dev` and what the enable did in `*out_info` (may be NULL). The
/// device is a file device: it does not catch touches, and a mapping faults in every leaf's
/// metadata when it is made.
///
/// Ownership: the device handle is used like any other (mappings, pins, memory failure) and
/// given back with `devmap_namespace_disable`, which writes the bad pages and the clean mark;
/// `devmap_device_free` instead tears the device down without them, as a crash would (the
/// next enable reports `was_clean` false).
/// Thread-safety: as for any device; calls on the region are serialised.
///
/// Returns 0; -EFAULT; -EINVAL (a bad constant or option); -ENOENT (no such namespace);
/// -EROFS (opened read-only); -EOPNOTSUPP (an fsdax namespace); -EBUSY (the namespace is
/// enabled already, in any space of this process or by another process: nothing was
/// written); -EIO (the enable failed; the message says why); the system's errno.
///
/// # Safety
///
/// `region` must be NULL or a live region handle, `space` NULL or a live space handle,
/// `name` NULL or a NUL-terminated string, `opts` NULL or readable, `out_dev` NULL or
/// writable, `out_info` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_namespace_enable(
    region: *const devmap_region,
    space: *const devmap_space,
    name: *const c_char,
    opts: *const devmap_device_options,
    out_dev: *mut *mut devmap_device,
    out_info: *mut devmap_enable_info,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let region = unsafe { handle(region, "region") }?;
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let name = unsafe { utf8(name, "name") }?;
        // SAFETY: the caller promises NULL or readable.
        let opts = match unsafe { opts.as_ref() } {
            // The device is over the region file, which catches no touches, so the library
            // would refuse any zero-ahead pool; said here, before the 4 KiB align below
            // would give the wrong reason.
            Some(o) if o.zero_ahead != 0 => {
                return Err(Failure::invalid(format!(
                    "zero_ahead {} for a namespace: its device is over the region file and \
                     does not catch touches; use zero_ahead 0",
                    o.zero_ahead
                )));
            }
            // The namespace's align replaces this one: check the rest at any valid align.
            Some(o) => options(&devmap_device_options {
                align: Order::BASE.bytes(),
                ..*o
            })?,
            None => DaxOptions::new(Order::BASE),
        };
        let out_dev = nonnull(out_dev, "out_dev")?;
        // SAFETY: the caller promises NULL or a live handle.
        let space = unsafe { handle(space, "space") }?;
        let mut r = region.region.lock();
        let device = enabled(r.enable(space.space(), name, opts)?);
        let ns = device.namespace();
        let info = devmap_enable_info {
            was_clean: ns.is_some_and(|ns| ns.was_clean()),
            path: match ns.map(|ns| ns.path()) {
                Some(EnablePath::Cold) => DEVMAP_ENABLE_COLD,
                Some(EnablePath::Warm) => DEVMAP_ENABLE_WARM,
                _ => DEVMAP_ENABLE_HOST,
            },
        };
        // SAFETY: `out_dev` is non-null and `out_info` checked for null; the caller promises
        // both writable.
        unsafe {
            out_dev.write(Arc::into_raw(Arc::new(device)).cast_mut());
            if !out_info.is_null() {
                out_info.write(info);
            }
        }
        Ok(())
    })
}

/// Disables a namespace enabled by `devmap_namespace_enable` and frees its device handle, as
/// `devmap disable-namespace` does: records the device's bad pages in the namespace's
/// badblocks list, tears the device down, keeps a memmap that lives on the device for the
/// next (warm) enable, and marks the info block clean. Every mapping and pin handle of the
/// device must be freed first.
///
/// Returns 0 (the handle is freed); -EBUSY if mapping or pin handles still hold the device
/// (the handle stays valid: free them and call again); -EINVAL if `dev` is not a namespace
/// of this region (the handle stays valid); -EFAULT; otherwise a write failed (the handle is
/// freed and the device torn down; the message says what was not written). Must not run
/// concurrently with any other call on `dev`.
///
/// # Safety
///
/// `region` must be NULL or a live region handle; `dev` NULL or a live device handle, not
/// used after a call that freed it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_namespace_disable(
    region: *const devmap_region,
    dev: *mut devmap_device,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let region = unsafe { handle(region, "region") }?;
        // SAFETY: the caller promises NULL or a live handle.
        let label = unsafe { handle(dev.cast_const(), "dev") }?
            .namespace()
            .map(|ns| ns.label().clone())
            .ok_or_else(|| Failure::invalid("the device is not an enabled namespace"))?;
        let mut r = region.region.lock();
        if r.namespace(&label.name).ok() != Some(&label) {
            return Err(Failure::invalid(format!(
                "the device is not namespace {:?} of this region",
                label.name
            )));
        }
        // SAFETY: a live handle is a pointer from `Arc::into_raw` whose reference the caller
        // gives back here; if other references remain it is made a handle again, unchanged.
        let arc = unsafe { Arc::from_raw(dev.cast_const()) };
        let device = match Arc::try_unwrap(arc) {
            Ok(device) => device,
            Err(arc) => {
                let holders = Arc::strong_count(&arc) - 1;
                let _ = Arc::into_raw(arc);
                return Err(Failure::new(
                    errno::own::IN_USE,
                    format!(
                        "{holders} mapping or pin handle(s) still hold the device: free them, \
                         then disable"
                    ),
                ));
            }
        };
        device.disable(|ns| Ok(r.disable(ns)?))
    })
}
