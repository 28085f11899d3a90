//! Pin and get accounting on every layout, the unpin variants, error unwinding and teardown
//! ordering.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::addr::Order;
use crate::desc::GUP_PIN_COUNTING_BIAS as BIAS;
use crate::folio::FolioError;
use crate::memmap::Layout;
use crate::pgmap::{MemoryType, PgmapError};

/// 16 MiB: 4096 pfns, eight 2 MiB folios.
const BYTES: u64 = 16 << 20;

use crate::test_support::Fixture;

fn fixture(layout: Layout, order: Order, ty: MemoryType) -> Fixture {
    crate::test_support::fixture(BYTES, 2 << 20, layout, order, ty)
}

fn devdax(layout: Layout, order: Order) -> Fixture {
    fixture(layout, order, MemoryType::Generic)
}

fn range(start: Pfn, end: Pfn) -> PfnRange {
    PfnRange::from_bounds(start, end).expect("range")
}

/// (refcount, pincount) of the folio holding `pfn`.
fn counts(p: &Pgmap, pfn: Pfn) -> (i32, i32) {
    let f = p.folio(pfn).expect("folio");
    (f.refcount(), f.pincount())
}

fn pinned(p: &Pgmap, pfn: Pfn) -> bool {
    p.folio(pfn).expect("folio").maybe_dma_pinned()
}

fn dirty(p: &Pgmap, pfn: Pfn) -> bool {
    p.folio(pfn).expect("folio").is_dirty()
}

/// Every folio of the pgmap is at `idle` with no pins.
fn assert_all_idle(p: &Pgmap, idle: i32, what: &str) {
    let r = p.ranges().next().expect("range");
    let mut pfn = r.start();
    while pfn < r.end() {
        let f = p.folio(pfn).expect("folio");
        assert_eq!(
            (f.refcount(), f.pincount()),
            (idle, 0),
            "{what}: folio {}",
            f.pfn()
        );
        assert!(!f.maybe_dma_pinned(), "{what}: folio {}", f.pfn());
        pfn = f.range().end();
    }
}

/// A range that starts and ends inside folios, with the folios it touches and how many of
/// their pages: for order 9, 412 pages of folio 0, all of folios 1 and 2, 50 pages of folio 3;
/// for order 0, 40 single-page folios.
struct Case {
    range: PfnRange,
    /// (head, pages covered) of the first, a middle and the last folio touched.
    probes: [(Pfn, i32); 3],
    /// Heads of every folio touched, in order.
    heads: Vec<Pfn>,
    /// Pfns right outside the touched folios.
    outside: [Pfn; 2],
}

fn case(r: PfnRange, order: Order) -> Case {
    let s = r.start();
    if order == Order::PMD {
        Case {
            range: range(s.add(100), s.add(3 * 512 + 50)),
            probes: [(s, 412), (s.add(1024), 512), (s.add(1536), 50)],
            heads: vec![s, s.add(512), s.add(1024), s.add(1536)],
            outside: [s.add(2048), s.add(4095)],
        }
    } else {
        Case {
            range: range(s.add(100), s.add(140)),
            probes: [(s.add(100), 1), (s.add(120), 1), (s.add(139), 1)],
            heads: (100..140).map(|i| s.add(i)).collect(),
            outside: [s.add(99), s.add(140)],
        }
    }
}

/// What `refs` pins add to (refcount, pincount) of a folio of `order`.
fn pin_delta(order: Order, refs: i32) -> (i32, i32) {
    if order.get() > 0 {
        (refs, refs)
    } else {
        (refs * BIAS, 0)
    }
}

