//! The claim protocol of asynchronous initialisation: who initialises which piece of which
//! sub-range, and how the others wait for it.
//!
//! A sub-range is cut into *pieces* (64 descriptors each, `init::init_piece`) and has one
//! atomic state word holding two counters and a flag:
//!
//! ```text
//!   next:    pieces handed out    0 ──claim (CAS, next < n)──▶ n
//!   done:    pieces finished      0 ──finish (fetch_add)─────▶ n    (done == n: DONE)
//!   WAITERS: a thread sleeps until DONE
//! ```
//!
//! Workers and syncers alike *pull*: claim the next piece, write it, finish it, until every
//! piece is handed out. Nobody holds a lock while writing. A syncer then waits only if some
//! piece is still being written by another thread; there is at most one such piece per other
//! thread, because a thread finishes the piece it claimed before it claims the next. Whoever
//! finishes the last piece publishes DONE by that same `fetch_add` and, if the WAITERS bit is
//! set in the value it replaced, wakes the sleepers. The mutex only orders "check state, then
//! sleep" against "finish, then notify", so no wake-up is lost and nobody spins.
//!
//! A piece in flight stays its claimer's to finish: the claimer may be descheduled between any
//! two of its stores and resume after DONE, so a waiter that rewrote the piece would have its
//! work (and any reference count or mapping a user set since) overwritten by the late stores.
//! What a waiter can do instead is make the claimer run: before it sleeps it raises the workers
//! that hold pieces of its sub-range for the rest of their piece (`boost`), so a nice-19 worker
//! the scheduler put aside behind busy threads does not keep it waiting for the worker's next
//! turn.
//!
//! Teardown: `stop` makes workers quit before their next claim. A claimed piece is always
//! finished by its claimer, and a syncer takes every unclaimed piece itself, so no waiter ever
//! hangs on a stopped worker; sub-ranges nobody syncs are simply left unfinished.
//!
//! Memory ordering: each finisher's `fetch_add` is a Release RMW, and RMWs continue release
//! sequences, so a reader whose Acquire load sees `done == n` synchronises with every piece's
//! finisher and sees all the sub-range's descriptors. The last finisher's RMW is also Acquire,
//! so its `AcqRel` decrement of `remaining` carries every piece's writes; those decrements form
//! one release sequence, so a reader that sees `remaining == 0` has seen every sub-range.

use super::boost::{BACKGROUND_NICE, Os, Renice, Slot, Tid, URGENT_NICE};
use crate::primitive::{AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering, lock, wait};

/// The flag bit: some thread sleeps until DONE.
const WAITERS: u64 = 1;
/// One in the `next` field, bits 1..32.
const NEXT_ONE: u64 = 1 << 1;
/// One in the `done` field, bits 32..64.
const DONE_ONE: u64 = 1 << 32;
/// The most pieces a sub-range may have (the `next` field's width).
pub(crate) const MAX_PIECES: u32 = (1 << 31) - 1;

fn next_of(s: u64) -> u32 {
    ((s >> 1) as u32) & MAX_PIECES
}

fn done_of(s: u64) -> u32 {
    (s >> 32) as u32
}

/// What the protocol initialises: a number of sub-ranges, each cut into pieces.
pub(crate) trait Pieces {
    /// Pieces of sub-range `sub`: at least 1, at most [`MAX_PIECES`], always the same answer.
    fn count(&self, sub: usize) -> u32;
    /// Writes piece `piece` of sub-range `sub`; called exactly once per piece.
    fn init(&self, sub: usize, piece: u32);
    /// Called once per sub-range, by the thread that finished its last piece, before the
    /// sub-range counts as DONE for [`SubRanges::all_done`] (so what this records is visible to
    /// whoever sees everything done).
    fn finished(&self, _sub: usize) {}
}

/// The sub-range states of one asynchronous initialisation.
#[derive(Debug)]
pub(crate) struct SubRanges<R: Renice = Os> {
    states: Box<[AtomicU64]>,
    remaining: AtomicUsize,
    stopped: AtomicBool,
    lock: Mutex<()>,
    done: Condvar,
    workers: Box<[Slot]>,
    renice: R,
    waits: AtomicU64,
    boosts: AtomicU64,
}

/// Why a sync could not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

impl SubRanges {
    /// `n` sub-ranges, none started, for up to `workers` workers.
    pub(crate) fn new(n: usize, workers: usize) -> Self {
        Self::with_renice(n, workers, Os)
    }
}

