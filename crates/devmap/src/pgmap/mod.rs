//! Device pagemaps (`struct dev_pagemap`) and the device space that registers them.
//!
//! A [`Pgmap`] is one registered device: a memory type, one or more pfn ranges, a compound
//! order (`vmemmap_shift`), an optional altmap (the memmap stored in the device's own first
//! pfns, range 0 only, as in the kernel), an owner cookie and driver callbacks. It owns one
//! memmap per range. Every public lookup syncs the span it reads first (a no-op once
//! initialisation is idle), so no descriptor is reachable before it is initialised, whichever
//! [`InitMode`](crate::init::InitMode) built the pgmap.
//!
//! A [`DeviceSpace`] is the "physical" address space those pfns live in: it hands out aligned,
//! non-overlapping pfn ranges and finds the pgmap of a pfn (`get_dev_pagemap`). There is no
//! process-wide global: a program may run several independent spaces (tests do).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::addr::{Order, Pfn, PfnRange};
use crate::backing::BackingError;
use crate::desc::{Page, PgmapId};
use crate::init::{InitState, InitStats, MemmapSet, SyncError};
use crate::memmap::{Cost, Folio, Layout, LookupError, Memmap, Resident, Synced};

mod config;
mod error;
mod live;
mod memory_type;
mod space;

use self::config::sum_costs;
pub use self::config::{Altmap, FolioFreeFn, MemoryFailureFn, PgmapConfig, PgmapOps};
pub use self::error::PgmapError;
pub use self::memory_type::MemoryType;

pub(crate) use self::live::{Dying, Liveness};
pub use self::space::DeviceSpace;
pub(crate) use self::space::{MemmapPlace, Missing};

/// A registered device pgmap (`struct dev_pagemap`).
#[derive(Debug)]
pub struct Pgmap {
    id: PgmapId,
    memory_type: MemoryType,
    vmemmap_shift: Order,
    layout: Layout,
    altmap: Option<Altmap>,
    owner: Option<u64>,
    ops: PgmapOps,
    ranges: Vec<PfnRange>,
    set: Arc<MemmapSet>,
    /// The first background init worker (it joins the others), joined by teardown.
    workers: Mutex<Option<JoinHandle<()>>>,
    /// Handles, pins and mappings (`pgmap->ref`).
    live: Liveness,
    /// Serialises forming and splitting dynamic fsdax folios (the DAX entry lock).
    fsdax_lock: Mutex<()>,
    /// Serialises teardowns: one that times out must not revive a pgmap that another
    /// teardown is draining.
    teardown: Mutex<()>,
    /// Threads in `break_layouts`, so puts only take the wake-up lock when someone waits.
    layout_waiters: AtomicUsize,
    layout_wait: (Mutex<()>, Condvar),
}

/// A counted reference to a live pgmap (`get_dev_pagemap`'s result): while any exists,
/// [`DeviceSpace::memunmap_pages`] waits. Pins and mappings hold one each.
#[derive(Debug)]
pub struct PgmapRef {
    pgmap: Arc<Pgmap>,
}

impl std::ops::Deref for PgmapRef {
    type Target = Pgmap;

    fn deref(&self) -> &Pgmap {
        &self.pgmap
    }
}

impl Clone for PgmapRef {
    fn clone(&self) -> Self {
        self.pgmap.live.get_another();
        Self {
            pgmap: Arc::clone(&self.pgmap),
        }
    }
}

impl Drop for PgmapRef {
    fn drop(&mut self) {
        self.pgmap.live.put();
    }
}

impl PgmapRef {
    /// The pgmap as a shared handle.
    pub fn arc(&self) -> &Arc<Pgmap> {
        &self.pgmap
    }
}

impl Pgmap {
    /// The id stored in head descriptors.
    pub fn id(&self) -> PgmapId {
        self.id
    }

    /// Takes a liveness reference unless teardown has begun (`percpu_ref_tryget_live`).
    pub fn tryget(self: &Arc<Self>) -> Option<PgmapRef> {
        self.live_ref().ok()
    }

    /// As [`tryget`](Self::tryget), saying on refusal whether the teardown may still give up.
    pub(crate) fn live_ref(self: &Arc<Self>) -> Result<PgmapRef, Dying> {
        self.live.tryget()?;
        Ok(PgmapRef {
            pgmap: Arc::clone(self),
        })
    }

    /// The run of data pfns from `pfn` up to at most `end` that one range of this pgmap holds
    /// (its memmap answers for all of it); `None` if no range's data holds `pfn` (not ours, or
    /// an altmap pfn).
    pub(crate) fn data_piece(&self, pfn: Pfn, end: Pfn) -> Option<PfnRange> {
        let data = self
            .set
            .maps()
            .iter()
            .map(|m| m.geometry().data_range())
            .find(|d| d.contains(pfn))?;
        Some(PfnRange::new_unchecked(pfn, data.end().min(end)))
    }

