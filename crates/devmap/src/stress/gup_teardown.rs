//! Stress: four threads pin and unpin random ranges of one device-dax pgmap while a fifth
//! tears it down under them (`memunmap_pages` without a timeout).
//!
//! The pinners mix `pin_pages` and `pin_folios` over ranges that start and end anywhere
//! (mid-folio included), hold up to four results at a time, and release them every way the
//! API offers. Teardown starts once every pinner has done its share; from then on pins fail
//! with `GupError::Dead` and each pinner releases what it holds and stops. Afterwards every
//! folio must be idle (refcount 1, pincount 0), dirty exactly if some dirty unpin covered it,
//! and the pgmap must hold no liveness reference; and while any pin was held, teardown must
//! not have returned.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::addr::*;
use crate::gup::*;
use crate::init::{InitMode, InitState};
use crate::memmap::Layout;
use crate::pgmap::PgmapConfig;
use crate::pgmap::*;
use crate::test_support::Rng;

const BYTES: u64 = 64 << 20;
const ORDER: Order = Order::PMD;
const FOLIO_PAGES: u64 = 1 << 9;
const PAGES: u64 = BYTES >> 12;
const FOLIOS: usize = (PAGES / FOLIO_PAGES) as usize;
/// Folios from here on only ever get clean unpins, so "never dirtied means clean" is checked
/// on folios that saw plenty of pins.
const CLEAN_FROM: usize = FOLIOS * 3 / 4;
const PINNERS: usize = 4;
/// Operations (pins and unpins) every pinner does before teardown may start.
const OPS_BEFORE_TEARDOWN: usize = 25_000;
/// A pinner that gets this far never saw teardown: the test fails rather than hangs.
const OPS_LIMIT: usize = 2_000_000;
const MAX_HELD: usize = 4;

/// One pin result a pinner holds.
enum Held {
    Pages(Pinned<Pages>),
    Folios(Pinned<Folios>),
}

/// Shared state of one run.
struct Run {
    pgmap: Arc<Pgmap>,
    data: PfnRange,
    /// Folio `i` received at least one dirty unpin.
    dirtied: Vec<AtomicBool>,
    /// Operations done per pinner.
    ops: Vec<AtomicUsize>,
    /// Pinners that stopped (normally or by panicking).
    exited: AtomicUsize,
    /// Set right after `memunmap_pages` returned.
    teardown_returned: AtomicBool,
}

/// Counts a pinner out when it stops, unwinding included, so a failing pinner makes teardown
/// start at once (and the test fail) instead of leaving it waiting for that pinner's share.
struct Exit<'a>(&'a AtomicUsize);

impl Drop for Exit<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Run {
    /// Folio indices (relative to the pgmap) that `range` touches.
    fn folios_of(&self, range: PfnRange) -> std::ops::RangeInclusive<usize> {
        let first = range.start().offset_from(self.data.start()) / FOLIO_PAGES;
        let last = (range.end().offset_from(self.data.start()) - 1) / FOLIO_PAGES;
        first as usize..=last as usize
    }

    /// A random non-empty range inside the pgmap: a few pages, whole aligned folios, or
    /// anything up to a bit over two folios, starting anywhere.
    fn random_range(&self, rng: &mut Rng) -> PfnRange {
        let (start, len) = match rng.below(4) {
            0 => (rng.below(PAGES), 1 + rng.below(16)),
            1 => (
                rng.below(FOLIOS as u64) * FOLIO_PAGES,
                FOLIO_PAGES * (1 + rng.below(2)),
            ),
            _ => (rng.below(PAGES), 1 + rng.below(2 * FOLIO_PAGES + 100)),
        };
        let len = len.min(PAGES - start);
        PfnRange::new(self.data.start().add(start), len).expect("range inside the pgmap")
    }

