//! Concurrent resolves of caught touches kept on different CPUs.
//!
//! The kernel's own fault runs on the toucher's CPU. A caught touch is resolved by a handler
//! thread, which the kernel wakes wherever its wake-up placement puts it, and with two
//! touchers on two cores that placement can settle into both handlers on one CPU while the
//! other idles: the toucher that wakes a handler is still running when it does, so no CPU
//! looks idle and the handler goes back to its previous CPU, where the other handler is
//! clearing its page; and the load balancer leaves a thread that ran in the last half
//! millisecond where it is. The two clears then take turns on one CPU, and every resolve takes
//! two clears' time. Measured with the CPU of each resolve recorded: in the runs of
//! `touch-test --backing hugetlb --threads 2` whose p50 was 2.0× the kernel's, every one of
//! the 128 resolves ran on the same CPU; in a run of 1.07×, none overlapped another on its
//! CPU.
//!
//! [`Spread::enter`] counts a resolve on the CPU it runs on. A resolve that finds another on
//! its CPU, while a CPU its thread may use has none, moves its thread: its affinity without
//! that CPU, so that the kernel moves it to the best CPU left, then its affinity as it was,
//! which moves nothing. The counts are only a hint (a resolve may move meanwhile, or two may
//! pick the same CPU), so they are relaxed atomics ordered with nothing.
//!
//! Only a device's own handlers do this (`DeviceCore::user_fault`). The handlers of served
//! clients do not: with four clients of two threads each on two cores, the CPU a resolve moved
//! to was running those clients' threads, and the service's fairness figure (worst client p99
//! over median client p50) went from 1.42–3.27 to 1.92–5.66.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::thread::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};

/// Resolves running, per CPU.
#[derive(Debug)]
pub(super) struct Spread {
    busy: Box<[AtomicU32]>,
}

/// One resolve, counted on its CPU until dropped.
#[derive(Debug)]
pub(super) struct Resolving<'a> {
    spread: &'a Spread,
    /// The CPU it is counted on; `None` for a CPU beyond the table.
    cpu: Option<usize>,
}

impl Spread {
    /// A table for CPUs `0..cpus`.
    pub(super) fn new(cpus: usize) -> Spread {
        Spread {
            busy: (0..cpus).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The process's table, for every CPU id the system can have: the resolves of every
    /// device in the process share the CPUs.
    pub(super) fn process() -> &'static Spread {
        static SPREAD: OnceLock<Spread> = OnceLock::new();
        SPREAD.get_or_init(|| Spread::new(possible_cpus()))
    }

    /// Counts a resolve starting on the calling thread, first moving the thread off its CPU
    /// if another resolve runs there and a CPU it may use has none.
    pub(super) fn enter(&self) -> Resolving<'_> {
        let cpu = sched_getcpu();
        let counted = match self.busy.get(cpu) {
            None => None,
            Some(slot) if slot.fetch_add(1, Ordering::Relaxed) == 0 => Some(cpu),
            Some(slot) => match self.move_off(cpu) {
                None => Some(cpu),
                Some(now) => {
                    slot.fetch_sub(1, Ordering::Relaxed);
                    self.busy.get(now).map(|to| {
                        to.fetch_add(1, Ordering::Relaxed);
                        now
                    })
                }
            },
        };
        Resolving {
            spread: self,
            cpu: counted,
        }
    }

    /// Moves the calling thread off `cpu` if a CPU of its affinity has no resolve; returns
    /// the CPU it runs on after.
    fn move_off(&self, cpu: usize) -> Option<usize> {
        let mask = sched_getaffinity(None).ok()?;
        let mut away = mask;
        away.unset(cpu);
        let free = self
            .busy
            .iter()
            .enumerate()
            .any(|(c, n)| away.is_set(c) && n.load(Ordering::Relaxed) == 0);
        if !free {
            return None;
        }
        if let Err(e) = sched_setaffinity(None, &away) {
            tracing::debug!(cpu, error = %e, "dax: a resolve stays on a CPU another one uses");
            return None;
        }
        let now = sched_getcpu();
        if let Err(e) = sched_setaffinity(None, &mask) {
            tracing::warn!(error = %e, "dax: a handler thread keeps a narrower CPU affinity");
        }
        Some(now)
    }

