//! A namespace's bytes, settings and bad pages survive a disable and an enable in another
//! process; a process that ends without disabling leaves the namespace unclean.

use std::time::Duration;

use super::*;
use crate::backing::file::TempPath;
use crate::backing::test_child::run_ignored_with;
use crate::dax::DaxError;
use crate::namespace::MemmapLocation;

const CHILD: &str = "DEVMAP_NS_CHILD";
const MIB: u64 = 1 << 20;
/// Written in the first leaf; the bad page is in the second (a file device loses whole leaves).
const AT: u64 = MIB + 100;
const BAD_PAGE: u64 = 2 * 256 + 9;

/// The child: reopens the region of `path` in a new process and checks what the parent left.
#[test]
#[ignore = "the child half of the namespace persistence tests, which run it"]
fn ns_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (what, path) = spec.split_once(':').expect("what:path");
    let space = DeviceSpace::new();
    let mut region = Region::open(path, Access::Manage).expect("open the region");
    let label = region.namespace("vm0").expect("vm0").clone();
    assert_eq!(
        (label.namespace.size(), label.namespace.align()),
        (16 * MIB, 2 * MIB)
    );
    let ns = region
        .enable(&space, "vm0", DaxOptions::new(Order::PMD))
        .expect("enable");
    match what {
        "reopen" => {
            assert!(ns.was_clean(), "the parent disabled it cleanly");
            assert_eq!(
                ns.device().badblocks(),
                vec![(BAD_PAGE * PAGE_SIZE, PAGE_SIZE)]
            );
            let m = ns.device().mmap(0, 16 * MIB - 2 * MIB, true).expect("mmap");
            let mut got = [0u8; 7];
            m.read_mc(AT, &mut got).expect("read the bytes back");
            assert_eq!(&got, b"persist");
            let mut b = [0u8];
            let e = m
                .read_mc(BAD_PAGE * PAGE_SIZE, &mut b)
                .expect_err("the bad page is still bad");
            assert!(matches!(e, DaxError::MemoryLost { .. }), "{e}");
            drop(m);
            region.disable(ns).expect("disable");
            println!("reopen ok");
        }
        "crash" => {
            println!("enabled, now ending without a disable");
            std::process::exit(0);
        }
        other => panic!("unknown case {other}"),
    }
}

fn child(what: &str, path: &std::path::Path) -> crate::backing::test_child::ChildEnd {
    run_ignored_with(
        "namespace::enable::tests::ns_child",
        CHILD,
        &format!("{what}:{}", path.display()),
        Duration::from_secs(30),
    )
}

#[test]
fn bytes_settings_and_bad_pages_survive_a_disable_and_an_enable_elsewhere() {
    let path = TempPath::new("ns-persist");
    let space = DeviceSpace::new();
    let mut region = Region::create(&path.0, 64 * MIB).expect("create");
    region
        .create_namespace(
            "vm0",
            16 * MIB,
            2 * MIB,
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
        )
        .expect("vm0");
    let ns = region
        .enable(&space, "vm0", DaxOptions::new(Order::PMD))
        .expect("enable");
    assert!(!ns.was_clean(), "never disabled before");
    let dev = ns.device();
    let data = ns.label().namespace.data_bytes();
    assert_eq!(dev.size(), data);
    let m = dev.mmap(0, data, true).expect("mmap");
    m.bytes().write(AT, b"persist").expect("write");
    m.populate(m.addr(), data).expect("fault the leaves in");
    let pfn = dev.pfn_at(BAD_PAGE * PAGE_SIZE).expect("pfn");
    memory_failure(&space, pfn, MfFlags::NONE).expect("a memory error");
    drop(m);
    region.disable(ns).expect("disable");
    let label = region.namespace("vm0").expect("vm0").clone();
    let block = region.info_block(&label).expect("block");
    assert!(block.flags.contains(InfoFlags::CLEAN));
    assert_eq!(block.generation, 3, "created 1, enabled 2, disabled 3");
    assert_eq!(
        region.badblocks(&label).expect("list").ranges,
        vec![(BAD_PAGE, 1)]
    );
    drop(region);

    let end = child("reopen", &path.0);
    assert!(end.stdout.contains("reopen ok"), "{end:?}");
}

#[test]
fn a_process_that_ends_without_disabling_leaves_the_namespace_unclean() {
    let path = TempPath::new("ns-crash");
    let mut region = Region::create(&path.0, 64 * MIB).expect("create");
    region
        .create_namespace(
            "vm0",
            16 * MIB,
            2 * MIB,
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
        )
        .expect("vm0");
    let space = DeviceSpace::new();
    let ns = region
        .enable(&space, "vm0", DaxOptions::new(Order::PMD))
        .expect("enable");
    region.disable(ns).expect("disable");
    drop(region);
    let end = child("crash", &path.0);
    assert!(end.stdout.contains("enabled, now ending"), "{end:?}");

    let mut region = Region::open(&path.0, Access::Manage).expect("reopen");
    let ns = region
        .enable(&space, "vm0", DaxOptions::new(Order::PMD))
        .expect("enable");
    assert!(!ns.was_clean(), "the crash left it in use");
    region.disable(ns).expect("disable");
    let e = region
        .enable(&space, "nope", DaxOptions::new(Order::PMD))
        .expect_err("no such namespace");
    assert!(e.to_string().contains("no namespace named"), "{e}");
}

