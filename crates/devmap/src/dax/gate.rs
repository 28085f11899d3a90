//! The device's liveness gate, after `dax_alive` and `dax_read_lock` in `drivers/dax/super.c`:
//! every fault runs inside the gate, and teardown closes it and waits for the faults inside
//! to finish (`kill_dax` and its `synchronize_srcu`) before it unregisters the pgmap. So no
//! fault resolves after teardown began, and a fault that arrives once it has begun fails.
//!
//! Beyond the kernel, whose teardown is final, a timed teardown can give up
//! ([`PgmapError::Busy`](crate::pgmap::PgmapError::Busy)) and leave the device live. A fault
//! that arrives while such a teardown is undecided waits for the outcome rather than failing a
//! device that may come back; an untimed teardown fails it at once.
//!
//! The gate also makes teardown happen once: the caller that closes it owns the teardown
//! until it calls [`Gate::finish`]. A second caller never closes a closing gate over the
//! first one; it waits for the first one's outcome (up to its own deadline) and either finds
//! the device dead, or live again and closes it itself.

use std::time::Instant;

use crate::primitive::{Condvar, Mutex, lock, wait, wait_timeout};

/// Where the device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    /// Teardown began; `final` when it cannot give up.
    Closing {
        r#final: bool,
    },
    Dead,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    inside: u64,
}

/// The gate.
#[derive(Debug)]
pub(super) struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

/// Proof of being inside the gate; leaving is the drop.
#[derive(Debug)]
pub(super) struct Inside<'g> {
    gate: &'g Gate,
}

impl Gate {
    pub(super) fn new() -> Gate {
        Gate {
            state: Mutex::new(State {
                phase: Phase::Live,
                inside: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Enters, if the device is live. Waits while a teardown that may give up is undecided;
    /// `None` once teardown is final.
    pub(super) fn enter(&self) -> Option<Inside<'_>> {
        let mut s = lock(&self.state);
        loop {
            match s.phase {
                Phase::Live => {
                    s.inside += 1;
                    return Some(Inside { gate: self });
                }
                Phase::Closing { r#final: false } => s = wait(&self.changed, s),
                Phase::Closing { r#final: true } | Phase::Dead => return None,
            }
        }
    }

    /// Whether the device is live (no teardown in progress or done).
    pub(super) fn is_live(&self) -> bool {
        lock(&self.state).phase == Phase::Live
    }

    /// Closes the gate for a teardown and waits until no fault is inside. A `deadline` makes
    /// the teardown one that may give up; without one it is final.
    ///
    /// While another teardown is in progress this one does not close anything: it waits for
    /// that one's outcome, until `deadline` if given. A device found dead gives
    /// [`Close::Dead`]; one found live again (the other teardown gave up) is closed by this
    /// caller; a deadline that passes first gives [`Close::Busy`] and changes nothing.
    pub(super) fn close(&self, deadline: Option<Instant>) -> Close {
        let mut s = lock(&self.state);
        loop {
            match s.phase {
                Phase::Dead => return Close::Dead,
                Phase::Live => break,
                Phase::Closing { .. } => match deadline {
                    None => s = wait(&self.changed, s),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Close::Busy;
                        }
                        s = wait_timeout(&self.changed, s, left);
                    }
                },
            }
        }
        s.phase = Phase::Closing {
            r#final: deadline.is_none(),
        };
        while s.inside > 0 {
            s = wait(&self.changed, s);
        }
        Close::Mine
    }

    /// Ends the teardown that [`close`](Self::close) gave to its caller ([`Close::Mine`]):
    /// `dead` when it completed, otherwise the device is live again. Wakes the faults and the
    /// other teardowns that waited for the outcome.
    pub(super) fn finish(&self, dead: bool) {
        let mut s = lock(&self.state);
        s.phase = if dead { Phase::Dead } else { Phase::Live };
        self.changed.notify_all();
    }
}

/// What [`Gate::close`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum Close {
    /// The caller closed the gate: it owns the teardown and ends it with [`Gate::finish`].
    Mine,
    /// Another teardown completed: nothing is left to do.
    Dead,
    /// Another teardown was still in progress at the deadline.
    Busy,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.gate.state);
        s.inside -= 1;
        if s.inside == 0 {
            self.gate.changed.notify_all();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// A deadline no test reaches: a timed teardown that waits for its outcome.
    fn far() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(3600))
    }

