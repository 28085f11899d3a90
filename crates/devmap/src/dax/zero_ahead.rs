//! Leaves zeroed ahead of the touch (`DaxOptions::zero_ahead`): beyond the kernel, whose
//! hugetlb and shmem faults allocate and clear a page while the toucher waits (230 µs for a
//! 2 MiB hugetlb page here). A background thread allocates the leaves a sequential toucher is
//! about to reach, zeroed, in the backing; a caught touch that finds its leaf ready maps the
//! existing pages with one `UFFDIO_CONTINUE` and costs only the round trip, and it maps the
//! ready leaves after its own with it (`DeviceCore::fault_ready_run`, fault-around over pages
//! already in the backing), so the toucher goes through those without a fault at all.
//!
//! **Which leaves.** The pool follows streams, as readahead follows a file's readers: a new
//! mapping starts one at its first leaf, and a caught touch whose leaf directly follows a
//! leaf already faulted in the same mapping starts one after it (a touch landing next to
//! nothing starts none, so random touches cost nothing). A touch within a stream's reach moves
//! it on; the pool hears of it once the toucher is answered, so that its next allocation does
//! not compete with the fault's. The thread prepares the next leaf of the stream with the
//! fewest ready ahead of its next caught touch, at most `zero_ahead` leaves ahead of any
//! stream, and stops while `zero_ahead` prepared leaves wait for a fault. A fault that mapped
//! ready leaves ahead moves its stream past them, to where its toucher's next touch will be
//! caught. So the memory allocated ahead of a stream's touches is bounded by twice
//! `zero_ahead` leaves: at most that many mapped ahead by its last fault, and at most that
//! many ready beyond. A stream with nothing ready or mapped ahead (new, or the pool fell
//! behind) leaves its next leaf to the toucher's own fault and is prepared from the one after,
//! rather than racing the toucher to it. A leaf a fault has reached (its bytes may be in use)
//! is never prepared, and a prepared leaf no touch reaches stays allocated in the backing, as
//! the device's memory is.
//!
//! **Never old bytes.** Preparing a hugetlb leaf is `fallocate`, and a memfd leaf a write
//! fault through the device's side window of the backing (`MADV_POPULATE_WRITE`; the window
//! keeps the entries, `DeviceCore::side`); see `DeviceCore::prepare_ahead` for why not one
//! way for both. Either way the kernel allocates a missing page zero-filled and leaves a page
//! that exists as it is. So a prepared leaf holds zeros or the bytes it already had, never a
//! stale page, and preparing changes no byte anyone could read. A hugetlb page comes out of
//! the reservation the device's mappings made for those bytes: `fallocate` of a shared hugetlb
//! file takes the reservation of the index it fills.
//!
//! **Handing over.** Each leaf has two bits in one word of the pool's: `READY` (the pool
//! allocated it) and `CLAIMED` (a fault reached it). The thread sets `READY` once the leaf is
//! allocated; a fault sets `CLAIMED` before it maps the leaf ([`ZeroAhead::take`]), the leaves
//! it maps ahead included (it maps those only once it saw `READY`). Both are
//! one `fetch_or` of the same word, so one of the two comes first, and each sees what the
//! other did: a fault whose RMW finds `READY` alone takes the leaf and maps the pool's pages
//! with one `UFFDIO_CONTINUE`; a pool whose RMW finds `CLAIMED` knows a fault went the slow
//! way and does not count the leaf ready. No leaf is counted ready after a fault claimed it,
//! and none is handed out twice (a later fault finds `CLAIMED` too). A fault that finds no
//! ready leaf allocates the pages itself; if the thread is preparing the same leaf at that
//! moment, both only ever allocate zeroed pages where none exist, so neither undoes the other.
//! The loom model `stress::loom_zero_ahead` checks the protocol (`offer`, `claim`).
//!
//! **Cores.** The thread runs in the `SCHED_IDLE` class (nice 19 where that is refused), so it
//! takes only what the touching threads leave, and a thread waking on its CPU (a toucher its
//! fault answered, a handler) preempts it at once rather than at the end of its slice. The
//! exception is filling a hugetlb leaf, which the kernel does holding one of its hashed
//! hugetlb fault mutexes, the lock faults of other leaves take too: that runs in the normal
//! class, so that the thread, preempted there, gets its CPU back within a clear's time or two
//! instead of whenever the cores are free (see [`ZeroAhead::run`]).

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use super::leaves::LeafBits;
use super::pin_view::Word;
use crate::backing::BackingError;

