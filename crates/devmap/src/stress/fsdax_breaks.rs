//! Stress: `break_layouts` and `busy_page_range` on an fsdax pgmap while pins, plain gets,
//! mappings and a free path that splits folios race them. It proves three things about a
//! layout break: it never returns `Ok` while a pin or get on the range is held (from before
//! the call until after it returned); it never misses the put that makes the range idle
//! (every wait ends within a fraction of its timeout, although the last put may come from
//! an unpin that leaves only mappings, from the free path splitting a folio, or may land in
//! any window of the waiter's check-then-sleep); and it says `StillBusy` only for a range
//! that was busy at its deadline, naming the first busy pfn.
//!
//! The area is 32 pages: order-0 pages and two order-3 folios, every folio mapped (some
//! twice). Each round the driver (the test thread) pins, gets or pins by folio one or two
//! random sub-ranges, works out which folios that makes busy, checks `busy_page_range` of a
//! random break range against that (the first busy pfn exactly, ranges starting mid-folio
//! included), and hands the range to the breaker thread, which calls `break_layouts`. The
//! driver then gives the pins back every way the API offers, sometimes after dropping the
//! mappings of a pinned folio so that the unpin is its last reference (the free path splits
//! an order-3 folio and wakes the waiter). It starts as soon as the breaker announces its
//! call (which the breaker then delays by a random few microseconds), or once the breaker is
//! registered as a waiter, or at once, and spins a random while before each step, so that
//! the last put lands before, in and after the breaker's check and its going to sleep. Some
//! rounds instead keep the pins through a short timeout and expect `StillBusy`. A noise
//! thread maps, forms, splits, gets and pins folios outside the area, so the breaker is
//! woken by puts that do not concern it; it is parked in three rounds out of four, where its
//! puts would hide a lost wake-up. Mappings are only taken in the area between rounds: a map
//! racing the break's check had bugs of its own, which the regression tests at the end keep fixed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtOrd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::addr::*;
use crate::folio::*;
use crate::gup::{Folios, GupFlags, Pages, Pinned};
use crate::memmap::Layout;
use crate::pgmap::*;
use crate::test_support::Rng;

/// Pages in the area.
const AREA: u64 = 32;
/// Where the order-3 folios start, as offsets into the area.
const LARGE: [u64; 2] = [8, 24];
/// Folios mapped twice, by their first page's offset.
const TWICE: [u64; 3] = [2, 5, 24];
const ORDER3: Order = Order::new_unchecked(3);
/// Rounds per layout.
const ROUNDS: usize = 500;
/// One round in this many keeps its pins through a short timeout.
const HOLD_ONE_IN: u64 = 8;
/// The timeout of rounds whose pins go away: far longer than any round.
const LONG: Duration = Duration::from_millis(500);
/// The timeout of rounds that keep their pins.
const SHORT: Duration = Duration::from_millis(2);
/// A waiter still asleep this long after the range went idle missed its wake-up.
const LATE: Duration = Duration::from_millis(250);

fn range(start: Pfn, len: u64) -> PfnRange {
    PfnRange::new(start, len).expect("range")
}

/// The area's folios as `(first offset, order)`, in pfn order.
fn shape() -> Vec<(u64, Order)> {
    let mut folios = Vec::new();
    let mut off = 0;
    while off < AREA {
        let order = if LARGE.contains(&off) {
            ORDER3
        } else {
            Order::BASE
        };
        folios.push((off, order));
        off += order.nr_pages();
    }
    folios
}

/// A held pin or get.
enum Held {
    Pages(Pinned<Pages>),
    Folios(Pinned<Folios>),
}

impl Held {
    /// Gives the references back one of the ways the API offers.
    fn release(self, rng: &mut Rng) {
        match (self, rng.below(4)) {
            (Held::Pages(p), 0) => p.unpin(false),
            (Held::Pages(p), 1) => p.unpin(false),
            (Held::Pages(p), 2) => p.unpin_as_range(false),
            (Held::Folios(f), 0 | 1) => f.unpin(false),
            (Held::Folios(f), 2) => drop(f.unpin_keep_buffer(false)),
            (h, _) => drop(h),
        }
    }
}

