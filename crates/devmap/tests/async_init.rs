//! Asynchronous memmap init under load: syncers racing background workers must leave exactly
//! the memmap synchronous init writes, and every lookup during the race sees initialised data.

use std::num::NonZeroUsize;
use std::sync::Arc;

use devmap::{
    DeviceSpace, InitMode, InitState, Layout, Order, Pfn, PfnRange, Pgmap, PgmapConfig, PgmapError,
    SyncError,
};

fn enable(layout: Layout, shift: Order, bytes: u64, init: InitMode) -> (DeviceSpace, Arc<Pgmap>) {
    enable_with_altmap(layout, shift, bytes, init, None)
}

fn enable_with_altmap(
    layout: Layout,
    shift: Order,
    bytes: u64,
    init: InitMode,
    altmap_reserve: Option<u64>,
) -> (DeviceSpace, Arc<Pgmap>) {
    let space = DeviceSpace::new();
    let align = (2u64 << 20).max(shift.nr_pages() << 12);
    let range = space.reserve_range(bytes, align).expect("range");
    let mut cfg = PgmapConfig::devdax(range, shift);
    cfg.layout = layout;
    cfg.init = init;
    cfg.altmap_reserve = altmap_reserve;
    let p = space.memremap_pages(cfg).expect("pgmap");
    (space, p)
}

fn workers(n: usize) -> InitMode {
    InitMode::Async {
        workers: NonZeroUsize::new(n).expect("non-zero"),
    }
}

/// A small xorshift so the test needs no extra crate and replays the same way.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn stress(layout: Layout, shift: Order, bytes: u64) {
    stress_with_altmap(layout, shift, bytes, None);
}

fn stress_with_altmap(layout: Layout, shift: Order, bytes: u64, altmap: Option<u64>) {
    let (_s, pgmap) = enable_with_altmap(layout, shift, bytes, workers(2), altmap);
    let range = pgmap.ranges().next().expect("range");
    let pages = range.len();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pgmap = &pgmap;
            s.spawn(move || {
                let mut next = rng(0x9e37_79b9 * (t + 1));
                for _ in 0..300 {
                    let off = next() % pages;
                    let n = 1 + next() % (pages - off).min(1 << 12);
                    let pfn = range.start().add(off);
                    if pgmap
                        .altmap()
                        .is_some_and(|a| pfn < a.base_pfn.add(a.offset()))
                    {
                        continue;
                    }
                    pgmap
                        .sync(PfnRange::new(pfn, n).expect("span"))
                        .expect("sync");
                    // Whatever the background is doing, a synced folio is fully initialised.
                    let f = pgmap.folio(pfn).expect("folio");
                    assert_eq!(f.pfn(), pfn.align_down(shift));
                    assert_eq!(f.order(), shift);
                    assert_eq!(f.head_page().refcount(), 1);
                    assert_eq!(
                        f.head_page().head_word(),
                        devmap::desc::HeadWord::Pgmap(pgmap.id())
                    );
                }
            });
        }
    });
    pgmap.wait_init_idle().expect("init runs to the end");
    assert_eq!(pgmap.init_state(), InitState::Idle);
    assert_eq!(
        pgmap.init_stats().descriptors,
        pgmap.cost().descriptors_initialized,
        "each descriptor written once"
    );

    let (_s2, reference) = enable_with_altmap(layout, shift, bytes, InitMode::Sync, altmap);
    assert_eq!(reference.ranges().next(), Some(range), "same geometry");
    for off in 0..pages {
        let pfn = range.start().add(off);
        let got = pgmap.descriptor(pfn).ok().flatten().map(|p| p.snapshot());
        let want = reference
            .descriptor(pfn)
            .ok()
            .flatten()
            .map(|p| p.snapshot());
        assert_eq!(got, want, "{layout:?} pfn +{off}");
    }
}

#[test]
fn flat_async_init_under_syncers_matches_sync_init_byte_for_byte() {
    stress(Layout::Flat, Order::PMD, 256 << 20);
    stress(Layout::Flat, Order::BASE, 64 << 20);
}

#[test]
fn vmemmap_and_folio_async_init_under_syncers_match_sync_init() {
    stress(Layout::Vmemmap, Order::PMD, 1 << 30);
    stress(Layout::Heads, Order::PMD, 4 << 30);
}

