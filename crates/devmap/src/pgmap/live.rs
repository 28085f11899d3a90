//! The liveness reference of a pgmap (the kernel's `pgmap->ref`, a `percpu_ref`): counted
//! handles, pins and mappings keep a pgmap alive; teardown kills the ref so no new one can be
//! taken, then waits for the count to drain.
//!
//! One atomic word: the low 62 bits count references, bit 63 is `DEAD` and bit 62 `TIMED` (the
//! teardown that set `DEAD` may still give up and revive the pgmap). `tryget` is a CAS loop
//! that refuses once `DEAD` is set (`percpu_ref_tryget_live`) and says whether a retry can
//! succeed; `put` is one `fetch_sub` whose
//! Release pairs with the waiter's Acquire load, so everything a holder did before letting go
//! happens-before teardown frees anything. The last put after `kill` wakes the waiter through
//! a mutex/condvar pair (the mutex only orders "check, then sleep" against "put, then notify").
//! A teardown that times out clears `DEAD` again and leaves everything as it was.

use std::time::{Duration, Instant};

use crate::primitive::{AtomicU64, Condvar, Mutex, Ordering, lock, wait};

const DEAD: u64 = 1 << 63;
const TIMED: u64 = 1 << 62;
const FLAGS: u64 = DEAD | TIMED;

/// Why a liveness reference was refused: teardown has begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dying {
    /// The teardown has a timeout and has not drained yet: it may give up and revive the
    /// pgmap, so a later attempt can succeed. False once teardown is final.
    pub(crate) may_revive: bool,
}

/// A pgmap's liveness count.
#[derive(Debug)]
pub(crate) struct Liveness {
    word: AtomicU64,
    lock: Mutex<()>,
    drained: Condvar,
}

impl Liveness {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
            lock: Mutex::new(()),
            drained: Condvar::new(),
        }
    }

    /// Takes a reference unless the pgmap is dying.
    pub(crate) fn tryget(&self) -> Result<(), Dying> {
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            if v & DEAD != 0 {
                return Err(Dying {
                    may_revive: v & TIMED != 0,
                });
            }
            // Acquire on success pairs with the Release in `revive`, so a holder taken after a
            // timed-out teardown sees the pgmap as the reviver left it. Relaxed on failure: the
            // loop only retries with the fresh value.
            match self
                .word
                .compare_exchange_weak(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => v = now,
            }
        }
    }

    /// Takes another reference for a holder that already has one (cannot fail).
    pub(crate) fn get_another(&self) {
        // Relaxed: the caller's existing reference keeps the count above zero, so nothing can
        // be waiting on this increment (`Arc::clone`'s reasoning).
        self.word.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a reference; the last one after `kill` wakes the teardown.
    pub(crate) fn put(&self) {
        // Release: this holder's work happens-before the teardown that observes the drop.
        let old = self.word.fetch_sub(1, Ordering::Release);
        if old & !TIMED == DEAD | 1 {
            let _g = lock(&self.lock);
            self.drained.notify_all();
        }
    }

    /// Marks the pgmap dying: every later `tryget` fails. `timed` says the teardown may still
    /// give up (`revive`), which refused callers are told.
    pub(crate) fn kill(&self, timed: bool) {
        // Relaxed is enough for the flags themselves: `wait_drained` does the Acquire that
        // matters.
        self.word
            .fetch_or(if timed { DEAD | TIMED } else { DEAD }, Ordering::Relaxed);
    }

    /// The teardown drained and will not give up: refused callers are told retrying is futile.
    pub(crate) fn finalize(&self) {
        // Relaxed: only the advice given to refused callers changes.
        self.word.fetch_and(!TIMED, Ordering::Relaxed);
    }

    /// Undoes `kill` after a teardown gave up.
    pub(crate) fn revive(&self) {
        // Release pairs with the Acquire of the next successful `tryget`.
        self.word.fetch_and(!FLAGS, Ordering::Release);
    }

    /// References currently held.
    pub(crate) fn count(&self) -> u64 {
        self.word.load(Ordering::Relaxed) & !FLAGS
    }

    fn drained_now(&self) -> bool {
        // Acquire pairs with the Release of every `put`.
        self.word.load(Ordering::Acquire) & !FLAGS == 0
    }

    /// Waits until no reference is held, for at most `timeout` (a timeout too long to express
    /// as a deadline waits forever). Returns whether it drained.
    pub(crate) fn wait_drained(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut g = lock(&self.lock);
        while !self.drained_now() {
            match deadline {
                None => g = wait(&self.drained, g),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    g = crate::primitive::wait_timeout(&self.drained, g, left);
                }
            }
        }
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn kill_refuses_new_references_and_revive_restores_them() {
        let l = Liveness::new();
        assert!(l.tryget().is_ok());
        l.get_another();
        assert_eq!(l.count(), 2);
        l.kill(true);
        assert_eq!(l.tryget(), Err(Dying { may_revive: true }));
        assert!(
            !l.wait_drained(Some(Duration::from_millis(5))),
            "two still held"
        );
        l.revive();
        assert!(l.tryget().is_ok());
        l.put();
        l.put();
        l.put();
        assert!(l.wait_drained(Some(Duration::ZERO)));
    }

    #[test]
    fn the_last_put_wakes_the_teardown() {
        let l = Liveness::new();
        assert!(l.tryget().is_ok());
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                l.put();
            });
            l.kill(false);
            assert!(l.wait_drained(None));
        });
        assert_eq!(l.count(), 0);
        assert_eq!(l.tryget(), Err(Dying { may_revive: false }));
    }

    #[test]
    fn a_timed_teardown_drains_under_a_timeout_too_long_for_a_deadline() {
        let l = Liveness::new();
        assert!(l.tryget().is_ok());
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                l.put();
            });
            l.kill(true);
            // Instant + Duration::MAX overflows: it used to panic here.
            assert!(l.wait_drained(Some(Duration::MAX)));
        });
        l.finalize();
        assert_eq!(l.tryget(), Err(Dying { may_revive: false }));
    }
}
