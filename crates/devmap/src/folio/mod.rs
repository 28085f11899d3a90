//! Folio reference counts, mappings and the free path (mainline ≥ 6.15, seed 001).
//!
//! A folio's count rests at its pgmap type's idle value (1 for device-dax, 0 otherwise).
//! Mapping a folio ([`Pgmap::map_folio`]) takes a reference and a mapcount and a liveness
//! reference on the pgmap; dropping the [`FolioMapping`] gives them back. Pins (`crate::gup`)
//! take references with the pin bias. Whoever brings the count back to idle runs the free
//! path (`free_zone_device_folio`): fsdax wakes layout-break waiters and splits a dynamic folio
//! back to order 0; device-dax has nothing to do (its count already rests at 1); driver memory
//! (private, coherent, P2P) calls the pgmap's `folio_free` callback.
//!
//! fsdax pgmaps have no `vmemmap_shift`: their folios are formed when a mapping asks for a
//! larger order and split when they go idle, both under the pgmap's fsdax lock (the kernel's
//! DAX entry lock). A folio at count 0 can't be pinned (`refcount::try_grab` never
//! resurrects), so a pinner can't see a folio that is being split.

mod poison;
pub(crate) mod refcount;

pub(crate) use self::poison::poisoned_page;

use std::time::{Duration, Instant};

use crate::addr::{Order, Pfn, PfnRange};
use crate::desc::{GUP_PIN_COUNTING_BIAS, PageFlags};
use crate::memmap::{Folio, FolioLookup, Memmap, SpanFolios, Synced};
use crate::pgmap::{MemoryType, Pgmap, PgmapError, PgmapRef};
use crate::primitive::{Ordering, fence};

use self::refcount::Refused;

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
        let p: &Pgmap = &self.pgmap;
        // The allocation's reference and the liveness reference keep the lookup valid.
        if let Ok((memmap, synced)) = p.synced_span(self.head, 1)
            && let Ok(folio) = memmap.folio(&synced, self.head)
        {
            p.ungrab_folio(memmap, &folio, 1, false);
        }
    }
}

/// A mapping of one folio: holds a reference, a mapcount and a pgmap liveness reference.
#[derive(Debug)]
pub struct FolioMapping {
    pgmap: PgmapRef,
    head: Pfn,
}

impl FolioMapping {
    /// The head pfn of the mapped folio.
    pub fn pfn(&self) -> Pfn {
        self.head
    }

    /// The pgmap this mapping keeps alive.
    pub fn pgmap(&self) -> &Pgmap {
        &self.pgmap
    }
}

impl Drop for FolioMapping {
    fn drop(&mut self) {
        let p: &Pgmap = &self.pgmap;
        // The mapping's reference keeps the folio (and its shape) stable, and the liveness
        // reference keeps the memmap initialised and alive: this lookup cannot fail.
        if let Ok((memmap, synced)) = p.synced_span(self.head, 1)
            && let Ok(folio) = memmap.folio(&synced, self.head)
        {
            let mapcount = folio.head_page().mapcount_word();
            if p.memory_type() != MemoryType::FsDax {
                mapcount.fetch_sub(1, Ordering::Relaxed);
                p.ungrab_folio(memmap, &folio, 1, false);
                return;
            }
            // Both halves under the formation lock, as `fsdax_map` takes them, so that
            // `busy_page_range` never sees one without the other; the free path takes the
            // lock itself, after.
            let idle = {
                let _formation = p.fsdax_lock().lock();
                mapcount.fetch_sub(1, Ordering::Relaxed);
                let word = folio.head_page().counts_word();
                let idle = p.memory_type().idle_refcount();
                refcount::ungrab(word, folio.is_large(), 1, false, idle)
            };
            if idle {
                p.folio_idle(memmap, &folio);
            }
            p.wake_layout_waiters();
        }
    }
}