#[test]
fn pins_and_gets_are_accounted_per_folio_on_every_layout() {
    for layout in Layout::ALL {
        for order in [Order::PMD, Order::BASE] {
            let fx = devdax(layout, order);
            let p = &fx.p;
            let c = case(fx.r, order);
            let ctx = format!("{layout:?} order {}", order.get());

            let pages = p.pin_pages(c.range, GupFlags::NONE).expect("pin_pages");
            assert_eq!(
                pages.len() as u64,
                c.range.len(),
                "{ctx}: one entry per 4 KiB"
            );
            for (i, pfn) in pages.entries().iter().enumerate() {
                assert_eq!(*pfn, c.range.start().add(i as u64), "{ctx}: entry {i}");
            }
            assert_eq!(p.refs(), 1, "{ctx}: the pin holds the pgmap");
            for (head, n) in c.probes {
                let (dr, dp) = pin_delta(order, n);
                assert_eq!(counts(p, head), (1 + dr, dp), "{ctx}: pinned {head}");
                assert!(pinned(p, head), "{ctx}: {head}");
            }
            for pfn in c.outside {
                assert_eq!(counts(p, pfn), (1, 0), "{ctx}: untouched {pfn}");
                assert!(!pinned(p, pfn), "{ctx}: {pfn}");
            }

            let folios = p.pin_folios(c.range, GupFlags::NONE).expect("pin_folios");
            assert_eq!(folios.len(), c.heads.len(), "{ctx}: one entry per folio");
            assert_eq!(folios.nr_pages(), c.range.len());
            for (i, (f, head)) in folios.entries().iter().zip(&c.heads).enumerate() {
                assert_eq!(f.head(), *head, "{ctx}: folio {i}");
                assert_eq!(f.order(), order, "{ctx}: folio {i}");
                let want = range(
                    (*head).max(c.range.start()),
                    head.add(order.nr_pages()).min(c.range.end()),
                );
                assert_eq!(f.range(), want, "{ctx}: folio {i}");
            }
            let covered: u64 = folios.entries().iter().map(|f| f.range().len()).sum();
            assert_eq!(covered, c.range.len(), "{ctx}");
            for (head, n) in c.probes {
                let (dr, dp) = pin_delta(order, 2 * n);
                assert_eq!(counts(p, head), (1 + dr, dp), "{ctx}: pinned twice {head}");
            }

            let gets = p.get_pages(c.range, GupFlags::NONE).expect("get_pages");
            assert_eq!(gets.len() as u64, c.range.len());
            for (head, n) in c.probes {
                let (dr, dp) = pin_delta(order, 2 * n);
                assert_eq!(counts(p, head), (1 + dr + n, dp), "{ctx}: + gets {head}");
            }
            assert_eq!(p.refs(), 3, "{ctx}: one liveness reference per result");

            pages.unpin(false);
            for (head, n) in c.probes {
                let (dr, dp) = pin_delta(order, n);
                assert_eq!(
                    counts(p, head),
                    (1 + dr + n, dp),
                    "{ctx}: one pin left {head}"
                );
            }
            folios.unpin(false);
            for (head, n) in c.probes {
                assert_eq!(counts(p, head), (1 + n, 0), "{ctx}: gets left {head}");
            }
            assert_eq!(
                fx.frees.load(Ordering::Relaxed),
                0,
                "{ctx}: nothing idle yet"
            );
            drop(gets);
            assert_all_idle(p, 1, &ctx);
            assert_eq!(
                fx.frees.load(Ordering::Relaxed),
                0,
                "{ctx}: device-dax folios go idle without folio_free"
            );
            assert_eq!(p.refs(), 0, "{ctx}");
        }
    }
}

#[test]
fn plain_gets_never_look_dma_pinned() {
    for layout in Layout::ALL {
        for order in [Order::PMD, Order::BASE] {
            let fx = devdax(layout, order);
            let c = case(fx.r, order);
            let gets = fx.p.get_pages(c.range, GupFlags::WRITE).expect("get_pages");
            assert_eq!(gets.flags(), GupFlags::WRITE);
            for (head, n) in c.probes {
                assert_eq!(counts(&fx.p, head), (1 + n, 0), "{layout:?} {head}");
                assert!(!pinned(&fx.p, head), "{layout:?} {head}");
            }
            gets.unpin(false);
            assert_all_idle(&fx.p, 1, "after gets");
        }
    }
}

#[test]
fn devdax_folio_range_spanning_the_whole_pgmap() {
    let fx = devdax(Layout::Vmemmap, Order::PMD);
    let pins = fx.p.pin_folios(fx.r, GupFlags::LONGTERM).expect("pin");
    assert_eq!(pins.len(), 8);
    assert!(pins.entries().iter().all(|f| f.range().len() == 512));
    assert_eq!(counts(&fx.p, fx.r.start().add(4095)), (513, 512));
    drop(pins);
    assert_all_idle(&fx.p, 1, "after drop");
    assert_eq!(
        fx.frees.load(Ordering::Relaxed),
        0,
        "device-dax: no folio_free"
    );
}

