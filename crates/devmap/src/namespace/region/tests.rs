//! Regions on disk: create, list, reopen; one manager at a time; a torn label write; refusals
//! that leave the file as it was.

use super::*;
use crate::backing::file::TempPath;
use crate::namespace::{MemmapLocation, NamespaceMode};

const GIB: u64 = 1 << 30;

fn bytes_of(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read the region file")
}

#[test]
fn namespaces_are_created_listed_and_found_again_after_reopening() {
    let path = TempPath::new("region");
    let mut r = Region::create(&path.0, 8 * GIB).expect("create");
    let vm = r
        .create_namespace(
            "vm0",
            GIB,
            2 << 20,
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
        )
        .expect("vm0");
    assert_eq!(
        vm.offset,
        2 << 20,
        "first 2M-aligned offset after the label area"
    );
    let kv = r
        .create_namespace(
            "kv",
            2 * GIB,
            GIB,
            NamespaceMode::Devdax,
            MemmapLocation::Mem,
        )
        .expect("kv");
    assert_eq!(kv.offset, 2 * GIB, "the next 1G boundary after vm0");
    let fs = r
        .create_namespace(
            "fs",
            64 << 20,
            4096,
            NamespaceMode::Fsdax,
            MemmapLocation::Mem,
        )
        .expect("fs");
    assert_eq!(fs.offset, (2 << 20) + GIB, "first fit: the gap after vm0");
    let e = r
        .create_namespace(
            "vm0",
            GIB,
            2 << 20,
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
        )
        .expect_err("name taken");
    assert!(e.to_string().contains("exists already"), "{e}");
    let e = r
        .create_namespace(
            "big",
            8 * GIB,
            2 << 20,
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
        )
        .expect_err("too big");
    assert!(e.to_string().contains("no room for"), "{e}");
    let uuid = r.uuid();
    drop(r);

    let r = Region::open(&path.0, Access::Read).expect("reopen");
    assert_eq!(r.uuid(), uuid);
    let names: Vec<&str> = r.namespaces().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["vm0", "fs", "kv"], "offset order");
    let kv = r.namespace("kv").expect("kv").clone();
    let block = r.info_block(&kv).expect("info block");
    assert_eq!((block.uuid, block.parent_uuid), (kv.uuid, uuid));
    assert_eq!(block.namespace, kv.namespace);
    assert!(matches!(
        Region::open(&path.0, Access::Read)
            .expect("open")
            .create_namespace("x", GIB, GIB, NamespaceMode::Devdax, MemmapLocation::Mem),
        Err(RegionError::ReadOnly)
    ));

    let mut r = Region::open(&path.0, Access::Manage).expect("manage");
    r.destroy_namespace("vm0").expect("destroy");
    assert!(r.namespace("vm0").is_err());
    drop(r);
    let r = Region::open(&path.0, Access::Read).expect("reopen");
    assert_eq!(r.namespaces().len(), 2);
}

#[test]
fn one_process_manages_a_region_others_may_list_it() {
    let path = TempPath::new("region-lock");
    let mut r = Region::create(&path.0, 64 << 20).expect("create");
    r.create_namespace(
        "a",
        16 << 20,
        2 << 20,
        NamespaceMode::Devdax,
        MemmapLocation::Dev,
    )
    .expect("a");
    // flock locks belong to the open file description: a second open is a second manager,
    // as another process would be.
    let e = Region::open(&path.0, Access::Manage).expect_err("second manager");
    assert!(e.to_string().contains("managed by another process"), "{e}");
    let listed = Region::open(&path.0, Access::Read).expect("list while managed");
    assert_eq!(listed.namespaces().len(), 1);
    drop(r);
    Region::open(&path.0, Access::Manage).expect("free again");
}

