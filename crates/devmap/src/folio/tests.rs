//! Mappings and the free path: device-dax folios, fsdax dynamic folios (form, pin, split),
//! hwpoison across form and split, busy ranges and layout breaks.

use std::sync::atomic::Ordering as AtOrd;
use std::time::Duration;

use super::*;
use crate::gup::{GupError, GupFlags};
use crate::memmap::Layout;

use crate::test_support::{Fixture, assert_split};

/// 8 MiB aligned to 4 MiB, so an order-10 folio fits at the start.
fn fixture(layout: Layout, order: Order, ty: MemoryType) -> Fixture {
    crate::test_support::fixture(8 << 20, 4 << 20, layout, order, ty)
}

fn fsdax(layout: Layout) -> Fixture {
    fixture(layout, Order::BASE, MemoryType::FsDax)
}

fn range(start: Pfn, len: u64) -> PfnRange {
    PfnRange::new(start, len).expect("range")
}

/// (refcount, mapcount, pincount) of the folio holding `pfn`.
fn counts(p: &Pgmap, pfn: Pfn) -> (i32, i32, i32) {
    let f = p.folio(pfn).expect("folio");
    (f.refcount(), f.mapcount(), f.pincount())
}

fn order(n: u32) -> Order {
    Order::new(n).expect("order")
}

// ---- device-dax ----

#[test]
fn devdax_mappings_take_and_give_back_a_reference_and_a_mapcount() {
    for layout in Layout::ALL {
        for shift in [Order::PMD, Order::BASE] {
            let fx = fixture(layout, shift, MemoryType::Generic);
            let p = &fx.p;
            let head = fx.r.start().add(1024);
            let pfn = if shift == Order::PMD {
                head.add(77)
            } else {
                head
            };
            let ctx = format!("{layout:?} order {}", shift.get());
            assert_eq!(counts(p, pfn), (1, 0, 0), "{ctx}: idle");
            for round in 1..=2 {
                let a = p.map_folio(pfn, Order::BASE).expect("map");
                assert_eq!(a.pfn(), head, "{ctx}: the mapping names the head");
                assert_eq!(counts(p, pfn), (2, 1, 0), "{ctx}");
                let b = p.map_folio(head, shift).expect("map at the folio's order");
                assert_eq!(counts(p, pfn), (3, 2, 0), "{ctx}");
                assert_eq!(p.refs(), 2, "{ctx}: each mapping holds the pgmap");
                assert!(std::ptr::eq(a.pgmap(), &**p));
                drop(a);
                assert_eq!(counts(p, pfn), (2, 1, 0), "{ctx}");
                drop(b);
                assert_eq!(counts(p, pfn), (1, 0, 0), "{ctx}");
                // free_zone_device_folio: a device-dax folio back at 1 calls no driver.
                assert_eq!(fx.frees.load(AtOrd::Relaxed), 0, "{ctx} round {round}");
                assert_eq!(p.refs(), 0, "{ctx}");
            }
            // A pin on a mapped folio: the free path runs once, when the last of them goes.
            let m = p.map_folio(pfn, Order::BASE).expect("map");
            let pin = p.pin_pages(range(pfn, 1), GupFlags::NONE).expect("pin");
            drop(m);
            assert!(
                p.folio(pfn).expect("folio").maybe_dma_pinned(),
                "{ctx}: the pin holds it"
            );
            pin.unpin(false);
            assert_eq!(fx.frees.load(AtOrd::Relaxed), 0, "{ctx}");
            assert_eq!(counts(p, pfn), (1, 0, 0), "{ctx}");
        }
    }
}