impl<R: Renice> SubRanges<R> {
    /// As [`SubRanges::new`], changing priorities through `renice`.
    pub(crate) fn with_renice(n: usize, workers: usize, renice: R) -> Self {
        Self {
            states: (0..n).map(|_| AtomicU64::new(0)).collect(),
            remaining: AtomicUsize::new(n),
            stopped: AtomicBool::new(false),
            lock: Mutex::new(()),
            done: Condvar::new(),
            workers: (0..workers).map(|_| Slot::default()).collect(),
            renice,
            waits: AtomicU64::new(0),
            boosts: AtomicU64::new(0),
        }
    }

    /// Number of sub-ranges.
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether every sub-range is DONE.
    pub(crate) fn all_done(&self) -> bool {
        // Acquire pairs with the AcqRel decrements in `complete`: seeing 0 means seeing every
        // sub-range's descriptor writes.
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Whether sub-range `i` is DONE (every piece written and finished); false past the last.
    pub(crate) fn is_done(&self, i: usize, pieces: &impl Pieces) -> bool {
        // Acquire pairs with the finishers' Release RMWs in `pull`, as in `wait_done`.
        self.states
            .get(i)
            .is_some_and(|s| done_of(s.load(Ordering::Acquire)) == pieces.count(i))
    }

    /// Whether `stop` was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Waits so far (a sync found a piece it needs still being written by another thread and
    /// set out to sleep until it is done), and the boosts of a worker's priority the kernel
    /// allowed. A sub-range belongs to one worker's chunk, so a wait boosts at most once.
    pub(crate) fn wait_counts(&self) -> (u64, u64) {
        (
            self.waits.load(Ordering::Relaxed),
            self.boosts.load(Ordering::Relaxed),
        )
    }

    /// Workers quit before their next claim; syncs that start afterwards fail; `wait_all`
    /// callers return.
    pub(crate) fn stop(&self) {
        // Release pairs with the Acquire in `is_stopped`.
        self.stopped.store(true, Ordering::Release);
        // As in `complete`: taking the lock orders this notify after any `wait_all` caller's
        // "not stopped" check, so it is asleep (and woken) or will see the flag.
        let _g = lock(&self.lock);
        self.done.notify_all();
    }

    /// Hands out the next piece of a sub-range with `n` pieces, if any is left.
    fn claim(&self, state: &AtomicU64, n: u32) -> Option<u32> {
        // Relaxed: the value only proposes the CAS, which re-checks it.
        let mut s = state.load(Ordering::Relaxed);
        loop {
            let next = next_of(s);
            if next >= n {
                return None;
            }
            // Release on success pairs with the Acquire loads in `wait_done`: a waiter that
            // sees this piece handed out also sees the claimer's `Slot::set_sub` (and id),
            // which it reads to boost the claimer. The piece is this thread's alone; nothing
            // needs acquiring. Relaxed on failure: the loop only retries or gives up, and a
            // syncer that gives up waits with its own Acquire load.
            match state.compare_exchange_weak(s, s + NEXT_ONE, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return Some(next),
                Err(now) => s = now,
            }
        }
    }

    /// Claims and writes pieces of sub-range `i` until none is left to hand out (or, for a
    /// worker, until `stop`).
    fn pull(&self, i: usize, pieces: &impl Pieces, worker: Option<&Slot>) {
        let state = &self.states[i];
        let n = pieces.count(i);
        debug_assert!((1..=MAX_PIECES).contains(&n));
        loop {
            if worker.is_some() && self.is_stopped() {
                return;
            }
            let Some(p) = self.claim(state, n) else {
                return;
            };
            pieces.init(i, p);
            // Release: publishes this piece's writes to whoever observes DONE (RMWs continue
            // the release sequence, so every finisher's writes reach a reader of done == n).
            // Acquire: the last finisher must have seen every other piece's writes before its
            // decrement of `remaining` hands them on.
            let old = state.fetch_add(DONE_ONE, Ordering::AcqRel);
            debug_assert!(done_of(old) < n);
            if done_of(old) + 1 == n {
                pieces.finished(i);
                self.complete(old & WAITERS != 0);
            }
            if let Some(w) = worker {
                w.restore(&self.renice);
            }
        }
    }

    /// The caller has just made a sub-range DONE: count it and wake whoever waits.
    fn complete(&self, waiters: bool) {
        // AcqRel: the last decrement carries every finisher's writes to `all_done` readers.
        let last = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if waiters || last {
            // Taking the lock orders this notify after any waiter's "not DONE" check, so the
            // waiter is either already asleep (and woken) or will see DONE.
            let _g = lock(&self.lock);
            self.done.notify_all();
        }
    }

    /// Returns once sub-range `i` is DONE. The caller has pulled it, so every piece is handed
    /// out and this waits only for pieces other threads are writing.
    fn wait_done(&self, i: usize, pieces: &impl Pieces) {
        let state = &self.states[i];
        let n = pieces.count(i);
        // Acquire pairs with the finishers' Release RMWs in `pull`.
        let mut s = state.load(Ordering::Acquire);
        loop {
            if done_of(s) == n {
                return;
            }
            debug_assert_eq!(next_of(s), n, "waiting on pieces nobody holds");
            if s & WAITERS == 0 {
                // Success is Relaxed: the bit only asks the last finisher to notify, and the
                // re-load under the lock below does the Acquire. Failure is Acquire: the value
                // seen may be DONE, which returns at once and must pair with the finishers'
                // Release RMWs (loom caught this one being Relaxed).
                if let Err(now) =
                    state.compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Acquire)
                {
                    s = now;
                    continue;
                }
            }
            self.waits.fetch_add(1, Ordering::Relaxed);
            self.boost_holders(i);
            let mut g = lock(&self.lock);
            // Re-check under the lock: the last finisher notifies while holding it.
            while done_of(state.load(Ordering::Acquire)) != n {
                g = wait(&self.done, g);
            }
            return;
        }
    }

