//! How many times a fault, a pin and a memory failure look their folios up: every lookup
//! syncs the descriptors it reads through `MemmapSet::sync`, which counts its calls in test
//! builds (`Pgmap::lookups`, from any thread, so a touch served by the device's handler thread
//! counts too). A folio cursor (`FolioRef`) holds one lookup for every operation on the folio,
//! and a pin walks its span with one sync, so each operation below costs one lookup per folio
//! (one per pin call on folios already faulted).

use crate::addr::{Order, PAGE_SIZE};
use crate::backing::Backing;
use crate::dax::{DaxDevice, DaxOptions, Faults, Granularity};
use crate::gup::GupFlags;
use crate::init::InitMode;
use crate::memory_failure::{MfFlags, memory_failure};
use crate::pgmap::DeviceSpace;

const MIB: u64 = 1 << 20;

fn device(
    space: &DeviceSpace,
    align: Order,
    faults: Faults,
    granularity: Granularity,
) -> DaxDevice {
    let mut opts = DaxOptions::new(align);
    opts.init = InitMode::Sync;
    opts.faults = faults;
    opts.granularity = granularity;
    DaxDevice::with_options(space, Backing::memfd(8 * MIB).expect("memfd"), opts).expect("device")
}

/// Lookups `what` made on `dev`'s pgmap.
fn lookups_of(dev: &DaxDevice, what: impl FnOnce()) -> u64 {
    let before = dev.pgmap().lookups();
    what();
    dev.pgmap().lookups() - before
}

#[test]
fn a_caught_first_touch_looks_its_folio_up_once() {
    for align in [Order::BASE, Order::PMD] {
        let space = DeviceSpace::new();
        let dev = device(&space, align, Faults::Userfaultfd, Granularity::Page);
        let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
        let n = lookups_of(&dev, || {
            m.bytes().write(align.bytes() + 100, b"x").expect("write");
        });
        let stats = dev.fault_stats();
        assert_eq!(
            (stats.user_faults, stats.leaves_mapped),
            (1, 1),
            "{align:?}"
        );
        assert_eq!(n, 1, "{align:?}: one caught first touch of one leaf");
    }
}

#[test]
fn a_first_touch_of_a_leaf_with_a_poisoned_page_looks_it_up_once() {
    // `Page` granularity maps the leaf's clean runs and marks the poisoned page: the poisoned
    // pages of the leaf are read through the same cursor, not one lookup per page.
    let space = DeviceSpace::new();
    let dev = device(&space, Order::PMD, Faults::Userfaultfd, Granularity::Page);
    let bad = dev.pfn_at(2 * MIB + 7 * PAGE_SIZE).expect("pfn");
    memory_failure(&space, bad, MfFlags::RECORD_UNMAPPED).expect("memory_failure");
    let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
    let n = lookups_of(&dev, || {
        m.bytes().write(2 * MIB, b"x").expect("write a clean page");
    });
    assert_eq!(dev.fault_stats().leaves_mapped, 1);
    assert_eq!(
        n, 1,
        "one caught first touch of a leaf holding a poisoned page"
    );
}

#[test]
fn a_pin_by_pfn_walks_its_folios_with_one_lookup() {
    let space = DeviceSpace::new();
    let dev = device(&space, Order::PMD, Faults::Explicit, Granularity::Leaf);
    let pgmap = dev.pgmap();
    let data = dev.ranges()[0];
    assert_eq!(data.len() / Order::PMD.nr_pages(), 4);
    let mut held = None;
    let n = lookups_of(&dev, || {
        let folios = pgmap.pin_folios(data, GupFlags::NONE).expect("pin");
        assert_eq!(folios.len(), 4);
        let pages = pgmap.pin_pages(data, GupFlags::NONE).expect("pin");
        assert_eq!(pages.len() as u64, data.len());
        held = Some((folios, pages));
    });
    assert_eq!(n, 2, "two pins of 4 folios: one walk each");
    let n = lookups_of(&dev, || drop(held.take()));
    assert_eq!(n, 2, "two unpins of 4 folios: one walk each");
}

#[test]
fn a_pin_by_address_looks_each_folio_up_once() {
    let space = DeviceSpace::new();
    let dev = device(&space, Order::PMD, Faults::Userfaultfd, Granularity::Page);
    let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
    let leaves = 4;
    // Nothing faulted yet: each leaf is faulted in (one lookup each), then the pfn run is
    // pinned (one walk).
    let n = lookups_of(&dev, || {
        let pins = m
            .pin_user_folios(m.addr(), 8 * MIB / PAGE_SIZE, GupFlags::NONE)
            .expect("pin");
        assert_eq!(pins.len(), leaves);
        pins.unpin(false);
    });
    assert_eq!(dev.fault_stats().leaves_mapped, leaves as u64);
    // The unpin syncs its span once too.
    assert_eq!(
        n,
        leaves as u64 + 2,
        "4 leaves faulted, one pin walk, one unpin walk"
    );
    // Faulted now: one walk to pin, one to unpin.
    let n = lookups_of(&dev, || {
        let pins = m
            .pin_user_folios(m.addr(), 8 * MIB / PAGE_SIZE, GupFlags::NOFAULT)
            .expect("pin");
        pins.unpin(false);
    });
    assert_eq!(n, 2);
}

#[test]
fn a_memory_failure_looks_its_page_up_once() {
    let space = DeviceSpace::new();
    // A mapped leaf at `Page` granularity (the mapping keeps its reference) and an unmapped
    // one.
    let dev = device(&space, Order::PMD, Faults::Userfaultfd, Granularity::Page);
    let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
    m.bytes().write(2 * MIB, b"x").expect("write");
    for at in [2 * MIB + 7 * PAGE_SIZE, 6 * MIB] {
        let pfn = dev.pfn_at(at).expect("pfn");
        let n = lookups_of(&dev, || {
            memory_failure(&space, pfn, MfFlags::RECORD_UNMAPPED).expect("memory_failure");
        });
        assert_eq!(n, 1, "memory failure at device offset {at:#x}");
    }
}