#[test]
fn devdax_folios_have_the_pgmaps_order() {
    let fx = fixture(Layout::Vmemmap, Order::PMD, MemoryType::Generic);
    let head = fx.r.start().add(512);
    for (pfn, o) in [
        (head, order(8)),
        (fx.r.start(), order(10)),
        (head, order(1)),
    ] {
        match fx.p.map_folio(pfn, o) {
            Err(FolioError::BadOrder {
                pfn: got,
                order: asked,
                fixed,
            }) => assert_eq!((got, asked, fixed), (pfn, o, Order::PMD)),
            other => panic!("order {}: expected BadOrder, got {other:?}", o.get()),
        }
    }
    assert_eq!(
        counts(&fx.p, head),
        (1, 0, 0),
        "a refused map takes nothing"
    );
    assert_eq!(fx.p.refs(), 0);

    let small = fixture(Layout::Flat, Order::BASE, MemoryType::Generic);
    match small.p.map_folio(small.r.start().add(512), Order::PMD) {
        Err(FolioError::BadOrder {
            order: Order::PMD,
            fixed: Order::BASE,
            ..
        }) => {}
        other => panic!("expected BadOrder, got {other:?}"),
    }
    assert_eq!(counts(&small.p, small.r.start().add(512)), (1, 0, 0));
    assert_eq!(small.p.refs(), 0);
}

#[test]
fn device_private_memory_cannot_be_mapped() {
    let fx = fixture(Layout::Heads, Order::PMD, MemoryType::Private);
    assert!(matches!(
        fx.p.map_folio(fx.r.start(), Order::BASE),
        Err(FolioError::NotAddressable {
            memory_type: MemoryType::Private
        })
    ));
    assert_eq!(counts(&fx.p, fx.r.start()), (0, 0, 0));
    assert_eq!(fx.p.refs(), 0);
}

#[test]
fn a_mapping_blocks_teardown_and_maps_fail_after_it() {
    let fx = fixture(Layout::Flat, Order::PMD, MemoryType::Generic);
    let m = fx.p.map_folio(fx.r.start(), Order::PMD).expect("map");
    assert!(matches!(
        fx.space
            .memunmap_pages(&fx.p, Some(Duration::from_millis(5))),
        Err(PgmapError::Busy { refs: 1 })
    ));
    drop(m);
    fx.space.memunmap_pages(&fx.p, None).expect("teardown");
    assert!(matches!(
        fx.p.map_folio(fx.r.start(), Order::PMD),
        Err(FolioError::TornDown { .. })
    ));
}

// ---- fsdax dynamic folios ----

#[test]
fn fsdax_forms_a_pmd_folio_pins_it_and_splits_it_when_the_last_pin_goes() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let h = fx.r.start().add(512);
        let span = range(h, 512);
        let ctx = format!("{layout:?}");

        let m = p.map_folio(h, Order::PMD).expect("form");
        assert_eq!(m.pfn(), h);
        let f = p.folio(h.add(7)).expect("folio");
        assert_eq!((f.pfn(), f.order()), (h, Order::PMD), "{ctx}");
        assert_eq!(p.order(h.add(7)).expect("order"), Order::PMD);
        for t in [1, 7, 63, 64, 255, 511] {
            assert_eq!(p.compound_head(h.add(t)).expect("head"), h, "{ctx}: +{t}");
        }
        assert_eq!(counts(p, h.add(300)), (1, 1, 0), "{ctx}");
        // The neighbours stay free order-0 pages.
        for n in [Pfn::new(h.raw() - 1), h.add(512)] {
            let g = p.folio(n).expect("neighbour");
            assert_eq!((g.pfn(), g.order(), g.refcount()), (n, Order::BASE, 0));
        }

        let pins = p
            .pin_pages(range(h.add(3), 100), GupFlags::WRITE)
            .expect("pin a formed folio");
        assert_eq!(counts(p, h), (101, 1, 100), "{ctx}");
        let whole = p.pin_folios(span, GupFlags::NONE).expect("pin_folios");
        assert_eq!(whole.len(), 1, "{ctx}: one dynamic folio");
        assert_eq!(
            (whole.entries()[0].head(), whole.entries()[0].order()),
            (h, Order::PMD)
        );
        assert_eq!(counts(p, h), (613, 1, 612), "{ctx}");
        // A pin running into the free page after it fails there and unwinds.
        assert_eq!(
            p.pin_pages(range(h.add(500), 20), GupFlags::NONE).err(),
            Some(GupError::NotMapped { pfn: h.add(512) })
        );
        assert_eq!(counts(p, h), (613, 1, 612), "{ctx}: unwound");

        let again = p
            .map_folio(h, Order::PMD)
            .expect("map the same folio again");
        assert_eq!(again.pfn(), h);
        assert_eq!(counts(p, h), (614, 2, 612), "{ctx}");

        drop(m);
        drop(again);
        assert_eq!(counts(p, h), (612, 0, 612), "{ctx}: pins keep it formed");
        assert_eq!(p.order(h.add(9)).expect("order"), Order::PMD, "{ctx}");
        whole.unpin(true);
        assert_eq!(counts(p, h), (100, 0, 100), "{ctx}");
        assert!(p.folio(h).expect("folio").is_dirty());
        pins.unpin(false);
        assert_split(p, span, &ctx);
        assert_eq!(
            p.pin_pages(range(h, 1), GupFlags::NONE).err(),
            Some(GupError::NotMapped { pfn: h }),
            "{ctx}: a split page is free"
        );
        assert_eq!(p.refs(), 0, "{ctx}");
    }
}