#[test]
fn a_torn_label_write_leaves_the_previous_table() {
    let path = TempPath::new("region-torn");
    let mut r = Region::create(&path.0, 64 << 20).expect("create");
    r.create_namespace(
        "a",
        16 << 20,
        2 << 20,
        NamespaceMode::Devdax,
        MemmapLocation::Dev,
    )
    .expect("a");
    let slot = r.slot;
    drop(r);
    // Tear the current copy (the one that lists "a"): the previous table, empty, is current.
    let f = OpenOptions::new().write(true).open(&path.0).expect("open");
    f.write_all_at(&[0xee; 100], slot * LABEL_INDEX_LEN as u64 + 300)
        .expect("tear");
    drop(f);
    let r = Region::open(&path.0, Access::Read).expect("open");
    assert!(r.namespaces().is_empty(), "the older copy wins");

    // Both copies torn: refused, naming both reasons, and the file untouched.
    let f = OpenOptions::new().write(true).open(&path.0).expect("open");
    f.write_all_at(&[0xee; 100], (1 - slot) * LABEL_INDEX_LEN as u64 + 300)
        .expect("tear");
    drop(f);
    let before = bytes_of(&path.0);
    let e = Region::open(&path.0, Access::Manage).expect_err("both torn");
    let msg = e.to_string();
    assert!(
        msg.contains("first label copy: the label index is corrupt"),
        "{msg}"
    );
    assert!(msg.contains("second: the label index is corrupt"), "{msg}");
    assert_eq!(bytes_of(&path.0), before, "nothing written");
}

#[test]
fn foreign_short_and_resized_files_are_refused_untouched() {
    let path = TempPath::new("region-foreign");
    std::fs::write(&path.0, vec![0x42u8; 1 << 20]).expect("write");
    let e = Region::open(&path.0, Access::Manage).expect_err("foreign");
    assert!(e.to_string().contains("no devmap label index here"), "{e}");
    assert_eq!(bytes_of(&path.0), vec![0x42u8; 1 << 20]);

    let short = TempPath::new("region-short");
    std::fs::write(&short.0, b"DEVMAP").expect("write");
    let e = Region::open(&short.0, Access::Read).expect_err("short");
    assert!(e.to_string().contains("truncated"), "{e}");

    let sized = TempPath::new("region-resized");
    drop(Region::create(&sized.0, 4 * GIB).expect("create"));
    OpenOptions::new()
        .write(true)
        .open(&sized.0)
        .and_then(|f| f.set_len(2 * GIB))
        .expect("shrink");
    let e = Region::open(&sized.0, Access::Read).expect_err("resized");
    assert!(
        e.to_string()
            .contains("the labels describe a region of 4294967296 bytes"),
        "{e}"
    );

    let exists = TempPath::new("region-exists");
    std::fs::write(&exists.0, b"mine").expect("write");
    Region::create(&exists.0, 4 * GIB).expect_err("create over a file");
    assert_eq!(std::fs::read(&exists.0).expect("read"), b"mine");
    let e = Region::create(&TempPath::new("tiny").0, 4096).expect_err("too small");
    assert!(e.to_string().contains("too small"), "{e}");
}

#[test]
fn a_namespace_keeps_its_badblocks_across_reopens() {
    let path = TempPath::new("region-bad");
    let mut r = Region::create(&path.0, 64 << 20).expect("create");
    let a = r
        .create_namespace(
            "a",
            16 << 20,
            2 << 20,
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
        )
        .expect("a");
    assert_eq!(r.badblocks(&a).expect("empty").ranges, vec![]);
    let list = r.set_badblocks(&a, [7, 8, 100]).expect("record");
    assert_eq!(list.ranges, vec![(7, 2), (100, 1)]);
    let past = a.namespace.data_bytes() / 4096;
    let e = r.set_badblocks(&a, [past]).expect_err("past the data");
    assert!(e.to_string().contains("past the namespace's"), "{e}");
    drop(r);
    let mut r = Region::open(&path.0, Access::Manage).expect("reopen");
    let a = r.namespace("a").expect("a").clone();
    let list = r.badblocks(&a).expect("list");
    assert_eq!(
        (list.ranges.clone(), list.generation),
        (vec![(7, 2), (100, 1)], 1)
    );
    // clear-errors of page 8.
    let left: Vec<u64> = list.pages().filter(|p| *p != 8).collect();
    assert_eq!(
        r.set_badblocks(&a, left).expect("clear").ranges,
        vec![(7, 1), (100, 1)]
    );
    // A namespace created over a destroyed one starts clean.
    r.destroy_namespace("a").expect("destroy");
    let b = r
        .create_namespace(
            "b",
            16 << 20,
            2 << 20,
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
        )
        .expect("b");
    assert_eq!(b.offset, a.offset);
    assert_eq!(r.badblocks(&b).expect("clean").ranges, vec![]);
}