/// The ways a [`Pinned<Pages>`] or [`Pinned<Folios>`] gives its references back.
#[derive(Debug, Clone, Copy)]
enum Release {
    UnpinUserPages,
    PagesDirtyLock(bool),
    PageRangeDirtyLock(bool),
    DropPages,
    UnpinFolios(bool),
    DropFolios,
    GetThenUnpin,
    GetThenDrop,
    /// `unpin_keep_buffer` of pages pinned into a caller's buffer.
    PagesKeepBuffer(bool),
    /// `unpin_keep_buffer` of folios pinned into a caller's buffer.
    FoliosKeepBuffer(bool),
}

impl Release {
    const ALL: [Release; 15] = [
        Release::UnpinUserPages,
        Release::PagesDirtyLock(true),
        Release::PagesDirtyLock(false),
        Release::PageRangeDirtyLock(true),
        Release::PageRangeDirtyLock(false),
        Release::DropPages,
        Release::UnpinFolios(true),
        Release::UnpinFolios(false),
        Release::DropFolios,
        Release::GetThenUnpin,
        Release::GetThenDrop,
        Release::PagesKeepBuffer(true),
        Release::PagesKeepBuffer(false),
        Release::FoliosKeepBuffer(true),
        Release::FoliosKeepBuffer(false),
    ];

    fn dirties(self) -> bool {
        matches!(
            self,
            Release::PagesDirtyLock(true)
                | Release::PageRangeDirtyLock(true)
                | Release::UnpinFolios(true)
                | Release::PagesKeepBuffer(true)
                | Release::FoliosKeepBuffer(true)
        )
    }

    /// Takes the references this variant gives back (checking them on the first folio of the
    /// case), then gives them back that way.
    fn take_and_release(self, p: &Arc<Pgmap>, c: &Case, order: Order) {
        let (head, n) = c.probes[0];
        let held = |want: (i32, i32)| {
            assert_eq!(counts(p, head), (1 + want.0, want.1), "{self:?} while held");
        };
        match self {
            Release::UnpinFolios(_) | Release::DropFolios => {
                let f = p.pin_folios(c.range, GupFlags::WRITE).expect("pin_folios");
                held(pin_delta(order, n));
                match self {
                    Release::UnpinFolios(d) => f.unpin(d),
                    _ => drop(f),
                }
            }
            Release::PagesKeepBuffer(d) => {
                let pg = p
                    .pin_pages_into(c.range, GupFlags::WRITE, Vec::new())
                    .expect("pin_pages_into");
                held(pin_delta(order, n));
                assert!(pg.unpin_keep_buffer(d).is_empty());
            }
            Release::FoliosKeepBuffer(d) => {
                let f = p
                    .pin_folios_into(c.range, GupFlags::WRITE, Vec::new())
                    .expect("pin_folios_into");
                held(pin_delta(order, n));
                assert!(f.unpin_keep_buffer(d).is_empty());
            }
            Release::GetThenUnpin | Release::GetThenDrop => {
                let g = p.get_pages(c.range, GupFlags::NONE).expect("get_pages");
                held((n, 0));
                match self {
                    Release::GetThenUnpin => g.unpin(false),
                    _ => drop(g),
                }
            }
            _ => {
                let pg = p.pin_pages(c.range, GupFlags::WRITE).expect("pin_pages");
                held(pin_delta(order, n));
                match self {
                    Release::UnpinUserPages => pg.unpin(false),
                    Release::PagesDirtyLock(d) => pg.unpin(d),
                    Release::PageRangeDirtyLock(d) => pg.unpin_as_range(d),
                    _ => drop(pg),
                }
            }
        }
    }
}

