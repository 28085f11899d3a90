//! Regions on disk through the command line: `create-region`, then ndctl's namespace verbs
//! (`create-namespace`, `list`, `check-namespace`, `destroy-namespace`, `clear-errors`) over it,
//! media errors left by a process that enabled a namespace, a region another process manages,
//! and every refusal.

use std::os::unix::fs::FileExt;
use std::path::Path;

use devmap::namespace::{Access, Region};
use serde_json::Value;

mod common;

use common::{TempRegion, devmap, fails, field, list, object};

fn create_region(path: &str, size: &str) {
    object(&["create-region", "--path", path, "--size", size]);
}

fn names(rows: &[Value]) -> Vec<&str> {
    rows.iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect()
}

fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts.iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
}

#[test]
fn namespaces_are_created_listed_checked_and_destroyed() {
    let r = TempRegion::new("regions-life");
    let p = r.path();
    let region = object(&["create-region", "--path", p, "--size", "1G"]);
    assert_eq!(field(&region, "size"), 1 << 30);
    assert_eq!(region["dev"], "region0");
    assert_eq!(std::fs::metadata(p).expect("region file").len(), 1 << 30);

    let vm0 = &object(&["create-namespace", "--region", p, "-s", "256M", "-n", "vm0"]);
    assert_eq!(vm0["dev"], "namespace0.0");
    assert_eq!(vm0["mode"], "devdax", "the default mode");
    assert_eq!(vm0["map"], "dev", "the default map");
    assert_eq!(field(vm0, "align"), 2 << 20, "the default align");
    assert_eq!(field(vm0, "raw_size"), 256 << 20);
    let fs0 = object(&[
        "create-namespace",
        "--region",
        p,
        "-m",
        "fsdax",
        "-s",
        "128M",
        "-a",
        "4K",
        "-M",
        "mem",
        "-n",
        "fs0",
    ]);
    assert_eq!(fs0["mode"], "fsdax");
    assert_eq!(fs0["dev"], "namespace0.1");
    assert!(fs0.get("daxregion").is_none(), "fsdax has no dax device");

    let rows = list(&["list", "--region", p]);
    assert_eq!(names(&rows), ["vm0", "fs0"], "in offset order");
    let offsets: Vec<u64> = rows.iter().map(|r| field(r, "region_offset")).collect();
    assert!(offsets[0] < offsets[1], "{offsets:?}");
    for r in &rows {
        for f in ["size", "align", "raw_size", "region_offset", "data_offset"] {
            field(r, f);
        }
        // 2M namespaces: nothing truncated at the end.
        assert_eq!(
            field(r, "data_offset") + field(r, "size"),
            field(r, "raw_size")
        );
        assert!(is_uuid(r["uuid"].as_str().expect("uuid")), "{r}");
        assert_eq!(r["path"], p, "the region file");
    }
    // list prints what create-namespace printed, but a devdax namespace's chardev in place of
    // its daxregion, as ndctl's list does without -X.
    let mut listed = rows[0].clone();
    let chardev = listed
        .as_object_mut()
        .and_then(|o| o.remove("chardev"))
        .expect("a chardev");
    assert_eq!(chardev, vm0["daxregion"]["devices"][0]["chardev"]);
    let mut created = vm0.clone();
    if let Some(o) = created.as_object_mut() {
        o.remove("daxregion");
    }
    assert_eq!(listed, created);
    assert_eq!(
        list(&["list", "--region", p, "-X"])[0],
        *vm0,
        "-X: the daxregion"
    );
    // vm0 (map dev): ALIGN(8K + 64 * PHYS_PFN(256M - 8K), 2M) = 6M.
    assert_eq!(field(&rows[0], "data_offset"), 6 << 20);
    // fs0 (4K, map mem): ALIGN(8K, max(4K, 2M)), on 2 MiB as the kernel puts it.
    assert_eq!(field(&rows[1], "data_offset"), 2 << 20);
    assert_eq!(field(&rows[1], "region_offset") % (2 << 20), 0);

    assert_eq!(
        names(&list(&["list", "--region", p, "-N", "-n", "fs0"])),
        ["fs0"]
    );
    assert_eq!(
        names(&list(&["list", "--region", p, "-n", "namespace0.1"])),
        ["fs0"],
        "-n takes a dev too"
    );
    assert_eq!(
        names(&list(&["list", "--region", p, "-m", "devdax"])),
        ["vm0"]
    );
    let none = devmap(&["list", "--region", p, "-n", "nope"]);
    assert!(
        none.status.success() && none.stdout.is_empty(),
        "as ndctl: nothing"
    );

    let region = list(&["list", "--region", p, "-R"]);
    assert_eq!(region.len(), 1);
    let obj = &region[0];
    assert_eq!(obj["dev"], "region0");
    assert_eq!(obj["type"], "pmem");
    assert_eq!(obj["path"], p);
    assert_eq!(field(obj, "size"), 1 << 30);
    assert_eq!(field(obj, "align"), 2 << 20);
    assert_eq!(field(obj, "namespaces_count"), 2);
    assert_eq!(
        field(obj, "available_size"),
        (1 << 30) - (64 << 10) - (256 << 20) - (128 << 20)
    );
    assert!(
        obj.get("namespaces").is_none(),
        "-R alone lists no namespaces"
    );
    let both = list(&["list", "--region", p, "-R", "-N", "-m", "fsdax"]);
    assert_eq!(
        names(both[0]["namespaces"].as_array().expect("nested namespaces")),
        ["fs0"]
    );
    // -u with one region prints the object alone, as ndctl's does.
    let human = devmap(&["list", "--region", p, "-R", "-N", "--human"]);
    let human: Value = serde_json::from_slice(&human.stdout).expect("one JSON object");
    assert_eq!(
        human["size"], "1024.00 MiB (1073.74 MB)",
        "MiB below 2 GiB, as ndctl"
    );
    assert_eq!(human["namespaces"][0]["raw_size"], "256.00 MiB (268.44 MB)");
    assert_eq!(human["namespaces"][0]["size"], "250.00 MiB (262.14 MB)");
    assert_eq!(human["namespaces"][0]["data_offset"], "0x600000");

    let check = object(&["check-namespace", "--region", p, "vm0"]);
    assert_eq!(check["ok"], true);
    assert_eq!(check["enable_state"], "never enabled");
    let mut namespace = check.clone();
    if let Some(o) = namespace.as_object_mut() {
        o.retain(|k, _| vm0.get(k).is_some());
    }
    assert_eq!(
        namespace, *vm0,
        "the namespace's object, what was checked beside it"
    );
    assert_eq!(
        field(&check, "info_block_offset"),
        field(vm0, "region_offset") + 4096
    );
    assert_eq!(
        object(&["check-namespace", "--region", p, "namespace0.0"])["name"],
        "vm0",
        "a dev names a namespace too"
    );

    let out = devmap(&["destroy-namespace", "--region", p, "vm0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(&list(&["list", "--region", p])), ["fs0"]);
    assert_eq!(
        list(&["list", "--region", p])[0]["dev"],
        "namespace0.0",
        "renumbered, as a reboot would under the kernel"
    );
    fails(
        &["check-namespace", "--region", p, "vm0"],
        "no namespace named \"vm0\"",
    );
    fails(
        &["destroy-namespace", "--region", p, "vm0", "--force"],
        "the namespaces of region",
    );
}

#[test]
fn a_managed_region_refuses_a_second_manager_but_lists() {
    let r = TempRegion::new("regions-busy");
    let p = r.path();
    create_region(p, "64M");
    object(&["create-namespace", "--region", p, "-s", "8M", "-n", "a"]);
    let held = Region::open(p, Access::Manage).expect("manage the region");
    fails(
        &["create-namespace", "--region", p, "-s", "8M", "-n", "b"],
        "managed by another process",
    );
    fails(
        &["destroy-namespace", "--region", p, "a"],
        "managed by another process",
    );
    assert_eq!(names(&list(&["list", "--region", p])), ["a"]);
    let check = devmap(&["check-namespace", "--region", p, "a"]);
    assert!(check.status.success(), "check reads only");
    drop(held);
    // Another test thread's child spawned while `held` was open shares its lock until that
    // child execs (the descriptor is close-on-exec): wait that moment out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = devmap(&["create-namespace", "--region", p, "-s", "8M", "-n", "b"]);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("managed by another process") && std::time::Instant::now() < deadline,
            "{err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn refusals_say_what_would_work() {
    let r = TempRegion::new("regions-refuse");
    let p = r.path();
    create_region(p, "64M");
    fails(
        &["create-namespace", "--region", p, "-s", "3M", "-n", "x"],
        "size 3M is not a multiple of align 2M: did you mean --size 2M or --size 4M?",
    );
    object(&["create-namespace", "--region", p, "-s", "8M", "-n", "x"]);
    fails(
        &["create-namespace", "--region", p, "-s", "8M", "-n", "x"],
        "a namespace named \"x\" exists already",
    );
    fails(
        &["create-namespace", "--region", p, "-s", "8M", "-m", "raw"],
        "invalid value 'raw'",
    );
    fails(
        &["list", "--region", p, "-m", "sector"],
        "invalid value 'sector'",
    );
    fails(
        &["create-namespace", "--region", p, "-s", "1G", "-n", "big"],
        "use --size",
    );
    fails(
        &["create-region", "--path", p, "--size", "1G"],
        "exists already",
    );
    assert_eq!(
        std::fs::metadata(p).expect("region").len(),
        64 << 20,
        "the existing file is untouched"
    );
    let missing = TempRegion::new("regions-missing");
    fails(
        &["list", "--region", missing.path()],
        "create one with `devmap create-region",
    );
    fails(
        &["create-region", "--path", missing.path(), "--size", "64K"],
        "too small",
    );
    assert!(!Path::new(missing.path()).exists());
}

#[test]
fn a_file_that_is_not_a_region_is_refused_and_left_as_it_was() {
    let r = TempRegion::new("regions-foreign");
    let p = r.path();
    // xorshift: random-looking bytes, the same every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..256 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(p, &bytes).expect("write the file");
    for args in [
        &["create-namespace", "--region", p, "-s", "4M", "-n", "a"][..],
        &["list", "--region", p, "-R"],
        &["destroy-namespace", "--region", p, "a"],
        &["check-namespace", "--region", p, "a"],
    ] {
        fails(args, "not a usable devmap region");
    }
    assert!(
        std::fs::read(p).expect("read back") == bytes,
        "file changed"
    );
}

#[test]
fn a_corrupt_info_block_fails_its_check_naming_the_checksum() {
    let r = TempRegion::new("regions-corrupt");
    let p = r.path();
    create_region(p, "64M");
    let ns = object(&["create-namespace", "--region", p, "-s", "8M", "-n", "a"]);
    let at = field(&ns, "region_offset") + 4096 + 200;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .expect("open");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).expect("read");
    file.write_all_at(&[b[0] ^ 0xff], at).expect("flip a byte");
    drop(file);
    fails(&["check-namespace", "--region", p, "a"], "checksum");
    // The label is fine, so the namespace still lists.
    assert_eq!(names(&list(&["list", "--region", p])), ["a"]);
}

#[test]
fn media_errors_are_listed_cleared_and_an_unclean_namespace_needs_force() {
    use devmap::dax::DaxOptions;
    use devmap::memory_failure::{MfFlags, memory_failure};
    use devmap::{DeviceSpace, Order, PAGE_SIZE};

    let r = TempRegion::new("regions-media");
    create_region(r.path(), "64M");
    object(&["create-namespace", "-r", r.path(), "-s", "16M", "-n", "vm0"]);
    {
        // A process enables the namespace, meets two memory errors and disables it.
        let space = DeviceSpace::new();
        let mut region = Region::open(&r.0, Access::Manage).expect("manage");
        let ns = region
            .enable(&space, "vm0", DaxOptions::new(Order::PMD))
            .expect("enable");
        for page in [3u64, 4] {
            let pfn = ns.device().pfn_at(page * PAGE_SIZE).expect("pfn");
            // Nothing maps the namespace: without the flag, -EBUSY as the kernel's.
            memory_failure(&space, pfn, MfFlags::RECORD_UNMAPPED).expect("error");
        }
        region.disable(ns).expect("disable");
    }
    // In 512-byte sectors from the start of the data, as ndctl prints them: pages 3 and 4.
    let rows = list(&["list", "-r", r.path(), "--media-errors"]);
    let bad = rows[0]["badblocks"].as_array().expect("badblocks");
    assert_eq!(bad.len(), 1, "{rows:?}");
    assert_eq!(
        (field(&bad[0], "offset"), field(&bad[0], "length")),
        (3 * 8, 2 * 8)
    );
    assert_eq!(field(&rows[0], "badblock_count"), 16);
    let plain = list(&["list", "-r", r.path()]);
    assert!(
        plain[0].get("badblocks").is_none(),
        "only with --media-errors"
    );
    assert_eq!(
        field(&plain[0], "badblock_count"),
        16,
        "the count always, as ndctl"
    );
    // The region's, in sectors from the start of the file.
    let region = &list(&["list", "-r", r.path(), "-R", "-M"])[0];
    let data = field(&rows[0], "region_offset") + field(&rows[0], "data_offset");
    assert_eq!(field(region, "badblock_count"), 16);
    assert_eq!(field(&region["badblocks"][0], "offset"), data / 512 + 3 * 8);
    assert_eq!(field(&region["badblocks"][0], "length"), 16);

    fails(
        &["clear-errors", "-r", r.path(), "vm0", "--offset", "100"],
        "not a multiple of 4K",
    );
    let out = devmap(&[
        "clear-errors",
        "-r",
        r.path(),
        "vm0",
        "--offset",
        "16K",
        "--length",
        "4K",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cleared 1 bad page(s)"),
        "{out:?}"
    );
    let rows = list(&["list", "-r", r.path(), "-M"]);
    assert_eq!(field(&rows[0]["badblocks"][0], "offset"), 3 * 8);
    assert_eq!(field(&rows[0]["badblocks"][0], "length"), 8);
    // With --json, the namespace with what is left (page 0 was good: page 3 is left).
    let left = object(&[
        "clear-errors",
        "-r",
        r.path(),
        "namespace0.0",
        "-o",
        "0",
        "-l",
        "4K",
        "--json",
    ]);
    assert_eq!(field(&left, "badblock_count"), 8);
    assert_eq!(field(&left["badblocks"][0], "offset"), 3 * 8);

    {
        // A process enables it and ends without disabling.
        let space = DeviceSpace::new();
        let mut region = Region::open(&r.0, Access::Manage).expect("manage");
        let ns = region
            .enable(&space, "vm0", DaxOptions::new(Order::PMD))
            .expect("enable");
        drop(ns);
    }
    fails(
        &["destroy-namespace", "-r", r.path(), "vm0"],
        "was not disabled cleanly",
    );
    let out = devmap(&["destroy-namespace", "-r", r.path(), "vm0", "--force"]);
    assert!(out.status.success(), "{out:?}");
    assert!(list(&["list", "-r", r.path()]).is_empty());
}
