//! Memory failure on a device-dax device with real mappings: one 4 KiB page poisoned under a
//! 2 MiB leaf mapped three times. Each (early-kill) owner is told once, with the page's
//! address in its mapping and the shift of what it lost; a read of the lost bytes dies of
//! SIGBUS at that address (in a child process); in `Page` mode the other 511 pages keep their
//! bytes, in `Leaf` mode the whole leaf is gone. Clearing the poison brings the bytes back.
//! Who is told, and repeated errors, are `kill_tests`.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::addr::{Order, PAGE_SIZE};
use crate::backing::Backing;
use crate::backing::test_child::{report_sigbus_address, run_ignored_with};
use crate::dax::{DaxDevice, DaxError, DaxMapping, DaxOptions, Faults, Granularity};
use crate::init::InitMode;

pub(super) const MIB: u64 = 1 << 20;
pub(super) const LEAF: u64 = 2 * MIB;
/// The poisoned page: page 7 of the device's second leaf.
pub(super) const BAD: u64 = LEAF + 7 * PAGE_SIZE;
const CHILD: &str = "DEVMAP_MF_CHILD";

pub(super) fn device(space: &DeviceSpace, granularity: Granularity) -> DaxDevice {
    let mut opts = DaxOptions::new(Order::PMD);
    opts.init = InitMode::Sync;
    opts.faults = Faults::Userfaultfd;
    opts.granularity = granularity;
    DaxDevice::with_options(space, Backing::memfd(8 * MIB).expect("memfd"), opts).expect("device")
}

/// Three mappings that all hold the second leaf: the whole device, that leaf alone, and the
/// first two leaves.
pub(super) fn three(dev: &DaxDevice) -> [DaxMapping; 3] {
    [
        dev.mmap(0, 8 * MIB, true).expect("mmap"),
        dev.mmap(LEAF, LEAF, true).expect("mmap"),
        dev.mmap(0, 2 * LEAF, true).expect("mmap"),
    ]
}

/// Byte offset of device offset `at` in `m`.
pub(super) fn rel(m: &DaxMapping, at: u64) -> u64 {
    at - m.offset()
}

/// Writes one marked byte per page of the second leaf through `m`, then touches the leaf in
/// every mapping so that each has it faulted in.
pub(super) fn fill_and_fault(maps: &[DaxMapping; 3]) {
    for page in 0..512u64 {
        let at = LEAF + page * PAGE_SIZE;
        maps[0]
            .bytes()
            .write(rel(&maps[0], at), &[page as u8 ^ 0x5a])
            .expect("write");
    }
    for m in maps {
        let mut b = [0u8];
        m.bytes()
            .read(rel(m, LEAF), &mut b)
            .expect("touch the leaf");
        // A device that does not catch touches faults only here.
        let at = m.addr() + rel(m, LEAF) as usize;
        m.populate(at, LEAF).expect("fault the leaf in");
        assert!(m.is_faulted(at));
    }
}