#[test]
fn every_unpin_variant_releases_everything_and_dirties_as_asked() {
    for layout in Layout::ALL {
        for order in [Order::PMD, Order::BASE] {
            for rel in Release::ALL {
                let fx = devdax(layout, order);
                let c = case(fx.r, order);
                let ctx = format!("{layout:?} order {} {rel:?}", order.get());
                rel.take_and_release(&fx.p, &c, order);
                assert_all_idle(&fx.p, 1, &ctx);
                assert_eq!(fx.p.refs(), 0, "{ctx}: liveness reference released");
                assert_eq!(
                    fx.frees.load(Ordering::Relaxed),
                    0,
                    "{ctx}: device-dax folios go idle without folio_free"
                );
                for h in &c.heads {
                    assert_eq!(dirty(&fx.p, *h), rel.dirties(), "{ctx}: folio {h}");
                }
                for pfn in c.outside {
                    assert!(!dirty(&fx.p, pfn), "{ctx}: untouched {pfn}");
                }
            }
        }
    }
}

/// A caller's buffer is emptied before it is filled, is the same allocation when it comes back,
/// and a refill from it pins exactly what a fresh call would.
#[test]
fn pins_into_a_reused_buffer_match_fresh_pins_and_keep_the_allocation() {
    for layout in Layout::ALL {
        let fx = devdax(layout, Order::PMD);
        let c = case(fx.r, Order::PMD);
        let fresh = fx.p.pin_pages(c.range, GupFlags::NONE).expect("pin");
        let want = fresh.entries().to_vec();
        fresh.unpin(false);

        let junk = vec![Pfn::new(7); 10_000];
        let ptr = junk.as_ptr();
        let pg =
            fx.p.pin_pages_into(c.range, GupFlags::NONE, junk)
                .expect("into");
        assert_eq!(
            pg.entries(),
            want.as_slice(),
            "{layout:?}: stale entries cleared"
        );
        assert_eq!(
            pg.entries().as_ptr(),
            ptr,
            "{layout:?}: big enough, not reallocated"
        );
        let buf = pg.unpin_keep_buffer(false);
        assert_eq!(
            (buf.len(), buf.as_ptr()),
            (0, ptr),
            "{layout:?}: handed back"
        );
        let pg =
            fx.p.get_pages_into(c.range, GupFlags::NONE, buf)
                .expect("get");
        assert_eq!(
            counts(&fx.p, c.probes[1].0),
            (1 + 512, 0),
            "{layout:?}: a get"
        );
        drop(pg);

        let f = fx.p.pin_folios(c.range, GupFlags::NONE).expect("folios");
        let want = f.entries().to_vec();
        let buf = f.unpin_keep_buffer(false);
        let ptr = buf.as_ptr();
        let again =
            fx.p.pin_folios_into(c.range, GupFlags::NONE, buf)
                .expect("into");
        assert_eq!(again.entries(), want.as_slice(), "{layout:?}");
        assert_eq!(again.entries().as_ptr(), ptr, "{layout:?}: same allocation");
        drop(again);
        assert_all_idle(&fx.p, 1, &format!("{layout:?}"));
        assert_eq!(fx.p.refs(), 0);
    }
}

#[test]
fn dirty_unpin_of_an_already_dirty_folio_keeps_it_dirty() {
    let fx = devdax(Layout::Flat, Order::PMD);
    let c = case(fx.r, Order::PMD);
    let pg = fx.p.pin_pages(c.range, GupFlags::WRITE).expect("pin");
    fx.p.folio(c.probes[0].0).expect("folio").mark_dirty();
    pg.unpin(true);
    for h in &c.heads {
        assert!(dirty(&fx.p, *h), "{h}");
    }
    let f = fx.p.folio(c.probes[0].0).expect("folio");
    f.clear_dirty();
    assert!(!f.is_dirty());
    assert_all_idle(&fx.p, 1, "after");
}

// ---- error paths: every failure leaves nothing pinned ----

#[test]
fn empty_ranges_are_refused() {
    let fx = devdax(Layout::Heads, Order::PMD);
    let empty = range(fx.r.start().add(5), fx.r.start().add(5));
    assert_eq!(
        fx.p.pin_pages(empty, GupFlags::NONE).err(),
        Some(GupError::Empty)
    );
    assert_eq!(
        fx.p.pin_folios(empty, GupFlags::NONE).err(),
        Some(GupError::Empty)
    );
    assert_eq!(
        fx.p.get_pages(empty, GupFlags::NONE).err(),
        Some(GupError::Empty)
    );
    assert_eq!(
        fx.space.pin_pages(empty, GupFlags::NONE).err(),
        Some(GupError::Empty)
    );
    assert_all_idle(&fx.p, 1, "after empty pins");
    assert_eq!(fx.p.refs(), 0);
}

