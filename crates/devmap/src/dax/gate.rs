//! The device's liveness gate, after `dax_alive` and `dax_read_lock` in `drivers/dax/super.c`:
//! every fault runs inside the gate, and teardown closes it and waits for the faults inside
//! to finish (`kill_dax` and its `synchronize_srcu`) before it unregisters the pgmap. So no
//! fault resolves after teardown began, and a fault that arrives once it has begun fails.
//!
//! Beyond the kernel, whose teardown is final, a timed teardown can give up
//! ([`PgmapError::Busy`](crate::pgmap::PgmapError::Busy)) and leave the device live. A fault
//! that arrives while such a teardown is undecided waits for the outcome rather than failing a
//! device that may come back; an untimed teardown fails it at once.

use crate::primitive::{Condvar, Mutex, lock, wait};

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

    /// Closes the gate and waits until no fault is inside. `final` for a teardown that cannot
    /// give up. Returns false, doing nothing, if the device is dead already.
    pub(super) fn close(&self, r#final: bool) -> bool {
        let mut s = lock(&self.state);
        if s.phase == Phase::Dead {
            return false;
        }
        s.phase = Phase::Closing { r#final };
        while s.inside > 0 {
            s = wait(&self.changed, s);
        }
        true
    }

    /// Ends a teardown begun with [`close`](Self::close): `dead` when it completed, otherwise
    /// the device is live again. Wakes the faults that waited for the outcome.
    pub(super) fn finish(&self, dead: bool) {
        let mut s = lock(&self.state);
        s.phase = if dead { Phase::Dead } else { Phase::Live };
        self.changed.notify_all();
    }
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

    #[test]
    fn close_waits_for_the_faults_inside_and_refuses_new_ones() {
        let gate = Gate::new();
        let inside = gate.enter().expect("live");
        let closed = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(gate.close(true));
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
        assert!(!gate.close(true));
    }

    #[test]
    fn a_fault_during_an_undecided_timed_teardown_waits_for_the_outcome() {
        let gate = Gate::new();
        assert!(gate.close(false));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| gate.enter().is_some());
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "entered a closing gate");
            gate.finish(false);
            assert!(waiter.join().expect("waiter"), "the device came back live");
        });
        assert!(gate.is_live());
    }
}

/// Model checks of the gate: a fault that is inside never sees the device's resources gone,
/// whatever the interleaving with a final teardown; and a fault that arrives during a timed
/// teardown that gives up gets in afterwards, with the resources intact.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::primitive::{AtomicBool, Ordering};
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
            assert!(gate.close(true));
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
            assert!(gate.close(false));
            gate.finish(false);
            assert!(fault.join().expect("fault"), "the device came back live");
            assert!(gate.is_live());
        });
    }
}