    /// Pins a random range one way or the other; `Err` once teardown has begun.
    fn pin(&self, rng: &mut Rng) -> Result<Held, GupError> {
        let range = self.random_range(rng);
        let flags = if rng.below(2) == 0 {
            GupFlags::WRITE
        } else {
            GupFlags::WRITE | GupFlags::LONGTERM
        };
        let held = if rng.below(2) == 0 {
            let p = self.pgmap.pin_pages(range, flags)?;
            assert_eq!(p.len() as u64, range.len());
            assert!(
                p.entries()
                    .iter()
                    .zip(0..)
                    .all(|(&q, i)| q == range.start().add(i))
            );
            Held::Pages(p)
        } else {
            let f = self.pgmap.pin_folios(range, flags)?;
            assert_eq!(f.nr_pages(), range.len());
            assert_eq!(f.len(), self.folios_of(range).count());
            assert_eq!(f.entries()[0].range().start(), range.start());
            assert!(
                f.entries()
                    .windows(2)
                    .all(|w| w[0].range().end() == w[1].range().start())
            );
            Held::Folios(f)
        };
        // A pin holds a liveness reference, so the pgmap cannot be shut down under it and
        // lookups keep working even once teardown is waiting; every folio covered is pinned.
        for i in self.folios_of(range) {
            let head = self.data.start().add(i as u64 * FOLIO_PAGES);
            let folio = self.pgmap.folio(head).expect("a pinned pgmap is up");
            assert!(folio.maybe_dma_pinned(), "folio {i} pinned by {range:?}");
        }
        Ok(held)
    }

    /// Releases one held result in a random way, recording dirty unpins.
    fn release(&self, held: Held, rng: &mut Rng) {
        assert!(
            !self.teardown_returned.load(Ordering::Acquire),
            "teardown returned while a pin was still held"
        );
        let covered = match &held {
            Held::Pages(p) => {
                PfnRange::new_unchecked(p.entries()[0], p.entries()[p.len() - 1].add(1))
            }
            Held::Folios(f) => PfnRange::new_unchecked(
                f.entries()[0].range().start(),
                f.entries()[f.len() - 1].range().end(),
            ),
        };
        let folios = self.folios_of(covered);
        let may_dirty = *folios.end() < CLEAN_FROM;
        let dirty = may_dirty && rng.below(2) == 0;
        let dirtied = match (held, rng.below(4)) {
            (Held::Pages(p), 0) => {
                p.unpin(false);
                false
            }
            (Held::Pages(p), 1) => {
                p.unpin(dirty);
                dirty
            }
            (Held::Pages(p), 2) => {
                p.unpin_as_range(dirty);
                dirty
            }
            (Held::Folios(f), 0 | 1) => {
                f.unpin(dirty);
                dirty
            }
            // Dropping a result unpins it clean.
            (h, _) => {
                drop(h);
                false
            }
        };
        if dirtied {
            // Nothing clears DIRTY, so every folio the unpin covered must be dirty now, even if
            // teardown has finished since (the audit token outlives it).
            let (m, s) = self.pgmap.audit(0).expect("range 0");
            for i in folios {
                let head = self.data.start().add(i as u64 * FOLIO_PAGES);
                assert!(
                    m.folio(&s, head).expect("audit").is_dirty(),
                    "folio {i}: not dirty after a dirty unpin of {covered:?}"
                );
                // Read after every pinner joined.
                self.dirtied[i].store(true, Ordering::Relaxed);
            }
        }
    }

    /// One pinner: pins and unpins until teardown makes a pin fail.
    fn pinner(&self, me: usize, seed: u64) {
        let _exit = Exit(&self.exited);
        let mut rng = Rng::new(seed);
        let mut held: Vec<Held> = Vec::with_capacity(MAX_HELD);
        let mut done = 0;
        loop {
            assert!(done < OPS_LIMIT, "teardown never came");
            done += 1;
            self.ops[me].store(done, Ordering::Relaxed);
            let hold = 1 + rng.below(MAX_HELD as u64) as usize;
            if !held.is_empty() && (held.len() >= hold || rng.below(3) == 0) {
                let h = held.swap_remove(rng.below(held.len() as u64) as usize);
                self.release(h, &mut rng);
                continue;
            }
            match self.pin(&mut rng) {
                Ok(h) => held.push(h),
                Err(GupError::TornDown { .. }) => break,
                Err(e) => panic!("unexpected pin failure: {e}"),
            }
        }
        // Teardown is waiting for exactly these.
        while let Some(h) = held.pop() {
            self.release(h, &mut rng);
        }
    }
}