/// The child: poisons the page, checks what the owners were told and what still reads, then
/// reads the lost bytes through mapping `k`, which must end the process with SIGBUS.
#[test]
#[ignore = "the child half of the memory-failure SIGBUS tests, which run it"]
fn mf_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (mode, k) = spec.split_once(':').expect("mode:k");
    let k: usize = k.parse().expect("k");
    let granularity = if mode == "page" {
        Granularity::Page
    } else {
        Granularity::Leaf
    };
    let space = DeviceSpace::new();
    let file = crate::backing::file::TempPath::new("mf-file");
    let dev = if mode == "file" {
        // Not caught: `Page` is asked for and `Leaf` applies; the leaf is fenced.
        let backing = Backing::create_file(&file.0, 8 * MIB).expect("file");
        DaxDevice::with_options(&space, backing, DaxOptions::new(Order::PMD)).expect("device")
    } else {
        device(&space, granularity)
    };
    let maps = three(&dev);
    let told: Arc<Mutex<Vec<PoisonNotice>>> = Arc::default();
    for m in &maps {
        let told = Arc::clone(&told);
        m.set_owner(Arc::new(move |n: &PoisonNotice| told.lock().push(*n)));
        // Told of an error none of them met (by pfn, no mapping is current): early kill.
        m.set_early_kill(true);
    }
    fill_and_fault(&maps);
    let bad = dev.pfn_at(BAD).expect("pfn");
    let report = memory_failure(&space, bad, MfFlags::ACTION_REQUIRED).expect("handled");
    let told = told.lock().clone();
    assert_eq!(told, report.notices, "each owner told what the report says");
    assert_eq!(
        told, report.revoked,
        "every mapping lost the page, and was told"
    );
    let shift = if mode == "page" { 12 } else { 21 };
    assert_eq!(dev.granularity() == Granularity::Page, mode == "page");
    for m in &maps {
        let mine: Vec<_> = told.iter().filter(|n| n.mapping == m.id()).collect();
        assert_eq!(mine.len(), 1, "{:?} told once", m.id());
        assert_eq!(mine[0].addr, m.addr() + rel(m, BAD) as usize);
        assert_eq!(
            (mine[0].shift, mine[0].pfn, mine[0].action_required),
            (shift, bad, false),
            "BUS_MCEERR_AO: not the current mapping's access"
        );
        // Leaf mode takes the leaf away; Page mode leaves it mapped but for the one page.
        assert_eq!(m.is_faulted(mine[0].addr), mode == "page", "{mode}");
    }
    assert_eq!(dev.badblocks(), vec![(BAD, PAGE_SIZE)]);
    println!("owners ok");

    let m = &maps[k];
    let target = if mode == "page" {
        for page in (0..512u64).filter(|p| *p != 7) {
            let mut b = [0u8];
            m.bytes()
                .read(rel(m, LEAF + page * PAGE_SIZE), &mut b)
                .expect("read");
            assert_eq!(b[0], page as u8 ^ 0x5a, "page {page} kept its byte");
        }
        println!("511 pages ok");
        BAD
    } else {
        // Any page of the leaf is lost, not only the poisoned one.
        LEAF + 300 * PAGE_SIZE
    };
    let addr = m.addr() + rel(m, target) as usize;
    println!("reading {addr:#018x}");
    report_sigbus_address();
    let mut b = [0u8];
    let r = m.bytes().read(rel(m, target), &mut b);
    println!("the read returned {r:?}");
    std::process::exit(3);
}

/// Runs the child for `mode` reading through mapping `k`; checks it died of SIGBUS at the
/// address it read, and returns what it printed.
fn run(mode: &str, k: usize) -> String {
    let end = run_ignored_with(
        "memory_failure::dax_tests::mf_child",
        CHILD,
        &format!("{mode}:{k}"),
        Duration::from_secs(30),
    );
    assert_eq!(end.code, Some(7), "{mode} {k}: must die of SIGBUS: {end:?}");
    assert!(end.stdout.contains("owners ok"), "{end:?}");
    let reading = end
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("reading "))
        .expect("the child said where it reads")
        .to_owned();
    assert!(
        end.stdout.contains(&format!("SIGBUS at {reading}")),
        "{mode} {k}: SIGBUS at the address read: {end:?}"
    );
    end.stdout
}

#[test]
fn page_mode_loses_only_the_poisoned_page_in_each_of_three_mappings() {
    for k in 0..3 {
        let out = run("page", k);
        assert!(out.contains("511 pages ok"), "{out}");
    }
}

#[test]
fn leaf_mode_loses_the_whole_leaf_in_each_of_three_mappings() {
    for k in 0..3 {
        run("leaf", k);
    }
}

#[test]
fn a_file_device_fences_the_leaf_in_each_of_three_mappings() {
    for k in 0..3 {
        run("file", k);
    }
}

