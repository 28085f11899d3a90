//! The zero-ahead pool over real memory (memfd and hugetlb): it follows a sequential toucher
//! and its leaves are then mapped with one ioctl and the same metadata as any fault, a fault
//! taking the ready leaves after its own up to a faulted or poisoned leaf or the mapping's end;
//! it never
//! overwrites bytes the backing already holds; it holds at most its cap of leaves ahead;
//! random touches start nothing; and the options that cannot have a pool are refused.

use std::time::{Duration, Instant};

use super::*;
use crate::backing::{Backing, HugePageSize, HugePages, smaps_at};
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::memory_failure::{MfFlags, memory_failure};
use crate::pgmap::DeviceSpace;

const MIB: u64 = 1 << 20;

fn device(space: &DeviceSpace, backing: Backing, zero_ahead: usize) -> DaxDevice {
    let mut opts = DaxOptions::new(Order::PMD);
    opts.layout = Layout::Heads;
    opts.init = InitMode::Sync;
    opts.faults = Faults::Userfaultfd;
    opts.zero_ahead = zero_ahead;
    DaxDevice::with_options(space, backing, opts).expect("device")
}

/// Waits (up to 30 s) until the pool has zeroed `n` leaves.
fn wait_zeroed(dev: &DaxDevice, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev.fault_stats().zeroed_ahead < n {
        assert!(
            Instant::now() < deadline,
            "the pool never zeroed {n} leaves: {:?}",
            dev.fault_stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (up to 30 s) until the pool has done what it will: every caught touch is handled
/// (the pool hears of it at the end) and its thread has nothing left to do (a stream that left
/// a leaf to its toucher's fault prepares fewer than its cap), however little of a core it
/// gets beside whatever else runs.
fn wait_settled(dev: &DaxDevice) {
    let core = &dev.dev;
    let pool = core.zero_ahead.as_ref().expect("a pool");
    let deadline = Instant::now() + Duration::from_secs(30);
    let handled = || core.counters.resolve.count() == dev.fault_stats().user_faults;
    while !(handled() && pool.idle()) {
        assert!(Instant::now() < deadline, "{:?}", dev.fault_stats());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Touches every leaf of `m` in order, each once the pool has done what it can, as a program
/// working between touches gives it time, and checks each reads zeros but for the byte written.
fn touch_in_order(dev: &DaxDevice, m: &DaxMapping, leaves: u64) {
    for leaf in 0..leaves {
        let at = leaf * 2 * MIB;
        wait_settled(dev);
        let mut page = vec![0xffu8; 4096];
        m.bytes().read(at + 8192, &mut page).expect("read");
        assert!(page.iter().all(|&b| b == 0), "leaf {leaf} reads zeros");
        m.bytes().write(at + 5, b"t").expect("touch");
    }
}

/// Bytes the kernel has mapped in `m` (`/proc/self/smaps`).
fn mapped_bytes(m: &DaxMapping) -> u64 {
    smaps_at(m.addr())
        .expect("smaps")
        .expect("vma")
        .leaves()
        .iter()
        .map(|(size, n)| size * n)
        .sum()
}

/// Checks that leaf `leaf` of `m` (which maps the device from offset 0) has what a fault of it
/// gives: mapping, index, reference, mapcount and the reverse map.
fn assert_faulted_in(dev: &DaxDevice, m: &DaxMapping, leaf: u64) {
    let at = leaf * 2 * MIB;
    let pfn = dev.pfn_at(at).expect("pfn");
    let f = dev.pgmap().folio(pfn).expect("folio");
    assert_eq!(f.mapping(), dev.address_space(), "leaf {leaf}");
    assert_eq!(f.index(), leaf * 512, "leaf {leaf}");
    assert_eq!((f.refcount(), f.mapcount()), (2, 1), "leaf {leaf}");
    assert_eq!(
        dev.rmap(pfn),
        vec![(m.id(), m.addr() + at as usize)],
        "leaf {leaf}"
    );
}

/// Checks that the folios of `leaves` hold only the device's own reference.
fn assert_idle(dev: &DaxDevice, leaves: impl IntoIterator<Item = u64>) {
    for leaf in leaves {
        let pfn = dev.pfn_at(leaf * 2 * MIB).expect("pfn");
        let refs = dev.pgmap().folio(pfn).expect("folio").refcount();
        assert_eq!(refs, 1, "leaf {leaf}");
    }
}

fn check_memfd_or_hugetlb(backing: Backing, leaves: u64) {
    let space = DeviceSpace::new();
    let dev = device(&space, backing, 4);
    let m = dev.mmap(0, leaves * 2 * MIB, true).expect("mmap");
    touch_in_order(&dev, &m, leaves);
    let stats = dev.fault_stats();
    assert_eq!(stats.leaves_mapped, leaves);
    // The mapping's start is a stream from the outset: the pool has leaves 0 to 3 ready
    // before the first touch, which maps all four; the stream moves on to leaf 4, which the
    // pool prepares with the three after it while the toucher goes through 1 to 3; and so on.
    // Every leaf is ready, and one touch in four is caught.
    assert_eq!(
        (stats.zero_ahead_hits, stats.user_faults, stats.fault_around),
        (leaves, leaves / 4, leaves - leaves / 4),
        "{stats:?}"
    );
    // A ready leaf gets the same metadata as any fault: mapping, index, reference, mapcount,
    // the reverse map, and the whole leaf mapped.
    for leaf in 0..leaves {
        assert_faulted_in(&dev, &m, leaf);
    }
    assert_eq!(
        mapped_bytes(&m),
        leaves * 2 * MIB,
        "every leaf mapped whole"
    );
    drop(m);
    assert_idle(&dev, 0..leaves);
}

#[test]
fn a_sequential_toucher_finds_its_memfd_leaves_ready() {
    check_memfd_or_hugetlb(Backing::memfd(16 * MIB).expect("memfd"), 8);
}

#[test]
fn a_sequential_toucher_finds_its_hugetlb_leaves_ready() {
    let _pages = match HugePages::reserve(HugePageSize::Size2M, 8) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping a_sequential_toucher_finds_its_hugetlb_leaves_ready: {why}");
            return;
        }
    };
    check_memfd_or_hugetlb(
        Backing::hugetlb(16 * MIB, HugePageSize::Size2M).expect("hugetlb"),
        8,
    );
}

#[test]
fn the_pool_never_overwrites_bytes_the_backing_holds_and_stops_at_its_cap() {
    let backing = Backing::memfd(64 * MIB).expect("memfd");
    // Bytes already in leaf 2 before the device exists: what a device over a used memfd has.
    let plain = backing.map_shared(0, 64 * MIB, Order::PMD).expect("plain");
    plain.write(2 * 2 * MIB + 100, b"kept").expect("write");
    let space = DeviceSpace::new();
    let cap = 4;
    let dev = device(&space, backing, cap);
    let m = dev.mmap(0, 64 * MIB, true).expect("mmap");
    // Nothing touched: the mapping's start is a stream, so the pool fills its cap from leaf
    // 0, leaf 2 among them, and then stops.
    wait_zeroed(&dev, cap as u64);
    wait_settled(&dev);
    assert_eq!(
        dev.fault_stats().zeroed_ahead,
        cap as u64,
        "no more than the cap"
    );
    assert_eq!(dev.fault_stats().user_faults, 0, "preparing is no touch");
    let mut got = [0u8; 4];
    m.bytes().read(2 * 2 * MIB + 100, &mut got).expect("read");
    assert_eq!(
        &got, b"kept",
        "an existing byte survives being zeroed ahead"
    );
    drop(plain);
}

#[test]
fn touches_landing_next_to_nothing_start_no_stream() {
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(128 * MIB).expect("memfd"), 2);
    let m = dev.mmap(0, 128 * MIB, true).expect("mmap");
    // The mapping's own stream fills the cap (leaves 0 and 1); touches far apart start none.
    wait_zeroed(&dev, 2);
    for leaf in [40u64, 20, 60, 10, 50] {
        m.bytes().write(leaf * 2 * MIB, b"r").expect("touch");
    }
    wait_settled(&dev);
    let stats = dev.fault_stats();
    assert_eq!(stats.zero_ahead_hits, 0);
    assert_eq!(
        stats.zeroed_ahead, 2,
        "nothing prepared beyond the mapping's start"
    );
    // Leaves 0 and 1 were ready: touching leaf 0 maps both, and the pool moves on to
    // leaf 2, where the toucher's next touch will be caught.
    m.bytes().write(0, b"s").expect("touch");
    let stats = dev.fault_stats();
    assert_eq!(
        (stats.zero_ahead_hits, stats.fault_around),
        (2, 1),
        "{stats:?}"
    );
    wait_zeroed(&dev, 4);
}

/// The leaves of `m` faulted in, in order.
fn faulted(m: &DaxMapping) -> Vec<u64> {
    (0..m.len() / (2 * MIB))
        .filter(|l| m.is_faulted(m.addr() + (l * 2 * MIB) as usize))
        .collect()
}

#[test]
fn a_fault_maps_the_ready_leaves_after_its_own_up_to_a_leaf_it_may_not_take() {
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(32 * MIB).expect("memfd"), 8);
    // A poisoned page in leaf 6, recorded before anything maps it.
    let bad = dev.pfn_at(6 * 2 * MIB + 3 * 4096).expect("pfn");
    memory_failure(&space, bad, MfFlags::RECORD_UNMAPPED).expect("memory_failure");
    let m = dev.mmap(0, 32 * MIB, true).expect("mmap");
    // The mapping's stream: leaves 0 to 7 ready, then the pool waits at its cap.
    wait_zeroed(&dev, 8);
    // Leaf 2 faulted by another path first.
    m.fault(m.addr() + (4 * MIB) as usize, 2 * MIB)
        .expect("fault leaf 2");
    // Touching leaf 0 maps the ready leaf 1 with it, and stops at the faulted leaf 2.
    m.bytes().write(5, b"a").expect("touch leaf 0");
    assert_eq!(faulted(&m), [0, 1, 2]);
    let stats = dev.fault_stats();
    assert_eq!((stats.user_faults, stats.fault_around), (1, 1), "{stats:?}");
    // Touching leaf 3 maps the ready leaves 4 and 5, and stops before the poisoned leaf 6,
    // ready as it is; the ready leaf 7 after it is left to its own touch.
    m.bytes()
        .write(3 * 2 * MIB + 5, b"a")
        .expect("touch leaf 3");
    assert_eq!(faulted(&m), [0, 1, 2, 3, 4, 5]);
    let stats = dev.fault_stats();
    assert_eq!((stats.user_faults, stats.fault_around), (2, 3), "{stats:?}");
    // A leaf mapped ahead has what a fault of it gives, and its touches are no faults.
    for leaf in [1u64, 4, 5] {
        assert_faulted_in(&dev, &m, leaf);
        let at = leaf * 2 * MIB;
        let mut page = vec![0xffu8; 4096];
        m.bytes().read(at + 8192, &mut page).expect("read");
        assert!(page.iter().all(|&b| b == 0), "leaf {leaf} reads zeros");
        m.bytes().write(at + 5, b"t").expect("touch");
    }
    assert_eq!(
        dev.fault_stats().user_faults,
        2,
        "no touch of them was caught"
    );
    assert_eq!(
        mapped_bytes(&m),
        6 * 2 * MIB,
        "leaves 0 to 5 mapped whole, nothing else"
    );
    drop(m);
    assert_idle(&dev, 0..16);
}

#[test]
fn leaves_mapped_ahead_stop_at_the_mappings_end() {
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(32 * MIB).expect("memfd"), 8);
    // Device leaves 2 to 4: the pool prepares those three and nothing past them.
    let m = dev.mmap(4 * MIB, 6 * MIB, true).expect("mmap");
    wait_zeroed(&dev, 3);
    m.bytes().write(0, b"a").expect("touch");
    assert_eq!(faulted(&m), [0, 1, 2]);
    let stats = dev.fault_stats();
    assert_eq!(
        (stats.user_faults, stats.fault_around, stats.zero_ahead_hits),
        (1, 2, 3),
        "{stats:?}"
    );
    wait_settled(&dev);
    assert_eq!(
        dev.fault_stats().zeroed_ahead,
        3,
        "nothing prepared past the end"
    );
    // Device leaves 1 and 5, beside the mapping, untouched.
    assert_idle(&dev, [1, 5]);
}

