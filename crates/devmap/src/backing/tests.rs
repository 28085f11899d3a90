//! Backings against the running kernel: sparse memfds, shared bytes between mappings, files
//! that outlive their mappings, aligned placement, hugetlb leaves (when huge pages can be
//! reserved), refusals, and the sysfs and mountinfo parsing against made-up trees.

use super::devdax::{geometry, open_devdax_in};
use super::file::{TempPath, dax_in_mountinfo};
use super::memfd::huge_pages_in;
use super::memfd::reserve::HugePages;
use super::*;

/// The error and its causes, as the CLI prints them.
fn full(e: &BackingError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// `(Rss, KernelPageSize)` in bytes of the mapping that starts at `addr`, from
/// `/proc/self/smaps`.
fn smaps_of(addr: usize) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
    let head = format!("{addr:x}-");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&head));
    assert!(lines.next().is_some(), "no mapping at {addr:#x} in smaps");
    let (mut rss, mut page) = (None, None);
    // Field lines start with `Key:`; the next mapping's header starts with its address range.
    for line in lines.take_while(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.ends_with(':'))
    }) {
        let mut words = line.split_whitespace();
        let key = words.next();
        let kb = words.next().and_then(|v| v.parse::<u64>().ok());
        match key {
            Some("Rss:") => rss = rss.or(kb),
            Some("KernelPageSize:") => page = page.or(kb),
            _ => {}
        }
    }
    (
        rss.expect("Rss line") * KIB,
        page.expect("KernelPageSize line") * KIB,
    )
}

#[test]
fn memfd_of_one_tib_costs_nothing_until_touched() {
    let b = Backing::memfd(1 << 40).expect("1 TiB memfd");
    assert_eq!(b.len(), 1 << 40);
    assert_eq!(b.page_size(), Order::BASE);
    assert_eq!(b.uffd_modes(), UffdModes::MISSING | UffdModes::MINOR);
    assert_eq!(b.allocated_bytes().expect("fstat"), 0);

    let m = b.map_shared(512 * GIB, 2 * MIB, Order::PMD).expect("map");
    assert_eq!(smaps_of(m.as_ptr().as_ptr() as usize).0, 0);
    m.write(8 * KIB + 3, &[7]).expect("write");
    let (rss, page) = smaps_of(m.as_ptr().as_ptr() as usize);
    assert!(rss <= 3 * 4 * KIB, "one touched page, {rss} bytes resident");
    assert_eq!(page, 4 * KIB, "shmem maps base pages");
    assert_eq!(b.allocated_bytes().expect("fstat"), 4 * KIB);
}

#[test]
fn memfd_bytes_written_through_one_mapping_are_read_through_another() {
    let b = Backing::memfd(16 * MIB).expect("memfd");
    let whole = b.map_shared(0, 16 * MIB, Order::BASE).expect("map whole");
    let window = b
        .map_shared(4 * MIB, 2 * MIB, Order::PMD)
        .expect("map window");
    whole.write(4 * MIB + 100, b"device bytes").expect("write");
    let mut got = [0u8; 12];
    window.read(100, &mut got).expect("read");
    assert_eq!(&got, b"device bytes");
    window.write(2 * MIB - 1, &[0xee]).expect("write last byte");
    let mut last = [0u8];
    whole.read(6 * MIB - 1, &mut last).expect("read");
    assert_eq!(last, [0xee]);
    assert_eq!(window.backing_offset(), 4 * MIB);
}