    /// Resolves counted on `cpu` now.
    #[cfg(all(test, not(loom)))]
    fn busy_on(&self, cpu: usize) -> u32 {
        self.busy[cpu].load(Ordering::Relaxed)
    }
}

impl Drop for Resolving<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.cpu.and_then(|c| self.spread.busy.get(c)) {
            slot.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How many CPU ids the system can have (they run from 0): from the kernel's list of
/// possible CPUs, or as many as a CPU set holds if that cannot be read.
fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| last_cpu_of(&s))
        .map_or(CpuSet::MAX_CPU, |last| last + 1)
}

/// The highest CPU id of a kernel CPU list such as `0-3,8-11`.
fn last_cpu_of(list: &str) -> Option<usize> {
    list.trim()
        .split(',')
        .filter_map(|part| part.rsplit('-').next()?.parse().ok())
        .max()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Runs `f` on a thread first placed on CPU 0 (its affinity then widened to `mask`).
    fn on_cpu0<T: Send>(mask: CpuSet, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut zero = CpuSet::new();
                zero.set(0);
                sched_setaffinity(None, &zero).expect("to CPU 0");
                sched_setaffinity(None, &mask).expect("widen");
                f()
            })
            .join()
            .expect("join")
        })
    }

    fn cpus(ids: &[usize]) -> CpuSet {
        let mut set = CpuSet::new();
        for &id in ids {
            set.set(id);
        }
        set
    }

    #[test]
    fn a_second_resolve_on_a_cpu_moves_to_a_free_one_and_the_counts_return_to_zero() {
        let allowed = sched_getaffinity(None).expect("affinity");
        if !(allowed.is_set(0) && allowed.is_set(1)) {
            eprintln!("skipping: this test needs CPUs 0 and 1");
            return;
        }
        let spread = Spread::new(2);
        let both = cpus(&[0, 1]);
        std::thread::scope(|s| {
            let (entered_tx, entered_rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let spread = &spread;
            s.spawn(move || {
                sched_setaffinity(None, &both).expect("CPUs 0 and 1");
                let r = spread.enter();
                entered_tx.send(r.cpu).expect("send");
                done_rx.recv().expect("recv");
            });
            let first = entered_rx.recv().expect("entered").expect("counted");
            // A second resolve starting on the first one's CPU.
            let (counted, running, after) = s
                .spawn(move || {
                    sched_setaffinity(None, &cpus(&[first])).expect("place");
                    sched_setaffinity(None, &both).expect("widen");
                    let r = spread.enter();
                    (
                        r.cpu,
                        sched_getcpu(),
                        sched_getaffinity(None).expect("mask"),
                    )
                })
                .join()
                .expect("join");
            done_tx.send(()).expect("send");
            assert_eq!(counted, Some(1 - first), "moved to the free CPU");
            assert_eq!(counted, Some(running));
            assert!(
                after.is_set(0) && after.is_set(1),
                "its affinity is as it was"
            );
        });
        assert_eq!(
            (spread.busy_on(0), spread.busy_on(1)),
            (0, 0),
            "all dropped"
        );
    }

    #[test]
    fn a_resolve_that_may_not_move_stays_and_is_counted() {
        let spread = Spread::new(2);
        let only0 = cpus(&[0]);
        on_cpu0(only0, || {
            let a = spread.enter();
            let b = spread.enter();
            assert_eq!((a.cpu, b.cpu), (Some(0), Some(0)));
            assert_eq!(spread.busy_on(0), 2);
        });
        assert_eq!(spread.busy_on(0), 0);
    }

    #[test]
    fn cpu_lists_give_their_highest_id() {
        assert_eq!(last_cpu_of("0-1\n"), Some(1));
        assert_eq!(last_cpu_of("0"), Some(0));
        assert_eq!(last_cpu_of("0-3,8-11"), Some(11));
        assert_eq!(last_cpu_of(""), None);
    }
}
