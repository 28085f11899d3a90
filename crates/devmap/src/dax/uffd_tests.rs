//! Device-dax with touches caught by userfaultfd: a first touch runs the fault path and maps
//! the whole leaf (checked against `/proc/self/smaps`), at 4 KiB, 2 MiB and 1 GiB; touches
//! once teardown has begun die of SIGBUS; pins by address fault what they need and carry user
//! addresses; dynamic devices; and a stress run of touches, pins and unmaps against teardown.

use std::time::Duration;

use super::device_core::{DaxRange, pgoff_to_pfn};
use super::*;
use crate::addr::{PAGE_SIZE, Pfn, PfnRange};
use crate::backing::test_child::run_ignored;
use crate::backing::{Backing, HugePageSize, HugePages, smaps_at};
use crate::gup::GupFlags;
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::pgmap::DeviceSpace;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const WAIT: Duration = Duration::from_secs(30);

fn device(space: &DeviceSpace, backing: Backing, align: Order) -> DaxDevice {
    let mut opts = DaxOptions::new(align);
    opts.layout = Layout::Vmemmap;
    opts.init = InitMode::Sync;
    opts.faults = Faults::Userfaultfd;
    DaxDevice::with_options(space, backing, opts).expect("device")
}

/// Leaves the kernel has mapped in `m`'s VMA, by page size.
fn kernel_leaves(m: &DaxMapping) -> Vec<(u64, u64)> {
    smaps_at(m.addr()).expect("smaps").expect("vma").leaves()
}

#[test]
fn a_first_touch_runs_the_fault_path_and_maps_the_whole_leaf() {
    for (align, pages) in [(Order::BASE, 1), (Order::PMD, 512)] {
        let space = DeviceSpace::new();
        let dev = device(&space, Backing::memfd(8 * MIB).expect("memfd"), align);
        assert!(dev.catches_touches());
        let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
        assert_eq!(kernel_leaves(&m), vec![]);

        // One byte written in the second leaf: one caught fault, one leaf mapped, whole.
        let at = align.bytes() + 100;
        m.bytes().write(at, b"caught").expect("write");
        let stats = dev.fault_stats();
        assert_eq!(
            (stats.user_faults, stats.leaves_mapped),
            (1, 1),
            "{align:?}"
        );
        assert_eq!(kernel_leaves(&m), vec![(4096, pages)], "{align:?}");
        assert!(m.is_faulted(m.addr() + at as usize));
        assert!(!m.is_faulted(m.addr()));

        // The fault path's work: mapping, index, one reference and one mapcount.
        let pfn = dev.pfn_at(align.bytes()).expect("pfn");
        let folio = dev.pgmap().folio(pfn).expect("folio");
        assert_eq!(folio.mapping(), dev.address_space());
        assert_eq!(folio.index(), align.nr_pages());
        assert_eq!((folio.refcount(), folio.mapcount()), (2, 1));
        assert_eq!(
            dev.rmap(pfn),
            vec![(m.id(), m.addr() + align.bytes() as usize)]
        );

        // Every other byte of the leaf is mapped now: no further fault.
        let mut got = [0u8; 6];
        m.bytes().read(at, &mut got).expect("read");
        assert_eq!(&got, b"caught");
        m.bytes()
            .write(2 * align.bytes() - 1, b"z")
            .expect("last byte of the leaf");
        assert_eq!(dev.fault_stats().user_faults, 1);
        drop(m);
        assert_eq!(dev.pgmap().folio(pfn).expect("folio").refcount(), 1);
    }
}

#[test]
fn a_second_mapping_faults_on_its_own_and_sees_the_bytes() {
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(4 * MIB).expect("memfd"), Order::PMD);
    let a = dev.mmap(0, 4 * MIB, true).expect("mmap a");
    let b = dev.mmap(2 * MIB, 2 * MIB, true).expect("mmap b");
    a.bytes().write(3 * MIB, b"from a").expect("write");
    let mut got = [0u8; 6];
    b.bytes().read(MIB, &mut got).expect("read");
    assert_eq!(&got, b"from a");
    // One caught touch per mapping. `b`'s leaf is in the page cache already, so its
    // zeropage stops at once; the toucher must sleep through that and wake only once the
    // continue has mapped its page, or it faults a second time.
    assert_eq!(dev.fault_stats().user_faults, 2, "one fault per mapping");
    let pfn = dev.pfn_at(2 * MIB).expect("pfn");
    let f = dev.pgmap().folio(pfn).expect("folio");
    assert_eq!((f.refcount(), f.mapcount()), (3, 2));
    assert_eq!(dev.rmap(pfn).len(), 2);
}

