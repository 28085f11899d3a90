//! The folio cursor: one folio looked up once, and every operation on it.
//!
//! A [`FolioRef`] holds what one lookup found: the pgmap, the memmap of the folio's range, the
//! [`Synced`] token for the block the lookup synced, and the folio. It is made by ONE call,
//! [`FolioRef::at`] (or `FolioRef::block` for a mapping of a given order), which syncs and looks
//! up through `Pgmap::lookup`; a walk over a span that already synced it (a pin) makes one per
//! folio without a lookup (`FolioRef::walked`). Setting the folio's mapping, mapping it (its
//! reference, mapcount and the pgmap's liveness reference), allocating a driver folio,
//! poisoning and unpoisoning a page of it, asking which page is poisoned, and giving
//! references back all read through the cursor and never sync or look the folio up again.
//! The model is Asterinas OSTD's frame and page-table cursor: find once, then act through what
//! was found.

use crate::addr::{Order, Pfn};
use crate::desc::Page;
use crate::memmap::{Folio, Memmap, Synced};
use crate::pgmap::{MemoryType, Pgmap, PgmapError, PgmapRef};
use crate::primitive::Ordering;

use super::refcount::{self, Refused};
use super::{AllocatedFolio, FolioError, MappedFolio};

/// One folio looked up once, with the synced memmap it was found in (see the module
/// documentation). Cheap to copy; borrows the pgmap, which the caller keeps alive.
#[derive(Debug, Clone, Copy)]
pub struct FolioRef<'a> {
    pgmap: &'a Pgmap,
    memmap: &'a Memmap,
    synced: Synced,
    /// The pfn looked up (the folio holds it).
    pfn: Pfn,
    folio: Folio<'a>,
}

impl<'a> FolioRef<'a> {
    /// Syncs and looks up the folio holding `pfn` of `pgmap` (`page_folio`): the one lookup
    /// every operation of the cursor then uses.
    pub fn at(pgmap: &'a Pgmap, pfn: Pfn) -> Result<Self, PgmapError> {
        Self::block(pgmap, pfn, Order::BASE)
    }

    /// As [`FolioRef::at`], syncing the whole naturally aligned block of `order` around `pfn`:
    /// what [`FolioRef::map`] of that order (a leaf, or an fsdax folio to form) needs.
    pub(crate) fn block(pgmap: &'a Pgmap, pfn: Pfn, order: Order) -> Result<Self, PgmapError> {
        let (memmap, synced, folio) = pgmap.lookup(pfn, order)?;
        Ok(Self {
            pgmap,
            memmap,
            synced,
            pfn,
            folio,
        })
    }

    /// A cursor on `folio`, found by a walk over a span that `synced` covers (no lookup).
    #[inline]
    pub(crate) fn walked(
        pgmap: &'a Pgmap,
        memmap: &'a Memmap,
        synced: Synced,
        folio: Folio<'a>,
    ) -> Self {
        Self {
            pgmap,
            memmap,
            synced,
            pfn: folio.pfn(),
            folio,
        }
    }