impl Pgmap {
    /// Maps the folio holding `pfn`, or for fsdax forms an `order` folio at `pfn` first
    /// (`order` must be 0 or the folio's order for other types): a reference, a mapcount and a
    /// liveness reference, all released when the returned mapping drops.
    pub fn map_folio(
        self: &std::sync::Arc<Self>,
        pfn: Pfn,
        order: Order,
    ) -> Result<FolioMapping, FolioError> {
        if self.memory_type() == MemoryType::Private {
            return Err(FolioError::NotAddressable {
                memory_type: MemoryType::Private,
            });
        }
        let pgmap = self.live_ref().map_err(|d| FolioError::TornDown {
            may_revive: d.may_revive,
        })?;
        let (memmap, synced) = self.synced_span(pfn.align_down(order), order.nr_pages())?;
        let head = if self.memory_type() == MemoryType::FsDax {
            self.fsdax_map(memmap, &synced, pfn, order)?
        } else {
            let folio = memmap.folio(&synced, pfn).map_err(PgmapError::from)?;
            if order.get() != 0 && order != folio.order() {
                return Err(FolioError::BadOrder {
                    pfn,
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
        Ok(FolioMapping { pgmap, head })
    }

    /// `dax_set_mapping`: records `mapping` (an address space id, non-zero) and `index` (the
    /// folio's page offset in it) on the head of the folio holding `pfn`, once: a folio whose
    /// mapping is set keeps it, as in the kernel. The device-dax fault path calls this before
    /// it maps the folio, so no mapping of the folio is ever seen without them. Returns whether
    /// it wrote.
    pub(crate) fn set_folio_mapping(
        &self,
        pfn: Pfn,
        mapping: u64,
        index: u64,
    ) -> Result<bool, FolioError> {
        let (memmap, synced) = self.synced_span(pfn, 1)?;
        let folio = memmap.folio(&synced, pfn).map_err(PgmapError::from)?;
        Ok(folio.head_page().set_mapping_once(mapping, index))
    }

    /// Clears `folio->mapping`, `folio->index` and the dirty bit of the folio holding `pfn`,
    /// as init left them: for a device going away cleanly, whose memmap outlives it.
    pub(crate) fn clear_folio_mapping(&self, pfn: Pfn) -> Result<(), FolioError> {
        let (memmap, synced) = self.synced_span(pfn, 1)?;
        let folio = memmap.folio(&synced, pfn).map_err(PgmapError::from)?;
        folio.head_page().clear_mapping();
        Ok(())
    }

    /// Hands out the free folio holding `pfn` (`zone_device_folio_init`): its count goes from 0
    /// to 1, and the returned handle's drop is the put that frees it again. Only for memory a
    /// driver allocates: private, coherent and P2P.
    pub fn alloc_folio(
        self: &std::sync::Arc<Self>,
        pfn: Pfn,
    ) -> Result<AllocatedFolio, FolioError> {
        let memory_type = self.memory_type();
        if !memory_type.driver_allocated() {
            return Err(FolioError::NotDriverAllocated { memory_type });
        }
        let pgmap = self.live_ref().map_err(|d| FolioError::TornDown {
            may_revive: d.may_revive,
        })?;
        let (memmap, synced) = self.synced_span(pfn, 1)?;
        let folio = memmap.folio(&synced, pfn).map_err(PgmapError::from)?;
        if let Err(count) = refcount::alloc(folio.head_page().counts_word()) {
            return Err(FolioError::Busy {
                pfn,
                order: folio.order(),
                why: if count == refcount::FREEING {
                    "the folio is being freed (its folio_free has not returned)"
                } else {
                    "the folio is already allocated"
                },
            });
        }
        Ok(AllocatedFolio {
            pgmap,
            head: folio.pfn(),
        })
    }

    /// fsdax: maps an existing folio of `order` at `pfn`, or forms one from idle order-0 pages.
    fn fsdax_map(
        &self,
        memmap: &Memmap,
        synced: &Synced,
        pfn: Pfn,
        order: Order,
    ) -> Result<Pfn, FolioError> {
        let busy = |why| FolioError::Busy { pfn, order, why };
        if !pfn.is_aligned(order) {
            return Err(busy("the pfn is not aligned to the order"));
        }
        let _formation = self.fsdax_lock().lock();
        let folio = memmap.folio(synced, pfn).map_err(PgmapError::from)?;
        if folio.pfn() == pfn && folio.order() == order {
            // Mapped already (or idle and not yet split): take a reference. A count of 0 is
            // fine here: under the lock nobody splits or frees concurrently, and pins refuse 0.
            refcount::add(folio.head_page().counts_word(), 1);
        } else {
            if folio.order() > order {
                return Err(busy("the pfn is inside a larger folio"));
            }
            let span = PfnRange::new_unchecked(pfn, pfn.add(order.nr_pages()));
            for p in (0..span.len()).map(|i| pfn.add(i)) {
                let f = memmap.folio(synced, p).map_err(PgmapError::from)?;
                if f.is_large() {
                    return Err(busy("part of the range is in another folio"));
                }
                if f.refcount() != 0 {
                    return Err(busy("part of the range is in use"));
                }
            }
            self.form(memmap, synced, span, order)?;
            let head = memmap.folio(synced, pfn).map_err(PgmapError::from)?;
            refcount::add(head.head_page().counts_word(), 1);
        }
        memmap
            .folio(synced, pfn)
            .map_err(PgmapError::from)?
            .head_page()
            .mapcount_word()
            .fetch_add(1, Ordering::Relaxed);
        Ok(pfn)
    }

    /// `prep_compound_page` on idle order-0 pages (fsdax lock held).
    fn form(
        &self,
        memmap: &Memmap,
        s: &Synced,
        span: PfnRange,
        order: Order,
    ) -> Result<(), PgmapError> {
        if order.get() == 0 {
            return Ok(());
        }
        let head = span.start();
        // A poisoned page makes the new folio poisoned, as `poison_subpage` would have.
        let mut poisoned = memmap.subpage_hwpoison(s, head)?;
        for i in 1..span.len() {
            let p = head.add(i);
            if let Some(d) = memmap.descriptor(s, p)? {
                let poison = d.flags().contains(PageFlags::HWPOISON);
                d.init_tail(head);
                if poison {
                    d.set_flags(PageFlags::HWPOISON);
                }
            }
            poisoned |= memmap.subpage_hwpoison(s, p)?;
        }
        if let Some(d) = memmap.descriptor(s, head)? {
            d.set_flags(PageFlags::HEAD);
            if poisoned {
                d.set_flags(PageFlags::HAS_HWPOISONED);
            }
            d.prep_compound_head(order);
        }
        Ok(())
    }

    /// Splits an idle dynamic fsdax folio back to order-0 pages (fsdax lock held).
    fn split(
        &self,
        memmap: &Memmap,
        s: &Synced,
        head: Pfn,
        order: Order,
    ) -> Result<(), PgmapError> {
        for i in (0..order.nr_pages()).rev() {
            let p = head.add(i);
            // Read before the rewrite (Flat and Vmemmap keep it in the page's flags, Folio in
            // its side table).
            let poisoned = memmap.subpage_hwpoison(s, p)?;
            if let Some(d) = memmap.descriptor(s, p)? {
                let keep = d.flags().bits() & PageFlags::HWPOISON.bits();
                d.init_zone_device(self.id(), self.memory_type().idle_refcount());
                d.set_flags(PageFlags::from_bits(keep));
                if poisoned {
                    // The page is its own folio again: flag it as `poison_subpage` does.
                    d.set_flags(PageFlags::HAS_HWPOISONED);
                }
            }
        }
        Ok(())
    }

    /// Releases `refs` pins (`pin`) or plain references from `folio`, runs the free path if
    /// that made it idle, and wakes layout-break waiters.
    pub(crate) fn ungrab_folio(&self, memmap: &Memmap, folio: &Folio<'_>, refs: i32, pin: bool) {
        let word = folio.head_page().counts_word();
        let memory_type = self.memory_type();
        let large = folio.is_large();
        if memory_type.driver_allocated() {
            // Unallocatable from the last put until `folio_free` has returned.
            if refcount::ungrab_driver(word, large, refs, pin) {
                self.folio_idle(memmap, folio);
                refcount::freed(word);
            }
        } else if refcount::ungrab(word, large, refs, pin, memory_type.idle_refcount()) {
            self.folio_idle(memmap, folio);
        }
        self.wake_layout_waiters();
    }

    /// The free path (`free_zone_device_folio`), run by whoever made `folio` idle. The
    /// releaser's sync token covers only what it held (a mapping syncs its head, a pin its
    /// pages), so the split syncs the whole folio itself.
    pub(crate) fn folio_idle(&self, memmap: &Memmap, folio: &Folio<'_>) {
        match self.memory_type() {
            MemoryType::FsDax => {
                // The shape is read from the head again rather than taken from `folio`: a
                // grab that raced a reshape gives its references back with the shape it
                // looked up, which need not be the head's shape now.
                let head = folio.head_page();
                if head.flags().contains(PageFlags::HEAD) {
                    let _formation = self.fsdax_lock().lock();
                    // Re-check under the lock: a new mapping may have taken the folio again.
                    if head.refcount() == 0
                        && head.flags().contains(PageFlags::HEAD)
                        && let Some(order) = head.order()
                    {
                        // The split rewrites every page of the folio, so it needs a token for
                        // all of them (free once init is idle). A failure here means the pgmap
                        // is torn down, and then there is nothing left to split.
                        if let Ok((_, whole)) = self.synced_span(folio.pfn(), order.nr_pages()) {
                            let _ = self.split(memmap, &whole, folio.pfn(), order);
                        }
                    }
                }
                self.wake_layout_waiters_now();
            }
            // Device-dax: the kernel resets the count to 1 and calls no driver; here the count
            // already rests at 1, so there is nothing to do.
            MemoryType::Generic => {}
            MemoryType::Private | MemoryType::Coherent | MemoryType::P2pDma => {
                if let Some(cb) = &self.ops().folio_free {
                    cb(folio);
                }
            }
        }
    }

    fn wake_layout_waiters(&self) {
        // Only fsdax has layout breaks to wake.
        if self.memory_type() != MemoryType::FsDax {
            return;
        }
        // SeqCst fence: pairs with the one in `break_layouts` so that either the waiter sees
        // this put's count, or this load sees the waiter (Dekker); a Relaxed load alone could
        // miss a waiter that checked the count just before the put.
        fence(Ordering::SeqCst);
        if self.layout_waiters().load(Ordering::Relaxed) > 0 {
            self.wake_layout_waiters_now();
        }
    }

    fn wake_layout_waiters_now(&self) {
        let (lock, cv) = self.layout_wait();
        let _g = lock.lock();
        cv.notify_all();
    }

    /// `dax_layout_busy_page_range`: the first pfn in `range` whose folio holds references
    /// beyond its mappings (refcount − mapcount ≠ idle), i.e. is pinned or otherwise in use.
    pub fn busy_page_range(&self, range: PfnRange) -> Result<Option<Pfn>, FolioError> {
        let (memmap, s) = self.synced_span(range.start(), range.len())?;
        let idle = self.memory_type().idle_refcount();
        // fsdax maps and unmaps change the reference count and the mapcount together under
        // the formation lock (`fsdax_map`, `FolioMapping::drop`): read as a pair under it, a
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