#[test]
fn file_bytes_are_shared_between_mappings_and_survive_remap() {
    let path = TempPath::new("file");
    {
        let b = Backing::create_file(&path.0, 4 * MIB).expect("create");
        assert_eq!(b.uffd_modes(), UffdModes::NONE);
        assert!(matches!(b.kind(), BackingKind::File { .. }));
        assert_eq!(b.allocated_bytes().expect("fstat"), 0, "created sparse");
        let a = b.map_shared(0, 4 * MIB, Order::PMD).expect("map a");
        let c = b.map_shared(MIB, MIB, Order::BASE).expect("map c");
        a.write(MIB + 5, b"on disk").expect("write");
        let mut got = [0u8; 7];
        c.read(5, &mut got).expect("read");
        assert_eq!(&got, b"on disk");
    }
    let b = Backing::open_file(&path.0).expect("reopen");
    assert_eq!(b.len(), 4 * MIB);
    let m = b.map_shared(MIB, 4 * KIB, Order::BASE).expect("remap");
    let mut got = [0u8; 7];
    m.read(5, &mut got).expect("read");
    assert_eq!(&got, b"on disk");
    assert!(
        Backing::create_file(&path.0, 4 * MIB).is_err(),
        "an existing file is not overwritten"
    );
}

#[test]
fn a_copy_on_write_window_reaches_its_file_only_through_write_back() {
    let path = TempPath::new("cow");
    let file = Backing::create_file(&path.0, 4 * MIB).expect("create");
    let shared = file.map_shared(0, 4 * MIB, Order::BASE).expect("shared");
    shared.write(MIB + 8, b"before").expect("write");
    let win = file.window(MIB, 2 * MIB).expect("window");
    let cow = win.map_copy_on_write(0, 2 * MIB).expect("cow");
    let mut got = [0u8; 6];
    cow.read(8, &mut got).expect("read");
    assert_eq!(&got, b"before", "reads see the file");
    cow.write(8, b"after!").expect("write page 0");
    cow.write(3 * KIB * 4 + 1, b"x").expect("write page 3");
    shared.read(MIB + 8, &mut got).expect("read");
    assert_eq!(
        &got, b"before",
        "a copy-on-write mapping's writes stay its own"
    );
    assert_eq!(
        cow.write_back(&win).expect("write back"),
        2 * 4 * KIB,
        "two pages copied"
    );
    shared.read(MIB + 8, &mut got).expect("read");
    assert_eq!(&got, b"after!");
    let mut x = [0u8];
    shared.read(MIB + 3 * 4 * KIB + 1, &mut x).expect("read");
    assert_eq!(&x, b"x");
    let mut other = [1u8];
    shared.read(MIB + 4 * KIB, &mut other).expect("read");
    assert_eq!(other, [0], "pages never written stay as they were");
    assert_eq!(
        shared.write_back(&file).expect("msync"),
        0,
        "a shared mapping has nothing to copy"
    );
}

#[test]
fn map_shared_honours_the_alignment() {
    let b = Backing::memfd(64 * MIB).expect("memfd");
    // Keep every mapping alive so that the kernel cannot hand back the same aligned hole.
    let mut held = Vec::new();
    for (align, len) in [
        (Order::PMD, 4 * KIB),
        (Order::PMD, 6 * MIB),
        (Order::PUD, 2 * MIB),
    ] {
        for _ in 0..4 {
            let m = b.map_shared(0, len, align).expect("map");
            let addr = m.as_ptr().as_ptr() as u64;
            assert_eq!(
                addr % align.bytes(),
                0,
                "{addr:#x} not aligned to {align:?}"
            );
            assert_eq!(m.len() as u64, len);
            held.push(m);
        }
    }
}

#[test]
fn hugetlb_2m_maps_huge_leaves() {
    let _pages = match HugePages::reserve(HugePageSize::Size2M, 2) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping hugetlb_2m_maps_huge_leaves: {why}");
            return;
        }
    };
    let b = Backing::hugetlb(4 * MIB, HugePageSize::Size2M).expect("hugetlb memfd");
    assert_eq!(b.page_size(), Order::PMD);
    assert_eq!(b.uffd_modes(), UffdModes::MISSING | UffdModes::MINOR);
    let m = b.map_shared(0, 4 * MIB, Order::PMD).expect("map");
    assert_eq!(m.as_ptr().as_ptr() as u64 % (2 * MIB), 0);
    m.write(0, b"first leaf").expect("write");
    m.write(4 * MIB - 11, b"second leaf").expect("write");
    let mut a = [0u8; 10];
    let mut c = [0u8; 11];
    m.read(0, &mut a).expect("read");
    m.read(4 * MIB - 11, &mut c).expect("read");
    assert_eq!((&a, &c), (b"first leaf", b"second leaf"));
    let (rss, page) = smaps_of(m.as_ptr().as_ptr() as usize);
    eprintln!("hugetlb mapping: KernelPageSize: {} kB", page / KIB);
    assert_eq!(page, 2 * MIB, "KernelPageSize: 2048 kB");
    // hugetlb pages are not counted in Rss; the pool shows them in use instead.
    assert_eq!(rss, 0);
    assert_eq!(b.allocated_bytes().expect("fstat"), 4 * MIB);
}