/// What the driver does to end a round.
enum Step {
    /// Give back a pin or get; `overlaps` if it holds a folio of the break range.
    Release(Held, bool),
    /// Drop every mapping of area folio `i` (one that is pinned).
    Unmap(usize),
}

/// A break the breaker is to run.
struct Round {
    range: PfnRange,
    timeout: Duration,
    /// Spins between announcing the call and making it: the driver's puts, which start
    /// when it sees the announcement, then land anywhere in the first check.
    lead: u64,
}

/// What the break returned, when, and how many pins of its range were untouched then.
struct Report {
    result: Result<(), FolioError>,
    at: Instant,
    still_held: usize,
}

struct Area {
    p: Arc<Pgmap>,
    h: Pfn,
    folios: Vec<(u64, Order)>,
    maps: Vec<Vec<MappedFolio>>,
}

impl Area {
    fn folio_start(&self, i: usize) -> Pfn {
        self.h.add(self.folios[i].0)
    }

    /// Indices of the area folios `r` touches.
    fn folios_of(&self, r: PfnRange) -> BTreeSet<usize> {
        (0..self.folios.len())
            .filter(|&i| {
                let (off, order) = self.folios[i];
                range(self.h.add(off), order.nr_pages()).overlaps(r)
            })
            .collect()
    }

    /// Maps folio `i` as often as the area wants it mapped (forming it if it is large).
    fn map(&mut self, i: usize) {
        let (off, order) = self.folios[i];
        let times = if TWICE.contains(&off) { 2 } else { 1 };
        for _ in 0..times {
            let m = self
                .p
                .map_folio(self.h.add(off), order)
                .expect("map an area folio");
            self.maps[i].push(m);
        }
    }

    /// Every area folio has its shape, its mappings and nothing else.
    fn check_idle(&self, ctx: &str) {
        let area = range(self.h, AREA);
        assert_eq!(self.p.busy_page_range(area).expect("busy"), None, "{ctx}");
        for (i, &(off, order)) in self.folios.iter().enumerate() {
            let f = self.p.folio(self.h.add(off)).expect("folio");
            let n = self.maps[i].len() as i32;
            assert_eq!(
                (f.pfn(), f.order(), f.refcount(), f.mapcount(), f.pincount()),
                (self.h.add(off), order, n, n, 0),
                "{ctx}: area folio at +{off}"
            );
        }
    }
}

/// Switches the noise thread off for a round, so that nothing but the driver's puts can wake
/// the breaker (the noise's would hide a lost wake-up).
struct Quiet {
    /// Set by the driver: park.
    asked: AtomicBool,
    /// Set by the noise thread while parked.
    parked: AtomicBool,
}

impl Quiet {
    /// Parks the noise thread (`on`) or lets it go; returns once it is parked.
    fn set(&self, on: bool) {
        self.asked.store(on, AtOrd::SeqCst);
        let t = Instant::now();
        while on && !self.parked.load(AtOrd::SeqCst) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the noise thread is gone"
            );
            std::thread::yield_now();
        }
    }
}

