//! Unit tests of the claim protocol on real threads.

use super::*;
use std::sync::atomic::AtomicU32;
use std::sync::mpsc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Sub-ranges of given piece counts whose pieces count their writes and remember the
/// writer; `hook` runs at the start of every piece.
struct Counted<F> {
    writes: Vec<Vec<AtomicU32>>,
    writers: Vec<Vec<std::sync::Mutex<Option<ThreadId>>>>,
    hook: F,
}

impl<F: Fn(usize, u32) + Sync> Counted<F> {
    fn new(counts: &[u32], hook: F) -> Self {
        Self {
            writes: counts
                .iter()
                .map(|&n| (0..n).map(|_| AtomicU32::new(0)).collect())
                .collect(),
            writers: counts
                .iter()
                .map(|&n| (0..n).map(|_| std::sync::Mutex::new(None)).collect())
                .collect(),
            hook,
        }
    }

    fn written(&self, sub: usize, piece: u32) -> u32 {
        self.writes[sub][piece as usize].load(Ordering::Relaxed)
    }

    fn writer(&self, sub: usize, piece: u32) -> Option<ThreadId> {
        *self.writers[sub][piece as usize]
            .lock()
            .expect("not poisoned")
    }

    fn all_once(&self) -> bool {
        self.writes
            .iter()
            .flatten()
            .all(|c| c.load(Ordering::Relaxed) == 1)
    }
}

impl<F: Fn(usize, u32) + Sync> Pieces for Counted<F> {
    fn count(&self, sub: usize) -> u32 {
        self.writes[sub].len() as u32
    }

    fn init(&self, sub: usize, piece: u32) {
        (self.hook)(sub, piece);
        self.writes[sub][piece as usize].fetch_add(1, Ordering::Relaxed);
        *self.writers[sub][piece as usize]
            .lock()
            .expect("not poisoned") = Some(std::thread::current().id());
    }
}

/// A scheduler that records every priority change it allows instead of making it. Every
/// thread runs at nice `own`; raising a thread above nice `floor` is refused, as the kernel
/// refuses it under an `RLIMIT_NICE` of `20 - floor`.
struct Recorder {
    own: i32,
    floor: i32,
    log: std::sync::Mutex<Changes>,
}

impl Recorder {
    fn new(own: i32, floor: i32) -> Self {
        Self {
            own,
            floor,
            log: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn log(&self) -> Changes {
        self.log.lock().expect("not poisoned").clone()
    }
}

impl Default for Recorder {
    /// Root: any nice value may be set.
    fn default() -> Self {
        Self::new(0, URGENT_NICE)
    }
}

impl Renice for Recorder {
    fn own_nice(&self) -> Option<i32> {
        Some(self.own)
    }

    fn set_nice(&self, tid: Tid, nice: i32) -> bool {
        if nice < self.floor {
            return false;
        }
        self.log.lock().expect("not poisoned").push((tid, nice));
        true
    }

    fn nice_of(&self, tid: Tid) -> Option<i32> {
        let log = self.log.lock().expect("not poisoned");
        let last = log.iter().rev().find(|(t, _)| *t == tid);
        Some(last.map_or(BACKGROUND_NICE, |(_, nice)| *nice))
    }
}

/// Polls `cond` for up to ten seconds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn each_piece_is_initialised_exactly_once() {
    let counts: Vec<u32> = (0..64).map(|i| 1 + i % 5).collect();
    let pieces = Counted::new(&counts, |_, _| {});
    let subs = SubRanges::new(64, 2);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (subs, pieces) = (&subs, &pieces);
            s.spawn(move || {
                if t % 2 == 0 {
                    // Workers without a thread id: nobody can boost them.
                    subs.worker(t / 2, None).work(0, 64, pieces);
                } else {
                    for k in (0..64usize).rev().step_by(3) {
                        subs.sync(k.saturating_sub(2), k, pieces)
                            .expect("not stopped");
                    }
                }
            });
        }
    });
    assert!(subs.all_done());
    assert!(pieces.all_once());
}