fn pins_race_teardown(layout: Layout, init: InitMode, seed: u64) {
    let space = DeviceSpace::new();
    let data = space.reserve_range(BYTES, 2 << 20).expect("reserve");
    let mut cfg = PgmapConfig::devdax(data, ORDER);
    cfg.layout = layout;
    cfg.init = init;
    let pgmap = space.memremap_pages(cfg).expect("memremap_pages");
    let run = Run {
        pgmap: Arc::clone(&pgmap),
        data,
        dirtied: (0..FOLIOS).map(|_| AtomicBool::new(false)).collect(),
        ops: (0..PINNERS).map(|_| AtomicUsize::new(0)).collect(),
        exited: AtomicUsize::new(0),
        teardown_returned: AtomicBool::new(false),
    };
    std::thread::scope(|s| {
        for t in 0..PINNERS {
            let run = &run;
            s.spawn(move || run.pinner(t, seed + t as u64));
        }
        let (run, space, pgmap) = (&run, &space, &pgmap);
        s.spawn(move || {
            // Pins race asynchronous init too; teardown waits for it (and for the pinners'
            // share of the work) so the audit below sees every descriptor initialised.
            pgmap.wait_init_idle().expect("not torn down yet");
            assert_eq!(pgmap.init_state(), InitState::Idle);
            while run.exited.load(Ordering::Relaxed) == 0
                && run
                    .ops
                    .iter()
                    .any(|o| o.load(Ordering::Relaxed) < OPS_BEFORE_TEARDOWN)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            space.memunmap_pages(pgmap, None).expect("memunmap_pages");
            run.teardown_returned.store(true, Ordering::Release);
        });
    });

    let total: usize = run.ops.iter().map(|o| o.load(Ordering::Relaxed)).sum();
    assert!(total >= PINNERS * OPS_BEFORE_TEARDOWN, "{total} operations");
    assert_eq!(pgmap.refs(), 0, "no liveness reference left");
    assert_eq!(space.nr_pgmaps(), 0);
    assert!(space.get_dev_pagemap(data.start()).is_none());
    assert!(matches!(
        pgmap.pin_pages(data, GupFlags::NONE),
        Err(GupError::TornDown { .. })
    ));

    let (m, s) = pgmap.audit(0).expect("range 0");
    let mut dirty = 0;
    for (i, expect) in run.dirtied.iter().enumerate() {
        let head = data.start().add(i as u64 * FOLIO_PAGES);
        let f = m.folio(&s, head).expect("audit");
        assert_eq!(f.pfn(), head);
        assert_eq!(
            (f.refcount(), f.pincount()),
            (1, 0),
            "folio {i} is not back at idle"
        );
        let expect = expect.load(Ordering::Relaxed);
        assert_eq!(
            f.is_dirty(),
            expect,
            "folio {i}: dirty flag vs dirty unpins"
        );
        dirty += usize::from(expect);
    }
    assert!(
        dirty > 0 && dirty <= CLEAN_FROM,
        "{dirty} dirty folios: both cases checked"
    );
}

#[test]
fn pins_race_teardown_folio_layout() {
    pins_race_teardown(Layout::Heads, InitMode::Sync, 1);
}

#[test]
fn pins_race_teardown_flat_layout_and_async_init() {
    let workers = NonZeroUsize::new(2).expect("non-zero");
    pins_race_teardown(Layout::Flat, InitMode::Async { workers }, 101);
}

#[test]
fn pins_race_teardown_vmemmap_layout() {
    pins_race_teardown(Layout::Vmemmap, InitMode::Sync, 201);
}