    #[test]
    fn close_waits_for_the_faults_inside_and_refuses_new_ones() {
        let gate = Gate::new();
        let inside = gate.enter().expect("live");
        let closed = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(gate.close(None), Close::Mine);
                closed.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !closed.load(Ordering::SeqCst),
                "close returned with a fault inside"
            );
            drop(inside);
        });
        assert!(closed.load(Ordering::SeqCst));
        assert!(gate.enter().is_none());
        gate.finish(true);
        assert!(gate.enter().is_none());
        assert_eq!(gate.close(None), Close::Dead);
    }

    #[test]
    fn a_fault_during_an_undecided_timed_teardown_waits_for_the_outcome() {
        let gate = Gate::new();
        assert_eq!(gate.close(far()), Close::Mine);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| gate.enter().is_some());
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "entered a closing gate");
            gate.finish(false);
            assert!(waiter.join().expect("waiter"), "the device came back live");
        });
        assert!(gate.is_live());
    }

    #[test]
    fn a_second_teardown_waits_for_the_first_and_finds_the_device_dead() {
        let gate = Gate::new();
        assert_eq!(gate.close(None), Close::Mine);
        std::thread::scope(|s| {
            let second = s.spawn(|| gate.close(None));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!second.is_finished(), "closed a gate another teardown owns");
            gate.finish(true);
            assert_eq!(second.join().expect("second"), Close::Dead);
        });
    }

    #[test]
    fn a_timed_teardown_during_a_final_one_gives_up_and_leaves_it_closing() {
        let gate = Gate::new();
        assert_eq!(gate.close(None), Close::Mine);
        let soon = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(gate.close(soon), Close::Busy);
        assert!(!gate.is_live(), "the final teardown is still in progress");
        assert!(gate.enter().is_none(), "faults still fail");
        gate.finish(true);
        assert_eq!(gate.close(soon), Close::Dead);
    }

    #[test]
    fn a_final_teardown_takes_over_from_a_timed_one_that_gives_up() {
        let gate = Gate::new();
        assert_eq!(gate.close(far()), Close::Mine);
        std::thread::scope(|s| {
            let second = s.spawn(|| gate.close(None));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!second.is_finished(), "closed over an undecided teardown");
            gate.finish(false);
            assert_eq!(second.join().expect("second"), Close::Mine);
        });
        assert!(!gate.is_live());
        assert!(gate.enter().is_none());
        gate.finish(true);
    }
}

/// Model checks of the gate: a fault that is inside never sees the device's resources gone,
/// whatever the interleaving with a final teardown; a fault that arrives during a timed
/// teardown that gives up gets in afterwards, with the resources intact; and of concurrent
/// teardowns exactly one releases the resources, a second one returns only once they are
/// released, and a timed one that gives up during a final one leaves the device not live.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::primitive::{AtomicBool, AtomicU64, Ordering};
    use loom::sync::Arc;

    #[test]
    fn loom_gate_no_fault_inside_after_teardown() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let valid = Arc::new(AtomicBool::new(true));
            let fault = {
                let (gate, valid) = (Arc::clone(&gate), Arc::clone(&valid));
                loom::thread::spawn(move || {
                    if let Some(_inside) = gate.enter() {
                        assert!(valid.load(Ordering::SeqCst), "a fault ran after teardown");
                    }
                })
            };
            assert_eq!(gate.close(None), Close::Mine);
            valid.store(false, Ordering::SeqCst);
            gate.finish(true);
            fault.join().expect("fault");
            assert!(gate.enter().is_none());
        });
    }

    #[test]
    fn loom_gate_timed_teardown_that_gives_up_lets_faults_in() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let fault = {
                let gate = Arc::clone(&gate);
                loom::thread::spawn(move || gate.enter().is_some())
            };
            // loom's condvar never times out; this deadline is never waited for.
            let later = Some(Instant::now() + std::time::Duration::from_secs(3600));
            assert_eq!(gate.close(later), Close::Mine);
            gate.finish(false);
            assert!(fault.join().expect("fault"), "the device came back live");
            assert!(gate.is_live());
        });
    }

    /// One teardown as `DaxDevice::close` runs it: close, release the resources (the pfn
    /// ranges) if the teardown is ours, finish. Returns what close said.
    fn teardown(gate: &Gate, released: &AtomicU64) -> Close {
        let c = gate.close(None);
        match c {
            Close::Mine => {
                // Relaxed: the gate's mutex orders this before `finish` and every `close`
                // that sees the device dead.
                released.fetch_add(1, Ordering::Relaxed);
                gate.finish(true);
            }
            Close::Dead => assert_eq!(
                released.load(Ordering::Relaxed),
                1,
                "a second teardown returned before the first released"
            ),
            Close::Busy => panic!("an untimed teardown gave up"),
        }
        c
    }

    #[test]
    fn loom_gate_two_concurrent_teardowns_release_once() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let released = Arc::new(AtomicU64::new(0));
            let other = {
                let (gate, released) = (Arc::clone(&gate), Arc::clone(&released));
                loom::thread::spawn(move || teardown(&gate, &released))
            };
            let mine = teardown(&gate, &released);
            let theirs = other.join().expect("other teardown");
            assert_eq!(released.load(Ordering::Relaxed), 1, "released twice");
            assert!(
                (mine == Close::Mine) != (theirs == Close::Mine),
                "exactly one teardown owns it: {mine:?}, {theirs:?}"
            );
            assert!(gate.enter().is_none());
        });
    }

    #[test]
    fn loom_gate_timed_teardown_during_a_final_one_leaves_it_not_live() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let released = Arc::new(AtomicU64::new(0));
            let timed = {
                let gate = Arc::clone(&gate);
                loom::thread::spawn(move || {
                    // A deadline already passed: a timeout that expires at the first wait.
                    match gate.close(Some(Instant::now())) {
                        // Closed first; its drain "times out" and it gives up.
                        Close::Mine => gate.finish(false),
                        Close::Busy => assert!(
                            !gate.is_live(),
                            "a timed teardown that gave up made a closing device live"
                        ),
                        Close::Dead => {}
                    }
                })
            };
            assert_eq!(teardown(&gate, &released), Close::Mine);
            timed.join().expect("timed teardown");
            assert_eq!(released.load(Ordering::Relaxed), 1);
            assert!(!gate.is_live());
        });
    }
}