#[test]
fn refusals_name_values_that_work() {
    let msg = |e: BackingError| e.to_string();

    let e = Backing::hugetlb(3 * MIB, HugePageSize::Size2M).expect_err("3 MiB of 2 MiB pages");
    assert!(msg(e).contains("length 3 MiB is not a multiple of the 2 MiB hugetlb memfd's 2 MiB page size: use 2 MiB or 4 MiB"));
    let e = Backing::hugetlb(MIB, HugePageSize::Size1G).expect_err("1 MiB of 1 GiB pages");
    assert!(msg(e).contains("use 0 or 1 GiB"));

    // A hugetlb memfd reserves nothing until mapped, so this works without a pool.
    let h = Backing::hugetlb(4 * MIB, HugePageSize::Size2M).expect("hugetlb memfd");
    let e = h
        .map_shared(4 * KIB, 2 * MIB, Order::PMD)
        .expect_err("offset 4 KiB");
    assert_eq!(
        msg(e),
        "offset 4 KiB is not a multiple of the 2 MiB hugetlb memfd's 2 MiB page size: use 0 or 2 MiB"
    );
    let e = h
        .map_shared(0, 3 * MIB, Order::PMD)
        .expect_err("length 3 MiB");
    assert!(msg(e).contains("use 2 MiB or 4 MiB"));
    let e = h
        .map_shared(0, 2 * MIB, Order::BASE)
        .expect_err("align 4 KiB");
    assert!(msg(e).contains("alignment 4 KiB must be a power of two of at least"));
    assert!(msg(e_of(h.map_shared(2 * MIB, 4 * MIB, Order::PMD))).contains("at most 2 MiB fit"));

    let b = Backing::memfd(64 * KIB).expect("memfd");
    for (offset, len) in [
        (0, 0),
        (64 * KIB, 4 * KIB),
        (u64::MAX - 4095, 4096),
        (4096, u64::MAX - 4095),
        (0, u64::MAX - 4095),
        (u64::MAX, u64::MAX),
    ] {
        assert!(
            b.map_shared(offset, len, Order::BASE).is_err(),
            "{offset} {len}"
        );
    }
    assert!(matches!(Backing::memfd(0), Err(BackingError::Empty)));
    assert!(Backing::memfd(u64::MAX).is_err());
    assert!(Backing::memfd(u64::MAX - 4095).is_err());
    assert!(Backing::hugetlb(u64::MAX - (2 * MIB - 1), HugePageSize::Size2M).is_err());

    let m = b.map_shared(0, 64 * KIB, Order::BASE).expect("map");
    let mut buf = [0u8; 8];
    assert!(m.read(64 * KIB - 7, &mut buf).is_err());
    assert!(m.read(u64::MAX, &mut buf).is_err());
    assert!(m.write(u64::MAX - 3, &buf).is_err());
    assert_eq!(
        msg(e_of(m.write(64 * KIB, &buf))),
        "8 B at offset 64 KiB runs past the end at 64 KiB: at most 0 fit there"
    );
    assert!(m.read(64 * KIB - 8, &mut buf).is_ok());
    assert!(
        m.write(64 * KIB, &[]).is_ok(),
        "an empty access at the end is inside"
    );
}

