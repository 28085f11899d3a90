//! Priority boosts for the background workers of asynchronous initialisation.
//!
//! Workers run at [`BACKGROUND_NICE`] so that background init yields to the threads that use
//! the pgmap. A thread that syncs a sub-range helps with every piece of it nobody has taken
//! (`claim`), so the only thing it can still wait for is a piece another thread is writing. If
//! that thread is a worker the scheduler has put aside in favour of busier nice-0 threads, the
//! wait lasts as long as the worker stays off a CPU: a nice-19 thread behind three busy nice-0
//! threads waited 250 ms on average and up to 400 ms for its next turn on the 2-core test
//! machine (BENCHMARKS.md). So before it sleeps, the waiter raises every worker holding a
//! piece of that sub-range, and the worker drops back to [`BACKGROUND_NICE`] itself as soon as
//! it finishes the piece it is on.
//!
//! The raise is to [`URGENT_NICE`], not merely to the waiter's own nice value. What the waiter
//! wants is what a kernel lock with proxy execution would give it: the holder runs in the
//! waiter's place, now. Matching the waiter's weight does not do that under EEVDF: the worker
//! keeps its own (rescaled) lag from its last slice and waits its turn among the nice-0
//! threads, which measured 5–14 ms on average and up to 25 ms. At nice −20 it is eligible at
//! once and preempts at the next check: 1.4–2.8 ms on average, at most 4–13 ms. The price is
//! bounded: one piece (64 descriptors, a few microseconds and one page fault) at that priority
//! per wait, and waits happen only when a sync needs the very piece a worker is writing. Where
//! the kernel refuses nice −20 (`RLIMIT_NICE` allows less), the waiter raises the worker to its
//! own nice value instead; without `CAP_SYS_NICE` or any `RLIMIT_NICE` both fail and the
//! waiter just sleeps, as it would without this module. A waiter at [`BACKGROUND_NICE`] or
//! weaker raises nobody: it is no more urgent than the worker.
//!
//! Each worker has a [`Slot`]: its thread id, the sub-range it is pulling pieces from, and
//! whether it was boosted. Two races matter:
//!
//! * **A boost must never reach a thread id that was reused.** A worker thread's id is freed
//!   when the thread exits and may then name any thread of any process. The id and a count of
//!   waiters that are boosting live in one atomic word; a waiter increments the count and reads
//!   the id in one read-modify-write, and a retiring worker clears the id in another and then
//!   waits for the count to drain. Both are RMWs on one word, so either the waiter saw the id
//!   cleared or the worker sees the waiter's increment and waits for its boost to finish.
//! * **A boost must not outlive its piece.** The waiter marks the slot boosted only after its
//!   `setpriority` returned; the worker, after each piece, takes the mark and only then drops
//!   its priority. A drop can therefore never run before the raise it undoes; a raise that lands
//!   after the worker looked leaves the mark set for the worker's next piece. But the raise can
//!   itself deschedule the waiter before it marks (the worker, now at nice −20, takes the
//!   waiter's CPU), and then nothing marks until the waiter runs again: once, the worker kept
//!   nice −20 for 68 ms of pieces while the waiter waited for a CPU. So while a waiter is
//!   between reading the id and marking (the count above), the worker also reads its own
//!   priority after each piece and drops a raise it finds. At worst a worker runs one extra
//!   piece (64 descriptors) boosted, whenever its waiter runs.

use crate::primitive::{AtomicBool, AtomicU64, AtomicUsize, Ordering, yield_now};

/// The nice value of the background workers: the lowest priority there is.
pub(crate) const BACKGROUND_NICE: i32 = 19;
/// The nice value a waiter raises a worker to for the rest of its piece: the highest there is.
pub(crate) const URGENT_NICE: i32 = -20;

/// A thread id as the kernel numbers threads (`gettid`); never 0.
pub(crate) type Tid = i32;