/// A leaf's bit: allocated by the pool, zeroed or holding what the backing held.
pub(crate) const READY: u64 = 1;
/// A leaf's bit: reached by a fault, which maps it.
pub(crate) const CLAIMED: u64 = 2;

/// The pool's side, once it has allocated the leaf whose two bits sit at `shift` in `word`:
/// marks it ready and says whether it is waiting for its fault (false: a fault claimed it
/// first and maps the pages itself).
pub(crate) fn offer(word: &impl Word, shift: u32) -> bool {
    word.fetch_or(READY << shift) & (CLAIMED << shift) == 0
}

/// A fault's side, before it maps the leaf whose bits sit at `shift` in `word`: claims it and
/// says whether it is the fault the pool's pages wait for (ready, and claimed by nobody
/// before).
pub(crate) fn claim(word: &impl Word, shift: u32) -> bool {
    (word.fetch_or(CLAIMED << shift) >> shift) & (READY | CLAIMED) == READY
}

/// The most streams the pool follows at once; a new one replaces the one idle longest.
const MAX_STREAMS: usize = 16;

/// One sequential toucher the pool prepares for, in device leaf indexes.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// The leaf its next touch is expected at.
    from: u64,
    /// The next leaf to prepare: `from` or beyond.
    next: u64,
    /// The end of the mapping it runs in (exclusive): it prepares nothing past it.
    end: u64,
    /// When it last moved (the pool's clock); 0 for a slot not in use.
    used: u64,
}

#[derive(Debug, Default)]
struct State {
    streams: [Stream; MAX_STREAMS],
    /// Leaves prepared and not yet taken.
    ready: u64,
    clock: u64,
    stop: bool,
    /// Changes that may give the thread something to do (each followed by a wake-up).
    changes: u64,
    /// `changes` when the thread last found nothing to do and went to sleep; `None` while it
    /// works.
    parked_at: Option<u64>,
}

impl State {
    /// The next leaf to prepare: from the stream with the fewest leaves ready ahead of its
    /// touches, at most `ahead` beyond them.
    fn next_leaf(&mut self, ahead: u64) -> Option<u64> {
        let s = self
            .streams
            .iter_mut()
            .filter(|s| s.used != 0 && s.next < s.end && s.next < s.from.saturating_add(ahead))
            .min_by_key(|s| (s.next - s.from, u64::MAX - s.used))?;
        let leaf = s.next;
        s.next += 1;
        Some(leaf)
    }

    /// Starts a stream expecting its next touch at `from`, in the slot idle longest, preparing
    /// from `next` on.
    fn start(&mut self, from: u64, next: u64, end: u64) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(slot) = self.streams.iter_mut().min_by_key(|s| s.used) {
            *slot = Stream {
                from,
                next,
                end,
                used: clock,
            };
        }
    }
}

/// What the pool has done, for [`FaultStats`](super::FaultStats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ZeroAheadStats {
    /// Leaves prepared.
    pub(super) zeroed: u64,
    /// Leaves faults took ready: a caught touch's own, or one mapped after it.
    pub(super) taken: u64,
    /// Leaves the backing could not allocate ahead (no huge page or memory left).
    pub(super) failed: u64,
}

/// A device's pool of leaves zeroed ahead (see the module's description).
#[derive(Debug)]
pub(super) struct ZeroAhead {
    /// The most leaves prepared and not yet taken, and the farthest ahead of a stream.
    cap: u64,
    /// Bytes per leaf.
    leaf: u64,
    /// Two bits per leaf (`READY`, `CLAIMED`), leaf `i` at bits `2i` and `2i + 1`, so both
    /// are in one word.
    bits: LeafBits,
    state: Mutex<State>,
    wake: Condvar,
    zeroed: AtomicU64,
    taken: AtomicU64,
    failed: AtomicU64,
}

