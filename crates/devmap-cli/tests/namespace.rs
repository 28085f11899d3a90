//! The namespace geometry as the command line shows it: where the data of a namespace starts
//! (the kernel's `nd_pfn_init` rule), which namespaces have no room for data, and what
//! `gup-test` pins.

mod common;

use common::{TempRegion, fails, field, json, list, object};

#[test]
fn map_dev_data_starts_where_the_kernel_puts_it_in_every_mode_and_layout() {
    // nd_pfn_init: ALIGN(8 KiB + 64 * PHYS_PFN(1 TiB - 8 KiB), 2 MiB) = 16 GiB + 2 MiB, for
    // fsdax too (whose data used to start at 16 GiB + 8 KiB, off the align) and whatever part
    // of that room the layout's memmap uses.
    let offset = (16u64 << 30) + (2 << 20);
    for mode in ["devdax", "fsdax"] {
        let rows = json(&[
            "estimate", "-s", "1T", "-a", "2M", "--map", "dev", "--mode", mode, "-j",
        ]);
        assert_eq!(rows.len(), 3);
        for r in &rows {
            assert_eq!(field(r, "device_bytes"), offset, "{mode} {}", r["layout"]);
        }
        let flat = &rows[0];
        assert_eq!(
            field(flat, "descriptors_initialized"),
            ((1u64 << 40) - offset) / 4096,
            "{mode}: one descriptor per data page"
        );
    }
}

#[test]
fn a_namespace_the_info_block_fills_is_refused() {
    // The kernel's PFN_MODE_RAM offset is ALIGN(8 KiB, align): a one-align namespace has no data.
    fails(
        &["estimate", "--size", "2M"],
        "padded to the 2M align, at 2M, leaving nothing for data in the 2M namespace: use \
         --size 4M or more",
    );
    fails(
        &["enable", "--size", "1G", "--align", "1G"],
        "use --size 2G or more",
    );
    json(&["estimate", "--size", "4M", "-j"]);
}

#[test]
fn gup_test_pins_the_data_of_a_namespace_with_an_info_block() {
    // -m is the selftest's mapping: the data, one align after the start of the namespace.
    for align in ["4K", "2M", "1G"] {
        let rows = json(&["gup-test", "-m", "1024", "--align", align, "-a", "-j"]);
        assert_eq!(field(&rows[0], "pages"), 262_144, "--align {align}");
        assert_eq!(field(&rows[0], "size"), 1 << 30, "--align {align}");
    }
}

/// The usable bytes a real kernel with ndctl gave 4K namespaces (64G map mem and dev, 256G map
/// dev), created and listed in a region: the data offset is aligned to 2 MiB
/// (`memremap_compat_align()`) and each namespace starts on 2 MiB. 2M matches, as before.
#[test]
fn a_4k_namespace_gets_the_usable_size_a_real_kernel_gives() {
    let r = TempRegion::new("ns-4k-kernel");
    let p = r.path();
    object(&["create-region", "--path", p, "--size", "450G"]);
    let cases = [
        ("mem64", "64G", "4K", "mem", 68_717_379_584u64, 2u64 << 20),
        ("dev64", "64G", "4K", "dev", 67_643_637_760, 1_075_838_976),
        (
            "dev256",
            "256G",
            "4K",
            "dev",
            270_580_842_496,
            4_297_064_448,
        ),
        ("dev64m2", "64G", "2M", "dev", 67_643_637_760, 1_075_838_976),
    ];
    for (name, size, align, map, usable, _) in cases {
        let created = object(&[
            "create-namespace",
            "--region",
            p,
            "-n",
            name,
            "-s",
            size,
            "-a",
            align,
            "-M",
            map,
        ]);
        assert_eq!(
            field(&created, "size"),
            usable,
            "{name}: size is the usable bytes"
        );
    }
    let rows = list(&["list", "--region", p]);
    assert_eq!(rows.len(), cases.len());
    for (r, (name, _, _, _, usable, offset)) in rows.iter().zip(cases) {
        assert_eq!(r["name"], name);
        assert_eq!(
            (field(r, "size"), field(r, "data_offset")),
            (usable, offset),
            "{name}"
        );
        assert_eq!(
            field(r, "region_offset") % (2 << 20),
            0,
            "{name} starts on 2 MiB"
        );
    }
    // And estimate prices the same layout: the room it sets aside is the data offset.
    let est = json(&[
        "estimate", "-s", "256G", "-a", "4K", "--map", "dev", "--layout", "flat", "-j",
    ]);
    assert_eq!(field(&est[0], "device_bytes"), 4_297_064_448);
    assert_eq!(
        field(&est[0], "descriptors_initialized"),
        270_580_842_496 / 4096
    );
}

/// A 4K namespace too small for 2 MiB of data after its 2 MiB-aligned info block (and
/// memmap room) is refused, with the kernel's reason and the smallest size that works.
#[test]
fn a_4k_namespace_needs_room_for_2m_of_data() {
    fails(
        &[
            "estimate", "--size", "260K", "--align", "4K", "--map", "dev",
        ],
        "leaving nothing for data in the 260K namespace (its last 260K are truncated, past the \
         last whole 2M): use --size 4M or more, or --map mem",
    );
    json(&[
        "estimate", "--size", "4M", "--align", "4K", "--map", "dev", "-j",
    ]);
}

#[test]
fn enable_with_map_dev_touches_and_initialises_the_data_only() {
    let rows = json(&[
        "enable",
        "-s",
        "64M",
        "--map",
        "dev",
        "--layout",
        "flat",
        "--init",
        "async",
        "--threads",
        "2",
        "--touch",
        "100",
        "-j",
    ]);
    // 16384 pfns, of which the info block and the room for the memmap take 2 MiB.
    assert_eq!(field(&rows[0], "descriptors_initialized"), 16384 - 512);
    assert_eq!(field(&rows[0], "device_bytes"), 2 << 20);
    assert_eq!(field(&rows[0], "touches"), 100);
}

/// `--uid`, `--gid` and `--perm` give a namespace an owner for `devmap serve`, shown in its
/// JSON and kept on disk; a `--perm` that is not octal permission bits is refused untouched.
#[test]
fn create_namespace_records_who_may_open_it() {
    let region = TempRegion::new("owner");
    let r = region.path();
    object(&["create-region", "--path", r, "--size", "64M"]);
    let ns = object(&[
        "create-namespace",
        "-r",
        r,
        "-s",
        "16M",
        "-n",
        "kv",
        "--uid",
        "1000",
        "--gid",
        "100",
        "--perm",
        "0660",
    ]);
    assert_eq!((field(&ns, "uid"), field(&ns, "gid")), (1000, 100));
    assert_eq!(ns["perm"], "0660");
    let listed = json(&["list", "-r", r, "-N", "-n", "kv"]);
    assert_eq!(listed[0]["perm"], "0660", "{listed:?}");
    let plain = object(&["create-namespace", "-r", r, "-s", "16M", "-n", "vm0"]);
    assert_eq!(
        (field(&plain, "uid"), plain["perm"].as_str()),
        (0, Some("0600"))
    );
    fails(
        &[
            "create-namespace",
            "-r",
            r,
            "-s",
            "16M",
            "-n",
            "x",
            "--perm",
            "999",
        ],
        "--perm \"999\" is not octal permission bits",
    );
}