/// At `Leaf` granularity on a memfd each mapping's 512 entries of the leaf are taken out
/// (moved aside for the reaper, not zapped in memory failure's path): none is left in any
/// mapping, the other leaves keep theirs, each mapping is still one VMA (registered, so the
/// next touch is caught and refused, which `leaf_mode_loses_the_whole_leaf_in_each_of_three_mappings`
/// checks), and once the poison is cleared every byte reads back through every mapping.
#[test]
fn leaf_mode_takes_every_entry_out_and_keeps_the_bytes() {
    use crate::backing::{Sharing, resident_in, smaps_at};
    let space = DeviceSpace::new();
    let dev = device(&space, Granularity::Leaf);
    let maps = three(&dev);
    fill_and_fault(&maps);
    maps[0]
        .populate(maps[0].addr(), LEAF)
        .expect("fault leaf 0 in");
    let entries = |m: &DaxMapping, at: u64| {
        let addr = (m.addr() + rel(m, at) as usize) as *const u8;
        resident_in(addr, LEAF as usize, Sharing::Shared).expect("pagemap")
    };
    for m in &maps {
        assert_eq!(entries(m, LEAF), LEAF, "{:?} has the leaf mapped", m.id());
    }
    let bad = dev.pfn_at(BAD).expect("pfn");
    let report = memory_failure(&space, bad, MfFlags::NONE).expect("handled");
    assert_eq!(report.revoked.len(), 3);
    for m in &maps {
        assert_eq!(
            entries(m, LEAF),
            0,
            "{:?} keeps no entry of the leaf",
            m.id()
        );
        let vma = smaps_at(m.addr())
            .expect("smaps")
            .expect("the mapping's VMA");
        assert_eq!(
            (vma.start, vma.end),
            (m.addr(), m.addr() + m.len() as usize),
            "{:?} is still one VMA",
            m.id()
        );
    }
    assert_eq!(entries(&maps[0], 0), LEAF, "leaf 0 kept its entries");

    assert_eq!(dev.clear_poison(BAD, PAGE_SIZE).expect("clear"), 1);
    for m in &maps {
        for page in [0u64, 7, 300, 511] {
            let mut b = [0u8];
            m.read_mc(rel(m, LEAF + page * PAGE_SIZE), &mut b)
                .expect("the leaf reads again");
            assert_eq!(b[0], page as u8 ^ 0x5a, "{:?} page {page}", m.id());
        }
    }
}

#[test]
fn clearing_the_poison_of_a_file_device_maps_its_bytes_back() {
    let file = crate::backing::file::TempPath::new("mf-file-clear");
    let space = DeviceSpace::new();
    let backing = Backing::create_file(&file.0, 8 * MIB).expect("file");
    let dev =
        DaxDevice::with_options(&space, backing, DaxOptions::new(Order::PMD)).expect("device");
    let maps = three(&dev);
    fill_and_fault(&maps);
    let bad = dev.pfn_at(BAD).expect("pfn");
    memory_failure(&space, bad, MfFlags::NONE).expect("handled");
    let mut b = [0u8];
    let e = maps[1]
        .read_mc(rel(&maps[1], LEAF), &mut b)
        .expect_err("fenced");
    assert!(matches!(e, DaxError::MemoryLost { len: LEAF, .. }), "{e}");
    assert_eq!(dev.clear_poison(BAD, PAGE_SIZE).expect("clear"), 1);
    for m in &maps {
        for page in [0u64, 7, 300] {
            m.bytes()
                .read(rel(m, LEAF + page * PAGE_SIZE), &mut b)
                .expect("unfenced");
            assert_eq!(b[0], page as u8 ^ 0x5a, "page {page} came back");
        }
    }
}

#[test]
fn clearing_the_poison_maps_the_page_again() {
    let space = DeviceSpace::new();
    let dev = device(&space, Granularity::Page);
    let maps = three(&dev);
    fill_and_fault(&maps);
    let bad = dev.pfn_at(BAD).expect("pfn");
    memory_failure(&space, bad, MfFlags::NONE).expect("handled");
    assert_eq!(dev.badblocks(), vec![(BAD, PAGE_SIZE)]);
    let e = maps[1]
        .pin_user_pages(maps[1].addr(), 512, crate::gup::GupFlags::NONE)
        .expect_err("the poisoned folio cannot be pinned");
    assert!(e.to_string().contains("poisoned"), "{e}");

    assert_eq!(dev.clear_poison(BAD, PAGE_SIZE).expect("clear"), 1);
    assert_eq!(dev.badblocks(), vec![]);
    assert!(!dev.pgmap().subpage_poisoned(bad).expect("lookup"));
    // The owner rewrote the page: every mapping reads it again, and pins work.
    maps[0]
        .bytes()
        .write(rel(&maps[0], BAD), b"new")
        .expect("write");
    for m in &maps {
        let mut b = [0u8; 3];
        m.bytes()
            .read(rel(m, BAD), &mut b)
            .expect("read after clear");
        assert_eq!(&b, b"new");
    }
    let pins = maps[1]
        .pin_user_pages(maps[1].addr(), 512, crate::gup::GupFlags::NONE)
        .expect("pins work again");
    drop(pins);
}

