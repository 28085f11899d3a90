//! The on-device memmap of a `--map dev` namespace: a clean disable leaves it as a fresh
//! init would (poison flags aside) and the next enable adopts it without initialising; a
//! crash (the enabling process killed) sends the next enable down the cold path, which ends
//! with a memmap equal to a fresh init; a different layout, or pfns taken in this process's
//! space, also go cold.

use std::time::Duration;

use super::*;
use crate::backing::file::TempPath;
use crate::backing::test_child::run_ignored_with;
use crate::desc::{PageFlags, PageSnapshot};
use crate::gup::GupFlags;
use crate::init::InitMode;
use crate::namespace::MemmapLocation;

const CHILD: &str = "DEVMAP_WARM_CHILD";
const MIB: u64 = 1 << 20;
const NS: u64 = 32 * MIB;
const BAD_PAGE: u64 = 3 * 512 + 17;
const SECOND_BAD: u64 = 9 * 512 + 300;

fn region_with_ns(tag: &str) -> (TempPath, Region) {
    region_with(tag, 64 * MIB, "kv", NS)
}

/// A new region file of `region_bytes` with one devdax namespace `name` of `ns_bytes` at 2M
/// keeping its memmap on the device: what the enable tests start from.
pub(super) fn region_with(
    tag: &str,
    region_bytes: u64,
    name: &str,
    ns_bytes: u64,
) -> (TempPath, Region) {
    let path = TempPath::new(tag);
    let mut region = Region::create(&path.0, region_bytes).expect("create");
    region
        .create_namespace(
            name,
            ns_bytes,
            2 * MIB,
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
        )
        .expect("namespace");
    (path, region)
}

pub(super) fn opts(layout: Layout, init: InitMode) -> DaxOptions {
    let mut o = DaxOptions::new(Order::PMD);
    o.layout = layout;
    o.init = init;
    o
}

/// Every data pfn's descriptor (`None` for a Heads tail, which has none).
pub(super) fn memmap_of(dev: &DaxDevice) -> Vec<Option<PageSnapshot>> {
    let pgmap = dev.pgmap();
    pgmap.sync_all().expect("init finished");
    let range = dev.ranges()[0];
    (0..range.len())
        .map(|i| {
            pgmap
                .descriptor(range.start().add(i))
                .expect("descriptor")
                .map(|p| p.snapshot())
        })
        .collect()
}

/// The memmap a fresh init writes for `ns`'s device: a host-memory device of the same size,
/// layout, pfns and pgmap id, in a space of its own.
pub(super) fn fresh_memmap(ns: &EnabledNamespace) -> Vec<Option<PageSnapshot>> {
    let space = DeviceSpace::new();
    let dev = ns.device();
    let place = Placement {
        base: Some(dev.ranges()[0].start()),
        memmap: MemmapPlace {
            room: None,
            adopt: None,
            id: Some(dev.pgmap().id()),
        },
    };
    let fresh = DaxDevice::placed(
        &space,
        Backing::memfd(dev.size()).expect("memfd"),
        opts(dev.pgmap().layout(), InitMode::Sync),
        place,
    )
    .expect("reference device");
    memmap_of(&fresh)
}

/// Uses `ns` the way a program does: writes, faults every leaf in, pins and unpins dirty,
/// takes a memory error.
fn use_it(space: &DeviceSpace, ns: &EnabledNamespace) {
    let dev = ns.device();
    let m = dev.mmap(0, dev.size(), true).expect("mmap");
    m.bytes().write(5 * MIB + 3, b"warm").expect("write");
    m.populate(m.addr(), dev.size()).expect("populate");
    let pins = m
        .pin_user_folios(m.addr(), dev.size() / PAGE_SIZE, GupFlags::WRITE)
        .expect("pin");
    pins.unpin(true);
    let pfn = dev.pfn_at(BAD_PAGE * PAGE_SIZE).expect("pfn");
    memory_failure(space, pfn, MfFlags::NONE).expect("memory error");
}