#[test]
fn populate_maps_the_bytes_so_touches_do_not_fault() {
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(4 * MIB).expect("memfd"), Order::PMD);
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    assert_eq!(m.populate(m.addr(), 4 * MIB).expect("populate").mapped, 2);
    assert_eq!(kernel_leaves(&m), vec![(4096, 1024)]);
    m.bytes().write(0, b"x").expect("write");
    m.bytes().write(4 * MIB - 1, b"y").expect("write");
    assert_eq!(dev.fault_stats().user_faults, 0);
}

#[test]
fn hugetlb_2m_first_touch_maps_one_huge_page() {
    let _pages = match HugePages::reserve(HugePageSize::Size2M, 2) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping hugetlb_2m_first_touch_maps_one_huge_page: {why}");
            return;
        }
    };
    let space = DeviceSpace::new();
    let backing = Backing::hugetlb(4 * MIB, HugePageSize::Size2M).expect("hugetlb");
    let dev = device(&space, backing, Order::PMD);
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    m.bytes().write(2 * MIB + 7, b"huge").expect("write");
    assert_eq!(dev.fault_stats().user_faults, 1);
    assert_eq!(dev.fault_stats().leaves_mapped, 1);
    assert_eq!(kernel_leaves(&m), vec![(2 * MIB, 1)]);
    let f = dev
        .pgmap()
        .folio(dev.pfn_at(2 * MIB).expect("pfn"))
        .expect("folio");
    assert_eq!((f.refcount(), f.mapcount()), (2, 1));
}

#[test]
fn one_gib_leaves_from_a_memfd_and_from_1g_hugetlb() {
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(2 * GIB).expect("memfd"), Order::PUD);
    let m = dev.mmap(0, 2 * GIB, true).expect("mmap");
    assert_eq!(m.addr() as u64 % GIB, 0, "1 GiB-aligned mapping");
    m.bytes().write(GIB + 12345, b"gig").expect("write");
    assert_eq!(dev.fault_stats().user_faults, 1);
    assert_eq!(kernel_leaves(&m), vec![(4096, GIB / 4096)]);
    let f = dev
        .pgmap()
        .folio(dev.pfn_at(GIB).expect("pfn"))
        .expect("folio");
    assert_eq!((f.order(), f.refcount(), f.mapcount()), (Order::PUD, 2, 1));
    drop(m);
    drop(dev);

    let _pages = match HugePages::reserve(HugePageSize::Size1G, 1) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping the 1 GiB hugetlb half: {why}");
            return;
        }
    };
    let backing = Backing::hugetlb(GIB, HugePageSize::Size1G).expect("hugetlb 1G");
    let dev = device(&space, backing, Order::PUD);
    let m = dev.mmap(0, GIB, true).expect("mmap");
    m.bytes().write(5, b"1g").expect("write");
    assert_eq!(dev.fault_stats().leaves_mapped, 1);
    assert_eq!(kernel_leaves(&m), vec![(GIB, 1)]);
}

/// Set in the child process of `a_touch_after_teardown_began_dies_of_sigbus`.
const TEARDOWN_CHILD: &str = "DEVMAP_DAX_TEARDOWN_CHILD";

/// The child's half: starts an untimed teardown while a mapping is live, then touches a leaf
/// never faulted, which must die of SIGBUS rather than hang or succeed.
#[test]
#[ignore = "the child half of a_touch_after_teardown_began_dies_of_sigbus, which runs it"]
fn teardown_touch_child() {
    if std::env::var_os(TEARDOWN_CHILD).is_none() {
        return;
    }
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(4 * MIB).expect("memfd"), Order::PMD);
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    m.bytes()
        .write(0, b"before")
        .expect("a touch before teardown");
    std::thread::scope(|s| {
        s.spawn(|| dev.close(None));
        while dev.is_live() {
            std::thread::yield_now();
        }
        println!("teardown began");
        let e = m
            .populate(m.addr() + 2 * MIB as usize, 1)
            .expect_err("populate");
        println!("populate: {e}");
        m.bytes().write(2 * MIB, b"after").expect("write");
        println!("the touch after teardown returned");
        std::process::exit(3);
    });
}

#[test]
fn a_touch_after_teardown_began_dies_of_sigbus() {
    let end = run_ignored(
        "dax::uffd_tests::teardown_touch_child",
        TEARDOWN_CHILD,
        WAIT,
    );
    assert!(end.stdout.contains("teardown began"), "{end:?}");
    assert!(
        end.stdout
            .contains("populate: the device-dax device is being torn down"),
        "{end:?}"
    );
    assert_eq!(end.signal, Some(7), "must die of SIGBUS: {end:?}");
}

