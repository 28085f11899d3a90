//! Mappings of a device: `devmap_mmap`, `devmap_mapping_free` and `devmap_mapping_populate`.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use devmap::DaxMapping;

use crate::device::{device_ref, devmap_device};
use crate::error::{call, call_void, handle, nonnull};

/// A shared mapping of a device. It holds its device.
#[derive(Debug)]
pub struct devmap_mapping {
    // Declared before `device`, so the mapping is unmapped before the device can go.
    map: DaxMapping,
    device: Arc<devmap_device>,
}

impl devmap_mapping {
    /// The mapping.
    pub(crate) fn map(&self) -> &DaxMapping {
        &self.map
    }

    /// The device the mapping holds.
    pub(crate) fn device(&self) -> &Arc<devmap_device> {
        &self.device
    }
}

/// Maps `len` bytes of the device from byte `offset` (both multiples of the align), shared,
/// at an address aligned to the align; stores the mapping's handle in `*out_map`, and its
/// address and length in `*out_addr` and `*out_len` (each may be NULL). Where the device
/// catches touches, the first touch of each leaf runs devmap's fault path.
///
/// Ownership: the caller owns the mapping and releases it with `devmap_mapping_free`, which
/// unmaps it; the mapping holds its device, so the device handle may be freed first.
/// Thread-safety: a mapping may be used from several threads at once.
///
/// Returns 0; -EFAULT for a NULL `dev` or `out_map`; -EINVAL for an offset or length not a
/// multiple of the align, zero, or past the end; -ENXIO if the device is torn down;
/// -ENOMEM or the system's errno if the window cannot be mapped.
///
/// # Safety
///
/// `dev` must be NULL or a live device handle; `out_map`, `out_addr`, `out_len` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_mmap(
    dev: *const devmap_device,
    offset: u64,
    len: u64,
    out_map: *mut *mut devmap_mapping,
    out_addr: *mut *mut c_void,
    out_len: *mut u64,
) -> c_int {
    call(|| {
        let out_map = nonnull(out_map, "out_map")?;
        // SAFETY: the caller promises NULL or a live handle.
        let device = unsafe { device_ref(dev) }?;
        let map = device.dev().mmap(offset, len, true)?;
        let (addr, mapped) = (map.addr(), map.len());
        let handle = Box::new(devmap_mapping { map, device });
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

/// Unmaps and frees a mapping (NULL is ignored): faults running in it finish first, its
/// leaves are released, and its addresses are unmapped. Pins taken through it stay valid.
/// The caller must not touch the mapping's addresses after this.
///
/// Thread-safety: not concurrently with any other call on this handle, nor with touches of
/// its addresses.
/// # Safety
///
/// `map` must be NULL or a mapping handle not yet freed; it must not be used after this
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_mapping_free(map: *mut devmap_mapping) {
    call_void(|| {
        if !map.is_null() {
            // SAFETY: the caller gives back the box `devmap_mmap` made.
            drop(unsafe { Box::from_raw(map) });
        }
    });
}

/// Faults in every leaf that `[addr, addr + len)` touches (it must lie in the mapping),
/// stopping at the first error; stores the number of leaves faulted by this call in
/// `*out_mapped` (may be NULL). Needed before touching a file or device-dax device's bytes;
/// on a device that catches touches it maps the leaves' bytes too.
///
/// Returns 0, -EFAULT (NULL `map`, an `addr` outside the mapping, or a range running past
/// its end), -EINVAL (`len` 0), -EHWPOISON (a leaf holding a poisoned page at LEAF
/// granularity), -ENXIO (torn down). Thread-safe.
///
/// # Safety
///
/// `map` must be NULL or a live mapping handle, `out_mapped` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_mapping_populate(
    map: *const devmap_mapping,
    addr: *const c_void,
    len: u64,
    out_mapped: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let m = unsafe { handle(map, "map") }?.map();
        let done = m.populate(addr as usize, len)?;
        if !out_mapped.is_null() {
            // SAFETY: non-null, and the caller promises it is writable.
            unsafe { out_mapped.write(done.mapped) };
        }
        Ok(())
    })
}