#[test]
fn a_range_running_past_the_pgmap_names_the_first_uncovered_pfn() {
    for layout in Layout::ALL {
        for order in [Order::PMD, Order::BASE] {
            let fx = devdax(layout, order);
            let past = range(fx.r.start().add(4000), fx.r.end().add(10));
            let want = Some(GupError::NoPgmap { pfn: fx.r.end() });
            assert_eq!(fx.p.pin_pages(past, GupFlags::NONE).err(), want);
            assert_eq!(fx.p.pin_folios(past, GupFlags::NONE).err(), want);
            assert_eq!(fx.p.get_pages(past, GupFlags::NONE).err(), want);
            assert_eq!(fx.space.pin_pages(past, GupFlags::NONE).err(), want);
            assert_eq!(fx.space.pin_folios(past, GupFlags::NONE).err(), want);
            assert_all_idle(&fx.p, 1, &format!("{layout:?}"));
            assert_eq!(fx.p.refs(), 0);
        }
    }
}

#[test]
fn the_device_space_refuses_pfns_without_a_pgmap() {
    let fx = devdax(Layout::Flat, Order::PMD);
    let bare = fx
        .space
        .reserve_range(2 << 20, 2 << 20)
        .expect("a range with no pgmap");
    let want = Some(GupError::NoPgmap { pfn: bare.start() });
    assert_eq!(fx.space.pin_pages(bare, GupFlags::NONE).err(), want);
    assert_eq!(fx.space.pin_folios(bare, GupFlags::NONE).err(), want);
    // Through the space, a pgmap's own pfns pin fine.
    let ok = fx
        .space
        .pin_folios(range(fx.r.start(), fx.r.start().add(600)), GupFlags::NONE)
        .expect("pin through the space");
    assert_eq!(ok.len(), 2);
    assert_eq!(fx.p.refs(), 1);
    drop(ok);
    assert_all_idle(&fx.p, 1, "after");
}

#[test]
fn pins_after_teardown_fail_torn_down_for_good() {
    let fx = devdax(Layout::Vmemmap, Order::PMD);
    let rr = range(fx.r.start().add(1), fx.r.start().add(3));
    fx.space.memunmap_pages(&fx.p, None).expect("teardown");
    let dead = Some(GupError::TornDown {
        pfn: rr.start(),
        may_revive: false,
    });
    assert_eq!(fx.p.pin_pages(rr, GupFlags::NONE).err(), dead);
    assert_eq!(fx.p.pin_folios(rr, GupFlags::NONE).err(), dead);
    assert_eq!(fx.p.get_pages(rr, GupFlags::NONE).err(), dead);
    assert_eq!(
        fx.space.pin_pages(rr, GupFlags::NONE).err(),
        Some(GupError::NoPgmap { pfn: rr.start() }),
        "unregistered: the space finds nothing"
    );
    let (m, s) = fx.p.audit(0).expect("range 0");
    let f = m.folio(&s, rr.start()).expect("audit");
    assert_eq!((f.refcount(), f.pincount()), (1, 0));
}

