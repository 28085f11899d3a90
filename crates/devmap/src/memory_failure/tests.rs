//! `memory_failure` in the kernel's order, on bare pgmaps: pfns that are not device memory, or
//! whose device is dying, or that hold the altmap, are refused before any head lookup; a
//! pgmap's callback runs before anything is flagged and its result is returned; the generic
//! path refuses a folio nothing mapped (`-EBUSY`) and private and coherent memory (`-ENXIO`),
//! flags the exact page in every layout, and handles a repeated error as a first one.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::*;
use crate::addr::{Order, PfnRange};
use crate::gup::GupFlags;
use crate::memmap::Folio;
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

/// Gives the folio holding `pfn` a `mapping`, as a device-dax fault does (`dax_set_mapping`),
/// so that the kernel's `dax_lock_folio` would lock it.
fn set_mapping(p: &Pgmap, pfn: Pfn) {
    let cursor = FolioRef::at(p, pfn).expect("folio");
    assert!(cursor.set_mapping(0xda, 0), "a fresh folio has no mapping");
}

#[test]
fn exactly_the_failed_page_is_flagged_in_every_layout() {
    for layout in Layout::ALL {
        let space = DeviceSpace::new();
        let (p, r) = devdax(&space, layout);
        let head = r.start().add(512);
        let bad = head.add(7);
        set_mapping(&p, bad);
        let report = memory_failure(&space, bad, MfFlags::ACTION_REQUIRED).expect("handled");
        assert_eq!((report.pfn, report.head), (bad, head), "{layout:?}");
        assert_eq!(report.handled_by, HandledBy::Generic, "{layout:?}");
        assert!(
            report.notices.is_empty() && report.revoked.is_empty(),
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
        assert!(
            p.pin_pages(PfnRange::new_unchecked(head, head.add(1)), GupFlags::NONE)
                .is_err(),
            "{layout:?}: a new pin of the folio fails"
        );
    }
}

/// Device pages never reach `memory_failure`'s `TestSetPageHWPoison` (and its
/// `MF_MSG_ALREADY_POISONED`, `-EHWPOISON`): `memory_failure_dev_pagemap` runs the generic path
/// again and returns 0. (With mappings, they lose the page and are told again: `dax_tests`.)
#[test]
fn device_pages_never_reach_already_poisoned_a_second_error_succeeds() {
    for layout in Layout::ALL {
        let space = DeviceSpace::new();
        let (p, r) = devdax(&space, layout);
        let bad = r.start().add(512 + 7);
        set_mapping(&p, bad);
        memory_failure(&space, bad, MfFlags::NONE).expect("first");
        let again = memory_failure(&space, bad, MfFlags::ACTION_REQUIRED).expect("second: 0");
        assert_eq!(
            (again.pfn, again.handled_by),
            (bad, HandledBy::Generic),
            "{layout:?}"
        );
        assert!(p.subpage_poisoned(bad).expect("lookup"), "{layout:?}");
    }
}

/// What a callback saw: (pfn, nr_pages, flags, whether the page was flagged already).
type Call = (Pfn, u64, u32, bool);

/// `memory_failure_dev_pagemap` calls `pgmap->ops->memory_failure` first, before anything is
/// flagged, with one page and the caller's flags, and returns whatever it returns but
/// `-EOPNOTSUPP`, which alone falls through to `mf_generic_kill_procs`.
#[test]
fn memory_failure_dev_pagemap_calls_the_callback_first_and_returns_its_result() {
    let cases: [(Result<(), i32>, Option<i32>, HandledBy); 4] = [
        (Ok(()), None, HandledBy::Callback),
        (Err(libc::EIO), Some(libc::EIO), HandledBy::Callback),
        (Err(libc::EBUSY), Some(libc::EBUSY), HandledBy::Callback),
        (Err(libc::EOPNOTSUPP), None, HandledBy::Generic),
    ];
    for (returns, errno, handled_by) in cases {
        let space = DeviceSpace::new();
        let r = space.reserve_range(8 << 20, 2 << 20).expect("reserve");
        let mut cfg = PgmapConfig::devdax(r, Order::PMD);
        let pgmap: Arc<OnceLock<Weak<Pgmap>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Call>>> = Arc::default();
        let (of, log) = (Arc::clone(&pgmap), Arc::clone(&seen));
        let cb: Arc<MemoryFailureFn> = Arc::new(move |pfn, nr, flags| {
            let flagged = of
                .get()
                .and_then(Weak::upgrade)
                .is_some_and(|p| p.subpage_poisoned(pfn).expect("lookup"));
            log.lock().expect("log").push((pfn, nr, flags, flagged));
            returns
        });
        cfg.ops.memory_failure = Some(cb);
        let p = space.memremap_pages(cfg).expect("pgmap");
        pgmap.set(Arc::downgrade(&p)).expect("once");
        let bad = r.start().add(3);
        let flags = MfFlags::ACTION_REQUIRED | MfFlags::RECORD_UNMAPPED;
        let result = memory_failure(&space, bad, flags);
        assert_eq!(
            *seen.lock().expect("log"),
            vec![(bad, 1, flags.bits(), false)],
            "{returns:?}: called once, first, with one page and the flags"
        );
        match (result, errno) {
            (Ok(report), None) => {
                assert_eq!(report.handled_by, handled_by, "{returns:?}");
                assert_eq!(report.head, r.start(), "{returns:?}");
            }
            (Err(e), Some(want)) => {
                assert!(
                    matches!(e, MfError::Callback { pfn, errno } if pfn == bad && errno == want),
                    "{e}"
                );
                assert_eq!(crate::errno::mf(&e), want, "{e}: the errno as it is");
            }
            (got, _) => panic!("{returns:?}: {got:?}"),
        }
        // Only the generic path flags the page.
        assert_eq!(
            p.subpage_poisoned(bad).expect("lookup"),
            handled_by == HandledBy::Generic,
            "{returns:?}"
        );
    }
}

/// `mf_generic_kill_procs`: `dax_lock_folio` fails on a folio whose `mapping` no fault set
/// (nothing ever mapped it), and the result is `-EBUSY` with nothing flagged. devmap's
/// `RECORD_UNMAPPED` flags and records it anyway.
#[test]
fn dax_lock_folio_fails_on_a_folio_never_mapped_ebusy_and_nothing_flagged() {
    let space = DeviceSpace::new();
    let (p, r) = devdax(&space, Layout::Heads);
    let bad = r.start().add(512 + 7);
    let e = memory_failure(&space, bad, MfFlags::ACTION_REQUIRED).expect_err("never mapped");
    assert!(
        matches!(e, MfError::NeverMapped { pfn } if pfn == bad),
        "{e}"
    );
    assert_eq!(crate::errno::mf(&e), libc::EBUSY);
    assert!(e.to_string().contains("RECORD_UNMAPPED"), "{e}");
    assert!(!p.subpage_poisoned(bad).expect("lookup"));
    assert!(!p.folio(bad).expect("folio").is_poisoned());

    let report = memory_failure(&space, bad, MfFlags::RECORD_UNMAPPED).expect("recorded");
    assert_eq!(report.handled_by, HandledBy::Generic);
    assert!(p.subpage_poisoned(bad).expect("lookup"));
    // A folio a fault gave a mapping is handled without the flag.
    let other = r.start().add(7);
    set_mapping(&p, other);
    memory_failure(&space, other, MfFlags::NONE).expect("mapped once");
    assert!(p.subpage_poisoned(other).expect("lookup"));
}

/// `mf_generic_kill_procs`: device-private and device-coherent memory is `-ENXIO` (the
/// kernel's "TODO: Handle device pages which may need coordination with device-side
/// memory"), nothing flagged, whatever the folio and the flags.
#[test]
fn mf_generic_kill_procs_is_enxio_for_private_and_coherent_memory() {
    for memory_type in [MemoryType::Private, MemoryType::Coherent] {
        let space = DeviceSpace::new();
        let r = space.reserve_range(8 << 20, 2 << 20).expect("reserve");
        let mut cfg = PgmapConfig::devdax(r, Order::BASE);
        cfg.memory_type = memory_type;
        cfg.layout = Layout::Flat;
        cfg.owner = Some(1);
        cfg.ops.folio_free = Some(Arc::new(|_: &Folio<'_>| {}));
        let p = space.memremap_pages(cfg).expect("pgmap");
        let mapped = r.start().add(5);
        set_mapping(&p, mapped);
        for (pfn, flags) in [
            (mapped, MfFlags::ACTION_REQUIRED),
            (r.start().add(9), MfFlags::RECORD_UNMAPPED),
        ] {
            let e = memory_failure(&space, pfn, flags).expect_err("not handled");
            assert!(
                matches!(e, MfError::NotHandled { pfn: at, memory_type: t } if at == pfn && t == memory_type),
                "{memory_type:?}: {e}"
            );
            assert_eq!(crate::errno::mf(&e), libc::ENXIO, "{memory_type:?}");
            assert!(
                !p.subpage_poisoned(pfn).expect("lookup"),
                "{memory_type:?}: nothing flagged"
            );
        }
    }
}

#[test]
fn the_report_times_the_call() {
    let space = DeviceSpace::new();
    let (p, r) = devdax(&space, Layout::Heads);
    let bad = r.start().add(3);
    set_mapping(&p, bad);
    let report = memory_failure(&space, bad, MfFlags::NONE).expect("handled");
    assert!(report.elapsed < Duration::from_secs(5));
}