/// Forms, splits, maps, gets and pins folios of the 16 pages from `n` until `stop`: every
/// put wakes the breaker for nothing, and forms and splits take the fsdax lock.
fn noise(p: &Arc<Pgmap>, n: Pfn, stop: &AtomicBool, quiet: &Quiet) {
    let mut rng = Rng::new(0x0153);
    while !stop.load(AtOrd::Relaxed) {
        if quiet.asked.load(AtOrd::SeqCst) {
            quiet.parked.store(true, AtOrd::SeqCst);
            while quiet.asked.load(AtOrd::SeqCst) && !stop.load(AtOrd::Relaxed) {
                std::thread::yield_now();
            }
            quiet.parked.store(false, AtOrd::SeqCst);
            continue;
        }
        if rng.below(2) == 0 {
            // Form an order-3 folio, hold part of it, and let the free path split it.
            let m = p.map_folio(n, ORDER3).expect("noise: form");
            let got = p
                .get_pages(range(n.add(rng.below(8)), 1), GupFlags::NONE)
                .expect("noise: get");
            drop(m);
            drop(got);
        } else {
            let q = n.add(8 + rng.below(8));
            let m = p.map_folio(q, Order::BASE).expect("noise: map");
            let pin = p
                .pin_pages(range(q, 1), GupFlags::WRITE)
                .expect("noise: pin");
            drop(pin);
            drop(m);
        }
        if rng.below(4) == 0 {
            std::thread::yield_now();
        }
    }
}