#[test]
fn devices_that_cannot_have_a_pool_are_refused() {
    let space = DeviceSpace::new();
    let mut opts = DaxOptions::new(Order::BASE);
    opts.zero_ahead = 4;
    let e = DaxDevice::with_options(&space, Backing::memfd(4 * MIB).expect("memfd"), opts)
        .expect_err("4K");
    assert!(e.to_string().contains("align 2M"), "{e}");

    let mut opts = DaxOptions::new(Order::PMD);
    opts.zero_ahead = 4;
    opts.faults = Faults::Explicit;
    let e = DaxDevice::with_options(&space, Backing::memfd(4 * MIB).expect("memfd"), opts)
        .expect_err("explicit");
    assert!(e.to_string().contains("caught by userfaultfd"), "{e}");

    let mut opts = DaxOptions::new(Order::PMD);
    opts.zero_ahead = 513;
    let e = DaxDevice::with_options(&space, Backing::memfd(4 * MIB).expect("memfd"), opts)
        .expect_err("too many");
    assert!(
        e.to_string().contains("use 0 (off) to 512 at align 2 MiB"),
        "{e}"
    );
    // At 1G, 1 GiB is one leaf.
    let mut opts = DaxOptions::new(Order::PUD);
    opts.zero_ahead = 2;
    let e = DaxDevice::with_options(&space, Backing::memfd(1 << 30).expect("memfd"), opts)
        .expect_err("two 1 GiB leaves");
    assert!(
        e.to_string().contains("use 0 (off) to 1 at align 1 GiB"),
        "{e}"
    );
}

