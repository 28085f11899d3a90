//! The claim protocol of asynchronous initialisation: who initialises which sub-range, and how
//! the others wait for it.
//!
//! Every sub-range has one atomic state word:
//!
//! ```text
//!   PENDING ──claim (CAS, by a worker or a syncer)──▶ BUSY ──finish (swap)──▶ DONE
//!                                                     │  ▲
//!                                 a waiter sets ──────┘  └── WAITERS bit, read by finish
//! ```
//!
//! Exactly one thread wins the `PENDING → BUSY` CAS and initialises the sub-range; nobody holds
//! a lock while doing so. A thread that needs a sub-range another thread is doing sets the
//! `WAITERS` bit and sleeps on a condition variable; `finish` sees the bit in the value it
//! swapped out and wakes the sleepers. The mutex only orders "check state, then sleep" against
//! "set DONE, then notify", so no wake-up is lost and nobody spins. `stop` makes workers quit
//! before their next claim; a sub-range already claimed is always finished, so waiters never
//! hang on a stopped worker.
//!
//! Memory ordering: the claimer's descriptor writes happen-before its `Release` swap to DONE;
//! every reader that observes DONE (an `Acquire` load, or the `Acquire` half of a CAS) therefore
//! sees them. `remaining` counts sub-ranges not yet DONE; its `AcqRel` decrements form one
//! release sequence, so a reader that sees 0 has seen every sub-range's writes.

use crate::primitive::{AtomicBool, AtomicU32, AtomicUsize, Condvar, Mutex, Ordering, lock, wait};

const PENDING: u32 = 0;
const BUSY: u32 = 1;
const DONE: u32 = 2;
const WAITERS: u32 = 4;

/// The sub-range states of one asynchronous initialisation.
#[derive(Debug)]
pub(crate) struct SubRanges {
    states: Box<[AtomicU32]>,
    remaining: AtomicUsize,
    stopped: AtomicBool,
    lock: Mutex<()>,
    done: Condvar,
}

/// Why a sync could not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