/// The breaker: runs every break it is handed and reports.
fn breaker(
    p: &Pgmap,
    rounds: mpsc::Receiver<Round>,
    reports: mpsc::Sender<Report>,
    held: &AtomicUsize,
    calling: &AtomicBool,
) {
    while let Ok(round) = rounds.recv() {
        calling.store(true, AtOrd::SeqCst);
        for _ in 0..round.lead {
            std::hint::spin_loop();
        }
        let result = p.break_layouts(round.range, Some(round.timeout));
        let at = Instant::now();
        let still_held = held.load(AtOrd::SeqCst);
        if reports
            .send(Report {
                result,
                at,
                still_held,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Sets `stop` when dropped, unwinding included, so the noise thread ends with the driver.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, AtOrd::Relaxed);
    }
}

fn breaks_race_pins(layout: Layout, seed: u64) {
    let fx = crate::test_support::fixture(4 << 20, 2 << 20, layout, Order::BASE, MemoryType::FsDax);
    let p = &fx.p;
    let h = fx.r.start().add(64);
    let noise_at = fx.r.start().add(512);
    let mut area = Area {
        p: Arc::clone(p),
        h,
        folios: shape(),
        maps: Vec::new(),
    };
    area.maps = area.folios.iter().map(|_| Vec::new()).collect();
    for i in 0..area.folios.len() {
        area.map(i);
    }
    area.check_idle("before");
    let stop = AtomicBool::new(false);
    let quiet = Quiet {
        asked: AtomicBool::new(false),
        parked: AtomicBool::new(false),
    };
    // Pins of the break range not yet being given back.
    let held = AtomicUsize::new(0);
    // Set by the breaker just before it calls `break_layouts`.
    let calling = AtomicBool::new(false);
    let (round_tx, round_rx) = mpsc::channel::<Round>();
    let (report_tx, report_rx) = mpsc::channel::<Report>();
    let (mut stillbusy, mut waited) = (0, 0);
    std::thread::scope(|s| {
        let (stop, held, quiet, calling) = (&stop, &held, &quiet, &calling);
        s.spawn(move || noise(p, noise_at, stop, quiet));
        s.spawn(move || breaker(p, round_rx, report_tx, held, calling));
        let _stop = StopOnDrop(stop);
        let mut rng = Rng::new(seed);
        for round in 0..ROUNDS {
            let ctx = format!("{layout:?} round {round}");
            let mut pinned = BTreeSet::new();
            let mut pins = Vec::new();
            for _ in 0..1 + rng.below(2) {
                let start = rng.below(AREA);
                let r = range(h.add(start), (1 + rng.below(6)).min(AREA - start));
                let held = match rng.below(3) {
                    0 => Held::Pages(p.pin_pages(r, GupFlags::WRITE).expect("pin")),
                    1 => Held::Pages(p.get_pages(r, GupFlags::NONE).expect("get")),
                    _ => Held::Folios(p.pin_folios(r, GupFlags::NONE).expect("pin folios")),
                };
                let folios = area.folios_of(r);
                pinned.extend(folios.iter().copied());
                pins.push((held, folios));
            }
            // Short ranges, and ranges from the first few pages to the end (whose check is
            // long enough for puts to land in it).
            let start = rng.below(AREA);
            let br = match rng.below(2) {
                0 => range(h.add(start), (1 + rng.below(12)).min(AREA - start)),
                _ => range(h.add(start % 4), AREA - start % 4),
            };
            let touched = area.folios_of(br);
            // The first pfn of the walk (the range's start, then folio heads) whose folio
            // is pinned.
            let first_busy = touched
                .iter()
                .find(|i| pinned.contains(i))
                .map(|&i| area.folio_start(i).max(br.start()));
            assert_eq!(
                p.busy_page_range(br).expect("busy"),
                first_busy,
                "{ctx}: busy_page_range({br:?}) with {pinned:?} pinned"
            );
            let keep = rng.below(HOLD_ONE_IN) == 0;
            let mut steps: Vec<Step> = pins
                .into_iter()
                .map(|(held, folios)| {
                    let overlaps = !folios.is_disjoint(&touched);
                    Step::Release(held, overlaps)
                })
                .collect();
            if !keep && rng.below(3) == 0 {
                let i = *pinned
                    .iter()
                    .nth(rng.below(pinned.len() as u64) as usize)
                    .expect("something is pinned");
                steps.push(Step::Unmap(i));
            }
            // Shuffle: an unmap may come before or after the pins of its folio go.
            for k in (1..steps.len()).rev() {
                steps.swap(k, rng.below(k as u64 + 1) as usize);
            }
            let overlapping = steps
                .iter()
                .filter(|s| matches!(s, Step::Release(_, true)))
                .count();
            held.store(overlapping, AtOrd::SeqCst);
            let timeout = if keep { SHORT } else { LONG };
            // Most rounds without noise: only the driver's puts can end the wait.
            quiet.set(rng.below(4) != 0);
            calling.store(false, AtOrd::SeqCst);
            round_tx
                .send(Round {
                    range: br,
                    timeout,
                    lead: rng.below(512),
                })
                .expect("the breaker is running");
            let mut unmapped = None;
            let idle_at = if keep {
                None
            } else {
                // Usually let the breaker get as far as its call, or its registration as a
                // waiter, so that the puts below land in its first check or its first sleep.
                let mode = rng.below(4);
                let t = Instant::now();
                while mode != 0 && t.elapsed() < Duration::from_micros(200) {
                    let ready = match mode {
                        1 => calling.load(AtOrd::SeqCst),
                        _ => p.layout_waiters().load(AtOrd::SeqCst) > 0,
                    };
                    if ready {
                        break;
                    }
                    std::hint::spin_loop();
                }
                for step in steps.drain(..) {
                    rng.spin();
                    match step {
                        Step::Release(pin, overlaps) => {
                            if overlaps {
                                held.fetch_sub(1, AtOrd::SeqCst);
                            }
                            pin.release(&mut rng);
                        }
                        Step::Unmap(i) => {
                            area.maps[i].clear();
                            unmapped = Some(i);
                        }
                    }
                }
                Some(Instant::now())
            };
            let report = report_rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{ctx}: break_layouts({br:?}) never returned: {e}"));
            match (report.result, idle_at) {
                (Ok(()), idle_at) => {
                    assert_eq!(
                        report.still_held, 0,
                        "{ctx}: break_layouts({br:?}) returned Ok while a pin of it was held"
                    );
                    if let Some(idle_at) = idle_at {
                        let late = report.at.saturating_duration_since(idle_at);
                        assert!(
                            late < LATE,
                            "{ctx}: break_layouts({br:?}) returned {late:?} after the range \
                             went idle: a wake-up was lost"
                        );
                        waited += usize::from(overlapping > 0);
                    }
                }
                (Err(FolioError::StillBusy { pfn, .. }), None) => {
                    assert_eq!(
                        Some(pfn),
                        first_busy,
                        "{ctx}: StillBusy for {br:?} with {pinned:?} pinned"
                    );
                    stillbusy += 1;
                }
                (Err(e), _) => panic!("{ctx}: break_layouts({br:?}) with {pinned:?} pinned: {e}"),
            }
            // Pins kept through the timeout go now.
            for step in steps {
                if let Step::Release(pin, _) = step {
                    pin.release(&mut rng);
                }
            }
            if let Some(i) = unmapped {
                area.map(i);
            }
            area.check_idle(&ctx);
        }
        drop(round_tx);
    });
    let ctx = format!("{layout:?}");
    assert!(
        stillbusy > 0 && waited > ROUNDS / 4,
        "{ctx}: {stillbusy} timeouts, {waited} waits for pins"
    );
    assert_eq!(p.layout_waiters().load(AtOrd::Relaxed), 0, "{ctx}");
    area.maps.clear();
    crate::test_support::assert_split(p, range(h, AREA), &ctx);
    crate::test_support::assert_split(p, range(noise_at, 16), &ctx);
    assert_eq!(p.refs(), 0, "{ctx}: no liveness reference left");
}

#[test]
fn break_layouts_waits_for_exactly_the_pins_of_its_range() {
    for (layout, seed) in Layout::ALL.into_iter().zip(1..) {
        breaks_race_pins(layout, seed);
    }
}

// ---- Regression tests for bugs found while writing the stress above ----
//
// All three came from one root cause: `busy_page_range` read a folio's reference count and
// its mapcount as two loads, while a map raised them as two stores (`fsdax_map`) and an unmap
// lowered them as two (`MappedFolio::drop`). A check that read between a map's two stores
// saw one reference too many; one whose two loads straddled a whole map saw one too few. Now
// both sides do their pair under the fsdax formation lock. The "Fix:" paragraphs below are
// what was suggested when each was found.

/// How long each regression test tries to hit its race (each hit it within a second while
/// the bug was there).
const TRY_FOR: Duration = Duration::from_millis(1500);

/// Lost wake-up. A waiter whose check lands between a map's reference and its mapcount sees
/// the folio busy and sleeps; the map then completes, which makes the range idle again, but a
/// map is not a put and wakes nobody. With no timeout the waiter sleeps until some unrelated
/// put; with one it returns `Ok` only at its deadline. Here one thread maps and unmaps a page
/// while another breaks layouts over it: after each map, with nothing pinned, a registered
/// waiter must leave within 600 ms, well inside the 1 s timeout a stranded one would sleep to
/// (200 ms failed once with two other builds running on this 2-core machine). It is stuck
/// within a few thousand maps.
///
/// Fix: make the map's two stores invisible to the check, e.g. read both counts in
/// `busy_page_range` under the fsdax lock, which `fsdax_map` holds across both (an unmap
/// lowers the mapcount first, so a check between its stores sees it busy, and its put then
/// wakes the waiter); or wake layout waiters at the end of `fsdax_map`.
#[test]
fn break_layouts_is_not_stranded_by_a_map_landing_in_its_check() {
    let fx = crate::test_support::fixture(
        4 << 20,
        2 << 20,
        Layout::Flat,
        Order::BASE,
        MemoryType::FsDax,
    );
    let p = &fx.p;
    let h = fx.r.start().add(8);
    let r = range(h, 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(AtOrd::Relaxed) {
                let _ = p.break_layouts(r, Some(Duration::from_secs(1)));
            }
        });
        let _stop = StopOnDrop(&stop);
        let start = Instant::now();
        let mut maps = 0;
        while start.elapsed() < TRY_FOR {
            let m = p.map_folio(h, Order::BASE).expect("map");
            maps += 1;
            let mapped = Instant::now();
            while p.layout_waiters().load(AtOrd::SeqCst) > 0 {
                assert!(
                    mapped.elapsed() < Duration::from_millis(600),
                    "map {maps}: break_layouts({r:?}) still asleep 600 ms after the map made \
                     the range idle (busy: {:?})",
                    p.busy_page_range(r)
                );
                std::hint::spin_loop();
            }
            drop(m);
        }
    });
}

