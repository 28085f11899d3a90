//! The memmaps of one pgmap and the state of their initialisation, including the asynchronous
//! engine: background workers plus on-demand `sync` (seed 003, without its weak spots).
//!
//! Geometry of the asynchronous engine, all arithmetic (no tree, O(1) per pfn):
//!
//! * each range's data pfns are cut into *sub-ranges* of whole compounds sized so that one
//!   sub-range is about [`SUB_RANGE_DESCRIPTORS`] descriptors of work (2 MiB of pfns in Flat at
//!   any align ≤ 2 MiB, 8 MiB in Vmemmap 2M, 1 GiB in Heads 2M; never less than one compound);
//! * each sub-range is cut into *pieces* of 64 descriptors (`init::init_piece`), the unit a
//!   thread claims and writes;
//! * every [`NR_MEMMAP_RANGE`] consecutive sub-ranges form a worker *chunk*; workers pull chunks
//!   from one cursor and take their sub-ranges' pieces in order;
//! * `sync(pfn, n)` maps the request to its covering sub-ranges by division, writes on the
//!   caller's thread every piece of them nobody has taken, and sleeps only on pieces other
//!   threads are writing, after raising any background worker among them for that piece
//!   (`claim::SubRanges`, `boost`).
//!
//! The seed delegated 1/128 of a whole worker's range to a faulting thread and serialised it
//! behind a per-thread mutex; here the unit a fault pays for is bounded by the sub-range size,
//! not by the namespace size, and nothing waits for unrelated work.
//!
//! An adopted set (a memmap room a clean disable left, `MemmapSet::adopt`) has no engine but
//! a verification (`verify`): the first sync of each unit of the room checks its checksum,
//! and rebuilds it if it does not match, before the unit's descriptors are handed out.
//!
//! `Synced` (in `memmap`) is the proof that a pfn span is initialised; the memmap lookups demand one, and
//! only [`MemmapSet::sync`] makes one, so no caller can reach a descriptor before it is written.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::boost::{Os, Tid};
use super::claim::{MAX_PIECES, Pieces, Stopped, SubRanges};
use super::verify::{Verify, all_sums};
use super::{
    InitMode, InitProgress, InitStats, InitTarget, init_memmap, init_piece, nr_descriptors,
    nr_pieces,
};
use crate::addr::{Pfn, PfnRange};
use crate::memmap::{Memmap, RoomSums, Synced};
use crate::primitive::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Sub-ranges per worker chunk (`NR_MEMMAP_RANGE` in the seed).
pub const NR_MEMMAP_RANGE: usize = 128;
/// Descriptors a sub-range holds when compounds are small enough to group: 32 KiB of them.
pub const SUB_RANGE_DESCRIPTORS: u64 = 512;

/// Whether initialisation is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitState {
    /// Some descriptors are not yet initialised; workers are on it.
    Active,
    /// Every descriptor is initialised.
    Idle,
}

/// Why a sync failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The pgmap is being or has been torn down.
    #[error("the pgmap is torn down: no descriptor can be handed out")]
    TornDown,
    /// The pfns are not all in one range of the pgmap.
    #[error("pfns {range:?} are not inside one range of the pgmap")]
    OutOfRange {
        /// The pfns asked for.
        range: PfnRange,
    },
}

/// One range's place in the asynchronous geometry.
#[derive(Debug)]
struct RangePlan {
    /// Global index of this range's first sub-range.
    first_sub: usize,
    /// Sub-ranges in this range.
    nr_subs: usize,
    /// Pages per sub-range (whole compounds).
    sub_pages: u64,
    /// Pieces of each sub-range but the last.
    pieces: u32,
    /// Pieces of the last sub-range, which may hold fewer compounds.
    last_pieces: u32,
}