    /// The folio.
    pub fn folio(&self) -> Folio<'a> {
        self.folio
    }

    /// The pfn the cursor was made for (in the folio).
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }

    /// The pgmap the folio belongs to.
    pub fn pgmap(&self) -> &'a Pgmap {
        self.pgmap
    }

    pub(crate) fn synced(&self) -> &Synced {
        &self.synced
    }

    pub(crate) fn head_page(&self) -> &'a Page {
        self.folio.head_page()
    }

    // ---- folio->mapping ----

    /// `dax_set_mapping`: records `mapping` (an address space id, non-zero) and `index` (the
    /// folio's page offset in it) on the folio's head, once: a folio whose mapping is set
    /// keeps it, as in the kernel. The device-dax fault path calls this before it maps the
    /// folio, so no mapping of the folio is ever seen without them. Returns whether it wrote.
    pub(crate) fn set_mapping(&self, mapping: u64, index: u64) -> bool {
        self.head_page().set_mapping_once(mapping, index)
    }

    /// Clears `folio->mapping`, `folio->index` and the dirty bit, as init left them: for a
    /// device going away cleanly, whose memmap outlives it.
    pub(crate) fn clear_mapping(&self) {
        self.head_page().clear_mapping();
    }

    // ---- references ----

    /// Maps the folio, or for fsdax forms an `order` folio at the cursor's pfn first (`order`
    /// must be 0 or the folio's order for other types; the cursor must come from
    /// [`FolioRef::block`] of that order): a reference and a mapcount, held with `live` (the
    /// caller's liveness reference on this pgmap) by the returned mapping until it drops.
    pub(crate) fn map(&self, live: PgmapRef, order: Order) -> Result<MappedFolio, FolioError> {
        debug_assert!(std::ptr::eq::<Pgmap>(&*live, self.pgmap));
        let memory_type = self.pgmap.memory_type();
        if memory_type == MemoryType::Private {
            return Err(FolioError::NotAddressable { memory_type });
        }
        let head = if memory_type == MemoryType::FsDax {
            super::shape::fsdax_map(self.pgmap, self.memmap, self.synced(), self.pfn, order)?
        } else {
            let folio = self.folio;
            if order.get() != 0 && order != folio.order() {
                return Err(FolioError::BadOrder {
                    pfn: self.pfn,
                    order,
                    fixed: folio.order(),
                });
            }
            let word = folio.head_page().counts_word();
            if let Err(why) = refcount::try_grab(word, folio.is_large(), 1, false) {
                let pfn = folio.pfn();
                return Err(match why {
                    Refused::Free => FolioError::Free { pfn },
                    Refused::Overflow => FolioError::Overflow { pfn },
                });
            }
            folio
                .head_page()
                .mapcount_word()
                .fetch_add(1, Ordering::Relaxed);
            folio.pfn()
        };
        Ok(MappedFolio { pgmap: live, head })
    }

    /// Hands out the free folio (`zone_device_folio_init`): its count goes from 0 to 1, and
    /// the returned handle's drop is the put that frees it again. Only for memory a driver
    /// allocates: private, coherent and P2P. `live` is the caller's liveness reference.
    pub(crate) fn alloc(&self, live: PgmapRef) -> Result<AllocatedFolio, FolioError> {
        debug_assert!(std::ptr::eq::<Pgmap>(&*live, self.pgmap));
        let folio = self.folio;
        if let Err(count) = refcount::alloc(folio.head_page().counts_word()) {
            return Err(FolioError::Busy {
                pfn: self.pfn,
                order: folio.order(),
                why: if count == refcount::FREEING {
                    "the folio is being freed (its folio_free has not returned)"
                } else {
                    "the folio is already allocated"
                },
            });
        }
        Ok(AllocatedFolio {
            pgmap: live,
            head: folio.pfn(),
        })
    }

    /// Gives back one mapping's reference and mapcount ([`MappedFolio`]'s drop).
    pub(crate) fn unmap(&self) {
        let mapcount = self.head_page().mapcount_word();
        if self.pgmap.memory_type() != MemoryType::FsDax {
            mapcount.fetch_sub(1, Ordering::Relaxed);
            self.ungrab(1, false);
            return;
        }
        // Both halves under the formation lock, as `fsdax_map` takes them, so that
        // `busy_page_range` never sees one without the other; the free path takes the lock
        // itself, after.
        let idle = {
            let _formation = self.pgmap.fsdax_lock().lock();
            mapcount.fetch_sub(1, Ordering::Relaxed);
            let word = self.head_page().counts_word();
            let idle = self.pgmap.memory_type().idle_refcount();
            refcount::ungrab(word, self.folio.is_large(), 1, false, idle)
        };
        if idle {
            super::free::folio_idle(self.pgmap, self.memmap, &self.folio);
        }
        super::free::wake_layout_waiters(self.pgmap);
    }

    /// Releases `refs` pins (`pin`) or plain references, runs the free path if that made the
    /// folio idle, and wakes layout-break waiters.
    #[inline]
    pub(crate) fn ungrab(&self, refs: i32, pin: bool) {
        super::free::ungrab(self.pgmap, self.memmap, &self.folio, refs, pin);
    }

    // ---- hardware poison ----
    //
    // Every use of poison state above the memmap comes through the cursor; the memmap keeps
    // only the per-layout storage (a descriptor flag, a Vmemmap block un-shared for it, the
    // Heads layout's side table). Memory failure (finding mappings, revoking them, telling
    // owners) builds on this.

    /// Poisons the 4 KiB page `pfn` of the synced block, writing only state private to it
    /// (Vmemmap un-shares the page's descriptor block first; the Heads layout uses its side
    /// table) and flags its folio head `HAS_HWPOISONED`.
    pub fn poison_subpage(&self, pfn: Pfn) -> Result<(), PgmapError> {
        Ok(self.memmap.mark_subpage_hwpoison(&self.synced, pfn)?)
    }

    /// Clears the poison of the 4 KiB page `pfn` of the synced block once its bytes are good
    /// again (`clear_page_hwpoison`), and its folio's `HAS_HWPOISONED` when no other page of it
    /// is poisoned. Returns whether the page was poisoned.
    pub fn unpoison_subpage(&self, pfn: Pfn) -> Result<bool, PgmapError> {
        Ok(self.memmap.clear_subpage_hwpoison(&self.synced, pfn)?)
    }

    /// Whether the 4 KiB page `pfn` of the synced block is poisoned.
    pub fn subpage_poisoned(&self, pfn: Pfn) -> Result<bool, PgmapError> {
        Ok(self.memmap.subpage_hwpoison(&self.synced, pfn)?)
    }

    /// The page to name when the folio is refused for poison: its lowest poisoned page, or
    /// its head if a poisoning racing the caller has flagged the folio but not yet the page.
    /// `None` if the folio is clean (one read of the head's flags).
    pub fn poisoned_page(&self) -> Option<Pfn> {
        let folio = &self.folio;
        folio
            .is_poisoned()
            .then(|| self.memmap.first_hwpoison(folio).unwrap_or(folio.pfn()))
    }
}