/// Ranges that end part-way into a dynamic folio: every release path gives back exactly what
/// the pin took, and a pin that fails part-way leaves nothing behind, dirty or not.
#[test]
fn fsdax_partial_folio_ranges_release_exactly_what_they_pinned() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let (a, b) = (fx.r.start().add(512), fx.r.start().add(1024));
        let ctx = format!("{layout:?}");
        let maps = (
            p.map_folio(a, Order::PMD).expect("form a"),
            p.map_folio(b, Order::PMD).expect("form b"),
        );
        // 412 pages of folio a, 188 of folio b.
        let r = range(a.add(100), 600);

        let f = p.pin_folios(r, GupFlags::WRITE).expect("pin_folios");
        assert_eq!(f.len(), 2, "{ctx}");
        assert_eq!((counts(p, a), counts(p, b)), ((413, 1, 412), (189, 1, 188)));
        f.unpin(true);
        assert_eq!(
            (counts(p, a), counts(p, b)),
            ((1, 1, 0), (1, 1, 0)),
            "{ctx}"
        );
        assert!(p.folio(a).expect("a").is_dirty() && p.folio(b).expect("b").is_dirty());
        p.folio(a).expect("a").clear_dirty();
        p.folio(b).expect("b").clear_dirty();

        let pg = p.pin_pages(r, GupFlags::WRITE).expect("pin_pages");
        assert_eq!((counts(p, a), counts(p, b)), ((413, 1, 412), (189, 1, 188)));
        pg.unpin_as_range(false);
        assert_eq!(
            (counts(p, a), counts(p, b)),
            ((1, 1, 0), (1, 1, 0)),
            "{ctx}"
        );

        // Past folio b the pages are free: the pin fails there and unwinds both folios.
        let long = range(a.add(100), 1000);
        assert_eq!(
            p.pin_folios(long, GupFlags::NONE).err(),
            Some(GupError::NotMapped { pfn: b.add(512) }),
            "{ctx}"
        );
        assert_eq!(
            (counts(p, a), counts(p, b)),
            ((1, 1, 0), (1, 1, 0)),
            "{ctx}"
        );
        assert!(!p.folio(a).expect("a").is_dirty() && !p.folio(b).expect("b").is_dirty());

        drop(maps);
        assert_split(p, range(a, 1024), &ctx);
        assert_eq!(p.refs(), 0, "{ctx}");
    }
}

