//! Folios: reference counts, mappings, poison and the free path (mainline ≥ 6.15, seed 001).
//!
//! Every operation on one folio is a method of its cursor, [`FolioRef`] (`cursor.rs`), made by
//! one lookup: set the folio's mapping once, map it (a reference, a mapcount and a liveness
//! reference on the pgmap, given back when the [`MappedFolio`] drops), allocate a driver
//! folio, poison or unpoison a page of it, name its poisoned page, give references back. The
//! `Pgmap` methods here ([`Pgmap::map_folio`] and its siblings) are the public one-call entry
//! points: each looks the folio up once and hands it to the cursor.
//!
//! A folio's count rests at its pgmap type's idle value (1 for device-dax, 0 otherwise). Pins
//! (`crate::gup`) take references with the pin bias. Whoever brings the count back to idle
//! runs the free path (`free.rs`, `free_zone_device_folio`): fsdax wakes layout-break waiters
//! and splits a dynamic folio back to order 0; device-dax has nothing to do (its count already
//! rests at 1); driver memory (private, coherent, P2P) calls the pgmap's `folio_free` callback.
//!
//! fsdax pgmaps have no `vmemmap_shift`: their folios are formed when a mapping asks for a
//! larger order and split when they go idle (`shape.rs`). The range operations of fsdax,
//! `busy_page_range` and `break_layouts`, are here.

mod cursor;
mod free;
pub(crate) mod refcount;
mod shape;

pub use self::cursor::FolioRef;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::{Order, Pfn, PfnRange};
use crate::desc::{GUP_PIN_COUNTING_BIAS, PageFlags};
use crate::memmap::{Folio, FolioLookup, SpanFolios};
use crate::pgmap::{MemoryType, Pgmap, PgmapError, PgmapRef};
use crate::primitive::{Ordering, fence};

/// Errors from folio operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FolioError {
    /// The pgmap is being torn down. `may_revive` says whether retrying can help (see
    /// `GupError::TornDown`).
    #[error("the pgmap is being torn down{}", if *may_revive {
        " (its teardown may still time out: a retry can succeed)"
    } else {
        " for good"
    })]
    TornDown {
        /// Whether the teardown can still give up.
        may_revive: bool,
    },
    /// Lookup or sync failed.
    #[error(transparent)]
    Pgmap(#[from] PgmapError),
    /// The CPU cannot map device-private memory.
    #[error("{memory_type:?} memory cannot be mapped by the CPU")]
    NotAddressable {
        /// The pgmap's type.
        memory_type: MemoryType,
    },
    /// The pages asked for are in use in a different shape.
    #[error("pfn {pfn}: cannot map an order-{order} folio here: {why}")]
    Busy {
        /// The pfn.
        pfn: Pfn,
        /// The order asked for.
        order: Order,
        /// What is in the way.
        why: &'static str,
    },
    /// The order does not fit the pgmap (device-dax folios have the pgmap's fixed order).
    #[error("pfn {pfn}: order {order} does not fit this pgmap (folios here are order {fixed})")]
    BadOrder {
        /// The pfn.
        pfn: Pfn,
        /// The order asked for.
        order: Order,
        /// The pgmap's folio order.
        fixed: Order,
    },
    /// The reference count would overflow.
    #[error("pfn {pfn}: reference count would overflow")]
    Overflow {
        /// The folio head.
        pfn: Pfn,
    },
    /// The folio is free: device-private, coherent and P2P memory is handed out by its driver
    /// first ([`Pgmap::alloc_folio`]).
    #[error("pfn {pfn}: the folio is free; allocate it first (alloc_folio)")]
    Free {
        /// The folio head.
        pfn: Pfn,
    },
    /// The memory type is not handed out by a driver allocator.
    #[error("{memory_type:?} folios are not allocated by a driver: map them instead")]
    NotDriverAllocated {
        /// The pgmap's type.
        memory_type: MemoryType,
    },
    /// Layout breaks exist only for filesystem DAX.
    #[error("break_layouts applies to fsdax pgmaps, not {memory_type:?}")]
    NotFsdax {
        /// The pgmap's type.
        memory_type: MemoryType,
    },
    /// A range stayed busy until the timeout.
    #[error("pfn {pfn} is still busy (referenced beyond its mappings) after {waited:?}")]
    StillBusy {
        /// The first busy pfn.
        pfn: Pfn,
        /// How long it waited.
        waited: Duration,
    },
}

