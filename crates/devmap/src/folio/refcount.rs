//! The folio reference-count protocol, written once over any 64-bit atomic so the same code
//! runs on descriptors and, under `cfg(loom)`, in model checks.
//!
//! The word packs the reference count (low 32 bits) and the pin count (high 32 bits), so every
//! grab and release below is **one** atomic read-modify-write per folio, pins of large folios
//! included (the kernel needs two: `_refcount` and `_pincount` live in different words).
//!
//! * `try_grab` is `try_grab_folio`/`folio_ref_try_add`: one CAS that never resurrects a
//!   folio whose count is at or below zero (freed) and refuses an add that would overflow
//!   either half.
//! * `ungrab` is `gup_put_folio`/`folio_put_refs`: one `fetch_sub`; the thread whose release
//!   brings the count to the type's idle value runs the free path, after an Acquire fence so it
//!   sees everything the other holders did before their Release.
//! * Pins follow `GUP_PIN_COUNTING_BIAS`: a large folio takes `refs` on its count and `refs` on
//!   its pincount; a small folio takes `refs × 1024` on its count.

use crate::desc::{GUP_PIN_COUNTING_BIAS, pack_counts, pincount_of, refcount_of};
#[cfg(loom)]
use crate::primitive::AtomicU64;
use crate::primitive::{Ordering, fence};

/// The operations the protocol needs from the packed count word.
pub(crate) trait CountWord {
    fn fetch_add(&self, v: u64, o: Ordering) -> u64;
    fn fetch_sub(&self, v: u64, o: Ordering) -> u64;
    fn cas_weak(&self, cur: u64, new: u64, ok: Ordering, err: Ordering) -> Result<u64, u64>;
}

macro_rules! count_word {
    ($t:ty) => {
        impl CountWord for $t {
            fn fetch_add(&self, v: u64, o: Ordering) -> u64 {
                <$t>::fetch_add(self, v, o)
            }
            fn fetch_sub(&self, v: u64, o: Ordering) -> u64 {
                <$t>::fetch_sub(self, v, o)
            }
            fn cas_weak(
                &self,
                cur: u64,
                new: u64,
                ok: Ordering,
                err: Ordering,
            ) -> Result<u64, u64> {
                <$t>::compare_exchange_weak(self, cur, new, ok, err)
            }
        }
    };
}

count_word!(std::sync::atomic::AtomicU64);
#[cfg(loom)]
count_word!(AtomicU64);

/// What a grab of `refs` adds to (reference count, pin count).
fn deltas(large: bool, refs: i32, pin: bool) -> Option<(i32, i32)> {
    match (pin, large) {
        (true, false) => Some((refs.checked_mul(GUP_PIN_COUNTING_BIAS)?, 0)),
        (true, true) => Some((refs, refs)),
        (false, _) => Some((refs, 0)),
    }
}

/// Why [`try_grab`] took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The folio is free (count ≤ 0): a grab never resurrects it.
    Free,
    /// A half of the word would overflow.
    Overflow,
}

/// Grabs `refs` pins (or plain references when `pin` is false) with one CAS, unless the
/// folio is free (count ≤ 0) or a half would overflow. The reason comes from the value the
/// CAS saw, not from a second read, which could see a later state.
pub(crate) fn try_grab(
    word: &impl CountWord,
    large: bool,
    refs: i32,
    pin: bool,
) -> Result<(), Refused> {
    let Some((dr, dp)) = deltas(large, refs, pin) else {
        return Err(Refused::Overflow);
    };
    let mut v = pack_counts(1, 0);
    loop {
        let (r, p) = (refcount_of(v), pincount_of(v));
        if r <= 0 {
            return Err(Refused::Free);
        }
        let (Some(nr), Some(np)) = (r.checked_add(dr), p.checked_add(dp)) else {
            return Err(Refused::Overflow);
        };
        // Acquire on success: the new holder sees what earlier holders published with their
        // Release. Relaxed on failure: the loop retries with the fresh value.
        match word.cas_weak(v, pack_counts(nr, np), Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(now) => v = now,
        }
    }
}

/// Takes `refs` plain references even from a count of 0: only for a caller that owns the
/// folio's shape (fsdax mapping under the formation lock), like a fresh allocation.
pub(crate) fn add(word: &impl CountWord, refs: i32) {
    // Acquire: as in `try_grab`.
    word.fetch_add(pack_counts(refs, 0), Ordering::Acquire);
}

