//! Stress: pins race fsdax folios forming and splitting under them. Three races matter, and
//! each has its own defence in `gup::batch::grab_dynamic`:
//!
//! * a pinner looks `h + 1` up as a tail of the order-9 folio and grabs `h` only once the
//!   area has become order-0 pages: its reference is on the page `h`, which does not hold
//!   `h + 1` (the re-lookup after the grab, the kernel's `try_get_folio` re-check, gives it
//!   back and looks again);
//! * `h` stays a head while its order changes, so a check of the head alone passes: the
//!   re-lookup compares the order too;
//! * the lookup itself reads the pfn's head word and then the head's order, and a reshape
//!   between the two gives a folio that does not hold the pfn (`LookupError::Reshaping`,
//!   retried under the formation lock).
//!
//! One thread reshapes a 2 MiB area of an fsdax pgmap over and over: an order-9 folio at the
//! area's head `h`; dropped, so that it splits; then order-0 pages at `h ..= h + 7` (one of
//! `h + 1 ..` left out, varying) and an order-3 folio at `h + 16`; dropped; again. Three
//! pinners pin (`pin_pages`), get (`get_pages`) and pin by folio (`pin_folios`) `h + k ..=
//! h + k + n` for small `k`, sometimes holding the result across a yield. The reshaper sleeps
//! between shapes, so that each time it wakes it preempts a pinner at an arbitrary point,
//! now and then between its lookup and its grab. Without the re-lookup this test fails
//! within a few hundred rounds: a result names a folio that does not hold its pages, or a
//! release lands below idle.
//!
//! Pins of free pages fail with `GupError::NotMapped`. Every pin that succeeds must hold the
//! folio `Pgmap::folio` reports for each of its pages, with the head and order
//! `pin_folios` recorded, and that shape must not change while it is held. Afterwards every
//! page of the pgmap is an idle order-0 folio again and the pgmap holds no reference.

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtOrd};
use std::time::Duration;

use crate::addr::*;
use crate::folio::*;
use crate::gup::{Folios, GupError, GupFlags, Pages, Pinned};
use crate::memmap::Layout;
use crate::pgmap::*;
use crate::test_support::Rng;

/// Reshape rounds per layout (each: the order-9 folio, then the small shapes).
const ROUNDS: u64 = 1000;
const PINNERS: usize = 3;
/// A pinner that gets this far never saw the reshaper finish: fail rather than hang.
const OPS_LIMIT: usize = 5_000_000;
/// Pins start at `h + k`, `k` in `0..START_SPREAD`: the head itself, whose order changes
/// under it, and tails.
const START_SPREAD: u64 = 3;
/// Pins cover `n` pages from their start, `n` in `1..=MAX_LEN`: inside the order-9 folio, and
/// across the order-0 pages up to the free page `h + 8` after them.
const MAX_LEN: u64 = 10;
/// One pin in this many is held across a yield.
const HOLD_ONE_IN: u64 = 16;
/// Where the order-3 folio goes: out of the pins' reach (`START_SPREAD + MAX_LEN` pages).
const ORDER3_AT: u64 = 16;

/// Stops every thread of the run when one panics, so the test fails at once.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, AtOrd::Relaxed);
        }
    }
}

/// What the pinners saw: successful grabs of the order-9 folio and of order-0 pages, and
/// misses.
#[derive(Default)]
struct Seen {
    large: AtomicUsize,
    small: AtomicUsize,
    not_mapped: AtomicUsize,
}

/// A folio's head and order.
type Shape = (Pfn, Order);

/// One held result; `Pages` says whether it is a pin (or a plain get).
enum Held {
    Pages(Pinned<Pages>, bool),
    Folios(Pinned<Folios>),
}

