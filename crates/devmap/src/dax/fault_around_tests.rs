//! Fault-around on 4 KiB devices whose touches are caught, over real memory: sequential
//! touches grow the window to its bound and random ones keep it at one leaf; a window never
//! leaves its mapping or its device range, and never takes a poisoned page or a leaf another
//! fault counted; every leaf it maps carries what a fault of that leaf alone gives it; and
//! threads touching overlapping runs up and down never count a leaf twice nor leave a touch
//! unanswered, and every folio returns to idle.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::*;
use crate::addr::{PAGE_SIZE, Pfn};
use crate::backing::{Backing, smaps_at};
use crate::init::InitMode;
use crate::memory_failure::{MfFlags, memory_failure};
use crate::pgmap::DeviceSpace;
use crate::test_support::Rng;

const LEAF: u64 = PAGE_SIZE;

fn options(fault_around: usize) -> DaxOptions {
    let mut opts = DaxOptions::new(Order::BASE);
    opts.init = InitMode::Sync;
    opts.faults = Faults::Userfaultfd;
    opts.fault_around = fault_around;
    opts
}

/// A 4 KiB memfd device of `leaves` leaves.
fn device(space: &DeviceSpace, leaves: u64, opts: DaxOptions) -> DaxDevice {
    DaxDevice::with_options(space, Backing::memfd(leaves * LEAF).expect("memfd"), opts)
        .expect("device")
}

/// Writes one byte into leaf `leaf` of `m`: a caught touch if the leaf is not mapped.
fn touch(m: &DaxMapping, leaf: u64) {
    m.bytes()
        .write(leaf * LEAF + 7, &[leaf as u8])
        .expect("touch");
}

/// The leaves of `m` that are faulted in, in order.
fn faulted(m: &DaxMapping) -> Vec<u64> {
    (0..m.len() / LEAF)
        .filter(|l| m.is_faulted(m.addr() + (l * LEAF) as usize))
        .collect()
}