    /// Raises every worker that holds a piece of sub-range `i` for the rest of its piece: to
    /// [`URGENT_NICE`] if the kernel allows, else to this thread's own nice value (`boost`
    /// says why not just the latter).
    fn boost_holders(&self, i: usize) {
        let holders = || self.workers.iter().filter(|w| w.holds(i));
        if holders().next().is_none() {
            return;
        }
        let own = self.renice.own_nice();
        if own.is_some_and(|n| n >= BACKGROUND_NICE) {
            // A background waiter is no more urgent than the worker.
            return;
        }
        for w in holders() {
            let raised =
                w.boost(&self.renice, URGENT_NICE) || own.is_some_and(|n| w.boost(&self.renice, n));
            if raised {
                self.boosts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Makes sub-ranges `first..=last` DONE: writes every piece nobody has taken on this
    /// thread, then waits for the pieces other threads are writing. Fails if `stop` was called
    /// first.
    pub(crate) fn sync(
        &self,
        first: usize,
        last: usize,
        pieces: &impl Pieces,
    ) -> Result<(), Stopped> {
        if self.all_done() {
            return Ok(());
        }
        if self.is_stopped() {
            return Err(Stopped);
        }
        for i in first..=last {
            self.pull(i, pieces, None);
        }
        for i in first..=last {
            self.wait_done(i, pieces);
        }
        Ok(())
    }

    /// Worker `w` (of the `workers` given to `new`) starts; `tid` is its thread id if it runs
    /// at [`BACKGROUND_NICE`] and waiters may boost it. The worker retires when the handle
    /// drops.
    pub(crate) fn worker(&self, w: usize, tid: Option<Tid>) -> Worker<'_, R> {
        let slot = &self.workers[w];
        if let Some(tid) = tid {
            slot.register(tid);
        }
        Worker { subs: self, slot }
    }

    /// Sleeps until every sub-range is DONE, without helping, or until `stop`: stopped
    /// sub-ranges are never finished. Says whether everything is DONE.
    pub(crate) fn wait_all(&self) -> bool {
        let mut g = lock(&self.lock);
        while !self.all_done() {
            if self.is_stopped() {
                return false;
            }
            g = wait(&self.done, g);
        }
        true
    }
}

/// A running worker; retires (see [`Slot::retire`]) when dropped.
#[derive(Debug)]
pub(crate) struct Worker<'a, R: Renice = Os> {
    subs: &'a SubRanges<R>,
    slot: &'a Slot,
}

impl<R: Renice> Worker<'_, R> {
    /// Pulls the pieces of sub-ranges `first..end`, in order, quitting before a claim once
    /// stopped. Never waits: pieces other threads hold are theirs to finish.
    pub(crate) fn work(&self, first: usize, end: usize, pieces: &impl Pieces) {
        for i in first..end {
            if self.subs.is_stopped() {
                break;
            }
            self.slot.set_sub(Some(i));
            self.subs.pull(i, pieces, Some(self.slot));
        }
        self.slot.set_sub(None);
    }
}

impl<R: Renice> Drop for Worker<'_, R> {
    fn drop(&mut self) {
        self.slot.retire();
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