/// A grab that raced a reshape gives its references back with the shape it looked up. If that
/// release is the one that makes the head idle, the free path must split the shape the head
/// has now, not the stale one: here the grab saw an order-9 folio at `h` and `h` is now an
/// order-3 folio, so splitting 512 pages would reset a page mapped further on.
#[test]
fn the_free_path_splits_the_heads_current_shape() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let h = fx.r.start().add(512);
        let ctx = format!("{layout:?}");
        let (memmap, s) = p.synced_span(h, 512).expect("sync");

        let m9 = p.map_folio(h, Order::PMD).expect("order 9");
        let stale = memmap.folio(&s, h).expect("folio");
        assert_eq!(stale.order(), Order::PMD);
        drop(m9);
        let m3 = p.map_folio(h, order(3)).expect("order 3 at the same head");
        let other = p
            .map_folio(h.add(100), Order::BASE)
            .expect("a page further on");
        // The racing grab: references on h's word, accounted as the order-9 folio it saw.
        let word = stale.head_page().counts_word();
        refcount::try_grab(word, stale.is_large(), 5, true).expect("h is mapped");
        drop(m3);
        assert_eq!(
            counts(p, h),
            (5, 0, 5),
            "{ctx}: only the raced grab holds h"
        );
        // Its give-back makes h idle and runs the free path.
        FolioRef::walked(p, memmap, s, stale).ungrab(5, true);
        assert_split(p, range(h, 8), &ctx);
        assert_eq!(
            counts(p, h.add(100)),
            (1, 1, 0),
            "{ctx}: the page further on"
        );
        drop(other);
        assert_split(p, range(h, 512), &ctx);
    }
}

#[test]
fn fsdax_splits_when_the_last_mapping_goes() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let h = fx.r.start().add(1024);
        let span = range(h, 512);
        let ctx = format!("{layout:?}");
        for _ in 0..2 {
            let m = p.map_folio(h, Order::PMD).expect("form");
            let pin = p
                .pin_pages(range(h.add(40), 2), GupFlags::NONE)
                .expect("pin");
            pin.unpin(false);
            assert_eq!(counts(p, h.add(1)), (1, 1, 0), "{ctx}: the mapping remains");
            assert_eq!(p.order(h.add(1)).expect("order"), Order::PMD, "{ctx}");
            drop(m);
            assert_split(p, span, &ctx);
            // Once split, each page can be mapped on its own.
            let small = p.map_folio(h.add(5), Order::BASE).expect("order-0 map");
            assert_eq!(counts(p, h.add(5)), (1, 1, 0), "{ctx}");
            assert_eq!(counts(p, h.add(6)), (0, 0, 0), "{ctx}");
            drop(small);
            assert_split(p, span, &ctx);
        }
        assert_eq!(p.refs(), 0);
    }
}

#[test]
fn fsdax_overlapping_maps_of_another_shape_are_busy() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let s = fx.r.start();
        let h = s.add(512);
        let ctx = format!("{layout:?}");
        let m = p.map_folio(h, Order::PMD).expect("form");
        let small = p.map_folio(s.add(1024 + 88), Order::BASE).expect("order 0");
        for (pfn, o, why) in [
            (h.add(5), Order::PMD, "the pfn is not aligned to the order"),
            (h.add(5), Order::BASE, "the pfn is inside a larger folio"),
            (h, Order::BASE, "the pfn is inside a larger folio"),
            (h, order(8), "the pfn is inside a larger folio"),
            (s, order(10), "part of the range is in another folio"),
            (s.add(1024), Order::PMD, "part of the range is in use"),
        ] {
            match p.map_folio(pfn, o) {
                Err(FolioError::Busy {
                    pfn: got,
                    order: asked,
                    why: w,
                }) => assert_eq!((got, asked, w), (pfn, o, why), "{ctx}"),
                other => panic!(
                    "{ctx}: {pfn} order {}: expected Busy, got {other:?}",
                    o.get()
                ),
            }
        }
        // Nothing changed: the folio and the order-0 mapping are as they were.
        assert_eq!(counts(p, h.add(1)), (1, 1, 0), "{ctx}");
        assert_eq!(p.order(h).expect("order"), Order::PMD);
        assert_eq!(counts(p, s.add(1024 + 88)), (1, 1, 0), "{ctx}");
        assert_split(p, range(s, 512), &ctx);
        assert_eq!(p.refs(), 2, "{ctx}: failed maps hold nothing");
        drop((m, small));
        assert_split(p, range(s, 2048), &ctx);
        // The whole area is free again: an order-10 folio now forms at the start.
        let big = p.map_folio(s, order(10)).expect("order 10");
        assert_eq!(p.compound_head(s.add(1023)).expect("head"), s);
        drop(big);
        assert_split(p, range(s, 2048), &ctx);
    }
}