impl Folio<'_> {
    /// The reference count.
    pub fn refcount(&self) -> i32 {
        self.head_page().refcount()
    }

    /// The number of mappings of the folio as a whole.
    pub fn mapcount(&self) -> i32 {
        self.head_page().mapcount()
    }

    /// Pins on a large folio (`_pincount`); small folios count pins in the refcount.
    pub fn pincount(&self) -> i32 {
        self.head_page().pincount()
    }

    /// `folio_maybe_dma_pinned`: large folios by pincount, small ones by a count of at least
    /// the pin bias (fuzzy, as in the kernel).
    pub fn maybe_dma_pinned(&self) -> bool {
        if self.order().get() > 0 {
            self.pincount() > 0
        } else {
            self.refcount() >= GUP_PIN_COUNTING_BIAS
        }
    }

    /// Whether the folio is dirty.
    pub fn is_dirty(&self) -> bool {
        self.head_page().flags().contains(PageFlags::DIRTY)
    }

    /// Marks the folio dirty (once; a no-op if it already is).
    pub fn mark_dirty(&self) {
        if !self.is_dirty() {
            self.head_page().set_flags(PageFlags::DIRTY);
        }
    }

    /// Clears the dirty flag (after write-back).
    pub fn clear_dirty(&self) {
        self.head_page().clear_flags(PageFlags::DIRTY);
    }

    /// The address space the folio was mapped from (`folio->mapping`: for device-dax, the
    /// device's), or 0 if no fault has set it yet.
    pub fn mapping(&self) -> u64 {
        self.head_page().snapshot().mapping
    }

    /// The folio's page offset in its address space (`folio->index`); meaningful once
    /// [`Folio::mapping`] is set.
    pub fn index(&self) -> u64 {
        self.head_page().snapshot().index
    }

    /// Whether the folio, or any page in it, is poisoned.
    pub fn is_poisoned(&self) -> bool {
        let f = self.head_page().flags();
        f.contains(PageFlags::HWPOISON) || f.contains(PageFlags::HAS_HWPOISONED)
    }

    pub(crate) fn is_large(&self) -> bool {
        self.order().get() > 0
    }
}

/// A folio a driver allocated (`zone_device_folio_init`): holds the first reference and a pgmap
/// liveness reference. Dropping it is the driver's final put: the free path calls `folio_free`.
#[derive(Debug)]
pub struct AllocatedFolio {
    pgmap: PgmapRef,
    head: Pfn,
}

impl AllocatedFolio {
    /// The head pfn of the allocated folio.
    pub fn pfn(&self) -> Pfn {
        self.head
    }
}

impl Drop for AllocatedFolio {
    fn drop(&mut self) {
        // The allocation's reference and the liveness reference keep the lookup valid.
        if let Ok(folio) = FolioRef::at(&self.pgmap, self.head) {
            folio.ungrab(1, false);
        }
    }
}

/// A folio mapped once (what one page-table entry of a user mapping holds): a reference, a
/// mapcount and a pgmap liveness reference, given back on drop.
#[derive(Debug)]
pub struct MappedFolio {
    pgmap: PgmapRef,
    head: Pfn,
}

impl MappedFolio {
    /// The head pfn of the mapped folio.
    pub fn pfn(&self) -> Pfn {
        self.head
    }

    /// The pgmap this mapped folio keeps alive.
    pub fn pgmap(&self) -> &Pgmap {
        &self.pgmap
    }
}

impl Drop for MappedFolio {
    fn drop(&mut self) {
        // The mapping's reference keeps the folio (and its shape) stable, and the liveness
        // reference keeps the memmap initialised and alive: this lookup cannot fail.
        if let Ok(folio) = FolioRef::at(&self.pgmap, self.head) {
            folio.unmap();
        }
    }
}

/// The public entry points that act on one folio: each looks the folio up once
/// ([`FolioRef`]) and hands it to the cursor, which does the work. (They are methods of
/// `Pgmap` for callers' convenience; the pgmap layer below cannot name the cursor.)
impl Pgmap {
    /// Maps the folio holding `pfn`, or for fsdax forms an `order` folio at `pfn` first
    /// (`order` must be 0 or the folio's order for other types): a reference, a mapcount and a
    /// liveness reference, all released when the returned mapping drops.
    pub fn map_folio(self: &Arc<Self>, pfn: Pfn, order: Order) -> Result<MappedFolio, FolioError> {
        if self.memory_type() == MemoryType::Private {
            return Err(FolioError::NotAddressable {
                memory_type: MemoryType::Private,
            });
        }
        let live = self.live_folio_ref()?;
        FolioRef::block(self, pfn, order)?.map(live, order)
    }

    /// Hands out the free folio holding `pfn` (`zone_device_folio_init`): its count goes from 0
    /// to 1, and the returned handle's drop is the put that frees it again. Only for memory a
    /// driver allocates: private, coherent and P2P.
    pub fn alloc_folio(self: &Arc<Self>, pfn: Pfn) -> Result<AllocatedFolio, FolioError> {
        let memory_type = self.memory_type();
        if !memory_type.driver_allocated() {
            return Err(FolioError::NotDriverAllocated { memory_type });
        }
        let live = self.live_folio_ref()?;
        FolioRef::at(self, pfn)?.alloc(live)
    }

