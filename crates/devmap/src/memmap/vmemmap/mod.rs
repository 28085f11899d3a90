//! The Vmemmap layout: the kernel's device-dax vmemmap with tail-block dedup, in software, with
//! the page-table levels the kernel pays for (see [`plan`] for the levels and their cost).
//!
//! Looking a pfn up reads its PMD entry and, unless that is a leaf, the PTE of its 4 KiB block
//! of 64 descriptors. When the geometry dedups (order ≥ 8, no altmap), compound `c` owns blocks
//! `2c` (head and 63 tails) and `2c + 1` (tails 64..127, the *shared tail block*), and the PTE
//! of every further block of the compound points at `2c + 1` too, since all tails of a compound
//! are identical (`head | 1`). Only those 128 descriptors are ever initialised. Without dedup,
//! whole sections are 2 MiB leaves of one dense array (the device's memory with an altmap) and
//! this is Flat plus a PMD table.
//!
//! A write that must be per-tail (poison on one subpage) first gives the block its own copy
//! taken from a spare array, the kernel's "vmemmap restore"; the shared block stays pristine.

mod plan;
mod usage;

use std::ops::{Range, RangeInclusive};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::addr::{PAGE_SIZE, Pfn};
use crate::backing::{BackingError, PageHint};
use crate::desc::{Page, PageSnapshot};

pub(crate) use self::plan::VmemmapPlan;
pub use self::plan::{DESCS_PER_PMD, SECTION_USAGE_BYTES};
use self::plan::{KIND_MASK, LEAF, PMD_SHIFT, PTRS_PER_PTE, TABLE};
use self::usage::SectionUsage;
use super::array::ZeroedArray;
use super::{DESCS_PER_BLOCK, Geometry, Resident, VMEMMAP_RESERVE_NR};

const BLOCK: usize = DESCS_PER_BLOCK as usize;
const PMD_MASK: usize = DESCS_PER_PMD as usize - 1;
const PTES: usize = PTRS_PER_PTE as usize;

/// A software vmemmap: PMD entries, PTE tables, descriptor blocks and section usage.
#[derive(Debug)]
pub(crate) struct VmemmapStore {
    geo: Geometry,
    plan: VmemmapPlan,
    /// One entry per section of the range: 0 (not populated), a leaf or a table
    /// (`plan::LEAF`, `plan::TABLE`).
    pmd: ZeroedArray<AtomicU64>,
    /// PTE tables of 512 entries: 0 (not populated), or 1 + a block index. Blocks
    /// `0..plan.blocks` are in `blocks`, the next ones in `extra`.
    pte: ZeroedArray<AtomicU64>,
    /// With dedup, the two unique blocks of each compound; without, the leaves, one 2 MiB run
    /// of descriptors per whole section (on the device with an altmap).
    blocks: ZeroedArray<Page>,
    /// Host memory: with dedup, copies made by un-sharing (bump-allocated); without, the base
    /// pages of a partial last section.
    extra: ZeroedArray<Page>,
    /// Extra blocks handed out by un-sharing (guarded by `unshare`).
    extra_used: AtomicU64,
    unshare: Mutex<()>,
    usage: SectionUsage,
}

impl VmemmapStore {
    pub(crate) fn new(geo: Geometry, dense: PageHint) -> Result<Self, BackingError> {
        let plan = VmemmapPlan::new(&geo);
        // Arrays written through are mapped like the descriptors; sparse ones with base pages,
        // so that resident memory is what is used.
        let tables = if plan.dedup { dense } else { PageHint::Base };
        let store = Self {
            geo,
            plan,
            pmd: ZeroedArray::new(plan.pmd_entries, PageHint::Base, None)?,
            pte: ZeroedArray::new(plan.pte_tables * PTRS_PER_PTE, tables, None)?,
            blocks: ZeroedArray::new(plan.blocks * DESCS_PER_BLOCK, dense, None)?,
            extra: ZeroedArray::new(plan.extra_blocks * DESCS_PER_BLOCK, PageHint::Base, None)?,
            extra_used: AtomicU64::new(0),
            unshare: Mutex::new(()),
            usage: SectionUsage::new(plan.pmd_entries, dense)?,
        };
        // The kernel maps the whole range's vmemmap when the range is added, the altmap's own
        // pfns included; the data pfns are mapped compound by compound as they are
        // initialised.
        store.map_altmap();
        Ok(store)
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geo
    }

    fn offset(&self, pfn: Pfn) -> usize {
        pfn.offset_from(self.geo.range().start()) as usize
    }

    /// The 64 descriptors of block `index` (of `blocks`, then of `extra`).
    fn block(&self, index: u64) -> &[Page] {
        let start = index as usize * BLOCK;
        let main = self.blocks.as_slice();
        match start.checked_sub(main.len()) {
            None => &main[start..start + BLOCK],
            Some(i) => &self.extra.as_slice()[i..i + BLOCK],
        }
    }

