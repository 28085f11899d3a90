//! Device space and pgmap registration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::addr::PAGE_SIZE;
use crate::init::InitMode;
use crate::memmap::MemmapError;

fn cfg(range: PfnRange, layout: Layout, shift: Order) -> PgmapConfig {
    let mut c = PgmapConfig::devdax(range, shift);
    c.layout = layout;
    c.init = InitMode::Sync;
    c
}

#[test]
fn reserved_ranges_are_aligned_and_disjoint() {
    let space = DeviceSpace::new();
    let a = space.reserve_range(6 << 20, 2 << 20).expect("a");
    let b = space.reserve_range(1 << 30, 1 << 30).expect("b");
    let c = space.reserve_range(4096, 4096).expect("c");
    assert!(a.start().is_aligned(Order::PMD));
    assert!(b.start().is_aligned(Order::PUD));
    assert_eq!(b.bytes(), 1 << 30);
    assert!(!a.overlaps(b) && !b.overlaps(c) && !a.overlaps(c));
    // The gap left below `b` is reused.
    assert!(c.end() <= b.start());
    assert!(space.release_range(a));
    assert!(!space.release_range(a), "double release is refused");
    let again = space.reserve_range(6 << 20, 2 << 20).expect("again");
    assert_eq!(again, a);
}

#[test]
fn bad_reservations_say_what_is_wrong() {
    let space = DeviceSpace::new();
    for (bytes, align) in [(0, 4096), (4095, 4096), (8192, 3 << 12), (8192, 2048)] {
        assert!(
            matches!(
                space.reserve_range(bytes, align),
                Err(PgmapError::BadRequest { .. })
            ),
            "{bytes} @ {align}"
        );
    }
    assert!(matches!(
        space.reserve_range(1 << 60, 4096),
        Err(PgmapError::SpaceExhausted { .. })
    ));
}

#[test]
fn get_dev_pagemap_finds_every_range_of_a_multi_range_pgmap() {
    let space = DeviceSpace::new();
    let r0 = space.reserve_range(4 << 20, 2 << 20).expect("r0");
    let gap = space.reserve_range(2 << 20, 2 << 20).expect("gap");
    let r1 = space.reserve_range(8 << 20, 2 << 20).expect("r1");
    let mut c = cfg(r0, Layout::Flat, Order::PMD);
    c.ranges.push(r1);
    let pgmap = space.memremap_pages(c).expect("pgmap");
    let last_of_r0 = Pfn::new(r0.end().raw() - 1);
    for pfn in [r0.start(), last_of_r0, r1.start(), r1.start().add(1000)] {
        let found = space.get_dev_pagemap(pfn);
        assert!(found.is_some_and(|p| Arc::ptr_eq(p.arc(), &pgmap)), "{pfn}");
    }
    assert!(space.get_dev_pagemap(gap.start()).is_none());
    assert!(space.get_dev_pagemap(r1.end()).is_none());
    assert_eq!(pgmap.ranges().collect::<Vec<_>>(), vec![r0, r1]);
    assert_eq!(
        pgmap.folio(r1.start().add(513)).map(|f| f.pfn()).ok(),
        Some(r1.start().add(512))
    );
    assert_eq!(space.nr_pgmaps(), 1);
    space.memunmap_pages(&pgmap, None).expect("teardown");
    assert!(space.get_dev_pagemap(r0.start()).is_none());
    assert!(matches!(
        space.memunmap_pages(&pgmap, None),
        Err(PgmapError::NotRegistered)
    ));
}

#[test]
fn overlapping_pgmaps_are_refused() {
    let space = DeviceSpace::new();
    let r = space.reserve_range(8 << 20, 2 << 20).expect("r");
    let _p = space
        .memremap_pages(cfg(r, Layout::Heads, Order::PMD))
        .expect("first");
    let inner = PfnRange::new(r.start().add(512), 512).expect("inner");
    assert!(matches!(
        space.memremap_pages(cfg(inner, Layout::Heads, Order::PMD)),
        Err(PgmapError::Overlap { .. })
    ));
    let mut twice = cfg(inner, Layout::Heads, Order::PMD);
    twice.ranges.push(inner);
    assert!(matches!(
        DeviceSpace::new().memremap_pages(twice),
        Err(PgmapError::Overlap { .. })
    ));
}