impl SubRanges {
    /// `n` sub-ranges, all pending.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            states: (0..n).map(|_| AtomicU32::new(PENDING)).collect(),
            remaining: AtomicUsize::new(n),
            stopped: AtomicBool::new(false),
            lock: Mutex::new(()),
            done: Condvar::new(),
        }
    }

    /// Number of sub-ranges.
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether every sub-range is DONE.
    pub(crate) fn all_done(&self) -> bool {
        // Acquire pairs with the AcqRel decrements in `finish`: seeing 0 means seeing every
        // sub-range's descriptor writes.
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Whether `stop` was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Workers quit before their next claim; syncs that start afterwards fail; `wait_all`
    /// callers return.
    pub(crate) fn stop(&self) {
        // Release pairs with the Acquire in `is_stopped`.
        self.stopped.store(true, Ordering::Release);
        // As in `finish`: taking the lock orders this notify after any `wait_all` caller's
        // "not stopped" check, so it is asleep (and woken) or will see the flag.
        let _g = lock(&self.lock);
        self.done.notify_all();
    }

    /// Claims sub-range `i` if it is pending, runs `init` on it, and marks it DONE. Says
    /// whether this thread did the work, and whether it was the last sub-range of all.
    pub(crate) fn run(&self, i: usize, init: impl FnOnce()) -> Claimed {
        // Acquire on success orders nothing we need (the sub-range is ours); Relaxed on failure:
        // a loser goes on to `wait_done`, which does its own Acquire load.
        if self.states[i]
            .compare_exchange(PENDING, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Claimed::No;
        }
        init();
        self.finish(i)
    }

    fn finish(&self, i: usize) -> Claimed {
        // Release: publishes the descriptors written by `init` to whoever observes DONE.
        let old = self.states[i].swap(DONE, Ordering::Release);
        // AcqRel: the last decrement carries every finisher's writes to `all_done` readers.
        let last = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if old & WAITERS != 0 || last {
            // Taking the lock orders this notify after any waiter's "state is not DONE" check,
            // so the waiter is either already asleep (and woken) or will see DONE.
            let _g = lock(&self.lock);
            self.done.notify_all();
        }
        if last { Claimed::Last } else { Claimed::Yes }
    }

    /// Returns once sub-range `i` is DONE, sleeping while another thread initialises it.
    /// A pending sub-range must be claimed (with `run`) before waiting on it.
    pub(crate) fn wait_done(&self, i: usize) {
        let state = &self.states[i];
        // Acquire pairs with the Release swap in `finish`.
        let mut s = state.load(Ordering::Acquire);
        loop {
            if s == DONE {
                return;
            }
            debug_assert!(s & BUSY != 0, "waiting on an unclaimed sub-range");
            if s & WAITERS == 0 {
                // Success is Relaxed: the bit only asks `finish` to notify, and the re-load
                // under the lock below does the Acquire. Failure is Acquire: the value seen may
                // be DONE, which returns at once and must pair with `finish`'s Release swap
                // (loom caught this one being Relaxed).
                if let Err(now) =
                    state.compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Acquire)
                {
                    s = now;
                    continue;
                }
            }
            let mut g = lock(&self.lock);
            // Re-check under the lock: `finish` notifies while holding it.
            while state.load(Ordering::Acquire) != DONE {
                g = wait(&self.done, g);
            }
            return;
        }
    }

    /// Makes sub-ranges `first..=last` DONE: claims and initialises the pending ones on this
    /// thread, then waits for those other threads hold. Fails if `stop` was called first.
    pub(crate) fn sync(
        &self,
        first: usize,
        last: usize,
        mut init: impl FnMut(usize),
    ) -> Result<(), Stopped> {
        if self.all_done() {
            return Ok(());
        }
        if self.is_stopped() {
            return Err(Stopped);
        }
        for i in first..=last {
            self.run(i, || init(i));
        }
        for i in first..=last {
            self.wait_done(i);
        }
        Ok(())
    }

    /// A worker's pass over `first..end`, in order, quitting before a claim once stopped.
    pub(crate) fn work(&self, first: usize, end: usize, mut init: impl FnMut(usize)) -> Claimed {
        let mut did = Claimed::No;
        for i in first..end {
            if self.is_stopped() {
                break;
            }
            match self.run(i, || init(i)) {
                Claimed::No => {}
                c => did = c,
            }
        }
        did
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

/// Whether a `run` did the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// Someone else had claimed it.
    No,
    /// This thread initialised it.
    Yes,
    /// This thread initialised the last pending sub-range of all.
    Last,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn each_sub_range_is_initialised_exactly_once() {
        let subs = SubRanges::new(64);
        let counts: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (subs, counts) = (&subs, &counts);
                s.spawn(move || {
                    if t % 2 == 0 {
                        subs.work(0, 64, |i| {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                        });
                    } else {
                        for k in (0..64usize).rev().step_by(3) {
                            subs.sync(k.saturating_sub(2), k, |i| {
                                counts[i].fetch_add(1, Ordering::Relaxed);
                            })
                            .expect("not stopped");
                        }
                    }
                });
            }
        });
        // Threads that only synced may leave sub-ranges to workers; finish the rest.
        subs.sync(0, 63, |i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        })
        .expect("not stopped");
        assert!(subs.all_done());
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn stopped_workers_leave_the_rest_and_syncs_fail() {
        let subs = SubRanges::new(8);
        subs.work(0, 3, |_| {});
        subs.stop();
        assert_eq!(
            subs.work(3, 8, |_| panic!("no claims after stop")),
            Claimed::No
        );
        assert_eq!(subs.sync(0, 7, |_| {}), Err(Stopped));
        assert!(!subs.all_done(), "five sub-ranges were never claimed");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model checks of the protocol. Each sub-range's "descriptors" are a loom `UnsafeCell`,
    //! so loom reports any read that is not ordered after the write that initialised it.
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    struct Model {
        subs: SubRanges,
        data: Vec<UnsafeCell<u32>>,
    }

    impl Model {
        fn new(n: usize) -> Arc<Self> {
            Arc::new(Self {
                subs: SubRanges::new(n),
                data: (0..n).map(|_| UnsafeCell::new(0)).collect(),
            })
        }

        fn init(&self, i: usize) {
            // SAFETY: only the thread that won the claim of sub-range `i` writes it.
            self.data[i].with_mut(|p| unsafe { *p += 1 });
        }

        fn read(&self, i: usize) -> u32 {
            // SAFETY: callers read only after `sync`/`wait_done` returned for `i`.
            self.data[i].with(|p| unsafe { *p })
        }
    }

    #[test]
    fn a_worker_and_two_syncers_race_over_three_sub_ranges() {
        loom::model(|| {
            let m = Model::new(3);
            let w = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    m.subs.work(0, 3, |i| m.init(i));
                })
            };
            let s1 = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    m.subs.sync(1, 2, |i| m.init(i)).expect("not stopped");
                    assert_eq!((m.read(1), m.read(2)), (1, 1));
                })
            };
            m.subs.sync(0, 1, |i| m.init(i)).expect("not stopped");
            assert_eq!((m.read(0), m.read(1)), (1, 1));
            w.join().expect("worker");
            s1.join().expect("syncer");
            assert!(m.subs.all_done());
            assert_eq!((m.read(0), m.read(1), m.read(2)), (1, 1, 1));
        });
    }

    #[test]
    fn teardown_racing_a_sync_never_hangs_or_exposes_uninitialised_data() {
        loom::model(|| {
            let m = Model::new(2);
            let w = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    m.subs.work(0, 2, |i| m.init(i));
                })
            };
            let s = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || match m.subs.sync(1, 1, |i| m.init(i)) {
                    Ok(()) => assert_eq!(m.read(1), 1),
                    Err(Stopped) => {}
                })
            };
            // Teardown: stop, then join the worker, as `memunmap_pages` does.
            m.subs.stop();
            w.join().expect("worker");
            s.join().expect("syncer");
            assert!(m.subs.sync(0, 1, |_| {}).is_err() || m.subs.all_done());
        });
    }

    #[test]
    fn wait_all_wakes_when_the_last_sub_range_finishes() {
        loom::model(|| {
            let m = Model::new(2);
            let w = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    m.subs.work(0, 2, |i| m.init(i));
                })
            };
            m.subs.wait_all();
            assert_eq!((m.read(0), m.read(1)), (1, 1));
            w.join().expect("worker");
        });
    }
}