#[test]
fn two_mappings_racing_through_the_same_leaves_share_every_leaf_once() {
    let leaves = 32u64;
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(leaves * 2 * MIB).expect("memfd"), 4);
    let maps: Vec<DaxMapping> = (0..2)
        .map(|_| dev.mmap(0, leaves * 2 * MIB, true).expect("mmap"))
        .collect();
    std::thread::scope(|s| {
        for (t, m) in maps.iter().enumerate() {
            s.spawn(move || {
                for leaf in 0..leaves {
                    // Each thread its own byte of each leaf, through its own mapping.
                    m.bytes()
                        .write(leaf * 2 * MIB + 64 * t as u64, &[t as u8 + 1])
                        .expect("touch");
                }
            });
        }
    });
    let stats = dev.fault_stats();
    assert_eq!(
        stats.leaves_mapped,
        2 * leaves,
        "each mapping faulted each leaf once"
    );
    assert!(
        stats.zero_ahead_hits <= leaves,
        "a leaf is handed out once: {stats:?}"
    );
    assert!(stats.zero_ahead_hits <= stats.zeroed_ahead, "{stats:?}");
    for leaf in 0..leaves {
        for (t, m) in maps.iter().enumerate() {
            // Both bytes, whoever mapped the leaf first and however the pool took part.
            let mut got = [0u8; 65];
            m.bytes().read(leaf * 2 * MIB, &mut got).expect("read");
            assert_eq!((got[0], got[64]), (1, 2), "leaf {leaf} through mapping {t}");
        }
        let f = dev
            .pgmap()
            .folio(dev.pfn_at(leaf * 2 * MIB).expect("pfn"))
            .expect("folio");
        assert_eq!((f.refcount(), f.mapcount()), (3, 2), "leaf {leaf}");
    }
    drop(maps);
    assert_idle(&dev, 0..leaves);
}

