//! Pins of ranges that cross range and pgmap boundaries, and of ranges of any length: the
//! whole range is checked before anything is sized or grabbed, a range that runs across
//! adjacent ranges of one pgmap or across adjacent pgmaps pins like the kernel's per-pfn GUP,
//! and nothing a caller can pass aborts, panics or leaves a reference behind.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::addr::Order;
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::pgmap::PgmapConfig;

/// 8 MiB halves: 2048 pfns, four 2 MiB folios each.
const HALF: u64 = 2048;

fn config(ranges: Vec<PfnRange>, layout: Layout, init: InitMode) -> PgmapConfig {
    let mut cfg = PgmapConfig::devdax(ranges[0], Order::PMD);
    cfg.ranges = ranges;
    cfg.layout = layout;
    cfg.init = init;
    cfg
}

/// One pgmap whose two ranges are adjacent, registered high half first (ranges need not be
/// given in pfn order).
fn split_pgmap(layout: Layout, init: InitMode) -> (DeviceSpace, Arc<Pgmap>, PfnRange) {
    let space = DeviceSpace::new();
    let r = space
        .reserve_range(2 * HALF * 4096, 2 << 20)
        .expect("range");
    let lo = PfnRange::new(r.start(), HALF).expect("lo");
    let hi = PfnRange::new(lo.end(), HALF).expect("hi");
    let p = space
        .memremap_pages(config(vec![hi, lo], layout, init))
        .expect("pgmap");
    (space, p, r)
}

/// Two pgmaps on adjacent halves of one reservation.
fn two_pgmaps(layout: Layout) -> (DeviceSpace, [Arc<Pgmap>; 2], PfnRange) {
    let space = DeviceSpace::new();
    let r = space
        .reserve_range(2 * HALF * 4096, 2 << 20)
        .expect("range");
    let halves = [
        PfnRange::new(r.start(), HALF).expect("lo"),
        PfnRange::new(r.start().add(HALF), HALF).expect("hi"),
    ];
    let p = halves.map(|h| {
        space
            .memremap_pages(config(vec![h], layout, InitMode::Sync))
            .expect("pgmap")
    });
    (space, p, r)
}

/// Every folio of `r` is idle (device-dax: count 1, no pins) and `p` holds no reference.
fn assert_idle(p: &Pgmap, r: PfnRange, what: &str) {
    let mut pfn = r.start();
    while pfn < r.end() {
        let f = p.folio(pfn).expect("folio");
        assert_eq!((f.refcount(), f.pincount()), (1, 0), "{what}: {}", f.pfn());
        pfn = f.range().end();
    }
    assert_eq!(p.refs(), 0, "{what}");
}

#[test]
fn a_pin_across_two_ranges_of_one_pgmap_succeeds() {
    for layout in Layout::ALL {
        let (space, p, r) = split_pgmap(layout, InitMode::Sync);
        // From the middle of the low range's last folio to a page into the high range's second.
        let span = PfnRange::from_bounds(r.start().add(HALF - 300), r.start().add(HALF + 700))
            .expect("span");
        let pages = p.pin_pages(span, GupFlags::NONE).expect("pgmap pin");
        assert_eq!(pages.len() as u64, span.len(), "{layout:?}");
        assert!(
            pages
                .entries()
                .iter()
                .copied()
                .eq((0..span.len()).map(|i| span.start().add(i)))
        );
        assert_eq!(p.refs(), 1, "{layout:?}: one reference per call");
        let folios = space.pin_folios(span, GupFlags::NONE).expect("space pin");
        assert_eq!(folios.len(), 3, "{layout:?}: one low folio, two high ones");
        assert_eq!(folios.nr_pages(), span.len());
        assert_eq!(p.refs(), 2, "{layout:?}: one more for the second call");
        let boundary = p.folio(r.start().add(HALF)).expect("folio");
        assert_eq!(
            (boundary.refcount(), boundary.pincount()),
            (1 + 2 * 512, 2 * 512)
        );
        drop(folios);
        pages.unpin(true);
        assert!(p.folio(r.start().add(HALF - 1)).expect("folio").is_dirty());
        assert_idle(&p, r, &format!("{layout:?}"));
    }
}

#[test]
fn a_pin_across_two_adjacent_pgmaps_succeeds_through_the_space() {
    for layout in Layout::ALL {
        let (space, [lo, hi], r) = two_pgmaps(layout);
        let span = PfnRange::from_bounds(r.start().add(HALF - 512), r.start().add(HALF + 1))
            .expect("span");
        let pages = space.pin_pages(span, GupFlags::NONE).expect("space pin");
        assert_eq!(pages.len(), 513, "{layout:?}");
        assert!(std::ptr::eq(pages.pgmap(), &*lo), "the first page's pgmap");
        assert_eq!(
            (lo.refs(), hi.refs()),
            (1, 1),
            "{layout:?}: one reference each"
        );
        // Through one pgmap the other's pfns are not device memory of it.
        assert_eq!(
            lo.pin_pages(span, GupFlags::NONE).err(),
            Some(GupError::NoPgmap {
                pfn: hi.ranges().next().expect("r").start()
            })
        );
        pages.unpin_as_range(false);
        assert_idle(&lo, PfnRange::new(r.start(), HALF).expect("lo"), "lo");
        assert_idle(
            &hi,
            PfnRange::new(r.start().add(HALF), HALF).expect("hi"),
            "hi",
        );
    }
}

