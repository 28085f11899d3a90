//! The levels of a software vmemmap for one geometry, and what each costs.
//!
//! The store is laid out like the x86-64 kernel's vmemmap page tables with 4 KiB pages, counted
//! from the start of the range (the kernel counts from physical address 0, see `DESIGN.md` §4):
//!
//! * **PMD level**: one 8-byte entry per 2 MiB of descriptors ([`DESCS_PER_PMD`] = 32768
//!   descriptors, the memmap of one 128 MiB section). 512 entries fill a 4 KiB page, so the
//!   array is one page per 1 GiB of vmemmap, as the kernel has one PMD table per 1 GiB.
//! * An entry is either a **leaf**, 2 MiB of descriptors mapped directly (the kernel's
//!   `vmemmap_populate_hugepages`: no PTE table), or points at a **PTE table**, 512 8-byte
//!   entries, one per 4 KiB block of 64 descriptors (`vmemmap_populate_compound_pages` and
//!   `vmemmap_populate_basepages`).
//! * **Section usage**: one record per section, the kernel's `struct mem_section_usage`
//!   ([`SECTION_USAGE_BYTES`]).
//!
//! Which entries are leaves follows the kernel: with dedup (`vmemmap_can_optimize`) every
//! entry points at a PTE table, since the tail blocks are shared 4 KiB at a time; without
//! dedup (small compounds, or an altmap) every whole section is a leaf, and only a last
//! section the range fills in part is mapped with base pages, from host memory even with an
//! altmap (x86 `vmemmap_populate` uses base pages for less than a section's memmap and gives
//! them no altmap).

use crate::addr::PAGE_SIZE;
use crate::memmap::{
    Cost, DESC_SIZE, DESCS_PER_BLOCK, DIR_ENTRY_SIZE, Geometry, VMEMMAP_RESERVE_NR, page_round,
};

/// log2 of [`DESCS_PER_PMD`].
pub(super) const PMD_SHIFT: u32 = 15;
/// Descriptors one PMD entry maps: 2 MiB of vmemmap, one section (`PAGES_PER_SECTION`).
pub const DESCS_PER_PMD: u64 = 1 << PMD_SHIFT;
/// Entries of one PTE table (`PTRS_PER_PTE`): a PMD entry's 2 MiB in 4 KiB blocks.
pub(super) const PTRS_PER_PTE: u64 = DESCS_PER_PMD / DESCS_PER_BLOCK;
/// log2 of the pages of a subsection (2 MiB of pfns, `PAGES_PER_SUBSECTION`).
pub(super) const SUBSECTION_SHIFT: u32 = 9;

/// Bytes the kernel allocates per 128 MiB section for `struct mem_section_usage`
/// (`mem_section_usage_size()`, x86-64): a `struct rcu_head` (16 bytes), the subsection bitmap
/// (64 subsections, 8 bytes) and the pageblock flags (64 pageblocks of 8 bits since the
/// isolation bit got its own, 64 bytes) make 88, which `kzalloc` serves from its 96-byte cache.
pub const SECTION_USAGE_BYTES: u64 = 96;
/// 8-byte words of one section usage record.
pub(super) const USAGE_WORDS: u64 = SECTION_USAGE_BYTES / 8;

/// PMD entry kinds, in the low two bits; the rest is an index.
pub(super) const KIND_MASK: u64 = 0b11;
/// A leaf: `entry >> 2` is the index in the block array of its first descriptor.
pub(super) const LEAF: u64 = 0b01;
/// A table: `entry >> 2` is the index of its PTE table.
pub(super) const TABLE: u64 = 0b10;

/// The sizes of a store's arrays for one geometry, shared by [`super::VmemmapStore::new`] and
/// [`Layout::cost`](crate::memmap::Layout::cost), so that what is accounted is what is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VmemmapPlan {
    /// Tail blocks are shared (order ≥ 8, no altmap).
    pub(super) dedup: bool,
    /// The blocks array is the device's memory (an altmap).
    pub(super) on_device: bool,
    /// PMD entries, one per section of the range (the last possibly partial).
    pub(super) pmd_entries: u64,
    /// Sections mapped by leaves (without dedup: every whole section).
    pub(super) leaves: u64,
    /// PTE tables: one per section with dedup; without, one for a partial last section.
    pub(super) pte_tables: u64,
    /// 4 KiB blocks of the main block array: two per compound with dedup, else the leaves'.
    pub(super) blocks: u64,
    /// 4 KiB blocks of the second array, always host memory: with dedup, room to un-share
    /// every shared entry; without, the base pages of a partial last section.
    pub(super) extra_blocks: u64,
}

impl VmemmapPlan {
    pub(crate) fn new(geo: &Geometry) -> Self {
        let pages = geo.range().len();
        let pmd_entries = pages.div_ceil(DESCS_PER_PMD);
        let dedup = geo.dedups();
        let on_device = geo.altmap().is_some();
        if dedup {
            // Order ≥ 8: every compound is whole 4 KiB blocks.
            let compounds = pages >> geo.shift().get();
            let blocks = pages / DESCS_PER_BLOCK;
            VmemmapPlan {
                dedup,
                on_device,
                pmd_entries,
                leaves: 0,
                pte_tables: pmd_entries,
                blocks: compounds * VMEMMAP_RESERVE_NR,
                extra_blocks: blocks - compounds,
            }
        } else {
            let leaves = pages / DESCS_PER_PMD;
            let partial = pages % DESCS_PER_PMD;
            VmemmapPlan {
                dedup,
                on_device,
                pmd_entries,
                leaves,
                pte_tables: u64::from(partial > 0),
                blocks: leaves * PTRS_PER_PTE,
                extra_blocks: partial.div_ceil(DESCS_PER_BLOCK),
            }
        }
    }

    /// What a freshly populated store of this plan holds (blocks un-shared later are the live
    /// store's to add).
    pub(crate) fn cost(&self, geo: &Geometry) -> Cost {
        let block_bytes = DESCS_PER_BLOCK * DESC_SIZE;
        let descriptors = if self.dedup {
            self.blocks * block_bytes
        } else {
            let leaves = if self.on_device { 0 } else { self.blocks };
            (leaves + self.extra_blocks) * block_bytes
        };
        let mut cost = Cost::dram(
            descriptors,
            self.pte_tables * PTRS_PER_PTE * DIR_ENTRY_SIZE,
            page_round(self.pmd_entries * DIR_ENTRY_SIZE),
            page_round(self.pmd_entries * SECTION_USAGE_BYTES),
        );
        if self.on_device {
            cost.device_bytes = geo.altmap_pfns() * PAGE_SIZE;
        }
        cost
    }
}