/// The time from `memory_failure` to every mapping revoked and every owner told, for 1 and 4
/// mappings of a 2 MiB leaf (a figure for BENCHMARKS.md, not a check):
/// `cargo test --release -p devmap --lib revocation_time -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn revocation_time() {
    const LEAVES: u64 = 200;
    for (granularity, n) in [
        (Granularity::Page, 1usize),
        (Granularity::Page, 4),
        (Granularity::Leaf, 1),
        (Granularity::Leaf, 4),
    ] {
        let space = DeviceSpace::new();
        let mut opts = DaxOptions::new(Order::PMD);
        opts.init = InitMode::Sync;
        opts.granularity = granularity;
        let backing = Backing::memfd(LEAVES * LEAF).expect("memfd");
        let dev = DaxDevice::with_options(&space, backing, opts).expect("device");
        let maps: Vec<DaxMapping> = (0..n)
            .map(|_| dev.mmap(0, LEAVES * LEAF, true).expect("mmap"))
            .collect();
        let told = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for m in &maps {
            let told = Arc::clone(&told);
            m.set_owner(Arc::new(move |_: &PoisonNotice| {
                told.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }));
            m.set_early_kill(true);
            m.populate(m.addr(), m.len()).expect("fault every leaf in");
        }
        let mut ns: Vec<u128> = (0..LEAVES)
            .map(|i| {
                let pfn = dev.pfn_at(i * LEAF + 5 * PAGE_SIZE).expect("pfn");
                let r = memory_failure(&space, pfn, MfFlags::NONE).expect("handled");
                assert_eq!(r.notices.len(), n);
                r.elapsed.as_nanos()
            })
            .collect();
        assert_eq!(
            told.load(std::sync::atomic::Ordering::Relaxed),
            LEAVES * n as u64
        );
        ns.sort_unstable();
        println!(
            "{granularity:?}, {n} mapping(s): p50 {} us, p99 {} us, max {} us over {LEAVES} errors",
            ns[ns.len() / 2] / 1000,
            ns[ns.len() * 99 / 100] / 1000,
            ns[ns.len() - 1] / 1000
        );
    }
}

#[test]
fn read_mc_refuses_exactly_the_lost_bytes_in_each_granularity() {
    for (granularity, lost) in [(Granularity::Page, PAGE_SIZE), (Granularity::Leaf, LEAF)] {
        let space = DeviceSpace::new();
        let dev = device(&space, granularity);
        let maps = three(&dev);
        fill_and_fault(&maps);
        let bad = dev.pfn_at(BAD).expect("pfn");
        memory_failure(&space, bad, MfFlags::NONE).expect("handled");
        for m in &maps {
            let mut readable = 0;
            let mut refused = 0;
            for page in 0..512u64 {
                let mut b = [0u8];
                match m.read_mc(rel(m, LEAF + page * PAGE_SIZE), &mut b) {
                    Ok(()) => {
                        assert_eq!(b[0], page as u8 ^ 0x5a, "{granularity:?} page {page}");
                        readable += PAGE_SIZE;
                    }
                    Err(DaxError::MemoryLost { addr, len }) => {
                        assert_eq!(len, lost, "{granularity:?}");
                        let first = m.addr() + rel(m, BAD - BAD % lost) as usize;
                        assert_eq!(addr, first, "{granularity:?}: names the lost unit");
                        refused += PAGE_SIZE;
                    }
                    Err(e) => panic!("{granularity:?}: {e}"),
                }
            }
            assert_eq!((refused, readable), (lost, LEAF - lost), "{granularity:?}");
        }
        // The neighbouring leaf is untouched in both modes.
        let mut b = [0u8];
        maps[0].read_mc(0, &mut b).expect("leaf 0 reads");
        // A read spanning the lost bytes is refused whole, copying nothing.
        let mut big = vec![0xffu8; (2 * PAGE_SIZE) as usize];
        let e = maps[0]
            .read_mc(BAD - PAGE_SIZE, &mut big)
            .expect_err("spans the lost page");
        assert!(matches!(e, DaxError::MemoryLost { .. }), "{e}");
        assert!(big.iter().all(|b| *b == 0xff), "nothing copied");
    }
}