#[test]
fn idle_refcount_follows_the_memory_type() {
    let space = DeviceSpace::new();
    for (ty, idle) in [
        (MemoryType::Generic, 1),
        (MemoryType::FsDax, 0),
        (MemoryType::P2pDma, 0),
    ] {
        let r = space.reserve_range(4 << 20, 2 << 20).expect("r");
        let shift = if ty == MemoryType::FsDax {
            Order::BASE
        } else {
            Order::PMD
        };
        let mut c = cfg(r, Layout::Flat, shift);
        c.memory_type = ty;
        let p = space.memremap_pages(c).expect("pgmap");
        let f = p.folio(r.start().add(600)).expect("folio");
        assert_eq!(f.head_page().refcount(), idle, "{ty:?}");
        assert_eq!(
            f.head_page().head_word(),
            crate::desc::HeadWord::Pgmap(p.id())
        );
    }
}

#[test]
fn private_memory_needs_folio_free_and_owner() {
    let space = DeviceSpace::new();
    let r = space.reserve_range(2 << 20, 2 << 20).expect("r");
    let mut c = cfg(r, Layout::Flat, Order::BASE);
    c.memory_type = MemoryType::Private;
    assert!(matches!(
        space.memremap_pages(c.clone()),
        Err(PgmapError::MissingOps {
            missing: "a folio_free callback",
            ..
        })
    ));
    let freed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&freed);
    c.ops.folio_free = Some(Arc::new(move |_f: &Folio<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
    }));
    assert!(matches!(
        space.memremap_pages(c.clone()),
        Err(PgmapError::MissingOps {
            missing: "an owner",
            ..
        })
    ));
    c.owner = Some(0xfeed);
    let p = space.memremap_pages(c).expect("pgmap");
    assert_eq!(p.owner(), Some(0xfeed));
    let f = p.folio(r.start()).expect("folio");
    if let Some(cb) = &p.ops().folio_free {
        cb(&f);
    }
    assert_eq!(freed.load(Ordering::Relaxed), 1);
}

#[test]
fn an_altmap_is_placed_in_front_of_the_data() {
    let space = DeviceSpace::new();
    let r0 = space.reserve_range(128 << 20, 2 << 20).expect("r0");
    let mut c = cfg(r0, Layout::Flat, Order::PMD);
    c.altmap_reserve = Some(2);
    let p = space.memremap_pages(c).expect("pgmap");
    let a = p.altmap().expect("altmap");
    // 32768 pages of memmap-bearing range: 512 pages of descriptors + 2 reserved, padded to 1024.
    assert_eq!(
        (a.base_pfn, a.reserve, a.free, a.alloc),
        (r0.start(), 2, 1022, 512)
    );
    assert_eq!(a.align, 510);
    assert!(!p.pfn_valid(r0.start().add(1023)));
    assert!(p.pfn_valid(r0.start().add(1024)));
    assert!(matches!(
        p.folio(r0.start()),
        Err(PgmapError::Lookup(
            crate::memmap::LookupError::AltmapPfn { .. }
        ))
    ));
    let c = p.cost();
    assert_eq!(c.device_bytes, 1024 * PAGE_SIZE);
    assert_eq!(c.metadata_bytes, 0, "the whole memmap is on the device");
}

/// The kernel's `pagemap_range` refuses an altmap on a pgmap of several ranges (the memmap
/// would describe range 0 only); this used to be accepted.
#[test]
fn an_altmap_on_several_ranges_is_refused() {
    let space = DeviceSpace::new();
    let r0 = space.reserve_range(128 << 20, 2 << 20).expect("r0");
    let r1 = space.reserve_range(16 << 20, 2 << 20).expect("r1");
    let mut c = cfg(r0, Layout::Flat, Order::PMD);
    c.ranges.push(r1);
    c.altmap_reserve = Some(2);
    assert!(matches!(
        space.memremap_pages(c.clone()),
        Err(PgmapError::AltmapWithRanges { ranges: 2 })
    ));
    c.altmap_reserve = None;
    assert!(
        space.memremap_pages(c).is_ok(),
        "without the altmap it is fine"
    );
}