#[test]
fn a_poisoned_folio_mid_range_fails_and_unwinds_what_came_before() {
    for layout in Layout::ALL {
        for order in [Order::PMD, Order::BASE] {
            let fx = devdax(layout, order);
            let p = &fx.p;
            let c = case(fx.r, order);
            let ctx = format!("{layout:?} order {}", order.get());
            // Poison a page of the third folio touched (not its head for order 9).
            let bad_head = c.heads[2];
            let bad = if order == Order::PMD {
                bad_head.add(37)
            } else {
                bad_head
            };
            p.poison_subpage(bad).expect("poison");
            assert!(p.subpage_poisoned(bad).expect("poisoned"));
            // The error names the poisoned page and its folio, whatever pfn the range
            // entered the folio at (order 0: they are the same page).
            let want = Some(GupError::Poisoned {
                pfn: bad,
                folio: bad_head,
            });
            assert_eq!(p.pin_pages(c.range, GupFlags::NONE).err(), want, "{ctx}");
            assert_eq!(p.pin_folios(c.range, GupFlags::NONE).err(), want, "{ctx}");
            assert_eq!(p.get_pages(c.range, GupFlags::NONE).err(), want, "{ctx}");
            assert_all_idle(p, 1, &ctx);
            assert_eq!(p.refs(), 0, "{ctx}");
            assert_eq!(
                fx.frees.load(Ordering::Relaxed),
                0,
                "{ctx}: unwinds return device-dax folios to idle without folio_free"
            );
            for h in &c.heads {
                assert!(!dirty(p, *h), "{ctx}: an unwind leaves {h} clean");
            }
            // The pages before it still pin.
            let before = range(c.range.start(), bad_head);
            let ok = p
                .pin_pages(before, GupFlags::NONE)
                .expect("before the poison");
            assert_eq!(ok.len() as u64, before.len());
            drop(ok);
            assert_all_idle(p, 1, &ctx);
        }
    }
}

#[test]
fn longterm_pins_are_refused_on_fsdax_and_coherent_only() {
    for ty in [MemoryType::FsDax, MemoryType::Coherent] {
        let fx = fixture(Layout::Flat, Order::BASE, ty);
        let rr = range(fx.r.start(), fx.r.start().add(4));
        let want = Some(GupError::LongtermNotPinnable { memory_type: ty });
        assert_eq!(fx.p.pin_pages(rr, GupFlags::LONGTERM).err(), want);
        assert_eq!(
            fx.p.pin_folios(rr, GupFlags::LONGTERM | GupFlags::WRITE)
                .err(),
            want
        );
        assert_eq!(fx.space.pin_pages(rr, GupFlags::LONGTERM).err(), want);
        assert_all_idle(&fx.p, 0, &format!("{ty:?}"));
        assert_eq!(fx.p.refs(), 0);
    }
    let fx = devdax(Layout::Flat, Order::PMD);
    let c = case(fx.r, Order::PMD);
    let lt =
        fx.p.pin_pages(c.range, GupFlags::LONGTERM | GupFlags::WRITE)
            .expect("device-dax is long-term pinnable");
    assert_eq!(lt.flags(), GupFlags::LONGTERM | GupFlags::WRITE);
    assert_eq!(counts(&fx.p, c.probes[1].0), (513, 512));
    drop(lt);
    assert_all_idle(&fx.p, 1, "after");
}

#[test]
fn device_private_memory_is_not_addressable() {
    let fx = fixture(Layout::Vmemmap, Order::PMD, MemoryType::Private);
    let rr = range(fx.r.start(), fx.r.start().add(1));
    let want = Some(GupError::NotAddressable {
        memory_type: MemoryType::Private,
    });
    assert_eq!(fx.p.pin_pages(rr, GupFlags::NONE).err(), want);
    assert_eq!(fx.p.pin_folios(rr, GupFlags::NONE).err(), want);
    assert_eq!(fx.p.get_pages(rr, GupFlags::PCI_P2PDMA).err(), want);
    assert_all_idle(&fx.p, 0, "private");
    assert_eq!(fx.p.refs(), 0);
}