#[test]
fn a_clean_disable_leaves_a_memmap_the_next_enable_adopts() {
    for layout in [Layout::Flat, Layout::Heads] {
        let (_path, mut region) = region_with_ns(&format!("warm-{}", layout.name()));
        let space = DeviceSpace::new();
        let ns = region
            .enable(&space, "kv", opts(layout, InitMode::async_default()))
            .expect("enable");
        assert_eq!(ns.path(), EnablePath::Cold, "{layout:?}: first enable");
        let fresh = fresh_memmap(&ns);
        use_it(&space, &ns);
        let base = ns.device().ranges()[0].start();
        region.disable(ns).expect("disable");

        // A new space, as a new process has.
        let space = DeviceSpace::new();
        let ns = region
            .enable(&space, "kv", opts(layout, InitMode::Sync))
            .expect("warm enable");
        assert_eq!(ns.path(), EnablePath::Warm, "{layout:?}");
        assert!(ns.was_clean());
        let dev = ns.device();
        assert_eq!(dev.ranges()[0].start(), base, "the same pfns");
        assert_eq!(
            dev.pgmap().init_stats().descriptors,
            0,
            "{layout:?}: a warm enable initialises nothing"
        );
        assert_eq!(
            dev.badblocks(),
            vec![(BAD_PAGE * PAGE_SIZE, PAGE_SIZE)],
            "{layout:?}: the device knows its bad page"
        );
        // Apart from the poison the error left, the adopted memmap is a fresh init's: no
        // mapping, reference, pin or dirty bit of the last enable survives.
        let bad_pfn = dev.pfn_at(BAD_PAGE * PAGE_SIZE).expect("pfn");
        let adopted = memmap_of(dev);
        let poison = PageFlags::HWPOISON.union(PageFlags::HAS_HWPOISONED).bits();
        let mut poisoned = 0;
        for (i, (a, f)) in adopted.iter().zip(&fresh).enumerate() {
            let (Some(a), Some(f)) = (a, f) else {
                assert_eq!(a.is_some(), f.is_some());
                continue;
            };
            if a.flags & poison != 0 {
                poisoned += 1;
            }
            let mut a = *a;
            a.flags &= !poison;
            assert_eq!(
                &a, f,
                "{layout:?}: descriptor {i} differs from a fresh init"
            );
        }
        assert!(poisoned >= 1, "{layout:?}: the poison flags are kept");
        let m = dev.mmap(0, dev.size(), true).expect("mmap");
        let mut got = [0u8; 4];
        m.read_mc(5 * MIB + 3, &mut got).expect("read");
        assert_eq!(&got, b"warm");
        let mut b = [0u8];
        let e = m
            .read_mc(BAD_PAGE * PAGE_SIZE, &mut b)
            .expect_err("still bad");
        assert!(matches!(e, DaxError::MemoryLost { .. }), "{e}");
        assert!(dev.pgmap().subpage_poisoned(bad_pfn).expect("lookup"));
        // A warm session's changes live in its copy-on-write room until the disable writes
        // them back: a second error, and the mappings, pins and dirty bits of this session.
        // (The leaf of the first bad page is refused: a file device loses whole leaves.)
        m.populate(m.addr(), 6 * MIB).expect("populate");
        let second = dev.pfn_at(SECOND_BAD * PAGE_SIZE).expect("pfn");
        memory_failure(&space, second, MfFlags::RECORD_UNMAPPED).expect("a second error");
        drop(m);
        region.disable(ns).expect("disable");

        let space = DeviceSpace::new();
        let ns = region
            .enable(&space, "kv", opts(layout, InitMode::Sync))
            .expect("warm again");
        assert_eq!(
            ns.path(),
            EnablePath::Warm,
            "{layout:?}: warm after a warm session"
        );
        let dev = ns.device();
        assert_eq!(
            dev.badblocks(),
            vec![
                (BAD_PAGE * PAGE_SIZE, PAGE_SIZE),
                (SECOND_BAD * PAGE_SIZE, PAGE_SIZE)
            ]
        );
        let adopted = memmap_of(dev);
        for (i, (a, f)) in adopted.iter().zip(&fresh).enumerate() {
            if let (Some(a), Some(f)) = (a, f) {
                let mut a = *a;
                a.flags &= !poison;
                assert_eq!(&a, f, "{layout:?}: descriptor {i} after a warm session");
            }
        }
        region.disable(ns).expect("disable");
    }
}

#[test]
fn another_layout_or_taken_pfns_take_the_cold_path() {
    let (_path, mut region) = region_with_ns("warm-cold");
    let space = DeviceSpace::new();
    let ns = region
        .enable(&space, "kv", opts(Layout::Heads, InitMode::Sync))
        .expect("enable");
    let base = ns.device().ranges()[0].start();
    region.disable(ns).expect("disable");

    let ns = region
        .enable(&space, "kv", opts(Layout::Flat, InitMode::Sync))
        .expect("enable flat");
    assert_eq!(ns.path(), EnablePath::Cold, "another layout");
    region.disable(ns).expect("disable");

    let space = DeviceSpace::new();
    let other = space
        .reserve_range_at(base, 2 * MIB, 2 * MIB)
        .expect("take the pfns");
    let ns = region
        .enable(&space, "kv", opts(Layout::Flat, InitMode::Sync))
        .expect("enable");
    assert_eq!(ns.path(), EnablePath::Cold, "the pfns are taken");
    assert!(!ns.device().ranges()[0].overlaps(other));
    let fresh = fresh_memmap(&ns);
    assert!(memmap_of(ns.device()) == fresh, "cold is a fresh init");
    region.disable(ns).expect("disable");

    let ns = region
        .enable(&space, "kv", opts(Layout::Vmemmap, InitMode::Sync))
        .expect("enable vmemmap");
    assert_eq!(ns.path(), EnablePath::Host, "vmemmap stays in host memory");
    region.disable(ns).expect("disable");
    let label = region.namespace("kv").expect("kv").clone();
    assert_eq!(
        region.info_block(&label).expect("block").memmap,
        None,
        "nothing on the device to adopt"
    );
}

