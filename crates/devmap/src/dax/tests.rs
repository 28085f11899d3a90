//! Device-dax front end: real bytes through several mappings, the kernel's `check_vma` and
//! fault-size rules, `dax_set_mapping` and the mapping's counts, unmap and teardown, the rmap,
//! and faults during asynchronous init.

use std::time::Duration;

use super::*;
use crate::addr::{PAGE_SIZE, Pfn, PfnRange};
use crate::backing::{Backing, HugePageSize, HugePages};
use crate::gup::GupFlags;
use crate::init::InitMode;
use crate::init::InitState;
use crate::memmap::Layout;
use crate::pgmap::{DeviceSpace, PgmapError};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn memfd_device(space: &DeviceSpace, len: u64, align: Order) -> DaxDevice {
    let backing = Backing::memfd(len).expect("memfd");
    DaxDevice::new(space, backing, align, Layout::Vmemmap, InitMode::Sync).expect("device")
}

/// Reference count and mapcount of the folio holding `pfn`.
fn counts(dev: &DaxDevice, pfn: Pfn) -> (i32, i32) {
    let f = dev.pgmap().folio(pfn).expect("folio");
    (f.refcount(), f.mapcount())
}

#[test]
fn bytes_written_through_one_mapping_are_read_through_another_and_after_remap() {
    let space = DeviceSpace::new();
    let dev = memfd_device(&space, 4 * MIB, Order::PMD);
    let whole = dev.mmap(0, 4 * MIB, true).expect("mmap whole");
    let upper = dev.mmap(2 * MIB, 2 * MIB, true).expect("mmap upper half");
    assert_eq!(whole.addr() as u64 % (2 * MIB), 0);
    assert_eq!(upper.addr() as u64 % (2 * MIB), 0);
    assert_ne!(whole.addr(), upper.addr());

    whole
        .bytes()
        .write(2 * MIB + 5, b"through whole")
        .expect("write");
    let mut got = [0u8; 13];
    upper.bytes().read(5, &mut got).expect("read");
    assert_eq!(&got, b"through whole");

    upper.bytes().write(MIB, b"through upper").expect("write");
    whole.bytes().read(3 * MIB, &mut got).expect("read");
    assert_eq!(&got, b"through upper");

    drop(whole);
    drop(upper);
    let again = dev.mmap(0, 4 * MIB, true).expect("remap");
    again.bytes().read(2 * MIB + 5, &mut got).expect("read");
    assert_eq!(&got, b"through whole");
    again.bytes().read(3 * MIB, &mut got).expect("read");
    assert_eq!(&got, b"through upper");
}

#[test]
fn check_vma_rules() {
    let space = DeviceSpace::new();
    let dev = memfd_device(&space, 8 * MIB, Order::PMD);
    // (offset, len, shared, expected: Ok or the error's message must contain this)
    let cases: [(u64, u64, bool, Result<(), &str>); 8] = [
        (0, 8 * MIB, true, Ok(())),
        (2 * MIB, 2 * MIB, true, Ok(())),
        (0, 8 * MIB, false, Err("must be shared")),
        (
            MIB,
            2 * MIB,
            true,
            Err("offset 1 MiB is not a multiple of the device align 2 MiB: use 2 MiB"),
        ),
        (
            0,
            3 * MIB,
            true,
            Err("length 3 MiB is not a multiple of the device align 2 MiB: use 2 MiB or 4 MiB"),
        ),
        (4 * KIB, 2 * MIB, true, Err("offset 4 KiB")),
        (
            6 * MIB,
            4 * MIB,
            true,
            Err("runs past the end of the device (8 MiB)"),
        ),
        (0, 0, true, Err("must not be empty")),
    ];
    for (offset, len, shared, want) in cases {
        let got = dev.mmap(offset, len, shared);
        match (want, got) {
            (Ok(()), Ok(m)) => assert_eq!(m.len(), len),
            (Err(text), Err(e)) => {
                assert!(e.to_string().contains(text), "{offset}/{len}/{shared}: {e}")
            }
            (want, got) => panic!("{offset}/{len}/{shared}: wanted {want:?}, got {got:?}"),
        }
    }
    assert!(matches!(
        dev.mmap(0, 2 * MIB, false),
        Err(DaxError::NotShared)
    ));
    assert_eq!(
        dev.nr_mappings(),
        0,
        "refused and dropped mappings are not registered"
    );
}