    /// The PTE of the block holding offset `off`, if its PMD entry points at a table.
    fn pte_of(&self, off: usize) -> Option<&AtomicU64> {
        let entry = self.pmd_entry(off >> PMD_SHIFT);
        (entry & KIND_MASK == TABLE).then(|| {
            let table = (entry >> 2) as usize;
            &self.pte.as_slice()[table * PTES + (off / BLOCK) % PTES]
        })
    }

    /// The descriptor an in-range pfn maps to, or `None` if its block is not populated.
    #[inline]
    pub(crate) fn page(&self, pfn: Pfn) -> Option<&Page> {
        let off = self.offset(pfn);
        self.page_through(self.pmd_entry(off >> PMD_SHIFT), off)
    }

    /// The PMD entry of `section`.
    #[inline]
    fn pmd_entry(&self, section: usize) -> u64 {
        // Acquire pairs with the Release stores of the entry in `populate_compound`,
        // `map_leaves` and `map_base_pages`: a reader that sees a table sees the PTEs written
        // before it.
        self.pmd.as_slice()[section].load(Ordering::Acquire)
    }

    /// The descriptor at offset `off` of the range, found through `entry`, its PMD entry.
    #[inline]
    fn page_through(&self, entry: u64, off: usize) -> Option<&Page> {
        match entry & KIND_MASK {
            LEAF => self
                .blocks
                .as_slice()
                .get((entry >> 2) as usize + (off & PMD_MASK)),
            TABLE => {
                let table = (entry >> 2) as usize;
                // Acquire pairs with the Release stores of the PTE in `populate_compound`,
                // `map_base_pages` and `page_for_write`, so a reader that sees a copied block
                // also sees the copy's contents.
                let pte = self.pte.as_slice()[table * PTES + (off / BLOCK) % PTES]
                    .load(Ordering::Acquire);
                let index = pte.checked_sub(1)?;
                Some(&self.block(index)[off % BLOCK])
            }
            _ => None,
        }
    }

    /// Writes the PMD entries and PTEs of the compound at `head`, activates its sections'
    /// usage, and returns the descriptors to initialise: 128 with dedup, all of the compound
    /// without.
    pub(crate) fn populate_compound(&self, head: Pfn) -> &[Page] {
        let off = self.offset(head);
        let nr = self.geo.shift().nr_pages() as usize;
        self.usage.activate(off as u64, nr as u64);
        let sections = off >> PMD_SHIFT..=(off + nr - 1) >> PMD_SHIFT;
        if self.plan.dedup {
            let (pmd, pte) = (self.pmd.as_slice(), self.pte.as_slice());
            // Table `s` maps section `s`, so block `b` of the range has PTE `b`.
            let first = self.geo.compound_index(head) * VMEMMAP_RESERVE_NR;
            let b0 = off / BLOCK;
            // Release pairs with the Acquire of the PTE in `page_through`.
            pte[b0].store(first + 1, Ordering::Release);
            for e in &pte[b0 + 1..b0 + nr / BLOCK] {
                e.store(first + 2, Ordering::Release);
            }
            for s in sections {
                // Release pairs with the Acquire in `pmd_entry`: the PTEs above are visible
                // once the table is.
                pmd[s].store(((s as u64) << 2) | TABLE, Ordering::Release);
            }
        } else if off < self.leaf_end() {
            // A compound is at most a section or whole sections, and a partial last section
            // exists only below order 15, so it lies in leaves only or in that section only.
            self.map_leaves(sections);
        } else {
            let rel = off - self.leaf_end();
            self.map_base_pages(rel..rel + nr);
        }
        self.compound_slots(head)
    }

    /// The descriptors `populate_compound` returns, without writing any entry.
    pub(crate) fn compound_slots(&self, head: Pfn) -> &[Page] {
        let off = self.offset(head);
        let nr = self.geo.shift().nr_pages() as usize;
        if self.plan.dedup {
            let start = (self.geo.compound_index(head) * VMEMMAP_RESERVE_NR) as usize * BLOCK;
            &self.blocks.as_slice()[start..start + VMEMMAP_RESERVE_NR as usize * BLOCK]
        } else if off < self.leaf_end() {
            &self.blocks.as_slice()[off..off + nr]
        } else {
            let rel = off - self.leaf_end();
            &self.extra.as_slice()[rel..rel + nr]
        }
    }

    /// Offset of the first pfn past the sections mapped by leaves (no dedup).
    fn leaf_end(&self) -> usize {
        self.plan.leaves as usize * DESCS_PER_PMD as usize
    }

    /// Points the PMD entries of `sections` at their 2 MiB leaves (no dedup).
    fn map_leaves(&self, sections: RangeInclusive<usize>) {
        let pmd = self.pmd.as_slice();
        for s in sections {
            let first = (s * DESCS_PER_PMD as usize) as u64;
            // Release pairs with the Acquire in `pmd_entry`.
            pmd[s].store((first << 2) | LEAF, Ordering::Release);
        }
    }