/// State of the asynchronous engine.
#[derive(Debug)]
struct Async {
    plans: Vec<RangePlan>,
    /// `(first, end)` global sub-range indices of each worker chunk.
    chunks: Vec<(usize, usize)>,
    cursor: AtomicUsize,
    subs: SubRanges,
    workers: usize,
    started: Instant,
    /// Nanoseconds from `started` until the last sub-range finished; 0 while running.
    full_ns: AtomicU64,
    /// Sub-ranges finished, counted by `SetPieces::finished`.
    finished_subs: AtomicUsize,
}

/// The memmaps of one pgmap and their initialisation state.
#[derive(Debug)]
pub(crate) struct MemmapSet {
    maps: Vec<Memmap>,
    target: InitTarget,
    engine: Option<Async>,
    /// An adopted room's first-use checks.
    verify: Option<Verify>,
    sync_stats: InitStats,
    written: AtomicU64,
    dead: AtomicBool,
    /// The caller's progress counter, told what the background workers write.
    progress: Option<std::sync::Arc<InitProgress>>,
    /// Test builds: calls of [`MemmapSet::sync`], from any thread (the proof that a fault, a
    /// pin and a memory failure look each folio up once; `Pgmap::lookups`).
    #[cfg(test)]
    syncs: std::sync::atomic::AtomicU64,
}

impl MemmapSet {
    /// Takes ownership of `maps` and initialises them with `mode`: before returning for `Sync`
    /// and `Parallel`, in the background (see [`MemmapSet::start_workers`]) for `Async`.
    pub(crate) fn new(
        maps: Vec<Memmap>,
        target: InitTarget,
        mode: InitMode,
        progress: Option<std::sync::Arc<InitProgress>>,
    ) -> Self {
        let mut set = Self::bare(maps, target);
        set.progress = progress;
        match mode {
            InitMode::Sync | InitMode::Parallel { .. } => {
                for m in &set.maps {
                    set.sync_stats += init_memmap(m, target, mode, set.progress.as_deref());
                }
            }
            InitMode::Async { workers } => set.engine = Some(Async::plan(&set.maps, workers)),
        }
        set
    }

    /// Takes ownership of `maps` whose descriptors should be what an initialisation writes
    /// (a memmap room left clean by an earlier enable, whose units' checksums are `sums`) and
    /// marks them initialised without writing or reading anything: each unit is checked
    /// against its checksum when it is first synced, and rebuilt if it does not match.
    pub(crate) fn adopt(maps: Vec<Memmap>, target: InitTarget, sums: &RoomSums) -> Self {
        let mut set = Self::bare(maps, target);
        set.verify = Some(Verify::new(&set.maps, sums));
        set
    }

