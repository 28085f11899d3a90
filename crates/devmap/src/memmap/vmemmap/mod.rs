//! The Vmemmap layout: the kernel's device-dax vmemmap with tail-block dedup, in software.
//!
//! A directory has one 8-byte entry per 4 KiB block of 64 descriptors (the PTE analogue);
//! entry `0` means "not populated", otherwise it is `1 +` the index of a block in the pool.
//! When the geometry dedups (order ≥ 8, no altmap), compound `c` owns pool blocks `2c` (head and
//! 63 tails) and `2c + 1` (tails 64..127, the *shared tail block*); the directory entry of every
//! further block of the compound points at `2c + 1` too, since all tails of a compound are
//! identical (`head | 1`). Only those 128 descriptors are ever initialised. Without dedup the
//! directory is the identity and this is Flat plus a directory.
//!
//! A write that must be per-tail (poison on one subpage) first gives the block its own copy
//! taken from a spare pool, the kernel's "vmemmap restore"; the shared block stays pristine.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::addr::{PAGE_SIZE, Pfn};
use crate::backing::{BackingError, PageHint};
use crate::desc::Page;

use super::array::ZeroedArray;
use super::{DESCS_PER_BLOCK, Geometry, VMEMMAP_RESERVE_NR};

const BLOCK: usize = DESCS_PER_BLOCK as usize;

/// A software vmemmap: directory + block pool.
#[derive(Debug)]
pub(crate) struct VmemmapStore {
    geo: Geometry,
    dedup: bool,
    /// One entry per block of the range: 0, or 1 + pool block index.
    dir: ZeroedArray<AtomicU64>,
    /// Blocks `0..primary_blocks`: the unique blocks.
    pool: ZeroedArray<Page>,
    primary_blocks: u64,
    /// Copies made by un-sharing, bump-allocated.
    spare: ZeroedArray<Page>,
    spare_blocks: u64,
    /// Spare blocks handed out (guarded by `unshare`).
    spare_used: AtomicU64,
    unshare: Mutex<()>,
}

impl VmemmapStore {
    pub(crate) fn new(geo: Geometry, dense: PageHint) -> Result<Self, BackingError> {
        let pages = geo.range().len();
        let blocks = pages.div_ceil(DESCS_PER_BLOCK);
        let dedup = geo.dedups();
        let compounds = pages >> geo.shift().get();
        let (primary_blocks, spare_blocks) = if dedup {
            (compounds * VMEMMAP_RESERVE_NR, blocks - compounds)
        } else {
            (blocks, 0)
        };
        Ok(Self {
            geo,
            dedup,
            dir: ZeroedArray::new(blocks, dense)?,
            pool: ZeroedArray::new(primary_blocks * DESCS_PER_BLOCK, dense)?,
            primary_blocks,
            // Copies are rare and scattered: base pages keep RSS equal to what is used.
            spare: ZeroedArray::new(spare_blocks * DESCS_PER_BLOCK, PageHint::Base)?,
            spare_blocks,
            spare_used: AtomicU64::new(0),
            unshare: Mutex::new(()),
        })
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geo
    }

    fn block(&self, pool_index: u64) -> &[Page] {
        let (arr, i) = if pool_index < self.primary_blocks {
            (&self.pool, pool_index)
        } else {
            (&self.spare, pool_index - self.primary_blocks)
        };
        let start = i as usize * BLOCK;
        &arr.as_slice()[start..start + BLOCK]
    }

    fn offset(&self, pfn: Pfn) -> usize {
        pfn.offset_from(self.geo.range().start()) as usize
    }

    /// The descriptor an in-range pfn maps to, or `None` if its block is not populated.
    pub(crate) fn page(&self, pfn: Pfn) -> Option<&Page> {
        let off = self.offset(pfn);
        // Acquire pairs with the Release store in `populate_compound`/`page_for_write`, so a
        // reader that sees a copied block also sees the copy's contents.
        let entry = self.dir.as_slice()[off / BLOCK].load(Ordering::Acquire);
        let index = entry.checked_sub(1)?;
        Some(&self.block(index)[off % BLOCK])
    }

    /// Points the directory entries of the compound at `head` at its blocks and returns the
    /// descriptors to initialise: 128 with dedup, all of the compound without.
    pub(crate) fn populate_compound(&self, head: Pfn) -> &[Page] {
        let dir = self.dir.as_slice();
        let off = self.offset(head);
        let nr = self.geo.shift().nr_pages() as usize;
        if self.dedup {
            let c = self.geo.compound_index(head);
            let per = nr / BLOCK;
            let first = c * VMEMMAP_RESERVE_NR;
            let d0 = off / BLOCK;
            // Release pairs with the Acquire in `page`.
            dir[d0].store(first + 1, Ordering::Release);
            for e in &dir[d0 + 1..d0 + per] {
                e.store(first + 2, Ordering::Release);
            }
            let start = first as usize * BLOCK;
            &self.pool.as_slice()[start..start + VMEMMAP_RESERVE_NR as usize * BLOCK]
        } else {
            let blocks = off / BLOCK..(off + nr).div_ceil(BLOCK);
            for (b, e) in blocks.clone().zip(&dir[blocks]) {
                e.store(b as u64 + 1, Ordering::Release);
            }
            &self.pool.as_slice()[off..off + nr]
        }
    }

    /// The descriptor of `pfn` made private to it: if its block is the compound's shared tail
    /// block, the block is first copied into a spare block of its own.
    pub(crate) fn page_for_write(&self, pfn: Pfn) -> Option<&Page> {
        if !self.dedup {
            return self.page(pfn);
        }
        let off = self.offset(pfn);
        let shared = self.geo.compound_index(pfn) * VMEMMAP_RESERVE_NR + 1;
        let slot = &self.dir.as_slice()[off / BLOCK];
        if slot.load(Ordering::Acquire) == shared + 1 {
            let _guard = self.unshare.lock();
            // Re-check under the lock: another writer may have un-shared this block already.
            if slot.load(Ordering::Acquire) == shared + 1 {
                let used = self.spare_used.load(Ordering::Relaxed);
                if used >= self.spare_blocks {
                    return None;
                }
                let copy = self.primary_blocks + used;
                for (dst, src) in self.block(copy).iter().zip(self.block(shared)) {
                    dst.write(src.snapshot());
                }
                self.spare_used.store(used + 1, Ordering::Relaxed);
                // Release: the copy's contents are visible before the entry that points at it.
                slot.store(copy + 1, Ordering::Release);
            }
        }
        self.page(pfn)
    }

    /// Bytes of blocks un-shared since population.
    pub(crate) fn extra_bytes(&self) -> u64 {
        self.spare_used.load(Ordering::Relaxed) * PAGE_SIZE
    }

    pub(crate) fn reserved_bytes(&self) -> u64 {
        (self.dir.reserved_bytes() + self.pool.reserved_bytes() + self.spare.reserved_bytes())
            as u64
    }
}