    /// The first pfn of `range` that no data range of this pgmap holds, if any. Adjacent
    /// ranges of one pgmap cover a span together.
    pub(crate) fn first_uncovered(&self, range: PfnRange) -> Option<Pfn> {
        let mut pfn = range.start();
        while pfn < range.end() {
            match self.data_piece(pfn, range.end()) {
                Some(piece) => pfn = piece.end(),
                None => return Some(pfn),
            }
        }
        None
    }

    /// Liveness references held now (handles, pins, mappings).
    pub fn refs(&self) -> u64 {
        self.live.count()
    }

    /// The memmap holding `pfn..pfn + nr_pages` and a proof that it is initialised.
    pub(crate) fn synced_span(
        &self,
        pfn: Pfn,
        nr_pages: u64,
    ) -> Result<(&Memmap, Synced), PgmapError> {
        let range = PfnRange::new(pfn, nr_pages).map_err(|_| SyncError::OutOfRange {
            range: PfnRange::new_unchecked(pfn, pfn),
        })?;
        Ok(self.set.sync(range)?)
    }

    /// Test-only: the memmap of range `index` with a token that works after teardown.
    #[cfg(test)]
    pub(crate) fn audit(&self, index: usize) -> Option<(&Memmap, Synced)> {
        self.set.audit(index)
    }