    /// A set of `maps` with no work to do.
    fn bare(maps: Vec<Memmap>, target: InitTarget) -> Self {
        Self {
            maps,
            target,
            engine: None,
            verify: None,
            sync_stats: InitStats::default(),
            written: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            progress: None,
            #[cfg(test)]
            syncs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Starts the background workers of an `Async` set and returns the handle to join.
    ///
    /// The caller starts one thread, which drops itself to nice 19 and then starts the other
    /// workers, who inherit that priority (per-thread on Linux). Background work thereby
    /// yields to the threads that fault, and the caller, which is about to hand the pgmap to
    /// users, is never crowded off a core by workers still at its own priority. If no thread
    /// can be started the caller initialises everything before returning, like the seed's
    /// synchronous fallback.
    pub(crate) fn start_workers(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let engine = self.engine.as_ref()?;
        let workers = engine.workers;
        let set = Arc::clone(self);
        let first = std::thread::Builder::new()
            .name("devmap-init-0".to_owned())
            .spawn(move || {
                // Failure to lower the priority just leaves the workers at the default, where
                // nobody needs to boost them.
                let tid = Os.enter_background();
                // A new thread may have preempted its creator on this core; now that it is
                // background work, hand the core back at once.
                std::thread::yield_now();
                let others: Vec<JoinHandle<()>> = (1..workers)
                    .filter_map(|n| {
                        let set = Arc::clone(&set);
                        std::thread::Builder::new()
                            .name(format!("devmap-init-{n}"))
                            // Already at the background priority (inherited); this only
                            // learns the thread's id.
                            .spawn(move || set.work(n, Os.enter_background()))
                            .ok()
                    })
                    .collect();
                set.work(0, tid);
                for w in others {
                    // Workers only write in-bounds atomics; a join error has nothing to undo.
                    let _ = w.join();
                }
            });
        match first {
            Ok(handle) => Some(handle),
            Err(_) => {
                // Nothing is torn down yet, so this cannot fail.
                let _ = self.sync_all();
                None
            }
        }
    }

    /// Worker `n` (thread `tid` when it runs at the background priority): pulls chunks until
    /// there are none or the set is stopped.
    fn work(&self, n: usize, tid: Option<Tid>) {
        let Some(engine) = &self.engine else { return };
        let pieces = SetPieces { set: self, engine };
        let worker = engine.subs.worker(n, tid);
        loop {
            // Relaxed: the cursor only partitions work; the sub-range states order the rest.
            let c = engine.cursor.fetch_add(1, Ordering::Relaxed);
            let Some(&(first, end)) = engine.chunks.get(c) else {
                return;
            };
            worker.work(first, end, &pieces);
            if engine.subs.is_stopped() {
                return;
            }
        }
    }

    /// The memmaps, one per range, in registration order.
    pub(crate) fn maps(&self) -> &[Memmap] {
        &self.maps
    }

    /// Makes the descriptors of `range` initialised (whole compounds; an empty range means its
    /// first pfn), doing pending work on this thread and waiting only for work other threads
    /// hold.
    pub(crate) fn sync(&self, range: PfnRange) -> Result<(&Memmap, Synced), SyncError> {
        // Relaxed: a statistic the tests read after joining the threads that counted.
        #[cfg(test)]
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Acquire pairs with the Release store in `kill`.
        if self.dead.load(Ordering::Acquire) {
            return Err(SyncError::TornDown);
        }
        let bad = SyncError::OutOfRange { range };
        let want = if range.is_empty() {
            PfnRange::new(range.start(), 1).map_err(|_| bad)?
        } else {
            range
        };
        let (r, memmap) = self
            .maps
            .iter()
            .enumerate()
            .find(|(_, m)| m.geometry().range().contains_range(want))
            .ok_or(bad)?;
        let geo = memmap.geometry();
        let shift = geo.shift();
        let start = want.start().align_down(shift);
        let end = Pfn::new(want.end().raw().next_multiple_of(shift.nr_pages()));
        let covered = PfnRange::new_unchecked(start, end);
        if let Some(engine) = &self.engine
            && !engine.subs.all_done()
        {
            let data = geo.data_range();
            let (lo, hi) = (start.max(data.start()), end.min(data.end()));
            if lo < hi {
                let plan = &engine.plans[r];
                let idx = |p: Pfn| {
                    plan.first_sub + (p.offset_from(data.start()) / plan.sub_pages) as usize
                };
                engine
                    .subs
                    .sync(
                        idx(lo),
                        idx(Pfn::new(hi.raw() - 1)),
                        &SetPieces { set: self, engine },
                    )
                    .map_err(|Stopped| SyncError::TornDown)?;
            }
        }
        if let Some(verify) = &self.verify {
            let data = geo.data_range();
            let (lo, hi) = (start.max(data.start()), end.min(data.end()));
            if lo < hi {
                verify
                    .sync(&self.maps, self.target, r, lo, Pfn::new(hi.raw() - 1))
                    .map_err(|Stopped| SyncError::TornDown)?;
            }
        }
        Ok((memmap, Synced::vouch(covered)))
    }

    /// A token for the whole of range `index` even after teardown, for tests that audit the
    /// descriptors a torn-down pgmap left behind (the memmap lives while any `Arc` does).
    #[cfg(test)]
    pub(crate) fn audit(&self, index: usize) -> Option<(&Memmap, Synced)> {
        let m = self.maps.get(index)?;
        Some((m, Synced::vouch(m.geometry().range())))
    }

    /// Test builds: how many times [`MemmapSet::sync`] ran, from any thread.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Finishes all initialisation, helping on this thread. An adopted room's units are not
    /// checked here: each is checked when first synced (a disable must not read a whole room
    /// the session never touched).
    pub(crate) fn sync_all(&self) -> Result<(), SyncError> {
        if self.dead.load(Ordering::Acquire) {
            return Err(SyncError::TornDown);
        }
        if let Some(engine) = &self.engine {
            let last = engine.subs.len().saturating_sub(1);
            if engine.subs.len() > 0 {
                engine
                    .subs
                    .sync(0, last, &SetPieces { set: self, engine })
                    .map_err(|Stopped| SyncError::TornDown)?;
            }
            // Every sub-range is DONE now, but the thread that finished the last piece of one
            // publishes DONE before it counts the sub-range off `remaining` (and before its
            // descriptors reach the stats). Idle, and the stats, follow that count: wait for
            // it, which takes at most those few instructions of another thread.
            if !engine.subs.wait_all() {
                return Err(SyncError::TornDown);
            }
        }
        Ok(())
    }

    /// Sleeps until the background has initialised everything, without helping; fails once
    /// teardown stopped the background before it finished.
    pub(crate) fn wait_idle(&self) -> Result<(), SyncError> {
        match &self.engine {
            Some(engine) if !engine.subs.wait_all() => Err(SyncError::TornDown),
            _ => Ok(()),
        }
    }

    /// `Active` while any sub-range is not initialised.
    pub(crate) fn state(&self) -> InitState {
        match &self.engine {
            Some(e) if !e.subs.all_done() => InitState::Active,
            _ => InitState::Idle,
        }
    }

    /// Refuses every later sync and stops the workers before their next claim.
    pub(crate) fn kill(&self) {
        // Release pairs with the Acquire in `sync`.
        self.dead.store(true, Ordering::Release);
        if let Some(engine) = &self.engine {
            engine.subs.stop();
        }
        if let Some(verify) = &self.verify {
            verify.stop();
        }
    }

    /// The checksums of the memmap's units as they are now, for a clean disable to record
    /// with a room memmap: an adopted room's unchecked units keep the checksums they came
    /// with, every other unit is hashed. Call once initialisation is finished and nothing
    /// changes the descriptors any more (after teardown).
    pub(crate) fn room_sums(&self) -> RoomSums {
        match &self.verify {
            Some(v) => v.sums(&self.maps),
            None => all_sums(&self.maps),
        }
    }

    /// Units of an adopted room rebuilt so far because they did not match their checksum
    /// (or had none).
    pub(crate) fn rebuilt_units(&self) -> u64 {
        self.verify.as_ref().map_or(0, Verify::rebuilt_units)
    }

    /// What initialisation has done so far. An adopted room counts the descriptors of the
    /// units it rebuilt.
    pub(crate) fn stats(&self) -> InitStats {
        match &self.engine {
            None => {
                let mut stats = self.sync_stats;
                if let Some(v) = &self.verify {
                    stats.descriptors += v.rebuilt_descriptors();
                }
                stats
            }
            Some(e) => {
                let (waits, boosts) = e.subs.wait_counts();
                InitStats {
                    descriptors: self.written.load(Ordering::Relaxed),
                    elapsed: std::time::Duration::from_nanos(e.full_ns.load(Ordering::Relaxed)),
                    threads: e.workers,
                    waits,
                    boosts,
                }
            }
        }
    }
}

impl Async {
    fn plan(maps: &[Memmap], workers: NonZeroUsize) -> Self {
        let mut plans = Vec::with_capacity(maps.len());
        let mut chunks = Vec::new();
        let mut total = 0usize;
        for m in maps {
            let geo = m.geometry();
            let compound = geo.shift().nr_pages();
            let per = m.layout().descriptors_per_compound(geo);
            let group = (SUB_RANGE_DESCRIPTORS / per).max(1);
            let sub_pages = group * compound;
            let nr_subs = geo.data_pages().div_ceil(sub_pages) as usize;
            let data = geo.data_range();
            let pieces_of = |start: u64| {
                let start = data.start().add(start);
                let end = start.add(sub_pages).min(data.end());
                // A sub-range is one compound when compounds are large, and a compound has at
                // most 2^30 descriptors (`Order::MAX`): 2^24 pieces, well under the limit.
                let n = nr_pieces(m, PfnRange::new_unchecked(start, end));
                debug_assert!(n <= u64::from(MAX_PIECES));
                n.min(u64::from(MAX_PIECES)) as u32
            };
            let last_start = (nr_subs.saturating_sub(1) as u64) * sub_pages;
            for first in (0..nr_subs).step_by(NR_MEMMAP_RANGE) {
                chunks.push((
                    total + first,
                    total + (first + NR_MEMMAP_RANGE).min(nr_subs),
                ));
            }
            plans.push(RangePlan {
                first_sub: total,
                nr_subs,
                sub_pages,
                pieces: pieces_of(0),
                last_pieces: pieces_of(last_start),
            });
            total += nr_subs;
        }
        // A worker without a chunk to take would only start and stop.
        let workers = workers.get().min(chunks.len()).max(1);
        Self {
            plans,
            chunks,
            cursor: AtomicUsize::new(0),
            subs: SubRanges::new(total, workers),
            workers,
            started: Instant::now(),
            full_ns: AtomicU64::new(0),
            finished_subs: AtomicUsize::new(0),
        }
    }

    /// The range holding global sub-range `i`, with its plan.
    fn plan_of(&self, i: usize) -> Option<(usize, &RangePlan)> {
        self.plans
            .iter()
            .enumerate()
            .find(|(_, p)| (p.first_sub..p.first_sub + p.nr_subs).contains(&i))
    }
}

/// The pieces of a set's asynchronous init, as the claim protocol sees them.
struct SetPieces<'a> {
    set: &'a MemmapSet,
    engine: &'a Async,
}

impl SetPieces<'_> {
    /// The memmap and pfn span of global sub-range `i`.
    fn sub_range(&self, i: usize) -> Option<(&Memmap, PfnRange)> {
        let (r, plan) = self.engine.plan_of(i)?;
        let memmap = &self.set.maps[r];
        let data = memmap.geometry().data_range();
        let start = data
            .start()
            .add((i - plan.first_sub) as u64 * plan.sub_pages);
        let end = start.add(plan.sub_pages).min(data.end());
        Some((memmap, PfnRange::new_unchecked(start, end)))
    }
}