#[test]
fn pin_by_address_faults_in_leaves_and_names_user_addresses() {
    let space = DeviceSpace::new();
    let dev = device(&space, Backing::memfd(8 * MIB).expect("memfd"), Order::PMD);
    let m = dev.mmap(2 * MIB, 4 * MIB, true).expect("mmap");
    let at = m.addr() + MIB as usize;

    let e = m
        .pin_user_pages(at, 512, GupFlags::WRITE | GupFlags::NOFAULT)
        .expect_err("nothing faulted");
    assert!(
        matches!(e, DaxError::NotFaulted { addr } if addr == m.addr()),
        "{e}"
    );
    assert_eq!(dev.fault_stats().leaves_mapped, 0, "NOFAULT faulted");

    // 2 MiB from the middle of the first leaf: both leaves are faulted in, one run of pfns.
    let pins = m.pin_user_pages(at, 512, GupFlags::WRITE).expect("pin");
    assert_eq!(dev.fault_stats().leaves_mapped, 2);
    assert_eq!(pins.len(), 512);
    let first = dev.pfn_at(3 * MIB).expect("pfn");
    for (i, (addr, pfn)) in pins.with_addresses().enumerate() {
        assert_eq!(addr, at + i * PAGE_SIZE as usize);
        assert_eq!(pfn, first.add(i as u64));
    }
    // The bytes at a pinned page's user address are the device's.
    m.bytes().write(MIB + 8192, b"pinned").expect("write");
    let other = dev.mmap(2 * MIB, 2 * MIB, true).expect("mmap");
    let mut got = [0u8; 6];
    other.bytes().read(MIB + 8192, &mut got).expect("read");
    assert_eq!(&got, b"pinned");
    let (addr2, _) = pins.with_addresses().nth(2).expect("entry");
    assert_eq!(addr2, m.addr() + (MIB + 8192) as usize);

    let f = dev.pgmap().folio(first).expect("folio");
    assert_eq!(
        f.refcount(),
        3 + 256,
        "idle + two mappings (the read through `other` faulted it) + 256 pinned pages"
    );
    assert_eq!(f.pincount(), 256);
    pins.unpin(true);
    assert_eq!(dev.pgmap().folio(first).expect("folio").pincount(), 0);

    // The folio form: one entry per folio with the part pinned and its address.
    let folios = m
        .pin_user_folios(at, 512, GupFlags::WRITE | GupFlags::NOFAULT)
        .expect("pin folios");
    let got: Vec<_> = folios
        .with_addresses()
        .map(|(addr, f)| (addr, f.range().len()))
        .collect();
    assert_eq!(
        got,
        vec![(at, 256), (m.addr() + 2 * MIB as usize, 256)],
        "two folios, half of each"
    );
    assert_eq!(folios.nr_pages(), 512);
    drop(folios);
    assert_eq!(dev.pgmap().folio(first).expect("folio").pincount(), 0);

    let e = m
        .pin_user_pages(m.addr() + 3 * MIB as usize, 512, GupFlags::NONE)
        .expect_err("runs past the mapping");
    assert!(matches!(e, DaxError::PastMappingEnd { .. }), "{e}");
}

#[test]
fn a_dynamic_device_spans_ranges_that_are_not_contiguous() {
    let space = DeviceSpace::new();
    // Leave a 2 MiB hole in the space, so the device's first range lands in it and its
    // second one after the blocker.
    let hole = space.reserve_range(2 * MIB, 2 * MIB).expect("hole");
    let blocker = space.reserve_range(2 * MIB, 2 * MIB).expect("blocker");
    assert!(space.release_range(hole));

    let mut opts = DaxOptions::new(Order::PMD);
    opts.ranges = Some(vec![2 * MIB, 4 * MIB]);
    opts.faults = Faults::Userfaultfd;
    let dev = DaxDevice::with_options(&space, Backing::memfd(6 * MIB).expect("memfd"), opts)
        .expect("dynamic device");
    let ranges = dev.ranges();
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges[0], hole);
    assert!(ranges[1].start() >= blocker.end(), "{ranges:?}");
    assert_eq!(dev.pfn_at(2 * MIB), Some(ranges[1].start()));
    assert_eq!(
        dev.pfn_at(2 * MIB - 4096),
        Some(Pfn::new(ranges[0].end().raw() - 1))
    );

    let m = dev.mmap(0, 6 * MIB, true).expect("mmap");
    m.bytes()
        .write(2 * MIB - 1, b"ab")
        .expect("write across ranges");
    assert_eq!(
        dev.fault_stats().leaves_mapped,
        2,
        "{:?}",
        dev.fault_stats()
    );
    let pins = m
        .pin_user_pages(m.addr() + MIB as usize, 512, GupFlags::NONE)
        .expect("pin across ranges");
    let pfns: Vec<Pfn> = pins.entries().to_vec();
    assert_eq!(pfns[255], Pfn::new(ranges[0].end().raw() - 1));
    assert_eq!(pfns[256], ranges[1].start());
    drop(pins);

    for (sizes, msg) in [
        (
            vec![2 * MIB, 3 * MIB],
            "range 1 is 3 MiB, not a non-zero multiple of the align 2 MiB: use 2 MiB or 4 MiB",
        ),
        (
            vec![2 * MIB],
            "the ranges add up to 2 MiB, the backing holds 6 MiB",
        ),
        (vec![], "at least one range"),
    ] {
        let mut opts = DaxOptions::new(Order::PMD);
        opts.ranges = Some(sizes);
        let e = DaxDevice::with_options(&space, Backing::memfd(6 * MIB).expect("memfd"), opts)
            .expect_err("bad sizes");
        assert!(e.to_string().contains(msg), "{e}");
    }
}