impl Held {
    /// The `(head, order)` of the folio holding each pfn the result covers, as the pgmap
    /// reports it now, or what is wrong: a folio not held beyond its mappings (not pinned,
    /// for pins), or a `pin_folios` entry naming another folio.
    fn shape(&self, p: &Pgmap) -> Result<Vec<Shape>, String> {
        let pin = !matches!(self, Held::Pages(_, false));
        // Each pfn covered, with the shape `pin_folios` recorded for it.
        let pfns: Vec<(Pfn, Option<Shape>)> = match self {
            Held::Pages(pg, _) => pg.entries().iter().map(|&q| (q, None)).collect(),
            Held::Folios(fs) => fs
                .entries()
                .iter()
                .flat_map(|e| {
                    let r = e.range();
                    (0..r.len()).map(move |i| (r.start().add(i), Some((e.head(), e.order()))))
                })
                .collect(),
        };
        pfns.into_iter()
            .map(|(q, recorded)| {
                let f = p.folio(q).map_err(|e| format!("{q}: {e}"))?;
                let shape = (f.pfn(), f.order());
                if recorded.is_some_and(|r| r != shape) {
                    return Err(format!("{q}: pinned as {recorded:?}, but it is in {f:?}"));
                }
                let held = if pin {
                    f.maybe_dma_pinned()
                } else {
                    f.refcount() > f.mapcount()
                };
                if !held {
                    return Err(format!("{q}: not held by the pin: {f:?}"));
                }
                Ok(shape)
            })
            .collect()
    }
}

struct Run {
    p: Arc<Pgmap>,
    /// The area's head.
    h: Pfn,
    /// Set when the reshaper is done, or by any thread that panics.
    stop: AtomicBool,
    seen: Seen,
}

impl Run {
    /// Pins, gets or pins by folio `h + k ..= h + k + n`; `None` if a page was free.
    fn grab(&self, rng: &mut Rng) -> Option<Held> {
        let start = self.h.add(rng.below(START_SPREAD));
        let r = PfnRange::new(start, 1 + rng.below(MAX_LEN)).expect("range");
        let held = match rng.below(3) {
            0 => self
                .p
                .pin_pages(r, GupFlags::WRITE)
                .map(|pg| Held::Pages(pg, true)),
            1 => self
                .p
                .get_pages(r, GupFlags::NONE)
                .map(|pg| Held::Pages(pg, false)),
            _ => self.p.pin_folios(r, GupFlags::NONE).map(Held::Folios),
        };
        match held {
            Ok(held) => {
                match &held {
                    Held::Pages(pg, _) => assert!(
                        pg.entries()
                            .iter()
                            .copied()
                            .eq((0..r.len()).map(|i| r.start().add(i))),
                        "{r:?}: the pages pinned are the range's"
                    ),
                    Held::Folios(fs) => {
                        let f = fs.entries();
                        assert!(
                            f.first().map(|e| e.range().start()) == Some(r.start())
                                && f.last().map(|e| e.range().end()) == Some(r.end())
                                && f.windows(2)
                                    .all(|w| w[0].range().end() == w[1].range().start()),
                            "{r:?}: the folios pinned cover the range: {f:?}"
                        );
                    }
                }
                Some(held)
            }
            Err(GupError::NotMapped { .. }) => None,
            // Overflow included: no count here comes anywhere near it, so one would mean the
            // refusal was misreported (a pin refused on a free page, then told apart by a
            // second read of the count that saw a new mapping's reference).
            Err(e) => panic!("{r:?}: unexpected pin failure: {e}"),
        }
    }