/// 4 KiB pages the kernel has mapped in `m`.
fn kernel_pages(m: &DaxMapping) -> u64 {
    smaps_at(m.addr())
        .expect("smaps")
        .expect("vma")
        .leaves()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// What a fault gives the folio of device leaf `leaf`, as seen from the device and mapping
/// `m`: whether its `mapping` names the device, its index, refcount and mapcount, and the
/// rmap's entries (as offsets into their mappings).
fn metadata(dev: &DaxDevice, leaf: u64) -> (bool, u64, i32, i32, Vec<u64>) {
    let pfn = dev.pfn_at(leaf * LEAF).expect("pfn");
    let f = dev.pgmap().folio(pfn).expect("folio");
    let rmap = dev
        .rmap(pfn)
        .into_iter()
        .map(|(_, addr)| addr as u64)
        .collect::<Vec<_>>();
    (
        f.mapping() == dev.address_space(),
        f.index(),
        f.refcount(),
        f.mapcount(),
        rmap,
    )
}

#[test]
fn sequential_touches_grow_the_window_up_to_the_bound() {
    let space = DeviceSpace::new();
    let dev = device(&space, 64, options(16));
    let m = dev.mmap(0, 64 * LEAF, true).expect("mmap");
    // Each touch of the first leaf not yet faulted maps its window; the others hit mapped
    // leaves. Windows: 1, 1, 2, 4, 8, then 16 (the bound) from there on.
    let mut windows = Vec::new();
    let mut end = 0;
    for leaf in 0..64 {
        touch(&m, leaf);
        let now = faulted(&m);
        let new_end = now.len() as u64;
        assert_eq!(now, (0..new_end).collect::<Vec<_>>(), "after leaf {leaf}");
        if new_end > end {
            assert_eq!(end, leaf, "only the first leaf past the last window faults");
            windows.push(new_end - end);
            end = new_end;
        }
    }
    assert_eq!(windows, [1, 1, 2, 4, 8, 16, 16, 16]);
    let stats = dev.fault_stats();
    assert_eq!(stats.leaves_mapped, 64);
    assert_eq!(stats.fault_around, 64 - 8, "{stats:?}");
    assert!(stats.user_faults >= 8, "{stats:?}");
    assert_eq!((stats.raced, stats.sigbus), (0, 0), "{stats:?}");
    assert_eq!(kernel_pages(&m), 64, "every leaf's entry is mapped");
    // The bytes are the memfd's: read back through a second mapping.
    let other = dev.mmap(0, 64 * LEAF, true).expect("mmap");
    for leaf in 0..64 {
        let mut b = [0u8; 1];
        other.bytes().read(leaf * LEAF + 7, &mut b).expect("read");
        assert_eq!(b[0], leaf as u8);
    }
}

#[test]
fn random_touches_keep_the_window_at_one_leaf() {
    let space = DeviceSpace::new();
    let dev = device(&space, 512, options(16));
    let m = dev.mmap(0, 512 * LEAF, true).expect("mmap");
    // Every other leaf, in a shuffled order: no touch lands beside a faulted leaf.
    let mut leaves: Vec<u64> = (0..256).map(|i| 2 * i).collect();
    let mut rng = Rng::new(20);
    for i in (1..leaves.len()).rev() {
        leaves.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut want = Vec::new();
    for &leaf in &leaves {
        touch(&m, leaf);
        want.push(leaf);
    }
    want.sort_unstable();
    assert_eq!(faulted(&m), want);
    let stats = dev.fault_stats();
    assert_eq!(
        (stats.leaves_mapped, stats.fault_around),
        (256, 0),
        "{stats:?}"
    );
    assert_eq!(kernel_pages(&m), 256);
}

#[test]
fn a_window_stays_inside_its_mapping() {
    let space = DeviceSpace::new();
    let dev = device(&space, 64, options(16));
    // Device leaves 8..28: the fifth window (device block 16..32) is cut at the mapping's end.
    let m = dev.mmap(8 * LEAF, 20 * LEAF, true).expect("mmap");
    for leaf in [0, 1, 2, 4] {
        touch(&m, leaf);
    }
    assert_eq!(faulted(&m), (0..8).collect::<Vec<_>>());
    touch(&m, 8);
    assert_eq!(faulted(&m), (0..20).collect::<Vec<_>>());
    assert_eq!(kernel_pages(&m), 20);
    for leaf in (0..8).chain(28..64) {
        let (named, _, refs, maps, rmap) = metadata(&dev, leaf);
        assert_eq!((named, refs, maps), (false, 1, 0), "device leaf {leaf}");
        assert!(rmap.is_empty(), "device leaf {leaf}");
    }
    // Going down, windows grow downwards and stop at the mapping's start: device leaves
    // 32..48, touched from the top.
    let down = dev.mmap(32 * LEAF, 16 * LEAF, true).expect("mmap");
    let before = dev.fault_stats().fault_around;
    for leaf in [15, 14, 13, 11, 7] {
        touch(&down, leaf);
    }
    assert_eq!(faulted(&down), (0..16).collect::<Vec<_>>());
    assert_eq!(dev.fault_stats().fault_around - before, 16 - 5);
    for leaf in 28..32 {
        assert_eq!(
            metadata(&dev, leaf).2,
            1,
            "device leaf {leaf}, below `down`"
        );
    }
}

#[test]
fn a_window_stays_inside_one_range_of_a_dynamic_device() {
    let space = DeviceSpace::new();
    // A hole before a blocker, so that the device's first range lands in the hole and its
    // pfns do not run on into the second range's.
    let hole = space.reserve_range(12 * LEAF, LEAF).expect("hole");
    let _blocker = space.reserve_range(LEAF, LEAF).expect("blocker");
    assert!(space.release_range(hole));
    let mut opts = options(16);
    opts.ranges = Some(vec![12 * LEAF, 20 * LEAF, 32 * LEAF]);
    let dev = device(&space, 64, opts);
    let ranges = dev.ranges();
    assert_eq!(ranges[0], hole);
    let range_of = |leaf: u64| match leaf {
        0..12 => 0,
        12..32 => 1,
        _ => 2,
    };
    let m = dev.mmap(0, 64 * LEAF, true).expect("mmap");
    let mut seen = Vec::new();
    for leaf in 0..64 {
        touch(&m, leaf);
        let now = faulted(&m);
        let new: Vec<u64> = now.iter().copied().filter(|l| !seen.contains(l)).collect();
        if let Some(first) = new.first() {
            assert!(
                new.iter().all(|l| range_of(*l) == range_of(*first)),
                "a window crossed a range: {new:?}"
            );
        }
        seen = now;
    }
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
    // The windows that reach a range's end stop there: faults at leaves 0, 1, 2, 4, 8 (its
    // window 8..12, not 8..16), 12 (12..16), 16, 32 and 48.
    assert_eq!(
        dev.fault_stats().fault_around,
        64 - 9,
        "{:?}",
        dev.fault_stats()
    );
    for leaf in 0..64 {
        let (named, index, refs, maps, _) = metadata(&dev, leaf);
        assert_eq!(
            (named, index, refs, maps),
            (true, leaf, 2, 1),
            "leaf {leaf}"
        );
    }
}

#[test]
fn a_window_stops_before_a_poisoned_page_and_a_leaf_already_faulted() {
    for granularity in Granularity::ALL {
        let space = DeviceSpace::new();
        let mut opts = options(16);
        opts.granularity = granularity;
        let dev = device(&space, 64, opts);
        let bad = dev.pfn_at(10 * LEAF).expect("pfn");
        memory_failure(&space, bad, MfFlags::RECORD_UNMAPPED).expect("memory_failure");
        let m = dev.mmap(0, 64 * LEAF, true).expect("mmap");
        // Leaf 20 faulted by another path first.
        m.fault(m.addr() + (20 * LEAF) as usize, LEAF)
            .expect("fault leaf 20");
        for leaf in [0, 1, 2, 4, 8] {
            touch(&m, leaf);
        }
        // The window of leaf 8 (8..16) stops before the poisoned leaf 10.
        assert_eq!(
            faulted(&m),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20],
            "{granularity:?}"
        );
        // Past it, the window starts over, and stops before leaf 20.
        for leaf in [11, 12, 14, 16] {
            touch(&m, leaf);
        }
        let got = faulted(&m);
        assert!(!got.contains(&10), "{granularity:?}: {got:?}");
        assert_eq!(
            got.iter().filter(|l| **l > 10).copied().collect::<Vec<_>>(),
            (11..21).collect::<Vec<_>>(),
            "{granularity:?}"
        );
        let (named, _, refs, maps, rmap) = metadata(&dev, 10);
        assert_eq!(
            (named, refs, maps),
            (false, 1, 0),
            "{granularity:?}: leaf 10"
        );
        assert!(rmap.is_empty());
        // Leaf 20 keeps its one reference and mapcount: counted once.
        let (_, _, refs, maps, _) = metadata(&dev, 20);
        assert_eq!((refs, maps), (2, 1), "{granularity:?}: leaf 20");
        let stats = dev.fault_stats();
        assert_eq!(stats.leaves_mapped, got.len() as u64, "{stats:?}");
        assert_eq!(stats.sigbus, 0, "{stats:?}");
        drop(m);
        for leaf in 0..64 {
            assert_eq!(
                metadata(&dev, leaf).2,
                1,
                "{granularity:?}: leaf {leaf} idle"
            );
        }
    }
}

#[test]
fn a_leaf_mapped_by_fault_around_has_what_a_fault_of_it_alone_gives() {
    let space = DeviceSpace::new();
    let alone = device(&space, 64, options(1));
    let around = device(&space, 64, options(16));
    let ma = alone.mmap(0, 64 * LEAF, true).expect("mmap");
    let mb = around.mmap(0, 64 * LEAF, true).expect("mmap");
    for leaf in 0..64 {
        touch(&ma, leaf);
        touch(&mb, leaf);
    }
    assert_eq!(alone.fault_stats().fault_around, 0);
    assert_eq!(alone.fault_stats().leaves_mapped, 64);
    assert_eq!(around.fault_stats().fault_around, 56);
    assert_eq!(around.fault_stats().leaves_mapped, 64);
    for leaf in 0..64 {
        let (a, b) = (metadata(&alone, leaf), metadata(&around, leaf));
        let rel = |m: &DaxMapping, v: &[u64]| -> Vec<u64> {
            v.iter().map(|addr| addr - m.addr() as u64).collect()
        };
        assert_eq!(
            (a.0, a.1, a.2, a.3, rel(&ma, &a.4)),
            (b.0, b.1, b.2, b.3, rel(&mb, &b.4)),
            "leaf {leaf}"
        );
        assert_eq!((b.0, b.1, b.2, b.3), (true, leaf, 2, 1), "leaf {leaf}");
        assert_eq!(rel(&mb, &b.4), [leaf * LEAF], "leaf {leaf}");
    }
    // Pins by address find every leaf faulted, and one of them pins the whole device.
    let pins = mb
        .pin_user_pages(mb.addr(), 64, crate::gup::GupFlags::NOFAULT)
        .expect("every leaf faulted");
    assert_eq!(pins.entries().len(), 64);
    drop(pins);
    drop((ma, mb));
    for leaf in 0..64 {
        assert_eq!(metadata(&around, leaf).2, 1, "leaf {leaf} idle");
    }
}

#[test]
fn a_window_looks_each_of_its_leaves_up_once() {
    let space = DeviceSpace::new();
    let dev = device(&space, 64, options(16));
    let m = dev.mmap(0, 64 * LEAF, true).expect("mmap");
    for leaf in [0, 1, 2] {
        touch(&m, leaf);
    }
    let before = dev.pgmap().lookups();
    touch(&m, 4);
    assert_eq!(faulted(&m).len(), 8);
    assert_eq!(dev.pgmap().lookups() - before, 4, "a window of 4 leaves");
}

#[test]
fn the_window_bound_is_a_power_of_two_up_to_a_page_table() {
    let space = DeviceSpace::new();
    for (asked, hint) in [(0, "e.g. 1"), (3, "e.g. 2 or 4"), (1024, "e.g. 512")] {
        let e =
            DaxDevice::with_options(&space, Backing::memfd(LEAF).expect("memfd"), options(asked))
                .expect_err("refused");
        assert!(matches!(e, DaxError::FaultAround { .. }), "{e:?}");
        assert!(e.to_string().contains(hint), "{e}");
        assert_eq!(
            crate::errno::dax(&e),
            rustix::io::Errno::INVAL.raw_os_error()
        );
    }
    for ok in [1, 2, 512] {
        options(ok).validate().expect("a power of two up to 512");
    }
    // Larger aligns ignore it: one leaf per touch.
    let mut opts = options(16);
    opts.align = Order::PMD;
    let dev = DaxDevice::with_options(&space, Backing::memfd(8 << 20).expect("memfd"), opts)
        .expect("device");
    let m = dev.mmap(0, 8 << 20, true).expect("mmap");
    for leaf in 0..4 {
        m.bytes().write(leaf << 21, b"x").expect("touch");
    }
    let stats = dev.fault_stats();
    assert_eq!(
        (stats.leaves_mapped, stats.fault_around),
        (4, 0),
        "{stats:?}"
    );
}

/// Threads touching overlapping runs of one mapping, up and down and at random, against four
/// handlers: windows of different faults meet, lose races for leaves and find pages mapped by
/// another fault's single-leaf remap. No touch is left unanswered (the watchdog), no leaf is
/// counted twice, the bytes are right, and every folio goes back to idle.
#[test]
fn racing_windows_count_every_leaf_once_and_answer_every_touch() {
    const LEAVES: u64 = 2048;
    let space = DeviceSpace::new();
    let mut opts = options(16);
    opts.handlers = 4;
    let dev = device(&space, LEAVES, opts);
    for round in 0..6u64 {
        let m = Arc::new(dev.mmap(0, LEAVES * LEAF, true).expect("mmap"));
        let before = dev.fault_stats();
        let (done, finished) = mpsc::channel();
        let mut threads = Vec::new();
        {
            for t in 0..4u64 {
                let (m, done) = (Arc::clone(&m), done.clone());
                threads.push(std::thread::spawn(move || {
                    let mut rng = Rng::new(round * 16 + t);
                    let third = LEAVES / 3;
                    let order: Vec<u64> = match t {
                        0 => (0..2 * third).collect(),
                        1 => (third..LEAVES).rev().collect(),
                        2 => (0..LEAVES).map(|_| rng.below(LEAVES)).collect(),
                        _ => (0..LEAVES).rev().step_by(3).chain(0..LEAVES).collect(),
                    };
                    for leaf in order {
                        m.bytes()
                            .write(leaf * LEAF + 1, &[(leaf % 251) as u8])
                            .expect("touch");
                        if leaf % 64 == 0 {
                            rng.spin();
                        }
                    }
                    let _ = done.send(());
                }));
            }
            // A touch never answered would hang its thread: fail rather than wait for it.
            for _ in 0..4 {
                if finished.recv_timeout(Duration::from_secs(120)).is_err() {
                    panic!(
                        "round {round}: a toucher did not finish: {:?}",
                        dev.fault_stats()
                    );
                }
            }
            for t in threads {
                t.join().expect("toucher");
            }
        }
        let m = Arc::into_inner(m).expect("the touchers are done with the mapping");
        // A handler may still be finishing a fault whose touch another fault's window
        // answered (a lost race holds an extra reference until it gives it back): wait for the
        // faults running in the mapping, which hold its read lock until they are done.
        drop(m.core.live.write());
        let stats = dev.fault_stats();
        let got = faulted(&m);
        assert_eq!(got.len() as u64, LEAVES, "round {round}");
        assert_eq!(
            stats.leaves_mapped - before.leaves_mapped,
            LEAVES,
            "round {round}: every leaf counted once: {stats:?}"
        );
        assert_eq!(stats.sigbus, 0, "{stats:?}");
        assert_eq!(kernel_pages(&m), LEAVES, "round {round}");
        for leaf in 0..LEAVES {
            let mut b = [0u8; 1];
            m.bytes().read(leaf * LEAF + 1, &mut b).expect("read");
            assert_eq!(b[0], (leaf % 251) as u8, "round {round}: leaf {leaf}");
            let (named, index, refs, maps, rmap) = metadata(&dev, leaf);
            assert_eq!(
                (named, index, refs, maps, rmap.len()),
                (true, leaf, 2, 1, 1),
                "round {round}: leaf {leaf}"
            );
        }
        drop(m);
        for leaf in 0..LEAVES {
            let pfn: Pfn = dev.pfn_at(leaf * LEAF).expect("pfn");
            let f = dev.pgmap().folio(pfn).expect("folio");
            assert_eq!(
                (f.refcount(), f.mapcount()),
                (1, 0),
                "round {round}: leaf {leaf} idle"
            );
        }
    }
    assert!(
        dev.fault_stats().fault_around > 0,
        "{:?}",
        dev.fault_stats()
    );
}