    /// Test builds: how many times this pgmap's descriptors were synced and looked up, by any
    /// thread (every lookup goes through `MemmapSet::sync`, which counts).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn lookups(&self) -> u64 {
        self.set.syncs()
    }

    pub(crate) fn fsdax_lock(&self) -> &Mutex<()> {
        &self.fsdax_lock
    }

    pub(crate) fn layout_waiters(&self) -> &AtomicUsize {
        &self.layout_waiters
    }

    pub(crate) fn layout_wait(&self) -> (&Mutex<()>, &Condvar) {
        (&self.layout_wait.0, &self.layout_wait.1)
    }

    /// The memory type.
    pub fn memory_type(&self) -> MemoryType {
        self.memory_type
    }

    /// The compound order.
    pub fn vmemmap_shift(&self) -> Order {
        self.vmemmap_shift
    }

    /// The descriptor layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The altmap, if the memmap of range 0 lives on the device.
    pub fn altmap(&self) -> Option<Altmap> {
        self.altmap
    }

    /// The owner cookie.
    pub fn owner(&self) -> Option<u64> {
        self.owner
    }

    /// The driver callbacks.
    pub fn ops(&self) -> &PgmapOps {
        &self.ops
    }

    /// The pfn ranges, in registration order.
    pub fn ranges(&self) -> impl Iterator<Item = PfnRange> + '_ {
        self.ranges.iter().copied()
    }

    /// What initialising the memmap has done so far. For asynchronous init `elapsed` is the
    /// time until the last descriptor was written, zero while still active.
    pub fn init_stats(&self) -> InitStats {
        self.set.stats()
    }

    /// `Active` while background initialisation is running, `Idle` once every descriptor is
    /// initialised.
    pub fn init_state(&self) -> InitState {
        self.set.state()
    }

    /// Makes the descriptors of `range`, rounded out to whole compounds, initialised before
    /// returning (an empty range syncs the compound of its first pfn): pending work is done on
    /// this thread, work in other threads' hands is waited for. What a fault or a pin calls
    /// before handing out a page.
    pub fn sync(&self, range: PfnRange) -> Result<(), PgmapError> {
        self.set.sync(range)?;
        Ok(())
    }

    /// Finishes initialisation on this thread (helping the workers) and returns when idle.
    pub fn sync_all(&self) -> Result<(), PgmapError> {
        Ok(self.set.sync_all()?)
    }

    /// The checksums of a room memmap's units as they are now, for a clean disable to record
    /// (`memmap::sums`); call after teardown, once initialisation was finished.
    pub(crate) fn room_sums(&self) -> crate::memmap::RoomSums {
        self.set.room_sums()
    }

    /// Units of an adopted memmap room that did not match their checksum (or had none) when
    /// first used, and were rebuilt as a fresh init writes them.
    pub fn rebuilt_room_units(&self) -> u64 {
        self.set.rebuilt_units()
    }

    /// Sleeps until the background workers have initialised everything, without helping.
    /// Fails with [`SyncError::TornDown`] if teardown stopped them first (then the rest is
    /// never initialised), including for a caller that was already asleep.
    pub fn wait_init_idle(&self) -> Result<(), PgmapError> {
        Ok(self.set.wait_idle()?)
    }

    /// The memmap cost summed over every range.
    pub fn cost(&self) -> Cost {
        sum_costs(self.set.maps().iter().map(Memmap::cost))
    }

    /// The memory the memmap holds now, summed over every range and measured page by page:
    /// `dram_bytes` is what [`Pgmap::cost`]'s `metadata_bytes` accounts for, `device_bytes` the
    /// written part of an altmap's memmap (emulated in host memory).
    pub fn resident(&self) -> Result<Resident, BackingError> {
        self.set
            .maps()
            .iter()
            .try_fold(Resident::default(), |mut acc, m| {
                acc += m.resident()?;
                Ok(acc)
            })
    }

    /// Address space reserved for descriptors and directories (diagnostics).
    pub fn reserved_bytes(&self) -> u64 {
        self.set.maps().iter().map(Memmap::reserved_bytes).sum()
    }

    fn synced(&self, pfn: Pfn) -> Result<(&Memmap, Synced), PgmapError> {
        // An empty range at `pfn` syncs the compound holding `pfn`.
        Ok(self.set.sync(PfnRange::new_unchecked(pfn, pfn))?)
    }

    /// The data pfns of each range, in registration order: the range without the altmap pfns
    /// at the start of range 0. Exactly the pfns [`Pgmap::pfn_valid`] accepts.
    pub fn data_ranges(&self) -> impl Iterator<Item = PfnRange> + '_ {
        self.set.maps().iter().map(|m| m.geometry().data_range())
    }

    /// Whether `pfn` is a data pfn of this pgmap (`pgmap_pfn_valid`): in a range and not in the
    /// altmap.
    pub fn pfn_valid(&self, pfn: Pfn) -> bool {
        self.set
            .maps()
            .iter()
            .any(|m| m.geometry().data_range().contains(pfn))
    }

    /// The stored descriptor of `pfn`; `Ok(None)` for a tail in the Heads layout, which has no
    /// descriptor of its own.
    pub fn descriptor(&self, pfn: Pfn) -> Result<Option<&Page>, PgmapError> {
        let (m, s) = self.synced(pfn)?;
        Ok(m.descriptor(&s, pfn)?)
    }

    /// The head pfn of the compound holding `pfn` (`compound_head`).
    pub fn compound_head(&self, pfn: Pfn) -> Result<Pfn, PgmapError> {
        let (m, s) = self.synced(pfn)?;
        Ok(m.compound_head(&s, pfn)?)
    }

    /// The folio holding `pfn` (`page_folio`).
    pub fn folio(&self, pfn: Pfn) -> Result<Folio<'_>, PgmapError> {
        Ok(self.lookup(pfn, Order::BASE)?.2)
    }

    /// The one lookup of a folio, behind `folio::FolioRef` and [`Pgmap::folio`]: syncs the
    /// naturally aligned block of `order` around `pfn` (rounded out to whole compounds; what a
    /// mapping of that order will touch) and finds the folio holding `pfn` in it. Returns the
    /// memmap and the token with the folio, so that every later operation on the folio reads
    /// through them without syncing or looking it up again.
    pub(crate) fn lookup(
        &self,
        pfn: Pfn,
        order: Order,
    ) -> Result<(&Memmap, Synced, Folio<'_>), PgmapError> {
        let (memmap, synced) = self.synced_span(pfn.align_down(order), order.nr_pages())?;
        let folio = self.lookup_folio(memmap, &synced, pfn)?;
        Ok((memmap, synced, folio))
    }

    /// The folio holding `pfn`, read consistently while fsdax folios form and split: a lookup
    /// that raced a reshape ([`LookupError::Reshaping`]) is repeated under the formation
    /// lock, which every form and split holds. Not to be called with that lock held.
    pub(crate) fn lookup_folio<'m>(
        &self,
        memmap: &'m Memmap,
        s: &Synced,
        pfn: Pfn,
    ) -> Result<Folio<'m>, LookupError> {
        match memmap.folio(s, pfn) {
            Err(LookupError::Reshaping { .. }) => {
                let _formation = self.fsdax_lock.lock();
                memmap.folio(s, pfn)
            }
            found => found,
        }
    }

    /// The order of the folio holding `pfn`.
    pub fn order(&self, pfn: Pfn) -> Result<Order, PgmapError> {
        Ok(self.folio(pfn)?.order())
    }

    /// Refuses every later lookup and sync, stops background init before its next piece and
    /// joins its workers. Safe against concurrent syncs: a sync already past its check finishes
    /// the sub-ranges it needs (every piece is finished by whoever claimed it), and the memmap
    /// lives as long as any handle.
    fn shut_down(&self) {
        self.set.kill();
        if let Some(w) = self.workers.lock().take() {
            // A worker never panics on its own (init writes only in-bounds atomics); if one
            // did, there is nothing left to clean up here.
            let _ = w.join();
        }
    }
}

impl Drop for Pgmap {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(test)]
mod tests;
