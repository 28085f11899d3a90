//! Model checks of the protocol. Each piece's "descriptors" are a loom `UnsafeCell`, so loom
//! reports any read that is not ordered after the write that initialised it, and any two
//! writes of one piece that are not ordered (a piece handed out twice).
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p devmap --release --lib
//! loom`; each model is kept to two or three threads and a handful of pieces so the whole set
//! explores in minutes.

use super::*;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::AtomicI32;

/// Sub-ranges of given piece counts whose pieces are counters in `UnsafeCell`s.
struct Data {
    pieces: Vec<Vec<UnsafeCell<u32>>>,
}

impl Data {
    fn new(counts: &[u32]) -> Self {
        Self {
            pieces: counts
                .iter()
                .map(|&n| (0..n).map(|_| UnsafeCell::new(0)).collect())
                .collect(),
        }
    }

    /// Every piece of sub-range `sub`, read; callers read only what a sync made DONE.
    fn read(&self, sub: usize) -> Vec<u32> {
        self.pieces[sub]
            .iter()
            // SAFETY: the model reads only sub-ranges a `sync` or `wait_all` returned for.
            .map(|c| c.with(|p| unsafe { *p }))
            .collect()
    }
}

impl Pieces for Data {
    fn count(&self, sub: usize) -> u32 {
        self.pieces[sub].len() as u32
    }

    fn init(&self, sub: usize, piece: u32) {
        // SAFETY: only the thread that claimed `piece` writes it; loom checks exactly that.
        self.pieces[sub][piece as usize].with_mut(|p| unsafe { *p += 1 });
    }
}

/// A scheduler with one thread of id 1, the worker, whose nice value is an atomic and whose
/// existence is an `UnsafeCell`: a priority change not ordered before the thread's exit is a
/// race loom reports.
struct Sched {
    nice: AtomicI32,
    alive: UnsafeCell<bool>,
}

impl Sched {
    fn new() -> Self {
        Self {
            nice: AtomicI32::new(BACKGROUND_NICE),
            alive: UnsafeCell::new(true),
        }
    }

    /// The worker thread exits (after its `Worker` retired).
    fn exit(&self) {
        // SAFETY: loom checks that no `set_nice` is concurrent with this.
        self.alive.with_mut(|a| unsafe { *a = false });
    }
}

impl Renice for Sched {
    fn own_nice(&self) -> Option<i32> {
        Some(0)
    }

    fn set_nice(&self, tid: Tid, nice: i32) -> bool {
        assert_eq!(tid, 1);
        // SAFETY: loom checks that this is ordered before the thread's exit.
        let alive = self.alive.with(|a| unsafe { *a });
        assert!(alive, "reniced an exited thread");
        // Relaxed: a syscall's effect; the model checks the final value after joins.
        self.nice.store(nice, Ordering::Relaxed);
        true
    }

    fn nice_of(&self, tid: Tid) -> Option<i32> {
        assert_eq!(tid, 1);
        // Relaxed: as `set_nice`; only the worker asks, about itself.
        Some(self.nice.load(Ordering::Relaxed))
    }
}

struct Model {
    subs: SubRanges<Sched>,
    data: Data,
}

impl Model {
    fn new(counts: &[u32]) -> Arc<Self> {
        Arc::new(Self {
            subs: SubRanges::with_renice(counts.len(), 1, Sched::new()),
            data: Data::new(counts),
        })
    }

    /// Runs worker 0 (thread id 1) over `first..end`, then retires and exits it.
    fn spawn_worker(m: &Arc<Self>, first: usize, end: usize) -> loom::thread::JoinHandle<()> {
        let m = Arc::clone(m);
        loom::thread::spawn(move || {
            m.subs.worker(0, Some(1)).work(first, end, &m.data);
            m.subs.renice.exit();
        })
    }