/// Torn read: a folio held by one plain reference beyond its mappings (a `get_pages`, or a pin
/// of one page of a large folio) is reported idle when a map of it falls between the two
/// loads: the old reference count minus the new mapcount. `break_layouts` then returns `Ok`
/// with the reference still held. The two loads are nanoseconds apart, so the reader runs at
/// the lowest priority on the same CPU as a mapper that sleeps between its maps and unmaps:
/// each wake-up preempts the reader wherever it is. Usually fails within a second.
///
/// Fix: as above, read the pair under the fsdax lock (no map can fall between the loads, and
/// an unmap between them only makes the folio look busier); re-reading the reference count
/// until it is stable would not do, since a map and an unmap can both fall in between.
#[test]
fn busy_page_range_never_reports_a_held_folio_idle_while_it_is_mapped_again() {
    /// Moves the calling thread to the first CPU it may use, at `nice`.
    fn first_cpu(nice: i32) {
        let mine = rustix::thread::sched_getaffinity(None).expect("affinity");
        let mut one = rustix::thread::CpuSet::new();
        if let Some(cpu) = (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| mine.is_set(c)) {
            one.set(cpu);
            rustix::thread::sched_setaffinity(None, &one).expect("pin to one CPU");
        }
        // Failing to change the priority only makes the race rarer.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice);
    }
    let fx = crate::test_support::fixture(
        4 << 20,
        2 << 20,
        Layout::Flat,
        Order::BASE,
        MemoryType::FsDax,
    );
    let p = &fx.p;
    let h = fx.r.start().add(8);
    let r = range(h, 1);
    let mapping = p.map_folio(h, Order::BASE).expect("map");
    let got = p.get_pages(r, GupFlags::NONE).expect("get");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            first_cpu(0);
            while !stop.load(AtOrd::Relaxed) {
                let m = p.map_folio(h, Order::BASE).expect("map again");
                std::thread::sleep(Duration::from_nanos(1));
                drop(m);
                std::thread::sleep(Duration::from_nanos(1));
            }
        });
        let _stop = StopOnDrop(&stop);
        first_cpu(19);
        let start = Instant::now();
        let mut checks = 0u64;
        while start.elapsed() < TRY_FOR {
            checks += 1;
            assert!(
                p.busy_page_range(r).expect("busy").is_some(),
                "check {checks}: {r:?} reported idle while a get_pages reference is held"
            );
        }
    });
    drop((got, mapping));
}

/// Spurious `StillBusy`: with nothing pinned and one thread mapping and unmapping a page,
/// `break_layouts` with a zero timeout (a "try once") says the page is still busy whenever
/// its one check lands inside a map or an unmap, about one call in a hundred.
///
/// Fix: as above (under the fsdax lock a map is never seen half done; an unmap still is,
/// unless `MappedFolio::drop` also lowers both counts under the lock).
#[test]
fn break_layouts_never_says_still_busy_for_a_range_that_is_only_mapped() {
    let fx = crate::test_support::fixture(
        4 << 20,
        2 << 20,
        Layout::Flat,
        Order::BASE,
        MemoryType::FsDax,
    );
    let p = &fx.p;
    let h = fx.r.start().add(8);
    let r = range(h, 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(AtOrd::Relaxed) {
                drop(p.map_folio(h, Order::BASE).expect("map"));
            }
        });
        let _stop = StopOnDrop(&stop);
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < TRY_FOR {
            calls += 1;
            match p.break_layouts(r, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) => panic!("call {calls}: nothing is pinned, yet: {e}"),
            }
        }
    });
}