/// Takes a free folio (count 0, no pins) to count 1 with one CAS: a driver's allocation. Fails
/// with the count it saw if anyone holds it (or [`FREEING`] while its free path runs).
pub(crate) fn alloc(word: &impl CountWord) -> Result<(), i32> {
    loop {
        // Acquire: the allocator sees what the last holder published before the free, and
        // what `folio_free` wrote (the Release in `freed`).
        match word.cas_weak(0, pack_counts(1, 0), Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            // A weak CAS may fail spuriously while the word still reads 0.
            Err(0) => continue,
            Err(now) => return Err(refcount_of(now)),
        }
    }
}

/// Releases what `try_grab` took with one `fetch_sub`; returns true for the release that
/// brought the count to `idle`.
pub(crate) fn ungrab(word: &impl CountWord, large: bool, refs: i32, pin: bool, idle: i32) -> bool {
    let Some((dr, dp)) = deltas(large, refs, pin) else {
        return false;
    };
    // Release: this holder's writes happen-before whoever runs the free path. The halves
    // never borrow: a holder releases at most what it took.
    let old = word.fetch_sub(pack_counts(dr, dp), Ordering::Release);
    let left = refcount_of(old) - dr;
    debug_assert!(
        left >= idle,
        "release below idle: {} - {dr} < {idle}",
        refcount_of(old)
    );
    if left == idle {
        // Pairs with every earlier holder's Release.
        fence(Ordering::Acquire);
        true
    } else {
        false
    }
}

/// The count a driver's folio holds while its last put runs `folio_free`: below zero, so
/// that neither a grab (which refuses counts ≤ 0) nor an allocation (which takes only 0)
/// can have the folio until [`freed`] stores 0.
pub(crate) const FREEING: i32 = -1;

/// [`ungrab`] for memory a driver allocates (idle count 0): the put that would leave 0 leaves
/// [`FREEING`] instead, in the same CAS, so an `alloc` cannot take the folio between the put
/// and `folio_free`. Returns whether this put did so; the caller then runs `folio_free` and
/// [`freed`].
pub(crate) fn ungrab_driver(word: &impl CountWord, large: bool, refs: i32, pin: bool) -> bool {
    let Some((dr, dp)) = deltas(large, refs, pin) else {
        return false;
    };
    // Start from the common state, this put's references alone, as `try_grab` does.
    let mut v = pack_counts(dr, dp);
    loop {
        let (r, p) = (refcount_of(v), pincount_of(v));
        debug_assert!(r >= dr, "release below idle: {r} - {dr} < 0");
        let last = r - dr == 0;
        let new = if last {
            pack_counts(FREEING, p - dp)
        } else {
            pack_counts(r - dr, p - dp)
        };
        // Release publishes this holder's writes as any put does; Acquire on the last put
        // orders `folio_free` after every earlier holder's (their puts' Release). Relaxed on
        // failure: the loop retries with the fresh value.
        let order = if last {
            Ordering::AcqRel
        } else {
            Ordering::Release
        };
        match word.cas_weak(v, new, order, Ordering::Relaxed) {
            Ok(_) => return last,
            Err(now) => v = now,
        }
    }
}