    fn pinner(&self, seed: u64) {
        let _stop = StopOnPanic(&self.stop);
        let mut rng = Rng::new(seed);
        let mut ops = 0;
        while !self.stop.load(AtOrd::Relaxed) {
            ops += 1;
            assert!(ops < OPS_LIMIT, "the reshaper never finished");
            let Some(held) = self.grab(&mut rng) else {
                self.seen.not_mapped.fetch_add(1, AtOrd::Relaxed);
                std::thread::yield_now();
                continue;
            };
            let before = held.shape(&self.p);
            let after = if rng.below(HOLD_ONE_IN) == 0 {
                // Let the reshaper run while the pin is held: it must keep its shape (the
                // reshaper finds it busy instead).
                std::thread::yield_now();
                held.shape(&self.p)
            } else {
                before.clone()
            };
            let shape = match (before, after) {
                (Ok(b), Ok(a)) if a == b => b,
                (b, a) => {
                    // Releasing a pin of the wrong folio would trip the release-below-idle
                    // assert while this thread unwinds, which aborts: leak it instead.
                    std::mem::forget(held);
                    panic!("pinned shape wrong or changing: {b:?} then {a:?}");
                }
            };
            let seen = if shape.iter().any(|&(_, o)| o == Order::PMD) {
                &self.seen.large
            } else {
                &self.seen.small
            };
            seen.fetch_add(1, AtOrd::Relaxed);
            drop(held);
            // Between pins, let the reshaper run with nothing held: pins back to back would
            // keep the order-9 folio formed.
            std::thread::yield_now();
        }
    }

    fn reshaper(&self) {
        let _stop = StopOnPanic(&self.stop);
        let (h, p) = (self.h, &self.p);
        let order3 = Order::new(3).expect("order 3");
        // Pins keep the old shape formed, so maps of another shape may find it busy.
        let map = |pfn: Pfn, order: Order| match p.map_folio(pfn, order) {
            // If one drop finds a count below idle and panics, unwinding leaks the rest
            // instead of dropping them too (a second panic would abort).
            Ok(m) => Some(ManuallyDrop::new(m)),
            Err(FolioError::Busy { .. }) => None,
            Err(e) => panic!("map {pfn} order {}: {e}", order.get()),
        };
        // Sleep rather than yield: a waking thread preempts whichever pinner is running,
        // wherever it is.
        let pause = || std::thread::sleep(Duration::from_micros(1));
        for i in 0..ROUNDS {
            if self.stop.load(AtOrd::Relaxed) {
                return;
            }
            let large = map(h, Order::PMD);
            pause();
            // The split happens here, or when the last pin of the folio goes.
            drop(large.map(ManuallyDrop::into_inner));
            let small: Vec<_> = (0..8)
                .filter(|&k| k == 0 || k != 1 + i % 9)
                .map(|k| map(h.add(k), Order::BASE))
                .chain([map(h.add(ORDER3_AT), order3)])
                .flatten()
                .collect();
            pause();
            for m in small {
                drop(ManuallyDrop::into_inner(m));
            }
        }
    }
}

fn pins_race_reshaping(layout: Layout) {
    let fx = crate::test_support::fixture(8 << 20, 4 << 20, layout, Order::BASE, MemoryType::FsDax);
    let run = Run {
        p: Arc::clone(&fx.p),
        h: fx.r.start().add(512),
        stop: AtomicBool::new(false),
        seen: Seen::default(),
    };
    std::thread::scope(|s| {
        for t in 0..PINNERS {
            let run = &run;
            s.spawn(move || run.pinner(t as u64 + 1));
        }
        s.spawn(|| {
            run.reshaper();
            run.stop.store(true, AtOrd::Relaxed);
        });
    });
    let ctx = format!("{layout:?}");
    let seen = |c: &AtomicUsize| c.load(AtOrd::Relaxed);
    let s = &run.seen;
    assert!(
        seen(&s.large) > 0 && seen(&s.small) > 0 && seen(&s.not_mapped) > 0,
        "{ctx}: pins of the order-9 folio, of order-0 pages and of free pages: {} {} {}",
        seen(&s.large),
        seen(&s.small),
        seen(&s.not_mapped)
    );
    crate::test_support::assert_split(&fx.p, fx.r, &ctx);
    assert_eq!(fx.p.refs(), 0, "{ctx}: no liveness reference left");
    assert_eq!(
        fx.frees.load(AtOrd::Relaxed),
        0,
        "{ctx}: fsdax never calls folio_free"
    );
}

#[test]
fn pins_race_fsdax_folios_forming_and_splitting() {
    for layout in Layout::ALL {
        pins_race_reshaping(layout);
    }
}