impl ZeroAhead {
    /// A pool of at most `cap` leaves of `leaf` bytes for a device of `nr_leaves` leaves.
    pub(super) fn new(cap: u64, nr_leaves: u64, leaf: u64) -> ZeroAhead {
        ZeroAhead {
            cap,
            leaf,
            bits: LeafBits::new(2 * nr_leaves),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            zeroed: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// A new mapping of the device's leaves `[first, end)`: its first touches are expected
    /// at its start.
    pub(super) fn mapped(&self, first: u64, end: u64) {
        let mut st = self.state.lock();
        st.start(first, first, end);
        st.changes += 1;
        drop(st);
        self.wake.notify_one();
    }

    /// A caught touch of device leaf `leaf` in a mapping whose leaves end at `end`, whose
    /// fault mapped the leaves up to `upto` (exclusive: `leaf + 1`, or more when it mapped the
    /// ready leaves after it); `follows` says whether the leaf before it in that mapping is
    /// faulted in. Moves the stream it continues on to `upto`, where its next touch will be
    /// caught, or starts one there if it follows a faulted leaf.
    ///
    /// A stream with nothing ready ahead of its touches (the pool fell behind, or the stream
    /// is new) leaves its next leaf to the toucher's own fault and is prepared from the one
    /// after: the pool would still be allocating the next leaf when the toucher reaches it,
    /// and the fault would wait for the pool (a hugetlb fault waits on the page's fault mutex)
    /// instead of allocating beside it. A toucher that had leaves mapped ahead has those to
    /// go through first, so its stream is prepared from `upto` itself.
    pub(super) fn touched(&self, leaf: u64, upto: u64, end: u64, follows: bool) {
        let mut st = self.state.lock();
        st.clock += 1;
        let clock = st.clock;
        let cap = self.cap;
        // The leaf at `upto` left to the toucher's own fault, or not.
        let skip = u64::from(upto <= leaf + 1);
        // The stream whose next touch is nearest, within the cap, ahead of the touch or behind
        // it: two handlers may answer a toucher's faults in the other order, and the older
        // touch must not start a second stream for the same toucher, which would prepare the
        // leaf just ahead of it (the one the skip rule leaves to its fault).
        let continued = st
            .streams
            .iter_mut()
            .filter(|s| s.used != 0 && s.from.abs_diff(leaf + 1) <= cap)
            .min_by_key(|s| s.from.abs_diff(leaf + 1));
        match continued {
            Some(s) => {
                s.from = s.from.max(upto);
                s.next = s.next.max(s.from + skip);
                s.used = clock;
            }
            None if follows => st.start(upto, upto + skip, end),
            None => return,
        }
        st.changes += 1;
        drop(st);
        self.wake.notify_one();
    }

    /// Claims device leaf `leaf` for a fault about to map it, and says whether the pool had
    /// it ready: then its pages exist in the backing, zeroed or as they were, and the caller
    /// maps them as they are. Either way the pool leaves the leaf alone from now on.
    pub(super) fn take(&self, leaf: u64) -> bool {
        self.take_run(leaf..leaf + 1) == 1
    }

    /// [`take`](Self::take) for every leaf of `leaves` (a fault's run), with one update of
    /// the pool's count and one wake-up; returns how many the pool had ready.
    pub(super) fn take_run(&self, leaves: std::ops::Range<u64>) -> u64 {
        let taken = leaves
            .filter(|leaf| {
                self.bits
                    .word_of(2 * leaf)
                    .is_some_and(|(word, shift)| claim(word, shift))
            })
            .count() as u64;
        if taken == 0 {
            return 0;
        }
        self.taken.fetch_add(taken, Ordering::Relaxed);
        let mut st = self.state.lock();
        st.ready -= taken;
        st.changes += 1;
        drop(st);
        self.wake.notify_one();
        taken
    }

    /// Whether the thread has nothing to do: it looked at every change so far and went to
    /// sleep. For tests, which wait for the pool to have done what it will.
    #[cfg(all(test, not(loom)))]
    pub(super) fn idle(&self) -> bool {
        let st = self.state.lock();
        st.parked_at == Some(st.changes)
    }

    /// Whether the pool has `leaf` allocated and no fault has claimed it yet: a fault may map
    /// it beside the leaf it was caught for (`DeviceCore::fault_ready_run`).
    pub(super) fn waiting(&self, leaf: u64) -> bool {
        self.bits.test(2 * leaf) && !self.bits.test(2 * leaf + 1)
    }

    /// The most leaves the pool keeps ready.
    pub(super) fn cap(&self) -> u64 {
        self.cap
    }

    /// Whether a fault has claimed `leaf`, or the pool has it ready: either way, nothing to
    /// prepare.
    fn settled(&self, leaf: u64) -> bool {
        self.bits.test(2 * leaf) || self.bits.test(2 * leaf + 1)
    }

    /// Stops the thread running [`run`](Self::run).
    pub(super) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    /// What the pool has done so far.
    pub(super) fn stats(&self) -> ZeroAheadStats {
        // Acquire pairs with the Release in `run`: whoever reads the count sees the leaves it
        // counts ready. The others are statistics, ordered with nothing.
        ZeroAheadStats {
            zeroed: self.zeroed.load(Ordering::Acquire),
            taken: self.taken.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// The pool's thread, until [`stop`](Self::stop): prepares leaves with `prepare` (byte
    /// offset and length in the backing: `DeviceCore::prepare_ahead`) while fewer than the
    /// cap are ready.
    ///
    /// `lift` says that preparing a leaf holds a kernel lock unrelated faults wait for (a
    /// hugetlb fault mutex: `DeviceCore::prepare_holds_fault_mutex`); each `prepare` then
    /// runs in the normal class, and the thread goes back to `SCHED_IDLE` after it. The
    /// kernel clears the page under that lock, with a reschedule point between its 4 KiB
    /// parts; a `SCHED_IDLE` thread switched out at one of them, with the touching threads
    /// filling the cores, kept it for milliseconds, and touches whose leaves hash to the
    /// same mutex waited as long (BENCHMARKS.md). In the normal class it gets its share of a
    /// core and lets go within a clear's time or two.
    pub(super) fn run(&self, prepare: impl Fn(u64, u64) -> Result<(), BackingError>, lift: bool) {
        let idle = crate::init::enter_idle_class();
        let lift = lift && idle;
        if !idle {
            let tid = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
                tracing::debug!(error = %e, "dax: the zero-ahead thread stays at its nice value");
            }
        }
        loop {
            let leaf = {
                let mut st = self.state.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    if st.ready < self.cap
                        && let Some(leaf) = st.next_leaf(self.cap)
                    {
                        st.parked_at = None;
                        break leaf;
                    }
                    st.parked_at = Some(st.changes);
                    self.wake.wait(&mut st);
                }
            };
            if self.settled(leaf) {
                continue;
            }
            let at = leaf * self.leaf;
            // Should a switch fail, the pool keeps working in the class it is in.
            if lift && !crate::init::enter_normal_class() {
                tracing::debug!(leaf, "dax: the zero-ahead thread prepares in SCHED_IDLE");
            }
            let prepared = prepare(at, self.leaf);
            if lift && !crate::init::enter_idle_class() {
                tracing::debug!(leaf, "dax: the zero-ahead thread stays in the normal class");
            }
            if let Err(e) = prepared {
                // Out of huge pages or memory: the next leaves would fail too. The faults
                // allocate them (and answer SIGBUS if they cannot); new streams try again.
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(leaf, error = %e, "dax: cannot zero a leaf ahead");
                self.state.lock().streams = Default::default();
                continue;
            }
            let Some((word, shift)) = self.bits.word_of(2 * leaf) else {
                continue;
            };
            // Counted before it is offered, so a fault taking it at once never counts below
            // zero.
            self.state.lock().ready += 1;
            if !offer(word, shift) {
                // A fault reached the leaf while it was being prepared, and maps it itself.
                self.state.lock().ready -= 1;
            }
            // After the offer: whoever reads the count sees the leaves it counts offered.
            self.zeroed.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_prepare_the_fewest_ahead_first_and_no_further_than_the_cap() {
        let mut st = State::default();
        st.start(10, 10, 100);
        st.start(50, 50, 60);
        let cap = 3;
        let got: Vec<u64> = std::iter::from_fn(|| st.next_leaf(cap)).collect();
        // Alternating between the two streams (the newer first on a tie), three ahead each.
        assert_eq!(got, [50, 10, 51, 11, 52, 12]);
    }

    #[test]
    fn a_stream_stops_at_its_mappings_end() {
        let mut st = State::default();
        st.start(98, 98, 100);
        let got: Vec<u64> = std::iter::from_fn(|| st.next_leaf(8)).collect();
        assert_eq!(got, [98, 99]);
    }

    #[test]
    fn touches_move_streams_and_only_a_following_touch_starts_one() {
        let z = ZeroAhead::new(4, 1000, 1 << 21);
        z.touched(500, 501, 1000, false);
        assert!(
            z.state.lock().next_leaf(4).is_none(),
            "a lone touch starts nothing"
        );
        z.touched(501, 502, 1000, true);
        // Nothing is ready: the next leaf (502) is left to its own fault.
        assert_eq!(z.state.lock().next_leaf(4), Some(503));
        // The next touch continues the stream: what it prepares moves with the touches.
        z.touched(502, 503, 1000, true);
        let mut st = z.state.lock();
        let got: Vec<u64> = std::iter::from_fn(|| st.next_leaf(4)).collect();
        assert_eq!(got, [504, 505, 506]);
        assert_eq!(st.streams.iter().filter(|s| s.used != 0).count(), 1);
    }

    #[test]
    fn a_touch_answered_after_the_next_one_continues_its_stream() {
        let z = ZeroAhead::new(4, 1000, 1 << 21);
        z.touched(100, 101, 1000, true);
        // The toucher's faults of 101 and 102 are answered by two handlers, 102's first.
        z.touched(102, 103, 1000, true);
        z.touched(101, 102, 1000, true);
        let st = z.state.lock();
        assert_eq!(
            st.streams.iter().filter(|s| s.used != 0).count(),
            1,
            "one toucher, one stream"
        );
        drop(st);
        // Its next leaf (103) is left to its own fault, as after any touch with nothing ready.
        let got: Vec<u64> = std::iter::from_fn(|| z.state.lock().next_leaf(4)).collect();
        assert_eq!(got, [104, 105, 106]);
    }

    #[test]
    fn a_fault_that_mapped_leaves_ahead_moves_its_stream_past_them() {
        let z = ZeroAhead::new(4, 1000, 1 << 21);
        z.touched(100, 101, 1000, true);
        // The pool prepares 102 to 104 (101 is left to its toucher's fault).
        let prepared: Vec<u64> = std::iter::from_fn(|| z.state.lock().next_leaf(4)).collect();
        assert_eq!(prepared, [102, 103, 104]);
        // The touch of 101 mapped the ready 102 to 104 with it: its next touch is caught at
        // 105, a few leaves away, so the pool prepares from 105 itself, up to 4 ahead.
        z.touched(101, 105, 1000, true);
        let got: Vec<u64> = std::iter::from_fn(|| z.state.lock().next_leaf(4)).collect();
        assert_eq!(got, [105, 106, 107, 108]);
    }

    #[test]
    fn a_ready_leaf_is_taken_once() {
        let z = ZeroAhead::new(4, 1000, 1 << 21);
        z.state.lock().ready += 1;
        let (word, shift) = z.bits.word_of(14).expect("leaf 7");
        assert!(offer(word, shift));
        assert!(z.take(7));
        assert!(!z.take(7), "a leaf is handed out once");
        assert!(!z.take(8), "a leaf never prepared is not ready");
        assert_eq!(z.state.lock().ready, 0);
        assert_eq!(z.stats().taken, 1);
        // Leaf 8 was claimed: offered afterwards, it is not waiting for anyone.
        let (word, shift) = z.bits.word_of(16).expect("leaf 8");
        assert!(!offer(word, shift));
        assert!(z.settled(8) && !z.settled(9));
    }

    /// The calling thread's scheduling policy, or another thread's of this process.
    #[cfg(not(loom))]
    fn policy_of(tid: i32) -> i32 {
        // SAFETY: `sched_getscheduler` takes a thread id and reads no memory of ours.
        unsafe { libc::sched_getscheduler(tid) }
    }

    /// Runs a pool of cap 2 over a mapping of 4 leaves with `lift`, and returns the scheduling
    /// policy its thread had in each `prepare` and once it went to sleep with nothing left to
    /// do.
    #[cfg(not(loom))]
    fn policies(lift: bool) -> (Vec<i32>, i32) {
        let z = ZeroAhead::new(2, 4, 1 << 21);
        let seen = Mutex::new(Vec::new());
        let tid = Mutex::new(None);
        z.mapped(0, 4);
        std::thread::scope(|s| {
            s.spawn(|| {
                *tid.lock() = Some(rustix::thread::gettid().as_raw_nonzero().get());
                let prepare = |_, _| {
                    seen.lock().push(policy_of(0));
                    Ok(())
                };
                z.run(prepare, lift);
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !z.idle() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pool never went idle"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // The thread is asleep until `stop`, so its id is still its own.
            let parked = policy_of(tid.lock().expect("the pool's thread started"));
            z.stop();
            let seen = std::mem::take(&mut *seen.lock());
            (seen, parked)
        })
    }

    #[test]
    #[cfg(not(loom))]
    fn the_pool_holds_a_fault_mutex_only_in_the_normal_class_and_sleeps_in_sched_idle() {
        let idle_allowed = std::thread::spawn(crate::init::enter_idle_class)
            .join()
            .expect("join");
        if !idle_allowed {
            eprintln!("skipping: SCHED_IDLE is refused here");
            return;
        }
        let (seen, parked) = policies(true);
        assert_eq!(
            seen,
            [libc::SCHED_OTHER; 2],
            "each prepare in the normal class"
        );
        assert_eq!(parked, libc::SCHED_IDLE, "back in SCHED_IDLE after");
        let (seen, parked) = policies(false);
        assert_eq!(
            seen,
            [libc::SCHED_IDLE; 2],
            "without a shared lock, all in SCHED_IDLE"
        );
        assert_eq!(parked, libc::SCHED_IDLE);
    }
}