fn e_of<T: std::fmt::Debug>(r: Result<T, BackingError>) -> BackingError {
    r.expect_err("refused")
}

#[test]
fn short_1g_pool_fails_at_map_time_naming_the_pool() {
    match huge_pages(HugePageSize::Size1G) {
        Ok(c) if c.free == 0 => {}
        other => {
            eprintln!("skipping: the 1 GiB pool is not empty or unreadable: {other:?}");
            return;
        }
    }
    let b = Backing::hugetlb(GIB, HugePageSize::Size1G).expect("create needs no pages");
    let e = full(&e_of(b.map_shared(0, GIB, Order::PUD)));
    assert!(
        e.contains("it needs 1 free 1 GiB pages; the pool has 0 free"),
        "{e}"
    );
}

#[test]
fn huge_page_counts_come_from_sysfs() {
    let root = TempPath::new("hugepages");
    let dir = root.0.join("hugepages-2048kB");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("nr_hugepages"), "12\n").expect("write");
    std::fs::write(dir.join("free_hugepages"), "5\n").expect("write");
    assert_eq!(
        huge_pages_in(&root.0, HugePageSize::Size2M).expect("counts"),
        HugePageCounts { total: 12, free: 5 }
    );
    let e = huge_pages_in(&root.0, HugePageSize::Size1G).expect_err("no 1 GiB pool");
    assert!(full(&e).contains("hugepages-1048576kB/nr_hugepages"), "{e}");
    std::fs::write(dir.join("free_hugepages"), "many\n").expect("write");
    let e = huge_pages_in(&root.0, HugePageSize::Size2M).expect_err("not a number");
    assert!(full(&e).contains("\"many\" is not a decimal number"), "{e}");
    // The machine's own pool, if it has one.
    if std::path::Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        let c = huge_pages(HugePageSize::Size2M).expect("real counts");
        assert!(c.free <= c.total);
    }
}

/// A fake `<sysfs>/bus/dax/devices/<name>` with these attributes.
fn fake_dax(root: &TempPath, name: &str, size: &str, align: &str) -> std::path::PathBuf {
    let dir = root.0.join("bus/dax/devices").join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("size"), size).expect("write");
    std::fs::write(dir.join("align"), align).expect("write");
    dir
}

#[test]
fn devdax_geometry_is_read_from_sysfs() {
    let root = TempPath::new("sysfs");
    let dir = fake_dax(&root, "dax0.0", "4294967296\n", "2097152\n");
    assert_eq!(geometry(&dir).expect("geometry"), (4 * GIB, Order::PMD));
    let dir = fake_dax(&root, "dax0.1", "2147483648\n", "1073741824\n");
    assert_eq!(geometry(&dir).expect("geometry"), (2 * GIB, Order::PUD));

    let bad = |size, align| {
        let dir = fake_dax(&root, "bad", size, align);
        full(&geometry(&dir).expect_err("refused"))
    };
    assert!(bad("4194304", "3000").contains("alignment 3000 is not a power of two"));
    assert!(bad("4194304", "2048").contains("not a power of two of at least 4 KiB"));
    assert!(bad("3145728", "2097152").contains("size 3145728 is not a positive multiple"));
    assert!(bad("0", "4096").contains("size 0"));
    assert!(bad("", "4096").contains("is not a decimal number"));
    assert!(geometry(&root.0.join("bus/dax/devices/dax9.9")).is_err());

    // A character device that exists everywhere stands in for the node.
    fake_dax(&root, "null", "8388608\n", "2097152\n");
    let b = open_devdax_in(std::path::Path::new("/dev/null"), &root.0).expect("open");
    assert_eq!((b.len(), b.page_size()), (8 * MIB, Order::PMD));
    assert_eq!(b.uffd_modes(), UffdModes::NONE);
    assert!(matches!(b.kind(), BackingKind::DevDax { .. }));

    let file = TempPath::new("notdax");
    std::fs::write(&file.0, [0u8; 16]).expect("write");
    let e = open_devdax_in(&file.0, &root.0).expect_err("a regular file");
    assert!(full(&e).contains("is a regular file, not a device-dax character device"));
}