impl Pieces for SetPieces<'_> {
    fn count(&self, i: usize) -> u32 {
        match self.engine.plan_of(i) {
            Some((_, p)) if i + 1 == p.first_sub + p.nr_subs => p.last_pieces,
            Some((_, p)) => p.pieces,
            // Not a sub-range: one piece, which `init` writes nothing for.
            None => 1,
        }
    }

    fn init(&self, i: usize, piece: u32) {
        if let Some((memmap, range)) = self.sub_range(i) {
            init_piece(memmap, range, u64::from(piece), self.set.target);
        }
    }

    fn finished(&self, i: usize) {
        // Counted per sub-range, not per piece: a shared counter bumped after every piece
        // bounced its cache line between the workers often enough to cost ~5% of a full init.
        if let Some((memmap, range)) = self.sub_range(i) {
            // Relaxed: a tally, read by `stats`.
            let n = nr_descriptors(memmap, range);
            self.set.written.fetch_add(n, Ordering::Relaxed);
            if let Some(p) = &self.set.progress {
                p.add(n);
            }
        }
        // Relaxed: a tally; `SubRanges::all_done` readers see the last store through the
        // claim protocol's `remaining` count, which is decremented after this.
        if self.engine.finished_subs.fetch_add(1, Ordering::Relaxed) + 1 == self.engine.subs.len() {
            let ns = self.engine.started.elapsed().as_nanos() as u64;
            self.engine.full_ns.store(ns.max(1), Ordering::Relaxed);
        }
    }
}