/// The scheduler calls priority inheritance needs, behind a trait so the model checks can
/// replace them.
pub(crate) trait Renice {
    /// The calling thread's nice value, if it can be read.
    fn own_nice(&self) -> Option<i32>;
    /// Sets thread `tid`'s nice value; says whether the kernel allowed it.
    fn set_nice(&self, tid: Tid, nice: i32) -> bool;
    /// Thread `tid`'s nice value, if it can be read (a worker reads its own).
    fn nice_of(&self, tid: Tid) -> Option<i32>;
}

/// The real scheduler.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Os;

impl Os {
    /// Moves the calling thread to [`BACKGROUND_NICE`] and returns its id, or `None` if it
    /// could not (then it is no background thread to boost).
    pub(crate) fn enter_background(self) -> Option<Tid> {
        let tid = rustix::thread::gettid();
        rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE).ok()?;
        Some(tid.as_raw_nonzero().get())
    }
}

/// Moves the calling thread to the `SCHED_IDLE` class, where it runs only on a CPU no other
/// thread wants, and any other thread waking on its CPU preempts it at once; says whether it
/// could (else it stays as it was).
///
/// For background work nobody waits for, such as the zero-ahead pool's. A nice-19 thread is
/// not enough there: under EEVDF's run-to-parity a woken nice-0 thread does not preempt it
/// before the end of its slice, so one that allocates and zeroes several huge pages in the
/// kernel in a row (which yields only where the kernel checks for a reschedule, and there
/// only if one was asked for) kept a woken toucher off its CPU for 2.3–3.3 ms
/// (BENCHMARKS.md). A `SCHED_IDLE` thread is preempted at the kernel's next check.
/// (The init workers stay at [`BACKGROUND_NICE`]: their waiters raise them, which a nice value
/// alone does not do for a `SCHED_IDLE` thread.)
pub(crate) fn enter_idle_class() -> bool {
    enter_class(libc::SCHED_IDLE)
}

/// Moves the calling thread back to the normal class (`SCHED_OTHER`, at its nice value); says
/// whether it could.
pub(crate) fn enter_normal_class() -> bool {
    enter_class(libc::SCHED_OTHER)
}

fn enter_class(policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads one `sched_param` through the pointer, which points
    // at a live, initialised local; pid 0 names the calling thread.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

impl Renice for Os {
    fn own_nice(&self) -> Option<i32> {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }

    fn set_nice(&self, tid: Tid, nice: i32) -> bool {
        rustix::process::Pid::from_raw(tid)
            .is_some_and(|pid| rustix::process::setpriority_process(Some(pid), nice).is_ok())
    }

    fn nice_of(&self, tid: Tid) -> Option<i32> {
        let pid = rustix::process::Pid::from_raw(tid)?;
        rustix::process::getpriority_process(Some(pid)).ok()
    }
}

/// `sub` value of a worker that holds no sub-range.
const NO_SUB: usize = usize::MAX;
/// Low half of `tid_boosting`: waiters between reading the id and finishing their boost.
const BOOSTING: u64 = u32::MAX as u64;

/// What waiters need to know about one worker. A cache line of its own: the worker reads it
/// after every piece and writes it at every sub-range.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Slot {
    /// `tid << 32 | boosting`: the worker's id (0: none, or retired) and the number of waiters
    /// boosting it right now.
    tid_boosting: AtomicU64,
    /// The sub-range the worker is taking pieces from, or `NO_SUB`.
    sub: AtomicUsize,
    /// Set by a waiter after it raised the worker's priority; taken by the worker.
    boosted: AtomicBool,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            tid_boosting: AtomicU64::new(0),
            sub: AtomicUsize::new(NO_SUB),
            boosted: AtomicBool::new(false),
        }
    }
}

impl Slot {
    /// Publishes the worker's id. Called once, by the worker, before it takes any piece.
    pub(crate) fn register(&self, tid: Tid) {
        // fetch_or, not store: a waiter may be counted in the low half already (it found no id
        // and is about to leave). Relaxed: waiters read the id only after they observed one of
        // this worker's claims, whose Release orders this before it (`SubRanges::claim`).
        self.tid_boosting
            .fetch_or(u64::from(tid as u32) << 32, Ordering::Relaxed);
    }