#[test]
fn devdax_open_failure_names_the_device() {
    let e = Backing::open_devdax("/dev/dax-missing9.9").expect_err("no such device");
    assert!(matches!(e, BackingError::Open { .. }));
    assert!(
        full(&e)
            .starts_with("cannot open device-dax /dev/dax-missing9.9: No such file or directory"),
        "{e}"
    );
}

#[test]
fn mountinfo_says_whether_a_mount_is_dax() {
    let text = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,errors=remount-ro
30 22 259:3 / /pmem rw,relatime shared:9 - ext4 /dev/pmem0 rw,dax=always
31 22 259:4 / /pmem1 rw,relatime - xfs /dev/pmem1 rw,attr2,dax=inode
32 22 259:5 / /old rw,relatime,dax - ext2 /dev/pmem2 rw
";
    assert_eq!(dax_in_mountinfo(text, 259, 1), DaxMount::Never);
    assert_eq!(dax_in_mountinfo(text, 259, 3), DaxMount::Always);
    assert_eq!(dax_in_mountinfo(text, 259, 4), DaxMount::PerInode);
    assert_eq!(dax_in_mountinfo(text, 259, 5), DaxMount::Always);
    assert_eq!(dax_in_mountinfo(text, 8, 0), DaxMount::Unknown);
    assert_eq!(dax_in_mountinfo("garbage\n\n-", 0, 0), DaxMount::Unknown);

    // A file on a real mount is found there.
    let path = TempPath::new("mount");
    let b = Backing::create_file(&path.0, 4 * KIB).expect("create");
    match b.kind() {
        BackingKind::File { dax, .. } => assert_ne!(*dax, DaxMount::Unknown),
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_file_refuses_what_it_cannot_map() {
    let dir = TempPath::new("dir");
    std::fs::create_dir(&dir.0).expect("mkdir");
    let e = Backing::open_file(&dir.0).expect_err("a directory");
    assert!(full(&e).contains("Is a directory"), "{e}");
    let e = Backing::open_file("/dev/null").expect_err("a character device");
    assert!(
        e.to_string()
            .contains("is a character device, not a regular file"),
        "{e}"
    );
    let small = TempPath::new("small");
    std::fs::write(&small.0, [1u8; 100]).expect("write");
    let e = Backing::open_file(&small.0).expect_err("shorter than a page");
    assert!(
        e.to_string()
            .ends_with("holds 100 B, less than one 4 KiB page: extend it to at least that"),
        "{e}"
    );
    let e = Backing::open_file(dir.0.join("missing")).expect_err("missing");
    assert!(e.to_string().starts_with("cannot open file "), "{e}");
    let e = Backing::create_file(dir.0.join("odd"), 5000).expect_err("odd length");
    assert!(e.to_string().contains("use 4 KiB or 8 KiB"), "{e}");
}

#[test]
fn a_file_window_maps_its_own_bytes_of_the_file() {
    use std::os::unix::fs::FileExt;
    let path = super::file::TempPath::new("window");
    drop(Backing::create_file(&path.0, 8 * MIB).expect("file"));
    let w = Backing::open_file_window(&path.0, 2 * MIB, 4 * MIB).expect("window");
    assert_eq!(w.len(), 4 * MIB);
    let m = w.map_shared(0, 4 * MIB, Order::PMD).expect("map");
    m.write(4096, b"window").expect("write");
    let mut got = [0u8; 6];
    std::fs::File::open(&path.0)
        .expect("open")
        .read_exact_at(&mut got, 2 * MIB + 4096)
        .expect("read");
    assert_eq!(
        &got, b"window",
        "byte 4096 of the window is byte 2M + 4096 of the file"
    );
    for (offset, len, want) in [
        (100, MIB, "offset 100 B is not a multiple"),
        (0, 0, "must not be empty"),
        (6 * MIB, 4 * MIB, "8 MiB"),
    ] {
        let e = Backing::open_file_window(&path.0, offset, len).expect_err(want);
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
    }
}

/// Whether the file system holding `path` zeroes ranges (`FALLOC_FL_ZERO_RANGE`): ext4, XFS
/// and btrfs do, tmpfs does not.
fn zeroes_ranges(path: &std::path::Path) -> bool {
    use rustix::fs::FallocateFlags;
    let probe = path.with_extension("probe");
    let f = std::fs::File::create(&probe).expect("probe file");
    let ok = rustix::fs::fallocate(
        &f,
        FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
        0,
        4 * KIB,
    )
    .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[test]
fn zeroing_a_range_keeps_its_blocks_where_the_file_system_can() {
    use std::os::unix::fs::FileExt;
    let path = TempPath::new("zero");
    let file = Backing::create_file(&path.0, 8 * MIB).expect("create");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path.0)
        .expect("open");
    f.write_all_at(&vec![0xa5; 6 * MIB as usize], MIB)
        .expect("write");
    f.sync_all().expect("sync");
    let held = file.allocated_bytes().expect("fstat");
    // A window, so that its base is added: file bytes 2 MiB + 4 KiB .. 4 MiB + 4 KiB.
    let w = file.window(2 * MIB, 4 * MIB).expect("window");
    w.zero(4 * KIB, 2 * MIB).expect("zero");
    let mut got = vec![0u8; 4 * MIB as usize];
    f.read_exact_at(&mut got, 2 * MIB).expect("read");
    assert!(got[..4 * KIB as usize].iter().all(|&b| b == 0xa5), "before");
    assert!(
        got[4 * KIB as usize..(2 * MIB + 4 * KIB) as usize]
            .iter()
            .all(|&b| b == 0),
        "the range reads zero"
    );
    assert!(
        got[(2 * MIB + 4 * KIB) as usize..]
            .iter()
            .all(|&b| b == 0xa5),
        "after"
    );
    let now = file.allocated_bytes().expect("fstat");
    if zeroes_ranges(&path.0) {
        assert_eq!(now, held, "the zeroed range keeps its blocks");
    } else {
        assert_eq!(now, held - 2 * MIB, "without zero range, a hole is punched");
    }
    // A hole is allocated, and reads zero.
    file.zero(7 * MIB, MIB).expect("zero a hole");
    f.read_exact_at(&mut got[..MIB as usize], 7 * MIB)
        .expect("read");
    assert!(got[..MIB as usize].iter().all(|&b| b == 0));
    for (offset, len) in [(100, 4 * KIB), (0, 100), (6 * MIB, 4 * MIB), (0, 0)] {
        assert!(w.zero(offset, len).is_err(), "{offset} + {len} is refused");
    }

    // tmpfs has no zero range: the memfd's pages are given back instead.
    let m = Backing::memfd(4 * MIB).expect("memfd");
    let map = m.map_shared(0, 4 * MIB, Order::BASE).expect("map");
    map.write(0, &vec![1; 4 * MIB as usize]).expect("fill");
    m.zero(2 * MIB, 2 * MIB).expect("zero");
    assert_eq!(m.allocated_bytes().expect("fstat"), 2 * MIB);
    let mut b = [9u8; 3];
    map.read(2 * MIB - 1, &mut b).expect("read");
    assert_eq!(b, [1, 0, 0]);
}

#[test]
fn a_window_mapped_like_its_offset_lies_like_it_modulo_the_align() {
    use std::os::unix::fs::FileExt;
    let path = TempPath::new("like-offset");
    let file = Backing::create_file(&path.0, 8 * MIB).expect("create");
    // A memmap room's place: 8 KiB past a namespace's start on 2 MiB.
    let room = file.window(2 * MIB + 8 * KIB, 4 * MIB).expect("window");
    let m = room
        .map_shared_like_offset(0, 4 * MIB, Order::PMD)
        .expect("map");
    assert_eq!(m.as_ptr().as_ptr() as u64 % (2 * MIB), 8 * KIB);
    let n = room
        .map_shared_like_offset(12 * KIB, 4 * KIB, Order::PMD)
        .expect("map a page");
    assert_eq!(n.as_ptr().as_ptr() as u64 % (2 * MIB), 20 * KIB);
    m.write(2 * MIB - 8 * KIB, b"on 4 MiB").expect("write");
    let mut got = [0u8; 8];
    std::fs::File::open(&path.0)
        .expect("open")
        .read_exact_at(&mut got, 4 * MIB)
        .expect("read");
    assert_eq!(&got, b"on 4 MiB");
    // Advice changes how faults are served, never the bytes.
    for hint in [PageHint::Huge, PageHint::Small, PageHint::Base] {
        m.advise(0, 4 * MIB, hint).expect("advise");
        m.read(2 * MIB - 8 * KIB, &mut got).expect("read");
        assert_eq!(&got, b"on 4 MiB", "{hint:?}");
    }
    assert!(
        m.advise(4 * KIB, 4 * MIB, PageHint::Huge).is_err(),
        "past the end"
    );
    assert!(
        room.map_shared_like_offset(100, 4 * KIB, Order::PMD)
            .is_err(),
        "an unaligned offset is refused"
    );
}

/// `Detached::take` moves a leaf's entries out of a window in one step: the window keeps its
/// range (one VMA, the same bytes, which a later read faults in again) with no entry in it,
/// the other leaf keeps its entries, the entries are where they were moved to, and once
/// released the reaper unmaps them.
#[test]
fn detached_entries_leave_the_window_whole_and_the_bytes_in_the_backing() {
    let b = Backing::memfd(4 * MIB).expect("memfd");
    let w = b.map_shared(0, 4 * MIB, Order::PMD).expect("map");
    for page in 0..1024u64 {
        w.write(page * 4 * KIB, &[page as u8 ^ 0x5a])
            .expect("write");
    }
    let resident = |addr: usize| resident_in(addr as *const u8, 2 * MIB as usize, Sharing::Shared);
    let base = w.as_ptr().as_ptr() as usize;
    let leaf = |i: usize| base + i * 2 * MIB as usize;
    assert_eq!(resident(leaf(1)).expect("pagemap"), 2 * MIB);

    let mut d = Detached::new();
    d.take(&w, 2 * MIB, 2 * MIB).expect("take the second leaf");
    assert_eq!(d.len(), 1);
    assert_eq!(resident(leaf(1)).expect("pagemap"), 0, "no entry left");
    assert_eq!(
        resident(leaf(0)).expect("pagemap"),
        2 * MIB,
        "the other leaf kept its own"
    );
    assert_eq!(
        resident(d.moved_to(0)).expect("pagemap"),
        2 * MIB,
        "moved, not dropped"
    );
    let vma = smaps_at(leaf(1)).expect("smaps").expect("the window's VMA");
    assert_eq!(
        (vma.start, vma.end),
        (base, base + 4 * MIB as usize),
        "still one VMA"
    );

    // A range outside the window is refused, and nothing moves.
    let e = d.take(&w, 4 * MIB, 2 * MIB).expect_err("outside");
    assert!(matches!(e, BackingError::OutOfRange { .. }), "{}", full(&e));
    d.take(&w, 0, 2 * MIB).expect("the first leaf");
    assert_eq!(d.len(), 2);
    let moved = [d.moved_to(0), d.moved_to(1)];
    d.release();
    drain_detached();
    for at in moved {
        assert!(smaps_at(at).expect("smaps").is_none(), "{at:#x} unmapped");
    }
    // The window reads every byte back, faulting it in again.
    for page in 0..1024u64 {
        let mut got = [0u8];
        w.read(page * 4 * KIB, &mut got).expect("read");
        assert_eq!(got[0], page as u8 ^ 0x5a, "page {page}");
    }
    assert_eq!(resident(leaf(1)).expect("pagemap"), 2 * MIB);
}
