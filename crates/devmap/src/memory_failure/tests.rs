//! `memory_failure` in the kernel's order: pfns that are not device memory, or whose device is
//! dying, or that hold the altmap, are refused before any head lookup; the exact page is
//! flagged in every layout; a pgmap's callback handles the error instead of the generic path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::addr::{Order, PfnRange};
use crate::gup::GupFlags;
use crate::memmap::{Layout, LookupError};
use crate::pgmap::{MemoryFailureFn, PgmapConfig};

fn devdax(space: &DeviceSpace, layout: Layout) -> (Arc<crate::pgmap::Pgmap>, PfnRange) {
    let r = space.reserve_range(8 << 20, 2 << 20).expect("reserve");
    let mut cfg = PgmapConfig::devdax(r, Order::PMD);
    cfg.layout = layout;
    (space.memremap_pages(cfg).expect("pgmap"), r)
}

#[test]
fn pfns_that_are_not_live_device_memory_are_refused() {
    let space = DeviceSpace::new();
    let e = memory_failure(&space, Pfn::new(0x12_3456), MfFlags::NONE).expect_err("no pgmap");
    assert!(matches!(e, MfError::NoDevice { .. }), "{e}");

    // A pgmap being torn down (a pin holds the teardown open) is refused the same way.
    let (p, r) = devdax(&space, Layout::Heads);
    let pin = p
        .pin_pages(
            PfnRange::new_unchecked(r.start(), r.start().add(1)),
            GupFlags::NONE,
        )
        .expect("pin");
    std::thread::scope(|s| {
        let teardown = s.spawn(|| space.memunmap_pages(&p, None));
        while space.get_dev_pagemap(r.start()).is_some() {
            std::thread::yield_now();
        }
        let bad = r.start().add(600);
        let e = memory_failure(&space, bad, MfFlags::NONE).expect_err("dying");
        assert!(matches!(e, MfError::NoDevice { pfn } if pfn == bad), "{e}");
        drop(pin);
        teardown.join().expect("teardown").expect("teardown done");
    });
}

#[test]
fn an_altmap_pfn_is_refused_before_any_head_lookup() {
    let space = DeviceSpace::new();
    let r = space.reserve_range(128 << 20, 2 << 20).expect("reserve");
    let mut cfg = PgmapConfig::devdax(r, Order::PMD);
    cfg.layout = Layout::Flat;
    cfg.altmap_reserve = Some(2);
    let p = space.memremap_pages(cfg).expect("pgmap");
    let memmap_pfn = r.start().add(100);
    // A head lookup of it would fail differently: it has no descriptor of its own.
    assert!(matches!(
        p.folio(memmap_pfn),
        Err(PgmapError::Lookup(LookupError::AltmapPfn { .. }))
    ));
    let e = memory_failure(&space, memmap_pfn, MfFlags::NONE).expect_err("altmap");
    assert!(
        matches!(e, MfError::NotData { pfn } if pfn == memmap_pfn),
        "{e}"
    );
    assert!(e.to_string().contains("holds its device's memmap"), "{e}");
}

#[test]
fn exactly_the_failed_page_is_flagged_in_every_layout() {
    for layout in Layout::ALL {
        let space = DeviceSpace::new();
        let (p, r) = devdax(&space, layout);
        let head = r.start().add(512);
        let bad = head.add(7);
        let report = memory_failure(&space, bad, MfFlags::ACTION_REQUIRED).expect("handled");
        assert_eq!((report.pfn, report.head), (bad, head), "{layout:?}");
        assert_eq!(report.handled_by, HandledBy::Generic, "{layout:?}");
        assert!(
            report.notices.is_empty(),
            "no device-dax device, no mappings"
        );
        for (pfn, poisoned) in [
            (bad, true),
            (head.add(6), false),
            (head.add(8), false),
            (head, false),
        ] {
            assert_eq!(
                p.subpage_poisoned(pfn).expect("lookup"),
                poisoned,
                "{layout:?} {pfn}"
            );
        }
        assert!(
            p.folio(head.add(300)).expect("folio").is_poisoned(),
            "{layout:?}"
        );
        assert!(
            !p.folio(r.start()).expect("folio").is_poisoned(),
            "{layout:?}: neighbour"
        );
        let again = memory_failure(&space, bad, MfFlags::NONE).expect_err("twice");
        assert!(matches!(again, MfError::AlreadyPoisoned { .. }), "{again}");
        assert!(
            p.pin_pages(PfnRange::new_unchecked(head, head.add(1)), GupFlags::NONE)
                .is_err(),
            "{layout:?}: a new pin of the folio fails"
        );
    }
}

#[test]
fn a_pgmap_callback_handles_the_error_and_the_generic_path_does_not_run() {
    for handles in [true, false] {
        let space = DeviceSpace::new();
        let r = space.reserve_range(8 << 20, 2 << 20).expect("reserve");
        let mut cfg = PgmapConfig::devdax(r, Order::PMD);
        let calls = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&calls);
        let cb: Arc<MemoryFailureFn> = Arc::new(move |_pfn, flags| {
            seen.fetch_add(1 + flags * 100, Ordering::SeqCst);
            handles
        });
        cfg.ops.memory_failure = Some(cb);
        let p = space.memremap_pages(cfg).expect("pgmap");
        let bad = r.start().add(3);
        let report = memory_failure(&space, bad, MfFlags::ACTION_REQUIRED).expect("handled");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            101,
            "called once, with the flags"
        );
        let want = if handles {
            HandledBy::Callback
        } else {
            HandledBy::Generic
        };
        assert_eq!(report.handled_by, want);
        assert!(
            p.subpage_poisoned(bad).expect("lookup"),
            "flagged before the callback"
        );
        assert!(report.elapsed < Duration::from_secs(5));
    }
}