#[test]
fn pins_that_exist_stay_and_are_reported_new_ones_fail() {
    let space = DeviceSpace::new();
    let dev = device(&space, Granularity::Page);
    let maps = three(&dev);
    fill_and_fault(&maps);
    let m = &maps[1];
    let pins = m
        .pin_user_pages(m.addr(), 16, crate::gup::GupFlags::WRITE)
        .expect("pin before the error");
    let bad = dev.pfn_at(BAD).expect("pfn");
    let report = memory_failure(&space, bad, MfFlags::NONE).expect("handled");
    assert_eq!(report.pins, 16, "the pins taken before are reported");
    // They stay valid: DMA into them cannot be revoked.
    assert_eq!(pins.len(), 16);
    let e = m
        .pin_user_pages(m.addr(), 16, crate::gup::GupFlags::WRITE)
        .expect_err("a new pin of the poisoned folio");
    assert!(e.to_string().contains("poisoned"), "{e}");
    pins.unpin(false);
    let folio = dev.pgmap().folio(bad).expect("folio");
    assert_eq!(folio.pincount(), 0);
}

#[test]
fn each_error_reaches_the_device_its_folio_or_address_names_among_several() {
    // Three devices in three spaces, two mappings each, every leaf faulted. An error by pfn
    // reaches the device the folio's `mapping` names and revokes its two mappings only; an
    // error by address reaches the one mapping that holds the address; an address no live
    // mapping holds (one unmapped since) is not devmap's.
    let spaces: Vec<DeviceSpace> = (0..3).map(|_| DeviceSpace::new()).collect();
    let devs: Vec<DaxDevice> = spaces
        .iter()
        .map(|s| device(s, Granularity::Leaf))
        .collect();
    let maps: Vec<[DaxMapping; 2]> = devs
        .iter()
        .map(|d| {
            let m = [
                d.mmap(0, 8 * MIB, true).expect("mmap"),
                d.mmap(LEAF, LEAF, true).expect("mmap"),
            ];
            for x in &m {
                x.populate(x.addr(), x.len()).expect("populate");
            }
            m
        })
        .collect();
    for (i, d) in devs.iter().enumerate() {
        let pfn = d.pfn_at(BAD).expect("pfn");
        let folio = d.pgmap().folio(pfn).expect("folio");
        assert_eq!(folio.mapping(), d.address_space());
        let report = memory_failure(&spaces[i], pfn, MfFlags::NONE).expect("memory_failure");
        let ids: Vec<_> = report.revoked.iter().map(|n| n.mapping).collect();
        assert_eq!(ids, vec![maps[i][0].id(), maps[i][1].id()], "device {i}");
        assert_eq!(d.badblocks(), vec![(BAD, PAGE_SIZE)]);
    }
    // By address: a clean leaf (the first) of each device's whole mapping.
    for (i, d) in devs.iter().enumerate() {
        let addr = maps[i][0].addr() + 3 * PAGE_SIZE as usize;
        let report = memory_failure_at(addr, MfFlags::ACTION_REQUIRED).expect("by address");
        assert_eq!(
            report.pfn,
            d.pfn_at(3 * PAGE_SIZE).expect("pfn"),
            "device {i}"
        );
        assert_eq!(
            report.notices.len(),
            1,
            "only the whole mapping has the first leaf"
        );
        assert_eq!(report.notices[0].addr, addr);
    }
    let [whole, _leaf] = &maps[1];
    let gone = whole.addr() + 5 * PAGE_SIZE as usize;
    let maps_1 = maps.into_iter().nth(1).expect("device 1's mappings");
    drop(maps_1);
    assert!(matches!(
        memory_failure_at(gone, MfFlags::NONE),
        Err(MfError::NotMapped { .. })
    ));
}