#[test]
fn p2pdma_needs_the_flag_and_an_allocated_folio() {
    for order in [Order::PMD, Order::BASE] {
        let fx = fixture(Layout::Heads, order, MemoryType::P2pDma);
        let p = &fx.p;
        let c = case(fx.r, order);
        assert_eq!(
            p.pin_pages(c.range, GupFlags::NONE).err(),
            Some(GupError::P2pdmaNotRequested)
        );
        assert_eq!(
            p.pin_folios(c.range, GupFlags::LONGTERM).err(),
            Some(GupError::P2pdmaNotRequested)
        );
        // With the flag, a free folio (count 0) is still not pinnable.
        assert_eq!(
            p.pin_pages(c.range, GupFlags::PCI_P2PDMA).err(),
            Some(GupError::NotMapped {
                pfn: c.range.start()
            })
        );
        assert_all_idle(p, 0, "refused");
        let allocs: Vec<_> = c
            .heads
            .iter()
            .map(|h| p.alloc_folio(*h).expect("allocate"))
            .collect();
        assert!(matches!(
            p.alloc_folio(c.heads[0]),
            Err(crate::folio::FolioError::Busy { .. })
        ));
        let pins = p
            .pin_pages(c.range, GupFlags::PCI_P2PDMA | GupFlags::WRITE)
            .expect("p2pdma pin with the flag");
        for (head, n) in c.probes {
            let (dr, dp) = pin_delta(order, n);
            assert_eq!(counts(p, head), (1 + dr, dp), "{head}");
        }
        pins.unpin(true);
        assert_eq!(fx.frees.load(Ordering::Relaxed), 0, "allocation still held");
        for (h, a) in c.heads.iter().zip(allocs) {
            assert_eq!(counts(p, *h), (1, 0), "{h}");
            assert!(dirty(p, *h));
            assert_eq!(a.pfn(), *h);
            drop(a);
        }
        assert_eq!(fx.frees.load(Ordering::Relaxed), c.heads.len());
        assert_all_idle(p, 0, "freed");
        assert_eq!(p.refs(), 0);
    }
}

#[test]
fn coherent_memory_pins_short_term_once_allocated() {
    let fx = fixture(Layout::Vmemmap, Order::PMD, MemoryType::Coherent);
    let h = fx.r.start().add(512);
    let alloc = fx.p.alloc_folio(h.add(7)).expect("allocate");
    let pin =
        fx.p.pin_folios(range(h.add(2), h.add(12)), GupFlags::WRITE)
            .expect("short-term pin");
    assert_eq!(counts(&fx.p, h), (11, 10));
    assert_eq!(
        fx.p.pin_folios(range(h, h.add(1)), GupFlags::LONGTERM)
            .err(),
        Some(GupError::LongtermNotPinnable {
            memory_type: MemoryType::Coherent
        })
    );
    assert_eq!(counts(&fx.p, h), (11, 10), "a refused pin takes nothing");
    drop(pin);
    drop(alloc);
    assert_eq!(fx.frees.load(Ordering::Relaxed), 1);
    assert_all_idle(&fx.p, 0, "freed");
}

#[test]
fn free_fsdax_folios_are_not_mapped_and_partial_pins_unwind() {
    for layout in Layout::ALL {
        let fx = fixture(layout, Order::BASE, MemoryType::FsDax);
        let p = &fx.p;
        let s = fx.r.start();
        let rr = range(s.add(10), s.add(14));
        assert_eq!(
            p.pin_pages(rr, GupFlags::NONE).err(),
            Some(GupError::NotMapped { pfn: s.add(10) })
        );
        // Map the first two pages: the pin gets that far, then finds s+12 free and unwinds.
        let m0 = p.map_folio(s.add(10), Order::BASE).expect("map");
        let m1 = p.map_folio(s.add(11), Order::BASE).expect("map");
        for pin in [
            p.pin_pages(rr, GupFlags::WRITE).err(),
            p.pin_folios(rr, GupFlags::NONE).err(),
            p.get_pages(rr, GupFlags::NONE).err(),
        ] {
            assert_eq!(
                pin,
                Some(GupError::NotMapped { pfn: s.add(12) }),
                "{layout:?}"
            );
            assert_eq!(counts(p, s.add(10)), (1, 0), "{layout:?}: unwound");
            assert_eq!(counts(p, s.add(11)), (1, 0), "{layout:?}: unwound");
            assert_eq!(counts(p, s.add(12)), (0, 0), "{layout:?}");
        }
        assert_eq!(p.refs(), 2, "only the two mappings");
        let ok = p
            .pin_pages(range(s.add(10), s.add(12)), GupFlags::NONE)
            .expect("mapped pages pin");
        assert_eq!(counts(p, s.add(11)), (1 + BIAS, 0));
        drop(ok);
        drop((m0, m1));
        assert_all_idle(p, 0, &format!("{layout:?}"));
        assert_eq!(p.refs(), 0);
    }
}