/// fsdax folios form at fault time: an fsdax pgmap with a `vmemmap_shift` is no
/// configuration the kernel builds, and used to leave static compounds the free path split.
#[test]
fn an_fsdax_pgmap_with_compound_folios_is_refused() {
    let space = DeviceSpace::new();
    for shift in [Order::PMD, Order::new(3).expect("order"), Order::PUD] {
        let r = space.reserve_range(1 << 30, 1 << 30).expect("r");
        let mut c = cfg(r, Layout::Heads, shift);
        c.memory_type = MemoryType::FsDax;
        assert!(
            matches!(
                space.memremap_pages(c),
                Err(PgmapError::FsdaxCompound { shift: s }) if s == shift
            ),
            "{shift:?}"
        );
        assert!(space.release_range(r));
    }
}

#[test]
fn data_ranges_leave_out_the_altmap() {
    let space = DeviceSpace::new();
    let r0 = space.reserve_range(128 << 20, 2 << 20).expect("r0");
    let r1 = space.reserve_range(16 << 20, 2 << 20).expect("r1");
    let r2 = space.reserve_range(16 << 20, 2 << 20).expect("r2");
    let mut c = cfg(r0, Layout::Heads, Order::PMD);
    c.altmap_reserve = Some(2);
    let p = space.memremap_pages(c).expect("pgmap");
    let offset = p.altmap().expect("altmap").offset();
    let mut c = cfg(r1, Layout::Heads, Order::PMD);
    c.ranges.push(r2);
    let q = space.memremap_pages(c).expect("pgmap of two ranges");
    for (p, want) in [
        (
            &p,
            vec![PfnRange::from_bounds(r0.start().add(offset), r0.end()).expect("data 0")],
        ),
        (&q, vec![r1, r2]),
    ] {
        let data: Vec<PfnRange> = p.data_ranges().collect();
        assert_eq!(data, want);
        for r in &data {
            assert!(p.pfn_valid(r.start()) && p.pfn_valid(Pfn::new(r.end().raw() - 1)));
        }
    }
}

/// The estimate is what the built pgmap reports, for every layout, with several ranges, with
/// an altmap sized by the library or by the caller, and it fails where building fails.
#[test]
fn estimate_cost_is_what_memremap_pages_builds() {
    let space = DeviceSpace::new();
    for layout in Layout::ALL {
        for altmap in [
            (None, None),
            (Some(2), None),
            (Some(2), Some(1022)),
            (None, Some(512)),
        ] {
            let r0 = space.reserve_range(128 << 20, 2 << 20).expect("r0");
            let mut c = cfg(r0, layout, Order::PMD);
            (c.altmap_reserve, c.altmap_free) = altmap;
            if !c.has_altmap() {
                // An altmap needs a pgmap of one range; without one, add a second range.
                c.ranges
                    .push(space.reserve_range(16 << 20, 2 << 20).expect("r1"));
            }
            let estimate = c.estimate_cost().expect("estimate");
            let p = space.memremap_pages(c).expect("pgmap");
            assert_eq!(estimate, p.cost(), "{layout:?} {altmap:?}");
            if let (reserve, Some(free)) = altmap {
                let a = p.altmap().expect("altmap");
                assert_eq!((a.reserve, a.free), (reserve.unwrap_or(0), free));
            }
        }
    }
    let mut none = cfg(
        PfnRange::new(Pfn::new(0), 512).expect("range"),
        Layout::Flat,
        Order::PMD,
    );
    none.ranges.clear();
    assert!(matches!(none.estimate_cost(), Err(PgmapError::NoRanges)));
    let r = space.reserve_range(4 << 20, 2 << 20).expect("r");
    let mut bad = cfg(r, Layout::Flat, Order::PMD);
    bad.altmap_free = Some(100);
    for result in [
        bad.estimate_cost().map(|_| ()),
        space.memremap_pages(bad).map(|_| ()),
    ] {
        assert!(matches!(
            result,
            Err(PgmapError::Memmap {
                index: 0,
                source: MemmapError::AltmapMisaligned { .. }
            })
        ));
    }
}

#[test]
fn lookups_outside_the_pgmap_are_errors() {
    let space = DeviceSpace::new();
    let r = space.reserve_range(2 << 20, 2 << 20).expect("r");
    let p = space
        .memremap_pages(cfg(r, Layout::Vmemmap, Order::PMD))
        .expect("pgmap");
    assert!(matches!(
        p.folio(r.end()),
        Err(PgmapError::Sync(SyncError::OutOfRange { .. }))
    ));
    assert!(matches!(
        p.compound_head(Pfn::new(0)),
        Err(PgmapError::Sync(SyncError::OutOfRange { .. }))
    ));
}