/// A region file on tmpfs is shmem: its namespaces catch first touches as a memfd device does
/// (what `devmap serve` needs to resolve a client's touches), while the same namespace on a
/// disk filesystem has every leaf's metadata set when it is mapped.
#[test]
fn a_namespace_on_tmpfs_catches_first_touches_and_one_on_disk_does_not() {
    for (path, caught) in [
        (TempPath::on_tmpfs("ns-shm"), true),
        (TempPath::new("ns-disk"), false),
    ] {
        let space = DeviceSpace::new();
        let mut region = Region::create(&path.0, 64 * MIB).expect("create");
        region
            .create_namespace(
                "vm0",
                16 * MIB,
                2 * MIB,
                NamespaceMode::Devdax,
                MemmapLocation::Mem,
            )
            .expect("vm0");
        let ns = region
            .enable(&space, "vm0", DaxOptions::new(Order::PMD))
            .expect("enable");
        let dev = ns.device();
        assert_eq!(dev.catches_touches(), caught, "{}", path.0.display());
        let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
        m.bytes().write(AT, b"touch").expect("write");
        let stats = dev.fault_stats();
        let want = if caught { (1, 1) } else { (0, 2) };
        assert_eq!(
            (stats.user_faults, stats.leaves_mapped),
            want,
            "{}",
            path.0.display()
        );
        let mut got = [0u8; 5];
        m.read_mc(AT, &mut got).expect("read");
        assert_eq!(&got, b"touch");
        drop(m);
        region.disable(ns).expect("disable");
    }
}

/// A 4K namespace an older devmap created (its label in a 1.0 index, its info block with the
/// data offset of its own align, its start on 4 KiB right after the label area) enables with
/// the layout it recorded, its bytes where they were; a namespace created beside it gets the
/// kernel's layout, and the old one keeps its own.
#[test]
fn a_4k_namespace_an_older_devmap_created_enables_with_the_offset_it_recorded() {
    use crate::namespace::{GeometryRule, Namespace};
    use std::os::unix::fs::FileExt;

    let path = TempPath::new("ns-own-align");
    let space = DeviceSpace::new();
    let mut region = Region::create(&path.0, 64 * MIB).expect("create");
    for (name, map) in [
        ("old-mem", MemmapLocation::Mem),
        ("old-dev", MemmapLocation::Dev),
    ] {
        let old = Namespace::own_align(4 * MIB, PAGE_SIZE, NamespaceMode::Devdax, map)
            .expect("own align");
        region.create_laid_out(name, old).expect(name);
    }
    let file = std::fs::File::open(&path.0).expect("open");
    let version = |slot: u64| {
        let mut v = [0u8; 4];
        file.read_exact_at(&mut v, slot * 8192 + 16).expect("read");
        v
    };
    assert_eq!(
        [version(0), version(1)],
        [[1, 0, 0, 0]; 2],
        "both copies are 1.0"
    );
    drop(region);

    let mut region = Region::open(&path.0, Access::Manage).expect("reopen");
    // ALIGN(8 KiB + 64 * 1022, 4 KiB) = 73728 for --map dev.
    for (name, at, offset) in [
        ("old-mem", 64 << 10, 8192),
        ("old-dev", (64 << 10) + 4 * MIB, 73728),
    ] {
        let label = region.namespace(name).expect(name).clone();
        let ns = label.namespace;
        assert_eq!(
            (label.offset, ns.rule(), ns.data_offset(), ns.end_trunc()),
            (at, GeometryRule::OwnAlign, offset, 0),
            "{name}"
        );
        assert_eq!(region.info_block(&label).expect("block").namespace, ns);
        let enabled = region
            .enable(&space, name, DaxOptions::new(Order::BASE))
            .expect("enable");
        let dev = enabled.device();
        assert_eq!(dev.size(), 4 * MIB - offset, "{name}");
        let m = dev.mmap(0, dev.size(), true).expect("mmap");
        m.bytes().write(0, name.as_bytes()).expect("write");
        m.populate(m.addr(), dev.size()).expect("fault in");
        drop(m);
        region.disable(enabled).expect("disable");
        let mut got = vec![0u8; name.len()];
        file.read_exact_at(&mut got, at + offset).expect("read");
        assert_eq!(
            got,
            name.as_bytes(),
            "{name}: the data starts at its recorded offset"
        );
    }

    let new = region
        .create_namespace(
            "new",
            4 * MIB,
            PAGE_SIZE,
            NamespaceMode::Devdax,
            MemmapLocation::Mem,
        )
        .expect("new");
    assert_eq!(
        (
            new.offset % (2 * MIB),
            new.namespace.rule(),
            new.namespace.data_offset()
        ),
        (0, GeometryRule::Kernel, 2 * MIB)
    );
    drop(region);
    let region = Region::open(&path.0, Access::Read).expect("reopen");
    let rules: Vec<_> = region
        .namespaces()
        .iter()
        .map(|l| l.namespace.rule())
        .collect();
    assert_eq!(
        rules,
        [
            GeometryRule::OwnAlign,
            GeometryRule::OwnAlign,
            GeometryRule::Kernel
        ]
    );
}
