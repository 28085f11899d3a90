//! What a namespace's memmap costs, computed without allocating (`devmap estimate`).

use std::ffi::c_int;

use devmap::{Layout, Namespace, Pfn, PfnRange};

use crate::device::{DEVMAP_LAYOUT_FLAT, DEVMAP_LAYOUT_HEADS, DEVMAP_LAYOUT_VMEMMAP};
use crate::error::{Failure, call, nonnull};
use crate::region::{map, mode};

/// What the memmap of a namespace costs in one layout (`devmap estimate --json`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct devmap_cost {
    /// Host memory (DRAM) for the memmap: the sum of the four items that follow.
    pub metadata_bytes: u64,
    /// Host memory holding descriptors.
    pub descriptor_bytes: u64,
    /// Host memory in PTE tables (Vmemmap).
    pub pte_table_bytes: u64,
    /// Host memory in PMD tables (Vmemmap).
    pub pmd_table_bytes: u64,
    /// Host memory in per-section usage records (Vmemmap).
    pub section_usage_bytes: u64,
    /// Device memory given to the memmap (`DEVMAP_MAP_DEV`), else 0.
    pub device_bytes: u64,
    /// Descriptors that initialisation writes.
    pub descriptors_initialized: u64,
    /// The compound order of the namespace's folios.
    pub vmemmap_shift: u32,
}

/// Prices the memmap of a namespace of `size` bytes at `align` (4096, 2 MiB or 1 GiB) in
/// `layout` (`DEVMAP_LAYOUT_*`), with memmap location `map` (`DEVMAP_MAP_*`) and `mode`
/// (`DEVMAP_MODE_*`), as `devmap estimate` does, and stores it in `*out`. Arithmetic only:
/// nothing is allocated.
///
/// Returns 0; -EFAULT; -EINVAL (a size not a multiple of the align, an align not a power of
/// two, no room for data, an unknown constant, an on-device memmap that does not fit).
/// Thread-safe.
///
/// # Safety
///
/// `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_estimate(
    size: u64,
    align: u64,
    layout: u32,
    map: u32,
    mode: u32,
    out: *mut devmap_cost,
) -> c_int {
    call(|| {
        let out = nonnull(out, "out")?;
        let layout = match layout {
            DEVMAP_LAYOUT_FLAT => Layout::Flat,
            DEVMAP_LAYOUT_VMEMMAP => Layout::Vmemmap,
            DEVMAP_LAYOUT_HEADS => Layout::Heads,
            other => return Err(Failure::invalid(format!("unknown layout {other}"))),
        };
        let ns = Namespace::new(size, align, self::mode(mode)?, self::map(map)?)?;
        let range = PfnRange::new(Pfn::new(0), ns.pages())?;
        let c = ns.pgmap_config(range, layout)?.estimate_cost()?;
        let cost = devmap_cost {
            metadata_bytes: c.metadata_bytes,
            descriptor_bytes: c.descriptor_bytes,
            pte_table_bytes: c.pte_table_bytes,
            pmd_table_bytes: c.pmd_table_bytes,
            section_usage_bytes: c.section_usage_bytes,
            device_bytes: c.device_bytes,
            descriptors_initialized: c.descriptors_initialized,
            vmemmap_shift: ns.vmemmap_shift().get(),
        };
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out.write(cost) };
        Ok(())
    })
}