#[test]
fn a_failure_in_the_second_pgmap_gives_back_the_first() {
    let (space, [lo, hi], r) = two_pgmaps(Layout::Flat);
    let bad = r.start().add(HALF + 600);
    hi.poison_subpage(bad).expect("poison");
    let span = PfnRange::from_bounds(r.start().add(100), r.start().add(HALF + 1024)).expect("span");
    assert_eq!(
        space.pin_pages(span, GupFlags::NONE).err(),
        Some(GupError::Poisoned {
            pfn: bad,
            folio: r.start().add(HALF + 512)
        })
    );
    assert_idle(&lo, PfnRange::new(r.start(), HALF).expect("lo"), "lo");
    assert_eq!(hi.refs(), 0);
    // A teardown of one pgmap mid-range fails the pin with that pgmap's first pfn.
    space.memunmap_pages(&hi, None).expect("teardown");
    assert_eq!(
        space.pin_folios(span, GupFlags::NONE).err(),
        Some(GupError::NoPgmap {
            pfn: r.start().add(HALF)
        })
    );
    assert_idle(&lo, PfnRange::new(r.start(), HALF).expect("lo"), "lo after");
}

/// A range far larger than any device used to size its result before checking it: a
/// multi-TiB allocation that aborted the process. Now it is refused by the first pfn that is
/// not device memory, before anything is allocated.
#[test]
fn a_huge_range_is_refused_before_anything_is_allocated() {
    let (space, p, r) = split_pgmap(Layout::Heads, InitMode::Sync);
    for len in [1u64 << 40, 1 << 50, u64::MAX - r.start().raw()] {
        let huge = PfnRange::new(r.start(), len).expect("range");
        let want = Some(GupError::NoPgmap { pfn: r.end() });
        assert_eq!(p.pin_pages(huge, GupFlags::NONE).err(), want, "{len:#x}");
        assert_eq!(p.get_pages(huge, GupFlags::NONE).err(), want, "{len:#x}");
        assert_eq!(p.pin_folios(huge, GupFlags::NONE).err(), want, "{len:#x}");
        assert_eq!(
            space.pin_pages(huge, GupFlags::NONE).err(),
            want,
            "{len:#x}"
        );
        assert_eq!(
            space.pin_folios(huge, GupFlags::NONE).err(),
            want,
            "{len:#x}"
        );
    }
    assert_idle(&p, r, "after");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any range at all, through every entry point, on a pgmap of two adjacent ranges during
    /// async init: a pin either succeeds with exactly the range's pages or fails, and either
    /// way every folio is idle afterwards.
    #[test]
    fn no_range_aborts_panics_or_leaks(
        start_off in prop_oneof![0u64..5000, Just(0u64), any::<u64>()],
        len in prop_oneof![0u64..5000, any::<u64>()],
        below in any::<bool>(),
    ) {
        let (space, p, r) = split_pgmap(Layout::Vmemmap, InitMode::async_default());
        let start = if below {
            r.start().raw().saturating_sub(start_off % 4096)
        } else {
            r.start().raw().saturating_add(start_off)
        };
        let len = len.min(u64::MAX - start);
        if let Ok(range) = PfnRange::new(Pfn::new(start), len) {
            let inside = r.contains_range(range) && !range.is_empty();
            let a = p.pin_pages(range, GupFlags::NONE);
            let b = space.pin_folios(range, GupFlags::WRITE);
            let c = p.get_pages(range, GupFlags::NONE);
            prop_assert_eq!(a.is_ok(), inside);
            prop_assert_eq!(b.is_ok(), inside);
            prop_assert_eq!(c.is_ok(), inside);
            if let Ok(a) = &a {
                prop_assert_eq!(a.len() as u64, range.len());
            }
            if let Ok(b) = &b {
                prop_assert_eq!(b.nr_pages(), range.len());
            }
        }
        p.sync_all().expect("sync");
        let mut pfn = r.start();
        while pfn < r.end() {
            let f = p.folio(pfn).expect("folio");
            prop_assert_eq!((f.refcount(), f.pincount()), (1, 0));
            pfn = f.range().end();
        }
        prop_assert_eq!(p.refs(), 0);
    }
}

/// The pins behind a pin by user address skip the cover check (the device's range table
/// vouches for the range); a range that is not in fact covered still fails at the first pfn
/// outside, and nothing stays pinned.
#[test]
fn a_device_pin_of_a_range_past_its_pgmap_fails_there_and_holds_nothing() {
    let (_space, [lo, _hi], r) = two_pgmaps(Layout::Heads);
    let across = PfnRange::new(r.start().add(HALF - 512), 1024).expect("range");
    let outside = r.start().add(HALF);
    assert_eq!(
        pin_device_folios(&lo, [across], GupFlags::NONE).map(|p| p.len()),
        Err(GupError::NoPgmap { pfn: outside })
    );
    assert_eq!(
        pin_device_pages(&lo, [across], GupFlags::NONE).map(|p| p.len()),
        Err(GupError::NoPgmap { pfn: outside })
    );
    assert_idle(&lo, PfnRange::new(r.start(), HALF).expect("lo"), "lo");
    let inside = PfnRange::new(r.start(), HALF).expect("lo");
    assert_eq!(
        pin_device_folios(&lo, [inside], GupFlags::NONE).map(|p| p.len()),
        Ok(4)
    );
}