#[test]
fn backings_that_cannot_serve_the_align_are_refused() {
    let space = DeviceSpace::new();
    let backing = Backing::memfd(3 * MIB).expect("memfd");
    let e = DaxDevice::new(&space, backing, Order::PMD, Layout::Heads, InitMode::Sync)
        .expect_err("3 MiB at 2 MiB");
    assert!(
        e.to_string().contains(
            "is not a multiple of the device align 2 MiB: use a backing of 2 MiB or 4 MiB"
        ),
        "{e}"
    );
    assert_eq!(space.nr_pgmaps(), 0);
}

#[test]
fn fault_size_below_align_is_sigbus_and_above_is_handled_at_the_align() {
    for align in [Order::BASE, Order::PMD] {
        let space = DeviceSpace::new();
        let dev = memfd_device(&space, 8 * MIB, align);
        let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
        let a = align.bytes();
        if align > Order::BASE {
            let e = m
                .fault(m.addr(), 4 * KIB)
                .expect_err("4K fault on a 2M device");
            assert!(
                matches!(e, DaxError::FaultTooSmall { size, .. } if size == 4 * KIB),
                "{e}"
            );
            assert_eq!(
                counts(&dev, dev.ranges()[0].start()),
                (1, 0),
                "a refused fault maps nothing"
            );
        }
        // A 1 GiB fault (larger than the device) maps one leaf of the align, the one holding
        // the address, and nothing around it.
        let addr = m.addr() + (a as usize) + 100;
        let pfn = dev.pfn_at(a).expect("pfn");
        assert_eq!(
            m.fault(addr, 1 << 30).expect("fault"),
            Faulted::Mapped { pfn }
        );
        assert_eq!(counts(&dev, pfn), (2, 1));
        assert_eq!(counts(&dev, dev.ranges()[0].start()), (1, 0));
        assert_eq!(counts(&dev, pfn.add(align.nr_pages())), (1, 0));
        assert_eq!(
            m.fault(addr, a).expect("again"),
            Faulted::AlreadyMapped { pfn }
        );
        assert!(matches!(
            m.fault(m.addr() + 8 * MIB as usize, a),
            Err(DaxError::NotInMapping { .. })
        ));
    }
}

#[test]
fn populate_sets_mapping_and_index_once_then_takes_one_reference_and_mapcount() {
    let space = DeviceSpace::new();
    let dev = memfd_device(&space, 8 * MIB, Order::PMD);
    let m = dev.mmap(4 * MIB, 4 * MIB, true).expect("mmap");
    let pfn = dev.pfn_at(6 * MIB).expect("pfn");
    {
        let f = dev.pgmap().folio(pfn).expect("folio");
        assert_eq!((f.mapping(), f.refcount(), f.mapcount()), (0, 1, 0));
    }
    let leaf = m.addr() + 2 * MIB as usize;
    let done = m.populate(leaf + 4096, 8192).expect("populate");
    assert_eq!(
        done,
        Populated {
            mapped: 1,
            already: 0
        }
    );
    let f = dev.pgmap().folio(pfn.add(17)).expect("folio");
    assert_eq!(f.pfn(), pfn);
    assert_ne!(dev.address_space(), 0);
    assert_eq!(f.mapping(), dev.address_space());
    assert_eq!(
        f.index(),
        6 * MIB / PAGE_SIZE,
        "index: the leaf's page offset in the device"
    );
    assert_eq!((f.refcount(), f.mapcount()), (2, 1));

    let before = f.head_page().snapshot();
    let again = m.populate(leaf, 2 * MIB).expect("populate again");
    assert_eq!(
        again,
        Populated {
            mapped: 0,
            already: 1
        }
    );
    assert_eq!(
        f.head_page().snapshot(),
        before,
        "a second populate changes nothing"
    );

    // A second mapping of the same leaf takes its own reference and mapcount; the mapping
    // and index stay as the first fault set them.
    let other = dev.mmap(6 * MIB, 2 * MIB, true).expect("mmap");
    assert_eq!(
        other
            .populate(other.addr(), 2 * MIB)
            .expect("populate")
            .mapped,
        1
    );
    assert_eq!((f.refcount(), f.mapcount()), (3, 2));
    assert_eq!((f.mapping(), f.index()), (before.mapping, before.index));
    drop(other);
    drop(m);
    assert_eq!((f.refcount(), f.mapcount()), (1, 0));
}