    /// Unpublishes the id and returns once no waiter can still be boosting this thread; after
    /// it the thread may exit and its id be reused.
    pub(crate) fn retire(&self) {
        // The id and the count share one word, so this RMW and a waiter's increment in `boost`
        // are ordered: a waiter after it reads no id, and one before it is seen in the count.
        self.tid_boosting.fetch_and(BOOSTING, Ordering::Relaxed);
        // Acquire pairs with the Release decrement in `boost`: that waiter's `setpriority`
        // is over before this thread goes on to exit.
        while self.tid_boosting.load(Ordering::Acquire) & BOOSTING != 0 {
            yield_now();
        }
    }

    /// Records that the worker is taking pieces of sub-range `i` (or none).
    pub(crate) fn set_sub(&self, i: Option<usize>) {
        // Relaxed: a waiter reads this only after observing the worker's claim of a piece of
        // `i`, whose Release orders this store before it.
        self.sub.store(i.unwrap_or(NO_SUB), Ordering::Relaxed);
    }

    /// Whether the worker is (as far as this thread has seen) taking pieces of sub-range `i`.
    pub(crate) fn holds(&self, i: usize) -> bool {
        self.sub.load(Ordering::Relaxed) == i
    }

    /// Raises the worker to `nice` on behalf of a waiter; says whether it did.
    pub(crate) fn boost(&self, r: &impl Renice, nice: i32) -> bool {
        // Relaxed: the RMW orders this against `retire` by itself (one word, one modification
        // order); the id read is the one `register` wrote.
        let word = self.tid_boosting.fetch_add(1, Ordering::Relaxed);
        let tid = (word >> 32) as u32 as Tid;
        let raised = tid != 0 && r.set_nice(tid, nice);
        if raised {
            // Release pairs with the Acquire swap in `restore`: the worker drops its priority
            // only after this raise took effect, never before it.
            self.boosted.store(true, Ordering::Release);
        }
        // Release pairs with the Acquire load in `retire`.
        self.tid_boosting.fetch_sub(1, Ordering::Release);
        raised
    }

    /// Whether a boost is waiting for the worker's next `restore`.
    #[cfg(all(test, loom))]
    pub(crate) fn pending_restore(&self) -> bool {
        self.boosted.load(Ordering::Relaxed)
    }

    /// Called by the worker after each piece: drops back to [`BACKGROUND_NICE`] if a waiter
    /// raised it.
    ///
    /// A raise is found two ways. Its mark, which the waiter sets once its `setpriority`
    /// returned; and, while a waiter is between reading the id and marking (the count in
    /// `tid_boosting`), the worker's own priority, read from the kernel. The second is needed
    /// because the raise itself can deschedule the waiter between the two: raised to nice −20
    /// on the waiter's CPU, the worker takes it, and without the mark it kept nice −20 for
    /// 68 ms of pieces while the waiter, the one thread the raise was for, waited for a CPU
    /// (`perf sched` trace in BENCHMARKS.md). So a raise lasts at most until the end of the
    /// piece after it lands, whenever its waiter runs again.
    pub(crate) fn restore(&self, r: &impl Renice) {
        // The Relaxed load keeps the common case (never boosted) to one plain read; the swap's
        // Acquire pairs with the Release store in `boost`.
        let marked =
            self.boosted.load(Ordering::Relaxed) && self.boosted.swap(false, Ordering::Acquire);
        // Relaxed: the count only says whether to ask the kernel, whose answer is the truth.
        let word = self.tid_boosting.load(Ordering::Relaxed);
        let tid = (word >> 32) as u32 as Tid;
        let raising = word & BOOSTING != 0;
        let raised =
            marked || (raising && tid != 0 && r.nice_of(tid).is_some_and(|n| n < BACKGROUND_NICE));
        if raised {
            // Lowering one's own priority is always allowed; if it failed anyway the worker
            // just stays at the waiter's priority. A drop seen here before its waiter marks it
            // is dropped again at the next piece: one more `setpriority`.
            let _ = r.set_nice(tid, BACKGROUND_NICE);
        }
    }
}