    /// A liveness reference for a mapping or an allocation, refused once teardown began.
    pub(crate) fn live_folio_ref(self: &Arc<Self>) -> Result<PgmapRef, FolioError> {
        self.live_ref().map_err(|d| FolioError::TornDown {
            may_revive: d.may_revive,
        })
    }

    /// Poisons one 4 KiB page ([`FolioRef::poison_subpage`]).
    pub fn poison_subpage(&self, pfn: Pfn) -> Result<(), PgmapError> {
        FolioRef::at(self, pfn)?.poison_subpage(pfn)
    }

    /// Clears one 4 KiB page's poison ([`FolioRef::unpoison_subpage`]). Returns whether the
    /// page was poisoned.
    pub fn unpoison_subpage(&self, pfn: Pfn) -> Result<bool, PgmapError> {
        FolioRef::at(self, pfn)?.unpoison_subpage(pfn)
    }

    /// The lowest poisoned page of the folio holding `pfn`, if any
    /// ([`FolioRef::poisoned_page`]).
    pub fn folio_poisoned_page(&self, pfn: Pfn) -> Result<Option<Pfn>, PgmapError> {
        Ok(FolioRef::at(self, pfn)?.poisoned_page())
    }

    /// Whether this 4 KiB page is poisoned ([`FolioRef::subpage_poisoned`]).
    pub fn subpage_poisoned(&self, pfn: Pfn) -> Result<bool, PgmapError> {
        FolioRef::at(self, pfn)?.subpage_poisoned(pfn)
    }

    /// `dax_layout_busy_page_range`: the first pfn in `range` whose folio holds references
    /// beyond its mappings (refcount − mapcount ≠ idle), i.e. is pinned or otherwise in use.
    pub fn busy_page_range(&self, range: PfnRange) -> Result<Option<Pfn>, FolioError> {
        let (memmap, s) = self.synced_span(range.start(), range.len())?;
        let idle = self.memory_type().idle_refcount();
        // fsdax maps and unmaps change the reference count and the mapcount together under
        // the formation lock (`fsdax_map`, `MappedFolio::drop`): read as a pair under it, a
        // folio is seen before or after a map, never between its two halves (which would look
        // busy, and no put would follow to wake a `break_layouts`) nor straddling one (a held
        // folio looking idle). Reshapes hold the lock too, so lookups need no retry.
        if self.memory_type() == MemoryType::FsDax {
            let _formation = self.fsdax_lock().lock();
            first_busy(SpanFolios::new(range, |pfn| memmap.folio(&s, pfn)), idle)
        } else {
            let walk = memmap
                .span_folios_static(&s, range)
                .map_err(|(_, e)| PgmapError::from(e))?;
            first_busy(walk, idle)
        }
    }

    /// `dax_break_layout`: waits, woken by the free path and by every put, until no folio in
    /// `range` is busy; gives up with `StillBusy` after `timeout`.
    pub fn break_layouts(
        &self,
        range: PfnRange,
        timeout: Option<Duration>,
    ) -> Result<(), FolioError> {
        let memory_type = self.memory_type();
        if memory_type != MemoryType::FsDax {
            // Only fsdax puts wake layout waiters (it keeps the other types' unpin path free
            // of the fence that wake-up needs); nobody would wake this wait.
            return Err(FolioError::NotFsdax { memory_type });
        }
        let start = Instant::now();
        let waiters = self.layout_waiters();
        waiters.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `wake_layout_waiters`.
        fence(Ordering::SeqCst);
        let result = (|| {
            let (lock, cv) = self.layout_wait();
            let mut g = lock.lock();
            loop {
                let Some(pfn) = self.busy_page_range(range)? else {
                    return Ok(());
                };
                let waited = start.elapsed();
                match timeout {
                    Some(t) if waited >= t => return Err(FolioError::StillBusy { pfn, waited }),
                    Some(t) => {
                        cv.wait_for(&mut g, t - waited);
                    }
                    None => cv.wait(&mut g),
                }
            }
        })();
        waiters.fetch_sub(1, Ordering::Relaxed);
        result
    }
}

/// The first pfn of `walk` whose folio holds references beyond its mappings and its idle
/// count.
fn first_busy<'m, L: FolioLookup<'m>>(
    walk: SpanFolios<'m, L>,
    idle: i32,
) -> Result<Option<Pfn>, FolioError> {
    for step in walk {
        let (f, sub) = step.map_err(|(_, e)| PgmapError::from(e))?;
        if f.refcount() - f.mapcount() != idle {
            return Ok(Some(sub.start()));
        }
    }
    Ok(None)
}

#[cfg(all(test, not(loom)))]
mod tests;