#[test]
fn hwpoison_survives_forming_and_splitting_a_folio() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let h = fx.r.start().add(512);
        let bad = h.add(7);
        let ctx = format!("{layout:?}");
        p.poison_subpage(bad).expect("poison");
        assert!(p.folio(bad).expect("folio").is_poisoned(), "{ctx}");

        let m = p
            .map_folio(h, Order::PMD)
            .expect("form over a poisoned page");
        assert!(p.subpage_poisoned(bad).expect("lookup"), "{ctx}: formed");
        assert!(!p.subpage_poisoned(h.add(8)).expect("lookup"), "{ctx}");
        assert!(!p.subpage_poisoned(h).expect("lookup"), "{ctx}");
        assert!(
            p.folio(h.add(300)).expect("folio").is_poisoned(),
            "{ctx}: a folio holding a poisoned page is poisoned"
        );
        assert_eq!(
            p.pin_pages(range(h, 512), GupFlags::NONE).err(),
            Some(GupError::Poisoned { pfn: bad, folio: h }),
            "{ctx}: the error names the poisoned page, not the folio's first"
        );
        // A pin of part of the folio syncs only that part; the poisoned page outside it is
        // still the one named.
        let part = range(h.add(100), 10);
        let want = Some(GupError::Poisoned { pfn: bad, folio: h });
        assert_eq!(p.pin_pages(part, GupFlags::NONE).err(), want, "{ctx}: part");
        assert_eq!(
            p.pin_folios(part, GupFlags::NONE).err(),
            want,
            "{ctx}: part"
        );
        assert_eq!(counts(p, h), (1, 1, 0), "{ctx}");
        drop(m);

        assert_eq!(p.order(bad).expect("order"), Order::BASE, "{ctx}: split");
        assert!(p.subpage_poisoned(bad).expect("lookup"), "{ctx}: split");
        assert!(p.folio(bad).expect("folio").is_poisoned(), "{ctx}: split");
        for ok in [h, h.add(6), h.add(8), h.add(511)] {
            assert!(!p.subpage_poisoned(ok).expect("lookup"), "{ctx}: {ok}");
            assert!(!p.folio(ok).expect("folio").is_poisoned(), "{ctx}: {ok}");
        }
        let bad_map = p.map_folio(bad, Order::BASE).expect("map the page");
        assert_eq!(
            p.pin_pages(range(bad, 1), GupFlags::NONE).err(),
            Some(GupError::Poisoned {
                pfn: bad,
                folio: bad
            }),
            "{ctx}: still refused after the split"
        );
        let good_map = p.map_folio(h.add(8), Order::BASE).expect("map");
        let pin = p
            .pin_pages(range(h.add(8), 1), GupFlags::NONE)
            .expect("pin");
        drop((pin, good_map, bad_map));

        // Poison that arrives while the folio is formed survives its split as well.
        let m = p.map_folio(h, Order::PMD).expect("form again");
        let late = h.add(100);
        p.poison_subpage(late).expect("poison a tail");
        assert!(p.folio(late).expect("folio").is_poisoned(), "{ctx}");
        drop(m);
        assert_eq!(p.order(late).expect("order"), Order::BASE, "{ctx}: split");
        for pfn in [bad, late] {
            assert!(p.subpage_poisoned(pfn).expect("lookup"), "{ctx}: {pfn}");
            assert!(p.folio(pfn).expect("folio").is_poisoned(), "{ctx}: {pfn}");
        }
        assert!(!p.folio(h).expect("folio").is_poisoned(), "{ctx}");
        assert_eq!(p.refs(), 0);
    }
}

// ---- busy ranges and layout breaks ----