    /// A boost is never left without a restore to come: the worker ends at the background
    /// priority, or its slot still asks for the drop at its next piece.
    fn check_priority(&self) {
        assert!(
            self.subs.renice.nice.load(Ordering::Relaxed) == BACKGROUND_NICE
                || self.subs.workers[0].pending_restore()
        );
    }
}

#[test]
fn a_worker_and_a_syncer_split_one_sub_ranges_pieces() {
    loom::model(|| {
        let m = Model::new(&[3]);
        let w = Model::spawn_worker(&m, 0, 1);
        m.subs.sync(0, 0, &m.data).expect("not stopped");
        assert_eq!(m.data.read(0), [1, 1, 1]);
        w.join().expect("worker");
        assert!(m.subs.all_done());
        m.check_priority();
    });
}

#[test]
fn a_worker_and_two_syncers_race_over_three_sub_ranges() {
    loom::model(|| {
        let m = Model::new(&[1, 2, 1]);
        let w = Model::spawn_worker(&m, 0, 3);
        let s1 = {
            let m = Arc::clone(&m);
            loom::thread::spawn(move || {
                m.subs.sync(1, 2, &m.data).expect("not stopped");
                assert_eq!((m.data.read(1), m.data.read(2)), (vec![1, 1], vec![1]));
            })
        };
        m.subs.sync(0, 1, &m.data).expect("not stopped");
        assert_eq!((m.data.read(0), m.data.read(1)), (vec![1], vec![1, 1]));
        w.join().expect("worker");
        s1.join().expect("syncer");
        assert!(m.subs.all_done());
        m.check_priority();
    });
}

#[test]
fn teardown_racing_a_helping_syncer_never_hangs_or_exposes_uninitialised_data() {
    loom::model(|| {
        let m = Model::new(&[2, 2]);
        let w = Model::spawn_worker(&m, 0, 2);
        let s = {
            let m = Arc::clone(&m);
            loom::thread::spawn(move || {
                // Stopped before it started is fine; once started it must finish.
                if m.subs.sync(1, 1, &m.data).is_ok() {
                    assert_eq!(m.data.read(1), [1, 1]);
                }
            })
        };
        // Teardown: stop, then join the worker, as `memunmap_pages` does.
        m.subs.stop();
        w.join().expect("worker");
        s.join().expect("syncer");
        assert!(m.subs.sync(0, 1, &m.data).is_err() || m.subs.all_done());
        m.check_priority();
    });
}

#[test]
fn wait_all_wakes_when_the_last_piece_finishes_and_sees_every_piece() {
    loom::model(|| {
        let m = Model::new(&[2]);
        let w = Model::spawn_worker(&m, 0, 1);
        let s = {
            let m = Arc::clone(&m);
            loom::thread::spawn(move || m.subs.sync(0, 0, &m.data).expect("not stopped"))
        };
        // Neither helps nor waits on a sub-range: only `remaining` orders the pieces, which
        // the worker and the syncer may have split between them.
        assert!(m.subs.wait_all());
        assert_eq!(m.data.read(0), [1, 1]);
        w.join().expect("worker");
        s.join().expect("syncer");
    });
}

#[test]
fn a_boost_racing_restore_and_retirement_is_undone_and_never_outlives_the_thread() {
    loom::model(|| {
        let m = Model::new(&[2]);
        let w = {
            let m = Arc::clone(&m);
            loom::thread::spawn(move || {
                let worker = m.subs.worker(0, Some(1));
                let slot = &m.subs.workers[0];
                slot.set_sub(Some(0));
                // Two pieces' worth of "after the piece".
                slot.restore(&m.subs.renice);
                slot.restore(&m.subs.renice);
                drop(worker);
                m.subs.renice.exit();
            })
        };
        // A waiter that found the worker holding a piece of sub-range 0.
        let slot = &m.subs.workers[0];
        if slot.holds(0) {
            slot.boost(&m.subs.renice, 0);
        }
        w.join().expect("worker");
        m.check_priority();
    });
}