#[test]
fn a_leaf_must_lie_in_one_range() {
    // `dax_pgoff_to_phys` over a range table whose first range ends mid-leaf.
    let a = PfnRange::new_unchecked(Pfn::new(0x10_0000), Pfn::new(0x10_0000 + 768));
    let b = PfnRange::new_unchecked(Pfn::new(0x20_0000), Pfn::new(0x20_0000 + 256));
    let table = [
        DaxRange { pfns: a, pgoff: 0 },
        DaxRange {
            pfns: b,
            pgoff: 768,
        },
    ];
    assert_eq!(pgoff_to_pfn(&table, 0, 512), Some(a.start()));
    assert_eq!(
        pgoff_to_pfn(&table, 512, 512),
        None,
        "straddles the two ranges"
    );
    assert_eq!(pgoff_to_pfn(&table, 768, 256), Some(b.start()));
    assert_eq!(pgoff_to_pfn(&table, 768, 257), None, "runs past the end");
}

#[test]
fn a_mapping_of_a_tib_costs_no_per_page_work() {
    let space = DeviceSpace::new();
    let mut opts = DaxOptions::new(Order::PMD);
    opts.init = InitMode::async_default();
    opts.faults = Faults::Userfaultfd;
    let dev = DaxDevice::with_options(&space, Backing::memfd(1 << 40).expect("memfd"), opts)
        .expect("1 TiB device");
    let m = dev.mmap(0, 1 << 40, true).expect("mmap 1 TiB");
    assert_eq!(kernel_leaves(&m), vec![]);
    m.bytes()
        .write((1 << 40) - 1, b"!")
        .expect("touch the last byte");
    assert_eq!(dev.fault_stats().leaves_mapped, 1);
    assert_eq!(dev.backing().allocated_bytes().expect("st_blocks"), 2 * MIB);
}

#[test]
fn a_file_device_faults_explicitly_and_keeps_its_bytes_across_remaps_and_reopens() {
    let path = crate::backing::file::TempPath::new("dax-file");
    let space = DeviceSpace::new();
    let mut opts = DaxOptions::new(Order::PMD);
    opts.faults = Faults::Userfaultfd;
    let backing = Backing::create_file(&path.0, 4 * MIB).expect("file");
    let e = DaxDevice::with_options(&space, backing, opts).expect_err("no uffd on files");
    assert!(
        e.to_string().contains("does not support userfaultfd"),
        "{e}"
    );

    let backing = Backing::open_file(&path.0).expect("the file the refused device left");
    let dev =
        DaxDevice::with_options(&space, backing, DaxOptions::new(Order::PMD)).expect("device");
    assert!(!dev.catches_touches());
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    // The mapping faulted in the metadata of both leaves; the touch maps bytes and runs no
    // fault path, and a pin finds the leaf faulted.
    assert_eq!(dev.fault_stats().leaves_mapped, 2);
    m.bytes().write(2 * MIB + 3, b"on disk").expect("write");
    assert_eq!(dev.fault_stats().user_faults, 0);
    assert!(m.is_faulted(m.addr() + 2 * MIB as usize));
    let pins = m
        .pin_user_pages(m.addr() + 2 * MIB as usize, 1, GupFlags::NONE)
        .expect("pin");
    assert_eq!(dev.fault_stats().leaves_mapped, 2);
    drop(pins);
    drop(m);
    let again = dev.mmap(2 * MIB, 2 * MIB, true).expect("remap");
    let mut got = [0u8; 7];
    again.bytes().read(3, &mut got).expect("read");
    assert_eq!(&got, b"on disk");
    drop(again);
    drop(dev);

    let reopened = Backing::open_file(&path.0).expect("reopen");
    let dev =
        DaxDevice::with_options(&space, reopened, DaxOptions::new(Order::PMD)).expect("device");
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    m.bytes().read(2 * MIB + 3, &mut got).expect("read");
    assert_eq!(&got, b"on disk");
}