#[test]
fn stopped_workers_quit_between_pieces_and_later_syncs_fail() {
    let subs = SubRanges::new(8, 1);
    let stop_at = |sub: usize, piece: u32| {
        if (sub, piece) == (2, 1) {
            subs.stop();
        }
    };
    let pieces = Counted::new(&[3; 8], stop_at);
    subs.worker(0, None).work(0, 8, &pieces);
    // The piece during which `stop` came is finished; the next one is never claimed.
    assert_eq!(
        (
            pieces.written(2, 0),
            pieces.written(2, 1),
            pieces.written(2, 2)
        ),
        (1, 1, 0)
    );
    assert_eq!(pieces.written(3, 0), 0);
    assert_eq!(subs.sync(0, 7, &pieces), Err(Stopped));
    assert!(!subs.all_done(), "six sub-ranges are unfinished");
}

/// A worker that parks inside piece 1 of sub-range 0 (of four pieces) until released, and a
/// syncer of that sub-range, under scheduler `sched`; `check` runs while the worker is parked
/// and the syncer waits. Returns the finished sub-ranges.
fn park_worker_in_piece_1(
    sched: Recorder,
    check: impl FnOnce(&SubRanges<Recorder>, &dyn Fn(u32) -> u32),
) -> SubRanges<Recorder> {
    let boosts = u64::from(sched.own < BACKGROUND_NICE && sched.floor <= sched.own);
    let subs = SubRanges::with_renice(1, 1, sched);
    let (parked_tx, parked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (parked_tx, release_rx) = (
        std::sync::Mutex::new(parked_tx),
        std::sync::Mutex::new(release_rx),
    );
    let park = |_, piece| {
        if piece == 1 {
            let _ = parked_tx.lock().expect("not poisoned").send(());
            let _ = release_rx.lock().expect("not poisoned").recv();
        }
    };
    let pieces = Counted::new(&[4], park);
    std::thread::scope(|s| {
        let worker = s.spawn(|| subs.worker(0, Some(7)).work(0, 1, &pieces));
        parked_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the worker reaches piece 1");
        let syncer = s.spawn(|| {
            subs.sync(0, 0, &pieces).expect("not stopped");
            // Once sync returns, every piece is written.
            assert!(pieces.all_once());
        });
        // Set out to wait and boosted the worker if it may: the syncer sleeps (or is about to)
        // until the parked piece is done.
        eventually("the syncer waits", || subs.wait_counts() == (1, boosts));
        assert!(!syncer.is_finished(), "piece 1 is still being written");
        check(&subs, &|p| pieces.written(0, p));
        release_tx.send(()).expect("the worker waits");
        syncer.join().expect("syncer");
        worker.join().expect("worker");
    });
    assert!(subs.all_done());
    assert!(pieces.all_once());
    assert_eq!(pieces.writer(0, 2), pieces.writer(0, 3));
    assert_ne!(pieces.writer(0, 1), pieces.writer(0, 2));
    subs
}

#[test]
fn a_syncer_writes_every_piece_nobody_holds_and_waits_only_for_the_one_in_flight() {
    // With whole sub-ranges as the unit of work, the syncer could only sleep until the worker
    // came back: nothing past piece 1 would be written while the worker is parked.
    park_worker_in_piece_1(Recorder::default(), |subs, written| {
        assert_eq!(
            (written(0), written(1), written(2), written(3)),
            (1, 0, 1, 1),
            "pieces 2 and 3 are written by the syncer while the worker holds piece 1"
        );
        assert!(!subs.all_done());
    });
}

/// Priority changes, in order: (thread, nice).
type Changes = Vec<(Tid, i32)>;

/// The priority changes made while the worker was parked and after it finished, under
/// `sched`.
fn boosts_under(sched: Recorder) -> (Changes, Changes) {
    let mut while_parked = Vec::new();
    let subs = park_worker_in_piece_1(sched, |subs, _| while_parked = subs.renice.log());
    (while_parked, subs.renice.log())
}

#[test]
fn a_waiting_syncer_raises_the_worker_holding_its_piece_until_the_piece_is_done() {
    // Raised to the strongest priority before the syncer slept; dropped back by the worker
    // itself once it finished the piece.
    assert_eq!(
        boosts_under(Recorder::default()),
        (
            vec![(7, URGENT_NICE)],
            vec![(7, URGENT_NICE), (7, BACKGROUND_NICE)]
        )
    );
}

#[test]
fn where_the_strongest_priority_is_refused_the_worker_gets_the_syncers_and_else_none() {
    // RLIMIT_NICE lets the syncer (nice 5) raise threads to nice 5 but no further.
    assert_eq!(
        boosts_under(Recorder::new(5, 5)),
        (vec![(7, 5)], vec![(7, 5), (7, BACKGROUND_NICE)])
    );
    // No raise is allowed (no CAP_SYS_NICE, no RLIMIT_NICE): the syncer just sleeps.
    assert_eq!(
        boosts_under(Recorder::new(0, BACKGROUND_NICE)),
        (vec![], vec![])
    );
    // A syncer at the background priority raises nobody.
    assert_eq!(
        boosts_under(Recorder::new(BACKGROUND_NICE, URGENT_NICE)),
        (vec![], vec![])
    );
}

#[test]
fn a_retired_worker_is_never_boosted() {
    let subs = SubRanges::with_renice(1, 1, Recorder::default());
    drop(subs.worker(0, Some(7)));
    subs.workers[0].set_sub(Some(0));
    assert!(!subs.workers[0].boost(&subs.renice, 0));
    assert!(subs.renice.log().is_empty());
}

/// A scheduler whose raises land and then stall the raising thread before `set_nice` returns,
/// as the kernel can deschedule a waiter right after its `setpriority` gave its CPU to the
/// raised worker.
struct Stalling {
    nice: std::sync::atomic::AtomicI32,
    landed: std::sync::Mutex<mpsc::Sender<()>>,
    resume: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl Renice for Stalling {
    fn own_nice(&self) -> Option<i32> {
        Some(0)
    }

    fn set_nice(&self, _tid: Tid, nice: i32) -> bool {
        self.nice.store(nice, Ordering::SeqCst);
        if nice < BACKGROUND_NICE {
            let _ = self.landed.lock().expect("not poisoned").send(());
            let _ = self.resume.lock().expect("not poisoned").recv();
        }
        true
    }

    fn nice_of(&self, _tid: Tid) -> Option<i32> {
        Some(self.nice.load(Ordering::SeqCst))
    }
}

#[test]
fn a_raise_is_dropped_after_the_next_piece_even_before_its_waiter_marks_it() {
    let (landed_tx, landed_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let sched = Stalling {
        nice: std::sync::atomic::AtomicI32::new(BACKGROUND_NICE),
        landed: std::sync::Mutex::new(landed_tx),
        resume: std::sync::Mutex::new(resume_rx),
    };
    let slot = Slot::default();
    slot.register(7);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| slot.boost(&sched, URGENT_NICE));
        landed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the raise lands");
        assert_eq!(sched.nice.load(Ordering::SeqCst), URGENT_NICE);
        // The worker finishes a piece while its waiter is still off its CPU, unmarked.
        slot.restore(&sched);
        let after_piece = sched.nice.load(Ordering::SeqCst);
        resume_tx.send(()).expect("the waiter stalls");
        assert!(waiter.join().expect("waiter"), "the raise was allowed");
        assert_eq!(
            after_piece, BACKGROUND_NICE,
            "the raise outlived the piece after it, waiting for its waiter to run"
        );
        // The late mark costs one more drop, at the next piece, and nothing else.
        slot.restore(&sched);
        assert_eq!(sched.nice.load(Ordering::SeqCst), BACKGROUND_NICE);
        slot.restore(&sched);
    });
    slot.retire();
}