/// The child of the crash test: enables, uses the namespace, and is killed with SIGKILL while
/// the memmap is mid-use (a pin held).
#[test]
#[ignore = "the child half of the crash test, which runs it"]
fn warm_child() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let space = DeviceSpace::new();
    let mut region = Region::open(&path, Access::Manage).expect("open");
    let ns = region
        .enable(&space, "kv", opts(Layout::Heads, InitMode::async_default()))
        .expect("enable");
    assert_eq!(ns.path(), EnablePath::Warm);
    use_it(&space, &ns);
    let m = ns.device().mmap(0, 4 * MIB, true).expect("mmap");
    let pins = m
        .pin_user_folios(m.addr(), 4 * MIB / PAGE_SIZE, GupFlags::WRITE)
        .expect("pin");
    println!("pinned, now killed");
    std::mem::forget(pins);
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
}

#[test]
fn a_crash_while_enabled_takes_the_cold_path_to_a_fresh_memmap() {
    let (path, mut region) = region_with_ns("warm-crash");
    let space = DeviceSpace::new();
    let ns = region
        .enable(&space, "kv", opts(Layout::Heads, InitMode::Sync))
        .expect("enable");
    region.disable(ns).expect("disable");
    drop(region);

    let end = run_ignored_with(
        "namespace::enable::warm_tests::warm_child",
        CHILD,
        &path.0.display().to_string(),
        Duration::from_secs(30),
    );
    assert_eq!(end.signal, Some(9), "{end:?}");
    assert!(end.stdout.contains("pinned, now killed"), "{end:?}");

    let mut region = Region::open(&path.0, Access::Manage).expect("reopen");
    let label = region.namespace("kv").expect("kv").clone();
    assert_eq!(
        region.badblocks(&label).expect("list").ranges,
        vec![(BAD_PAGE, 1)],
        "on disk before any disable"
    );
    assert!(
        !region
            .info_block(&label)
            .expect("block")
            .flags
            .contains(InfoFlags::CLEAN),
        "the killed process left it in use"
    );
    let space = DeviceSpace::new();
    let ns = region
        .enable(&space, "kv", opts(Layout::Heads, InitMode::async_default()))
        .expect("enable after the crash");
    assert!(!ns.was_clean());
    assert_eq!(ns.path(), EnablePath::Cold);
    // The child's memory error was written to the list as it happened: the killed session
    // lost it nowhere, and the cold enable poisoned it again.
    assert_eq!(
        ns.device().badblocks(),
        vec![(BAD_PAGE * PAGE_SIZE, PAGE_SIZE)],
        "the bad page found in the killed session"
    );
    let fresh = fresh_memmap(&ns);
    let got = memmap_of(ns.device());
    let poison = PageFlags::HWPOISON.union(PageFlags::HAS_HWPOISONED).bits();
    let unpoisoned: Vec<Option<PageSnapshot>> = got
        .iter()
        .map(|d| {
            d.map(|mut d| {
                d.flags &= !poison;
                d
            })
        })
        .collect();
    assert!(got != fresh, "the bad page is flagged");
    assert!(
        unpoisoned == fresh,
        "apart from that flag, the cold path rebuilt the memmap from scratch"
    );
    region.disable(ns).expect("disable");
}

#[test]
fn an_enabled_namespace_writes_its_bad_pages_as_they_change() {
    let (_path, mut region) = region_with_ns("warm-sink");
    let label = region.namespace("kv").expect("kv").clone();
    let space = DeviceSpace::new();
    let ns = region
        .enable(&space, "kv", opts(Layout::Heads, InitMode::Sync))
        .expect("enable");
    let on_disk = |region: &Region| region.badblocks(&label).expect("list").ranges;
    assert!(on_disk(&region).is_empty());
    let dev = ns.device();
    for page in [BAD_PAGE, SECOND_BAD] {
        let pfn = dev.pfn_at(page * PAGE_SIZE).expect("pfn");
        memory_failure(&space, pfn, MfFlags::RECORD_UNMAPPED).expect("memory error");
    }
    assert_eq!(on_disk(&region), vec![(BAD_PAGE, 1), (SECOND_BAD, 1)]);
    assert_eq!(
        dev.clear_poison(BAD_PAGE * PAGE_SIZE, PAGE_SIZE)
            .expect("clear"),
        1
    );
    assert_eq!(
        on_disk(&region),
        vec![(SECOND_BAD, 1)],
        "the clear is written too"
    );
    region.disable(ns).expect("disable");
    assert_eq!(on_disk(&region), vec![(SECOND_BAD, 1)]);
}