#[test]
fn busy_page_range_sees_pins_and_gets_but_not_mappings() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let s = fx.r.start();
        let h = s.add(512);
        let area = range(s, 2048);
        let ctx = format!("{layout:?}");
        assert_eq!(p.busy_page_range(area).expect("busy"), None, "{ctx}");
        let m = p.map_folio(h, Order::PMD).expect("form");
        let small = p.map_folio(s.add(1500), Order::BASE).expect("map");
        let twice = p.map_folio(s.add(1500), Order::BASE).expect("map again");
        assert_eq!(p.busy_page_range(area).expect("busy"), None, "{ctx}");

        let pin = p
            .pin_pages(range(h.add(30), 4), GupFlags::NONE)
            .expect("pin");
        assert_eq!(p.busy_page_range(area).expect("busy"), Some(h), "{ctx}");
        // A range that starts inside the pinned folio reports its own first pfn.
        assert_eq!(
            p.busy_page_range(range(h.add(100), 10)).expect("busy"),
            Some(h.add(100))
        );
        assert_eq!(p.busy_page_range(range(s, 512)).expect("busy"), None);
        let get = p
            .get_pages(range(s.add(1500), 1), GupFlags::NONE)
            .expect("get");
        pin.unpin(false);
        assert_eq!(
            p.busy_page_range(area).expect("busy"),
            Some(s.add(1500)),
            "{ctx}: a plain reference is busy too"
        );
        drop(get);
        assert_eq!(p.busy_page_range(area).expect("busy"), None, "{ctx}");
        drop((m, small, twice));
        assert_eq!(p.busy_page_range(area).expect("busy"), None, "{ctx}");
    }
}

#[test]
fn devdax_busy_page_range_accounts_for_the_idle_reference() {
    let fx = fixture(Layout::Heads, Order::PMD, MemoryType::Generic);
    let p = &fx.p;
    let r = fx.r;
    let m = p.map_folio(r.start().add(1100), Order::BASE).expect("map");
    assert_eq!(p.busy_page_range(r).expect("busy"), None);
    let pin = p
        .pin_folios(range(r.start().add(1700), 3), GupFlags::NONE)
        .expect("pin");
    assert_eq!(
        p.busy_page_range(r).expect("busy"),
        Some(r.start().add(1536))
    );
    drop((pin, m));
    assert_eq!(p.busy_page_range(r).expect("busy"), None);
}

#[test]
fn break_layouts_returns_once_another_thread_unpins() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let h = fx.r.start().add(512);
        let area = range(fx.r.start(), 2048);
        let m = p.map_folio(h, Order::PMD).expect("form");
        let small = p.map_folio(h.add(700), Order::BASE).expect("map");
        // One pin under a mapping (its put wakes the waiter), one on a folio whose last
        // reference it is (the free path splits it and wakes the waiter).
        let pins = [
            p.pin_pages(range(h.add(10), 5), GupFlags::NONE)
                .expect("pin"),
            p.pin_pages(range(h.add(700), 1), GupFlags::NONE)
                .expect("pin"),
        ];
        drop(small);
        assert!(p.busy_page_range(area).expect("busy").is_some());
        std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(pins);
            });
            p.break_layouts(area, None).expect("break_layouts");
        });
        assert_eq!(p.busy_page_range(area).expect("busy"), None);
        assert_eq!(counts(p, h.add(700)), (0, 0, 0), "{layout:?}");
        assert_eq!(counts(p, h), (1, 1, 0), "{layout:?}");
        drop(m);
        assert_split(p, area, &format!("{layout:?}"));
    }
}

#[test]
fn break_layouts_gives_up_on_a_pin_held_forever() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let h = fx.r.start().add(1024);
        let m = p.map_folio(h.add(9), Order::BASE).expect("map");
        let pin = p
            .pin_folios(range(h.add(9), 1), GupFlags::NONE)
            .expect("pin");
        match p.break_layouts(range(h, 512), Some(Duration::from_millis(10))) {
            Err(FolioError::StillBusy { pfn, .. }) => assert_eq!(pfn, h.add(9), "{layout:?}"),
            other => panic!("{layout:?}: expected StillBusy, got {other:?}"),
        }
        assert_eq!(
            counts(p, h.add(9)),
            (1 + 1024, 1, 0),
            "{layout:?}: untouched"
        );
        assert_eq!(p.layout_waiters().load(Ordering::Relaxed), 0, "{layout:?}");
        drop(pin);
        p.break_layouts(range(h, 512), Some(Duration::from_millis(10)))
            .expect("idle now");
        drop(m);
    }
}