    /// Maps the descriptors `rel` of the partial last section (offsets from its start) to
    /// base pages in `extra`, through PTE table 0 (no dedup).
    fn map_base_pages(&self, rel: Range<usize>) {
        let blocks = rel.start / BLOCK..rel.end.div_ceil(BLOCK);
        for (b, e) in blocks.clone().zip(&self.pte.as_slice()[blocks]) {
            // Release pairs with the Acquire of the PTE in `page_through`.
            e.store(self.plan.blocks + b as u64 + 1, Ordering::Release);
        }
        // Release pairs with the Acquire in `pmd_entry`: the PTEs above are visible once the
        // table is.
        self.pmd.as_slice()[self.plan.leaves as usize].store(TABLE, Ordering::Release);
    }

    /// Maps the vmemmap of the altmap's own pfns, as the kernel does when it adds the range
    /// (their descriptors are never initialised, and lookups refuse those pfns before they
    /// reach the store). Their sections' usage is activated, leaves are entered, and base
    /// pages of a partial last section, which are host memory, are zeroed so that they are
    /// held as the kernel's are.
    fn map_altmap(&self) {
        let n = self.geo.altmap_pfns() as usize;
        if n == 0 {
            return;
        }
        self.usage.activate(0, n as u64);
        let leaf_end = self.leaf_end();
        if leaf_end > 0 {
            self.map_leaves(0..=(n.min(leaf_end) - 1) >> PMD_SHIFT);
        }
        if n > leaf_end {
            let rel = 0..n - leaf_end;
            self.map_base_pages(rel.clone());
            for p in &self.extra.as_slice()[rel] {
                p.write(PageSnapshot::default());
            }
        }
    }

    /// The descriptor of `pfn` made private to it: if its block is the compound's shared tail
    /// block, the block is first copied into a spare block of its own.
    pub(crate) fn page_for_write(&self, pfn: Pfn) -> Option<&Page> {
        if !self.plan.dedup {
            return self.page(pfn);
        }
        let shared = self.geo.compound_index(pfn) * VMEMMAP_RESERVE_NR + 1;
        let slot = self.pte_of(self.offset(pfn))?;
        // Acquire pairs with the Release store below made by an earlier writer (and with
        // `populate_compound`'s).
        if slot.load(Ordering::Acquire) == shared + 1 {
            let _guard = self.unshare.lock();
            // Re-check under the lock: another writer may have un-shared this block already.
            // Acquire pairs with the Release store below made by that writer.
            if slot.load(Ordering::Acquire) == shared + 1 {
                // Relaxed: `extra_used` changes only under `unshare`, which orders it.
                let used = self.extra_used.load(Ordering::Relaxed);
                if used >= self.plan.extra_blocks {
                    return None;
                }
                let copy = self.plan.blocks + used;
                for (dst, src) in self.block(copy).iter().zip(self.block(shared)) {
                    dst.write(src.snapshot());
                }
                self.extra_used.store(used + 1, Ordering::Relaxed);
                // Release: the copy's contents are visible before the entry that points at it
                // (pairs with the Acquire of the PTE in `page_through`, and with the two
                // above in a later writer).
                slot.store(copy + 1, Ordering::Release);
            }
        }
        self.page(pfn)
    }

    /// Bytes of blocks un-shared since population.
    pub(crate) fn extra_bytes(&self) -> u64 {
        if !self.plan.dedup {
            return 0;
        }
        // Relaxed: a statistic; `cost` callers need no order with the copies themselves.
        self.extra_used.load(Ordering::Relaxed) * PAGE_SIZE
    }

    /// Memory held now: the tables, usage records and host-memory blocks, and the blocks of
    /// an altmap's emulated device memory.
    pub(crate) fn resident(&self) -> Result<Resident, BackingError> {
        let tables = self.pmd.resident_bytes()?
            + self.pte.resident_bytes()?
            + self.extra.resident_bytes()?
            + self.usage.resident_bytes()?;
        let blocks = self.blocks.resident_bytes()?;
        Ok(Resident::split(tables, blocks, self.plan.on_device))
    }

    /// Whether the section usage marks the subsection holding `pfn` active.
    #[cfg(test)]
    pub(crate) fn subsection_active(&self, pfn: Pfn) -> bool {
        self.usage.subsection_active(self.offset(pfn) as u64)
    }

    pub(crate) fn reserved_bytes(&self) -> u64 {
        (self.pmd.reserved_bytes()
            + self.pte.reserved_bytes()
            + self.blocks.reserved_bytes()
            + self.extra.reserved_bytes()
            + self.usage.reserved_bytes()) as u64
    }
}

#[cfg(test)]
mod tests;
