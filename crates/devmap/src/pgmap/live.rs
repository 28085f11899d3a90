//! The liveness reference of a pgmap (the kernel's `pgmap->ref`, a `percpu_ref`): counted
//! handles, pins and mappings keep a pgmap alive; teardown kills the ref so no new one can be
//! taken, then waits for the count to drain.
//!
//! One atomic word: the low 63 bits count references, bit 63 is `DEAD`. `tryget` is a CAS loop
//! that refuses once `DEAD` is set (`percpu_ref_tryget_live`); `put` is one `fetch_sub` whose
//! Release pairs with the waiter's Acquire load, so everything a holder did before letting go
//! happens-before teardown frees anything. The last put after `kill` wakes the waiter through
//! a mutex/condvar pair (the mutex only orders "check, then sleep" against "put, then notify").
//! A teardown that times out clears `DEAD` again and leaves everything as it was.

use std::time::{Duration, Instant};

use crate::primitive::{AtomicU64, Condvar, Mutex, Ordering, lock, wait};

const DEAD: u64 = 1 << 63;

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
    pub(crate) fn tryget(&self) -> bool {
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            if v & DEAD != 0 {
                return false;
            }
            // Acquire on success pairs with the Release in `revive`, so a holder taken after a
            // timed-out teardown sees the pgmap as the reviver left it. Relaxed on failure: the
            // loop only retries with the fresh value.
            match self
                .word
                .compare_exchange_weak(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
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
        if old == DEAD | 1 {
            let _g = lock(&self.lock);
            self.drained.notify_all();
        }
    }

    /// Marks the pgmap dying: every later `tryget` fails.
    pub(crate) fn kill(&self) {
        // Relaxed is enough for the flag itself: `wait_drained` does the Acquire that matters.
        self.word.fetch_or(DEAD, Ordering::Relaxed);
    }

    /// Undoes `kill` after a teardown gave up.
    pub(crate) fn revive(&self) {
        // Release pairs with the Acquire of the next successful `tryget`.
        self.word.fetch_and(!DEAD, Ordering::Release);
    }

    /// References currently held.
    pub(crate) fn count(&self) -> u64 {
        self.word.load(Ordering::Relaxed) & !DEAD
    }

    fn drained_now(&self) -> bool {
        // Acquire pairs with the Release of every `put`.
        self.word.load(Ordering::Acquire) & !DEAD == 0
    }

    /// Waits until no reference is held, for at most `timeout`. Returns whether it drained.
    pub(crate) fn wait_drained(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
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
        assert!(l.tryget());
        l.get_another();
        assert_eq!(l.count(), 2);
        l.kill();
        assert!(!l.tryget());
        assert!(
            !l.wait_drained(Some(Duration::from_millis(5))),
            "two still held"
        );
        l.revive();
        assert!(l.tryget());
        l.put();
        l.put();
        l.put();
        assert!(l.wait_drained(Some(Duration::ZERO)));
    }

    #[test]
    fn the_last_put_wakes_the_teardown() {
        let l = Liveness::new();
        assert!(l.tryget());
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                l.put();
            });
            l.kill();
            assert!(l.wait_drained(None));
        });
        assert_eq!(l.count(), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Pins racing teardown. One pgmap liveness, one device-dax folio's packed count word (idle
    //! refcount 1) and a loom `UnsafeCell` standing for the memmap that teardown frees: a pinner
    //! reads it between its grab and its put, teardown overwrites it once drained. loom reports
    //! any read of the memmap not ordered before the free, so a teardown that completes while a
    //! pin exists (or a pin taken after the drain) fails the model.
    use super::*;
    use crate::desc::{pack_counts, pincount_of, refcount_of};
    use crate::folio::refcount::{try_grab, ungrab};
    use crate::primitive::AtomicBool;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// Device-dax idle refcount.
    const IDLE: i32 = 1;
    const LIVE: u32 = 0x11fe;
    const FREED: u32 = 0xdead;

    struct Pgmap {
        live: Liveness,
        /// The head descriptor's count word of one order-9 folio.
        counts: AtomicU64,
        /// The memmap: `LIVE` until teardown frees it.
        memmap: UnsafeCell<u32>,
        /// Set (Release) by teardown after a `kill` that is never revived.
        killed_for_good: AtomicBool,
    }

    impl Pgmap {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                live: Liveness::new(),
                counts: AtomicU64::new(pack_counts(IDLE, 0)),
                memmap: UnsafeCell::new(LIVE),
                killed_for_good: AtomicBool::new(false),
            })
        }

        /// What `Pgmap::grab` and an unpin do: liveness ref, one grab, use the memmap,
        /// ungrab, put. Returns whether the pin was taken.
        fn pin_and_unpin(&self, refs: i32) -> bool {
            // Acquire pairs with teardown's Release store: if this sees the flag, the final
            // `kill` happened-before the `tryget` below, which must then fail.
            let after_kill = self.killed_for_good.load(Ordering::Acquire);
            let got = self.live.tryget();
            assert!(
                !(after_kill && got),
                "a tryget ordered after kill succeeded"
            );
            if !got {
                return false;
            }
            assert!(
                try_grab(&self.counts, true, refs, true).is_ok(),
                "a live folio is never free"
            );
            // SAFETY: the liveness reference keeps teardown from freeing the memmap; loom
            // checks exactly that this read is ordered before teardown's write.
            let m = self.memmap.with(|p| unsafe { *p });
            assert_eq!(m, LIVE, "a pin saw a freed memmap");
            ungrab(&self.counts, true, refs, true, IDLE);
            self.live.put();
            true
        }

        /// The end of `memunmap_pages` after a successful drain: free the memmap and check
        /// every pin was given back.
        fn free(&self) {
            // SAFETY: drained: no reference is held and none can be taken (`DEAD`); loom
            // checks that every pinner's read happened-before this write.
            self.memmap.with_mut(|p| unsafe { *p = FREED });
            let v = self.counts.load(Ordering::Relaxed);
            assert_eq!(
                (refcount_of(v), pincount_of(v)),
                (IDLE, 0),
                "teardown finished with the folio still pinned"
            );
        }

        /// After every thread is done: dead, nothing held.
        fn check_end(&self) {
            assert!(!self.live.tryget(), "a torn-down pgmap stays dead");
            assert_eq!(self.live.count(), 0);
        }
    }

    /// One pinner against `memunmap_pages` without a timeout.
    #[test]
    fn pin_versus_teardown() {
        loom::model(|| {
            let pg = Pgmap::new();
            let pinner = {
                let pg = Arc::clone(&pg);
                loom::thread::spawn(move || pg.pin_and_unpin(512))
            };
            pg.live.kill();
            // Release: a pinner that sees this has the kill ordered before its tryget.
            pg.killed_for_good.store(true, Ordering::Release);
            assert!(pg.live.wait_drained(None));
            pg.free();
            pinner.join().expect("pinner");
            pg.check_end();
        });
    }

    /// Two pinners against a teardown whose first attempt times out and revives, then a
    /// second attempt without a timeout. A zero timeout makes the timeout deterministic:
    /// `wait_drained(Some(ZERO))` checks the count once under the lock and returns without
    /// ever calling `wait_timeout` (loom's never times out), which is exactly the state a
    /// real timeout leaves: the last check under the lock saw references.
    #[test]
    fn pin_versus_teardown_that_times_out_and_revives() {
        loom::model(|| {
            let pg = Pgmap::new();
            let pinners: Vec<_> = [512, 3]
                .into_iter()
                .map(|refs| {
                    let pg = Arc::clone(&pg);
                    loom::thread::spawn(move || pg.pin_and_unpin(refs))
                })
                .collect();
            pg.live.kill();
            if !pg.live.wait_drained(Some(Duration::ZERO)) {
                // `PgmapError::Busy`: everything as it was, new references work again.
                pg.live.revive();
                assert!(pg.live.tryget(), "revive makes the pgmap live again");
                pg.live.put();
                pg.live.kill();
                assert!(pg.live.wait_drained(None));
            }
            // Release: as in `pin_versus_teardown`; this kill is never revived.
            pg.killed_for_good.store(true, Ordering::Release);
            pg.free();
            for p in pinners {
                p.join().expect("pinner");
            }
            pg.check_end();
        });
    }
}