#[test]
fn dropping_mappings_returns_folios_to_idle_at_4k_and_2m() {
    for align in [Order::BASE, Order::PMD] {
        let space = DeviceSpace::new();
        let dev = memfd_device(&space, 4 * MIB, align);
        let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
        let done = m.populate(m.addr(), 4 * MIB).expect("populate");
        let leaves = 4 * MIB / align.bytes();
        assert_eq!(
            done,
            Populated {
                mapped: leaves,
                already: 0
            }
        );
        for i in 0..leaves {
            let pfn = dev.ranges()[0].start().add(i * align.nr_pages());
            assert_eq!(counts(&dev, pfn), (2, 1), "align {align} leaf {i}");
        }
        m.bytes().write(4 * MIB - 3, b"end").expect("write");
        drop(m);
        for i in 0..leaves {
            let pfn = dev.ranges()[0].start().add(i * align.nr_pages());
            assert_eq!(
                counts(&dev, pfn),
                (1, 0),
                "align {align} leaf {i} after unmap"
            );
        }
        dev.close(Some(Duration::from_secs(5))).expect("teardown");
        assert_eq!(space.nr_pgmaps(), 0);
        assert!(matches!(
            dev.mmap(0, 4 * MIB, true),
            Err(DaxError::TornDown)
        ));
    }
}

#[test]
fn teardown_waits_for_live_mappings_and_pins_outlive_the_mapping() {
    let space = DeviceSpace::new();
    let dev = memfd_device(&space, 4 * MIB, Order::PMD);
    let m = dev.mmap(0, 2 * MIB, true).expect("mmap");
    let e = dev
        .close(Some(Duration::from_millis(20)))
        .expect_err("a live mapping, even unfaulted, holds the device");
    assert!(matches!(e, DaxError::Pgmap(PgmapError::Busy { .. })), "{e}");
    // The device is usable again after the timed teardown gave up.
    m.populate(m.addr(), 2 * MIB)
        .expect("populate after a refused teardown");
    let pfn = dev.ranges()[0].start();
    let pins = dev
        .pgmap()
        .pin_pages(PfnRange::new(pfn, 4).expect("range"), GupFlags::WRITE)
        .expect("pin");
    drop(m);
    let f = dev.pgmap().folio(pfn).expect("folio");
    assert_eq!(f.mapcount(), 0);
    assert!(f.maybe_dma_pinned(), "the pin outlives the mapping");
    let e = dev
        .close(Some(Duration::from_millis(20)))
        .expect_err("the pin holds the device");
    assert!(matches!(e, DaxError::Pgmap(PgmapError::Busy { .. })), "{e}");
    drop(pins);
    dev.close(Some(Duration::from_secs(5))).expect("teardown");
    dev.close(Some(Duration::from_secs(5)))
        .expect("second teardown is a no-op");
}

#[test]
fn rmap_names_every_mapping_of_a_faulted_folio_and_forgets_dropped_ones() {
    let space = DeviceSpace::new();
    let dev = memfd_device(&space, 8 * MIB, Order::PMD);
    let whole = dev.mmap(0, 8 * MIB, true).expect("mmap");
    let upper = dev.mmap(4 * MIB, 4 * MIB, true).expect("mmap");
    let page = dev.pfn_at(4 * MIB + 12 * KIB).expect("pfn");
    assert!(dev.rmap(page).is_empty(), "nothing faulted yet");

    whole
        .populate(whole.addr() + 4 * MIB as usize, 2 * MIB)
        .expect("populate");
    assert_eq!(
        dev.rmap(page),
        vec![(whole.id(), whole.addr() + (4 * MIB + 12 * KIB) as usize)]
    );
    upper.populate(upper.addr(), 4 * MIB).expect("populate");
    assert_eq!(
        dev.rmap(page),
        vec![
            (whole.id(), whole.addr() + (4 * MIB + 12 * KIB) as usize),
            (upper.id(), upper.addr() + (12 * KIB) as usize),
        ]
    );
    // Faulted only by `upper`.
    let later = dev.pfn_at(6 * MIB).expect("pfn");
    assert_eq!(
        dev.rmap(later),
        vec![(upper.id(), upper.addr() + 2 * MIB as usize)]
    );
    assert!(dev.rmap(dev.ranges()[0].start()).is_empty());
    assert!(
        dev.rmap(dev.ranges()[0].end()).is_empty(),
        "not the device's pfn"
    );

    let gone = upper.id();
    drop(upper);
    assert!(dev.rmap(page).iter().all(|(id, _)| *id != gone));
    assert_eq!(dev.rmap(page).len(), 1);
    assert!(dev.rmap(later).is_empty());
}