#[test]
fn teardown_is_busy_while_pinned_and_succeeds_after_unpin() {
    for layout in Layout::ALL {
        let fx = devdax(layout, Order::PMD);
        let p = &fx.p;
        let c = case(fx.r, Order::PMD);
        let pins = p.pin_pages(c.range, GupFlags::NONE).expect("pin");
        match fx.space.memunmap_pages(p, Some(Duration::from_millis(10))) {
            Err(PgmapError::Busy { refs }) => assert_eq!(refs, 1, "{layout:?}"),
            other => panic!("{layout:?}: expected Busy, got {other:?}"),
        }
        // Still registered and usable: lookups, new pins and the space all work.
        assert!(fx.space.get_dev_pagemap(c.range.start()).is_some());
        let more = fx
            .space
            .pin_folios(c.range, GupFlags::NONE)
            .expect("pin after a timed-out teardown");
        assert_eq!(counts(p, c.probes[1].0), (1 + 1024, 1024));
        drop(more);
        pins.unpin_as_range(false);
        assert_all_idle(p, 1, &format!("{layout:?}"));
        fx.space
            .memunmap_pages(p, None)
            .expect("teardown after unpin");
        assert_eq!(
            p.pin_pages(c.range, GupFlags::NONE).err(),
            Some(GupError::TornDown {
                pfn: c.range.start(),
                may_revive: false,
            })
        );
    }
}

/// While a teardown drains, every pin entry point gives the same error, and it says whether
/// the teardown can still give up. The space used to answer `NoPgmap` here while the pgmap's
/// own entry points said `Dead`.
#[test]
fn pins_during_a_teardown_say_whether_a_retry_can_succeed() {
    for timeout in [Some(Duration::from_secs(30)), Some(Duration::MAX), None] {
        let fx = devdax(Layout::Heads, Order::PMD);
        let rr = range(fx.r.start().add(1), fx.r.start().add(3));
        let held = fx.p.pin_pages(rr, GupFlags::NONE).expect("pin");
        // A timeout too long to be a deadline is no timeout: that teardown is final too.
        let may_revive = timeout == Some(Duration::from_secs(30));
        std::thread::scope(|s| {
            let t = s.spawn(|| fx.space.memunmap_pages(&fx.p, timeout));
            while fx.p.tryget().is_some() {
                std::thread::yield_now();
            }
            let want = Some(GupError::TornDown {
                pfn: rr.start(),
                may_revive,
            });
            assert_eq!(
                fx.p.pin_pages(rr, GupFlags::NONE).err(),
                want,
                "{timeout:?}"
            );
            assert_eq!(
                fx.p.pin_folios(rr, GupFlags::NONE).err(),
                want,
                "{timeout:?}"
            );
            assert_eq!(
                fx.space.pin_pages(rr, GupFlags::NONE).err(),
                want,
                "{timeout:?}"
            );
            assert_eq!(
                fx.space.pin_folios(rr, GupFlags::NONE).err(),
                want,
                "{timeout:?}"
            );
            assert!(
                matches!(
                    fx.p.map_folio(rr.start(), Order::PMD),
                    Err(FolioError::TornDown { may_revive: m }) if m == may_revive
                ),
                "{timeout:?}"
            );
            drop(held);
            t.join().expect("teardown thread").expect("teardown");
        });
    }
}

#[test]
fn teardown_waits_for_a_pin_released_on_another_thread() {
    let fx = devdax(Layout::Heads, Order::BASE);
    let pins =
        fx.p.pin_folios(range(fx.r.start(), fx.r.start().add(8)), GupFlags::NONE)
            .expect("pin");
    std::thread::scope(|s| {
        let t = s.spawn(|| fx.space.memunmap_pages(&fx.p, None));
        // However the threads interleave, teardown cannot finish before the pin goes.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(counts(&fx.p, fx.r.start()), (1 + BIAS, 0));
        pins.unpin(false);
        t.join().expect("teardown thread").expect("teardown");
    });
    assert!(fx.space.get_dev_pagemap(fx.r.start()).is_none());
    let (m, s) = fx.p.audit(0).expect("range 0");
    let f = m.folio(&s, fx.r.start()).expect("audit");
    assert_eq!((f.refcount(), f.pincount()), (1, 0));
}