#[test]
fn free_space_counts_the_runs_after_the_label_area_from_their_aligned_start() {
    let path = TempPath::new("region-free");
    let size = 64 << 20;
    let mut r = Region::create(&path.0, size).expect("create");
    assert_eq!(
        r.free_space(1).expect("align 1"),
        (size - LABEL_AREA_BYTES, size - LABEL_AREA_BYTES)
    );
    for name in ["a", "b"] {
        r.create_namespace(
            name,
            4 << 20,
            2 << 20,
            NamespaceMode::Devdax,
            MemmapLocation::Mem,
        )
        .expect("namespace");
    }
    // a at 2M, b at 6M: free are 64K..2M and 10M..64M.
    assert_eq!(
        r.free_space(1).expect("align 1"),
        (size - LABEL_AREA_BYTES - (8 << 20), 54 << 20)
    );
    // Aligned to 2M, the run before a is empty.
    assert_eq!(
        r.free_space(2 << 20).expect("align 2M"),
        (54 << 20, 54 << 20)
    );
    let e = r
        .create_namespace(
            "c",
            56 << 20,
            2 << 20,
            NamespaceMode::Devdax,
            MemmapLocation::Mem,
        )
        .expect_err("too big");
    assert!(
        e.to_string().contains("largest free run: 56623104 bytes"),
        "{e}"
    );
}

/// What a namespace of each align can take is counted where nd_pfn_init puts one: from 2 MiB
/// boundaries at 4K (memremap_compat_align()), in whole 2 MiB, and the largest fits.
#[test]
fn namespace_room_is_counted_where_a_namespace_of_the_align_starts_and_ends() {
    let path = TempPath::new("region-room");
    let size = 64 << 20;
    let mut r = Region::create(&path.0, size).expect("create");
    // A 4K namespace 4 MiB + 4 KiB long at 2M: it ends off 2 MiB, 4 KiB into a 2 MiB unit.
    r.create_namespace(
        "a",
        (4 << 20) + 4096,
        4096,
        NamespaceMode::Devdax,
        MemmapLocation::Mem,
    )
    .expect("a");
    // Free: 64K..2M and 6M+4K..64M. At 4 KiB that is every page of them; where a 4K
    // namespace can go, only 8M..64M, in whole 2 MiB.
    let at_4k = r.free_space(4096).expect("4K");
    let after_a = (58 << 20) - 4096;
    assert_eq!(at_4k, ((2 << 20) - LABEL_AREA_BYTES + after_a, after_a));
    for align in [4096, 2 << 20] {
        assert_eq!(
            r.namespace_room(align).expect("room"),
            (56 << 20, 56 << 20),
            "align {align}"
        );
        assert_eq!(r.largest_namespace(align).expect("largest"), 56 << 20);
    }
    assert_eq!(
        r.namespace_room(GIB).expect("1G"),
        (0, 0),
        "no 1 GiB boundary"
    );
    // The largest fits, and then nothing does.
    r.create_namespace(
        "b",
        56 << 20,
        4096,
        NamespaceMode::Devdax,
        MemmapLocation::Mem,
    )
    .expect("the largest 4K namespace fits");
    assert_eq!(r.namespace_room(4096).expect("room"), (0, 0));
    let e = r
        .namespace_room(3 << 21)
        .expect_err("6M is not a power of two");
    assert_eq!(crate::errno::region(&e), libc::EINVAL);
}

#[test]
fn free_space_refuses_an_align_that_is_not_a_power_of_two() {
    let path = TempPath::new("region-free-align");
    let r = Region::create(&path.0, 64 << 20).expect("create");
    for align in [0, 3, 4097] {
        let e = r.free_space(align).expect_err("not a power of two");
        assert!(
            e.to_string()
                .contains(&format!("align {align} is not a power of two")),
            "{e}"
        );
        assert_eq!(crate::errno::region(&e), libc::EINVAL);
    }
}

#[test]
fn a_directory_is_refused_as_a_directory() {
    let dir = TempPath::new("region-dir");
    std::fs::create_dir(&dir.0).expect("mkdir");
    for access in [Access::Read, Access::Manage] {
        let e = Region::open(&dir.0, access).expect_err("a directory");
        let msg = e.to_string();
        assert!(msg.contains("is a directory"), "{access:?}: {msg}");
        assert!(msg.contains("path of a region file"), "{access:?}: {msg}");
        assert!(!msg.contains("truncated"), "{access:?}: {msg}");
        assert_eq!(crate::errno::region(&e), libc::EISDIR);
    }
}