#[test]
fn hugetlb_2m_device() {
    let _pages = match HugePages::reserve(HugePageSize::Size2M, 2) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping hugetlb_2m_device: {why}");
            return;
        }
    };
    let space = DeviceSpace::new();
    let small = Backing::hugetlb(4 * MIB, HugePageSize::Size2M).expect("hugetlb");
    let e = DaxDevice::new(&space, small, Order::BASE, Layout::Heads, InitMode::Sync)
        .expect_err("4K faults from 2M pages");
    assert!(
        e.to_string().contains("use an align of at least 2 MiB"),
        "{e}"
    );

    let backing = Backing::hugetlb(4 * MIB, HugePageSize::Size2M).expect("hugetlb");
    let dev =
        DaxDevice::new(&space, backing, Order::PMD, Layout::Heads, InitMode::Sync).expect("device");
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    let other = dev.mmap(2 * MIB, 2 * MIB, true).expect("mmap");
    assert_eq!(m.populate(m.addr(), 4 * MIB).expect("populate").mapped, 2);
    m.bytes().write(2 * MIB + 1, b"huge").expect("write");
    let mut got = [0u8; 4];
    other.bytes().read(1, &mut got).expect("read");
    assert_eq!(&got, b"huge");
    // The read through `other` was caught and faulted the leaf into it too.
    assert_eq!(counts(&dev, dev.pfn_at(2 * MIB).expect("pfn")), (3, 2));
}

#[test]
fn faults_during_async_init_sync_only_their_leaf_and_match_a_sync_init() {
    // The async device is 64 GiB, Flat at 2 MiB: 1 GiB of descriptors for the nice-19 workers,
    // hundreds of milliseconds of work, of which the fault needs 32 KiB; the state is read
    // microseconds after the device is built, so "still Active" does not depend on luck. The
    // sync device only needs to hold the same leaf: 8 GiB. A leaf's descriptors do not depend
    // on the device's size (same space layout, same pfns, same pgmap id).
    let leaf_offset = 5 << 30;
    let run = |init: InitMode, len: u64| {
        let space = DeviceSpace::new();
        let backing = Backing::memfd(len).expect("memfd");
        let dev = DaxDevice::new(&space, backing, Order::PMD, Layout::Flat, init).expect("device");
        let m = dev.mmap(leaf_offset, 2 * MIB, true).expect("mmap");
        m.populate(m.addr(), 2 * MIB).expect("populate");
        let state = dev.pgmap().init_state();
        let pfn = dev.pfn_at(leaf_offset).expect("pfn");
        let pages: Vec<_> = (0..Order::PMD.nr_pages())
            .map(|i| {
                let mut s = dev
                    .pgmap()
                    .descriptor(pfn.add(i))
                    .expect("descriptor")
                    .expect("Flat has every descriptor")
                    .snapshot();
                if i == 0 {
                    assert_eq!(s.mapping, dev.address_space());
                    // Address-space ids differ between devices; the rest must not.
                    s.mapping = 0;
                }
                s
            })
            .collect();
        drop(m);
        (state, pages)
    };
    let (state, async_pages) = run(InitMode::async_default(), 64 << 30);
    assert_eq!(
        state,
        InitState::Active,
        "the fault initialised its own leaf, not the device"
    );
    let (_, sync_pages) = run(InitMode::Sync, 8 << 30);
    assert_eq!(async_pages, sync_pages);
}

#[test]
fn a_device_owns_its_space_handle_and_outlives_the_one_it_was_built_with() {
    // Built from a space handle that is dropped at once: the device keeps the space alive
    // (no borrow), and its pfns stay registered there, found through `dev.space()`.
    let dev = memfd_device(&DeviceSpace::new(), 4 * MIB, Order::PMD);
    let space = dev.space().clone();
    assert!(space.same_space(dev.space()));
    assert!(!space.same_space(&DeviceSpace::new()));
    assert_eq!(space.nr_pgmaps(), 1);

    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    let pfn = dev.pfn_at(2 * MIB).expect("pfn");
    m.populate(m.addr() + 2 * MIB as usize, 2 * MIB)
        .expect("populate");
    assert!(space.get_dev_pagemap(pfn).is_some());
    drop(m);

    // The device and its space handle can be moved to another thread and dropped there.
    let t = std::thread::spawn(move || {
        let size = dev.size();
        drop(dev);
        size
    });
    assert_eq!(t.join().expect("thread"), 4 * MIB);
    assert_eq!(
        space.nr_pgmaps(),
        0,
        "the dropped device unregistered its pgmap"
    );
    assert!(space.get_dev_pagemap(pfn).is_none());
}
