//! The loom model of pins racing pgmap teardown.
//!
//! One pgmap liveness, one device-dax folio's packed count word (idle refcount 1) and a loom
//! `UnsafeCell` standing for the memmap that teardown frees: a pinner reads it between its
//! grab and its put, teardown overwrites it once drained. loom reports any read of the memmap not ordered before the free, so a teardown that completes while a
//! pin exists (or a pin taken after the drain) fails the model.

use std::time::Duration;

use crate::desc::{pack_counts, pincount_of, refcount_of};
use crate::folio::refcount::{try_grab, ungrab};
use crate::pgmap::Liveness;
use crate::primitive::{AtomicBool, AtomicU64, Ordering};
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
        let got = self.live.tryget().is_ok();
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
        assert!(self.live.tryget().is_err(), "a torn-down pgmap stays dead");
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
        pg.live.kill(false);
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
        pg.live.kill(true);
        if !pg.live.wait_drained(Some(Duration::ZERO)) {
            // `PgmapError::Busy`: everything as it was, new references work again.
            pg.live.revive();
            assert!(
                pg.live.tryget().is_ok(),
                "revive makes the pgmap live again"
            );
            pg.live.put();
            pg.live.kill(false);
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