/// Ends a free that [`ungrab_driver`] started: the folio may be allocated again.
pub(crate) fn freed(word: &impl CountWord) {
    // Release: whatever `folio_free` wrote is visible to the next allocation's Acquire CAS.
    // Nothing else changes a FREEING word, so only a spurious failure can retry.
    while word
        .cas_weak(
            pack_counts(FREEING, 0),
            pack_counts(0, 0),
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_err()
    {}
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64 as StdU64;

    fn halves(w: &StdU64) -> (i32, i32) {
        let v = w.load(Ordering::Relaxed);
        (refcount_of(v), pincount_of(v))
    }

    #[test]
    fn pins_follow_the_bias() {
        let w = StdU64::new(pack_counts(1, 0));
        assert_eq!(try_grab(&w, false, 1, true), Ok(()));
        assert_eq!(halves(&w), (1 + 1024, 0));
        assert!(ungrab(&w, false, 1, true, 1), "back to idle 1");
        assert_eq!(try_grab(&w, true, 300, true), Ok(()));
        assert_eq!(halves(&w), (301, 300));
        assert_eq!(try_grab(&w, true, 12, false), Ok(()));
        assert_eq!(halves(&w), (313, 300));
        assert!(!ungrab(&w, true, 300, true, 1));
        assert!(ungrab(&w, true, 12, false, 1));
        assert_eq!(halves(&w), (1, 0));
    }

    #[test]
    fn freed_folios_are_never_resurrected() {
        let w = StdU64::new(pack_counts(1, 0));
        assert!(ungrab(&w, true, 1, false, 0));
        assert_eq!(try_grab(&w, true, 1, true), Err(Refused::Free));
        assert_eq!(halves(&w), (0, 0));
        add(&w, 1);
        assert_eq!(halves(&w), (1, 0), "an owner may take the first reference");
    }

    #[test]
    fn overflow_is_refused_and_leaves_the_word_alone() {
        let w = StdU64::new(pack_counts(i32::MAX - 5, 0));
        assert_eq!(try_grab(&w, true, 10, false), Err(Refused::Overflow));
        let small = StdU64::new(pack_counts(i32::MAX - 1000, 0));
        assert_eq!(try_grab(&small, false, 1, true), Err(Refused::Overflow));
        assert_eq!(halves(&small), (i32::MAX - 1000, 0));
        let pins = StdU64::new(pack_counts(5, i32::MAX - 1));
        assert_eq!(try_grab(&pins, true, 2, true), Err(Refused::Overflow));
        assert_eq!(halves(&pins), (5, i32::MAX - 1));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The last put of an fsdax folio (idle 0) racing a pin: the free path runs exactly once,
    //! after every holder is gone, and a pin never succeeds on a freed folio. The folio's
    //! "contents" (what the free path rewrites when it splits) are a loom `UnsafeCell`, so a
    //! pinner reading them concurrently with the split would be reported.
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;

    struct Folio {
        counts: AtomicU64,
        order: UnsafeCell<u32>,
        frees: AtomicUsize,
    }

    impl Folio {
        fn free_path(&self) {
            self.frees.fetch_add(1, Ordering::Relaxed);
            // SAFETY: only the thread whose put reached idle runs this, and no holder is left.
            self.order.with_mut(|o| unsafe { *o = 0 });
        }
    }

    #[test]
    fn last_put_versus_pin() {
        loom::model(|| {
            let f = Arc::new(Folio {
                counts: AtomicU64::new(pack_counts(1, 0)), // one mapping reference
                order: UnsafeCell::new(9),
                frees: AtomicUsize::new(0),
            });
            let pinner = {
                let f = Arc::clone(&f);
                loom::thread::spawn(move || {
                    if try_grab(&f.counts, true, 512, true).is_ok() {
                        // SAFETY: a successful grab keeps the count above idle: no split runs.
                        let order = f.order.with(|o| unsafe { *o });
                        assert_eq!(order, 9, "a pinned folio is never split under the pin");
                        if ungrab(&f.counts, true, 512, true, 0) {
                            f.free_path();
                        }
                    }
                })
            };
            // The mapping goes away: the last put races the pin.
            if ungrab(&f.counts, true, 1, false, 0) {
                f.free_path();
            }
            pinner.join().expect("pinner");
            assert_eq!(f.frees.load(Ordering::Relaxed), 1, "freed exactly once");
            assert_eq!(
                f.counts.load(Ordering::Relaxed),
                0,
                "no reference or pin left"
            );
        });
    }

    /// A driver's folio: the last put (`ungrab_driver`) races an allocation. `folio_free` runs
    /// exactly once per allocation, and an allocation never succeeds while it runs: the
    /// driver's free-list bookkeeping (a loom `UnsafeCell`) is never touched by both at once.
    #[test]
    fn last_driver_put_versus_alloc() {
        loom::model(|| {
            let f = Arc::new(Folio {
                counts: AtomicU64::new(pack_counts(1, 0)), // allocated, one reference
                order: UnsafeCell::new(1),                 // 1: allocated, 0: on the free list
                frees: AtomicUsize::new(0),
            });
            let allocator = {
                let f = Arc::clone(&f);
                loom::thread::spawn(move || {
                    if alloc(&f.counts).is_ok() {
                        // SAFETY: an allocation owns the folio; `folio_free` has returned.
                        f.order.with_mut(|o| unsafe {
                            assert_eq!(*o, 0, "allocated before folio_free returned");
                            *o = 1;
                        });
                        if ungrab_driver(&f.counts, false, 1, false) {
                            f.frees.fetch_add(1, Ordering::Relaxed);
                            // SAFETY: the last put owns the folio until `freed`.
                            f.order.with_mut(|o| unsafe { *o = 0 });
                            freed(&f.counts);
                        }
                    }
                })
            };
            if ungrab_driver(&f.counts, false, 1, false) {
                f.frees.fetch_add(1, Ordering::Relaxed);
                // SAFETY: the last put owns the folio until `freed`.
                f.order.with_mut(|o| unsafe { *o = 0 });
                freed(&f.counts);
            }
            allocator.join().expect("allocator");
            let frees = f.frees.load(Ordering::Relaxed);
            assert!(frees == 1 || frees == 2, "one free per allocation: {frees}");
            assert_eq!(f.counts.load(Ordering::Relaxed), 0, "free again at the end");
        });
    }
}