#[test]
fn drivers_allocate_coherent_folios_before_mapping_them_and_free_them_with_a_put() {
    let fx = fixture(Layout::Flat, Order::PMD, MemoryType::Coherent);
    let h = fx.r.start().add(512);
    assert!(matches!(
        fx.p.map_folio(h, Order::BASE),
        Err(FolioError::Free { pfn }) if pfn == h
    ));
    let alloc = fx.p.alloc_folio(h.add(3)).expect("allocate");
    assert_eq!((alloc.pfn(), counts(&fx.p, h)), (h, (1, 0, 0)));
    assert!(matches!(fx.p.alloc_folio(h), Err(FolioError::Busy { .. })));
    let map =
        fx.p.map_folio(h, Order::BASE)
            .expect("map an allocated folio");
    assert_eq!(counts(&fx.p, h), (2, 1, 0));
    drop(map);
    assert_eq!(
        fx.frees.load(AtOrd::Relaxed),
        0,
        "the allocation still holds it"
    );
    drop(alloc);
    assert_eq!(
        fx.frees.load(AtOrd::Relaxed),
        1,
        "the driver's put runs folio_free"
    );
    assert_eq!(counts(&fx.p, h), (0, 0, 0));
    assert_eq!(fx.p.refs(), 0);
}

#[test]
fn only_driver_memory_is_allocated_and_only_fsdax_breaks_layouts() {
    let dax = fixture(Layout::Heads, Order::PMD, MemoryType::Generic);
    assert!(matches!(
        dax.p.alloc_folio(dax.r.start()),
        Err(FolioError::NotDriverAllocated {
            memory_type: MemoryType::Generic
        })
    ));
    assert!(matches!(
        dax.p.break_layouts(dax.r, None),
        Err(FolioError::NotFsdax {
            memory_type: MemoryType::Generic
        })
    ));
    let fs = fsdax(Layout::Flat);
    assert!(matches!(
        fs.p.alloc_folio(fs.r.start()),
        Err(FolioError::NotDriverAllocated { .. })
    ));
    fs.p.break_layouts(fs.r, None)
        .expect("an idle fsdax range breaks at once");
}

#[test]
fn unpoisoning_clears_the_page_and_then_the_folio_in_every_layout() {
    for layout in Layout::ALL {
        let fx = fsdax(layout);
        let p = &fx.p;
        let h = fx.r.start().add(512);
        let ctx = format!("{layout:?}");
        let m = p.map_folio(h, Order::PMD).expect("form");
        let (a, b) = (h.add(7), h.add(300));
        p.poison_subpage(a).expect("poison a");
        p.poison_subpage(b).expect("poison b");
        assert_eq!(p.folio_poisoned_page(h).expect("lookup"), Some(a), "{ctx}");

        assert!(p.unpoison_subpage(a).expect("unpoison a"), "{ctx}");
        assert!(
            !p.unpoison_subpage(a).expect("again"),
            "{ctx}: was not poisoned"
        );
        assert!(!p.subpage_poisoned(a).expect("lookup"), "{ctx}");
        assert!(
            p.folio(h).expect("folio").is_poisoned(),
            "{ctx}: b still is"
        );
        assert_eq!(p.folio_poisoned_page(h).expect("lookup"), Some(b), "{ctx}");

        assert!(p.unpoison_subpage(b).expect("unpoison b"), "{ctx}");
        assert!(
            !p.folio(h).expect("folio").is_poisoned(),
            "{ctx}: clean again"
        );
        assert_eq!(p.folio_poisoned_page(h).expect("lookup"), None, "{ctx}");
        let pin = p
            .pin_pages(range(h, 512), GupFlags::NONE)
            .expect("a clean folio pins again");
        drop(pin);
        drop(m);
    }
}