#[test]
fn teardown_waits_for_handles_and_a_timeout_leaves_everything_intact() {
    let space = DeviceSpace::new();
    let r = space.reserve_range(8 << 20, 2 << 20).expect("r");
    let p = space
        .memremap_pages(cfg(r, Layout::Heads, Order::PMD))
        .expect("pgmap");
    let handle = space.get_dev_pagemap(r.start().add(5)).expect("live");
    assert_eq!(p.refs(), 1);
    assert!(matches!(
        space.memunmap_pages(&p, Some(std::time::Duration::from_millis(10))),
        Err(PgmapError::Busy { refs: 1 })
    ));
    // Intact: still registered, still live, lookups still work.
    assert!(space.get_dev_pagemap(r.start()).is_some());
    assert_eq!(
        p.folio(r.start().add(600)).map(|f| f.pfn()).ok(),
        Some(r.start().add(512))
    );
    std::thread::scope(|s| {
        let t = s.spawn(|| space.memunmap_pages(&p, None));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished(), "teardown must wait for the handle");
        // New lookups fail while teardown waits.
        assert!(space.get_dev_pagemap(r.start()).is_none());
        drop(handle);
        t.join().expect("teardown thread").expect("teardown");
    });
    assert!(space.get_dev_pagemap(r.start()).is_none());
    assert!(p.folio(r.start()).is_err(), "lookups fail after teardown");
    // The memmap itself lives on with the Arc and was left idle.
    let (m, s) = p.audit(0).expect("range 0");
    let f = m.folio(&s, r.start().add(600)).expect("audit");
    assert_eq!((f.refcount(), f.pincount()), (1, 0));
}

/// Regression: a timed teardown racing an untimed one used to revive the pgmap under it, so
/// new handles succeeded mid-teardown and the untimed one never woke.
#[test]
fn a_timed_teardown_never_revives_a_pgmap_another_teardown_is_draining() {
    let space = DeviceSpace::new();
    let r = space.reserve_range(4 << 20, 2 << 20).expect("r");
    let p = space
        .memremap_pages(cfg(r, Layout::Heads, Order::PMD))
        .expect("pgmap");
    let handle = space.get_dev_pagemap(r.start()).expect("live");
    std::thread::scope(|s| {
        let untimed = s.spawn(|| space.memunmap_pages(&p, None));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(matches!(
            space.memunmap_pages(&p, Some(std::time::Duration::from_millis(20))),
            Err(PgmapError::Busy { refs: 1 })
        ));
        assert!(space.get_dev_pagemap(r.start()).is_none(), "still dying");
        assert!(!untimed.is_finished());
        drop(handle);
        untimed
            .join()
            .expect("thread")
            .expect("the untimed teardown completes");
    });
    assert!(matches!(
        space.memunmap_pages(&p, Some(std::time::Duration::ZERO)),
        Err(PgmapError::NotRegistered)
    ));
}

#[test]
fn an_init_progress_counter_ends_at_every_descriptor_written_in_every_mode() {
    use crate::init::InitProgress;
    let threads = std::num::NonZeroUsize::new(3).expect("non-zero");
    let modes = [
        InitMode::Sync,
        InitMode::Parallel { threads },
        InitMode::Async { workers: threads },
    ];
    for layout in [Layout::Flat, Layout::Heads] {
        for mode in modes {
            let space = DeviceSpace::new();
            // 1 GiB: several 128 MiB chunks, so the counter moves in steps.
            let range = space.reserve_range(1 << 30, 2 << 20).expect("range");
            let mut c = cfg(range, layout, Order::PMD);
            c.init = mode;
            let progress = InitProgress::new();
            c.progress = Some(Arc::clone(&progress));
            let p = space.memremap_pages(c).expect("register");
            p.wait_init_idle().expect("init");
            let want = p.cost().descriptors_initialized;
            assert_eq!(progress.descriptors(), want, "{layout:?} {mode:?}");
            assert_eq!(p.init_stats().descriptors, want, "{layout:?} {mode:?}");
        }
    }
    assert_ne!(
        *InitProgress::new(),
        *InitProgress::new(),
        "equal only to itself"
    );
}