#[test]
fn pieces_inside_1g_compounds_and_without_vmemmap_dedup_match_sync_init() {
    // One 1 GiB compound is one sub-range of 4096 pieces, taken by workers and syncers alike.
    stress(Layout::Flat, Order::PUD, 2 << 30);
    // With an altmap Vmemmap does not dedup: 512 descriptors (eight pieces) per 2 MiB compound.
    stress_with_altmap(Layout::Vmemmap, Order::PMD, 1 << 30, Some(16));
}

#[test]
fn sync_all_finishes_on_the_callers_thread() {
    // One worker on a large namespace: sync_all must not wait for it alone.
    let (_s, p) = enable(Layout::Flat, Order::PMD, 1 << 30, workers(1));
    p.sync_all().expect("sync_all");
    assert_eq!(p.init_state(), InitState::Idle);
    assert_eq!(p.init_stats().descriptors, 1 << 18);
}

#[test]
fn async_init_starts_no_more_workers_than_it_has_chunks() {
    // 16 MiB of Flat descriptors is one chunk of sub-ranges: one worker, however many asked.
    let (s, p) = enable(Layout::Flat, Order::PMD, 16 << 20, workers(64));
    p.wait_init_idle().expect("init runs to the end");
    assert_eq!(p.init_stats().threads, 1);
    s.memunmap_pages(&p, None).expect("teardown");
    // 1 GiB is 512 sub-ranges of one 2 MiB compound (512 descriptors), 128 to a chunk: four
    // chunks, four workers of the sixteen asked for.
    let (_s, p) = enable(Layout::Flat, Order::PMD, 1 << 30, workers(16));
    p.wait_init_idle().expect("init runs to the end");
    assert_eq!(p.init_stats().threads, 4);
}

#[test]
fn sync_outside_the_pgmap_and_after_teardown_are_errors() {
    let (space, p) = enable(Layout::Flat, Order::PMD, 1 << 30, workers(2));
    let r = p.ranges().next().expect("range");
    assert!(matches!(
        p.sync(PfnRange::new(r.end(), 1).expect("span")),
        Err(PgmapError::Sync(SyncError::OutOfRange { .. }))
    ));
    assert!(matches!(
        p.sync(PfnRange::new(Pfn::new(r.end().raw() - 1), 2).expect("span")),
        Err(PgmapError::Sync(SyncError::OutOfRange { .. }))
    ));
    assert!(
        space.memunmap_pages(&p, None).is_ok(),
        "teardown while workers may still run"
    );
    assert!(matches!(
        p.sync(PfnRange::new(r.start(), 1).expect("span")),
        Err(PgmapError::Sync(SyncError::TornDown))
    ));
    assert!(matches!(
        p.folio(r.start()),
        Err(PgmapError::Sync(SyncError::TornDown))
    ));
    assert!(matches!(
        p.sync_all(),
        Err(PgmapError::Sync(SyncError::TornDown))
    ));
}

#[test]
fn teardown_races_syncers_without_hanging() {
    for _ in 0..8 {
        let (space, p) = enable(Layout::Flat, Order::PMD, 512 << 20, workers(2));
        let r = p.ranges().next().expect("range");
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let p = &p;
                s.spawn(move || {
                    let mut next = rng(t + 7);
                    loop {
                        let pfn = r.start().add(next() % r.len());
                        match p.folio(pfn) {
                            Ok(f) => assert_eq!(f.pfn(), pfn.align_down(Order::PMD)),
                            Err(PgmapError::Sync(SyncError::TornDown)) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            space.memunmap_pages(&p, None).expect("teardown");
        });
    }
}

#[test]
fn async_pgmaps_are_usable_before_init_finishes() {
    // 16 GiB Flat with one worker takes tens of milliseconds; the pgmap answers at once.
    let (_s, p) = enable(Layout::Flat, Order::PMD, 16 << 30, workers(1));
    let r = p.ranges().next().expect("range");
    let last = Pfn::new(r.end().raw() - 1);
    let f = p.folio(last).expect("folio");
    assert_eq!(f.pfn(), last.align_down(Order::PMD));
    p.wait_init_idle().expect("init runs to the end");
    assert_eq!(p.init_state(), InitState::Idle);
    assert!(p.init_stats().elapsed > std::time::Duration::ZERO);
}