#[test]
#[ignore = "a measurement: prints where a ready leaf's touch spends its time"]
fn where_a_ready_memfd_touch_spends_its_time() {
    let space = DeviceSpace::new();
    let leaves = 64u64;
    let dev = device(&space, Backing::memfd(leaves * 2 * MIB).expect("memfd"), 8);
    let m = dev.mmap(0, leaves * 2 * MIB, true).expect("mmap");
    for leaf in 0..leaves {
        wait_settled(&dev);
        std::thread::sleep(Duration::from_millis(2));
        let at = leaf * 2 * MIB;
        let t = Instant::now();
        m.bytes().write(at, b"x").expect("touch");
        let fault = t.elapsed();
        let t = Instant::now();
        for page in 1..512 {
            m.bytes().write(at + page * 4096, b"x").expect("touch");
        }
        let rest = t.elapsed();
        eprintln!("leaf {leaf}: fault {fault:?}, other 511 pages {rest:?}");
    }
    eprintln!("{:?}", dev.fault_stats());
}

#[test]
#[ignore = "a measurement: prints how long mapping memory waits while the pool prepares hugetlb leaves"]
fn how_long_mapping_memory_waits_while_the_pool_prepares() {
    let _pages = match HugePages::reserve(HugePageSize::Size2M, 64) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    for round in 0..3 {
        let space = DeviceSpace::new();
        let backing = Backing::hugetlb(64 * 2 * MIB, HugePageSize::Size2M).expect("hugetlb");
        let dev = device(&space, backing, 64);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let waits = std::thread::scope(|s| {
            let mapper = s.spawn(|| {
                let mut waits = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let anon = crate::backing::Backing::memfd(4096)
                        .expect("memfd")
                        .map_shared(0, 4096, Order::BASE)
                        .expect("map");
                    waits.push(t.elapsed());
                    drop(anon);
                }
                waits
            });
            // The mapping's stream: the pool prepares its 64 leaves back to back.
            let m = dev.mmap(0, 64 * 2 * MIB, true).expect("mmap");
            wait_zeroed(&dev, 64);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let waits = mapper.join().expect("mapper");
            drop(m);
            waits
        });
        let mut w = waits;
        w.sort();
        eprintln!(
            "round {round}: {} maps while 64 leaves were prepared: p50 {:?}, p99 {:?}, max {:?}",
            w.len(),
            w[w.len() / 2],
            w[w.len() * 99 / 100],
            w[w.len() - 1]
        );
    }
}
