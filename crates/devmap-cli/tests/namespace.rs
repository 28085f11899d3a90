//! The namespace geometry as the command line shows it: where the data of a namespace starts
//! (the kernel's `nd_pfn_init` rule), which namespaces have no room for data, and what
//! `gup-test` pins.

mod common;

use common::{fails, field, json};

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

#[test]
fn a_memmap_larger_than_the_kernels_room_is_refused_with_a_size_that_fits() {
    // 65 pfns at 4K: the info block leaves ALIGN(8 KiB + 64 * 63, 4 KiB) - 8 KiB = 4 KiB for
    // 65 descriptors, which take two pages.
    fails(
        &[
            "estimate", "--size", "260K", "--align", "4K", "--map", "dev",
        ],
        "the flat memmap of the 260K namespace needs 8K but the info block leaves room for 4K: \
         use --size 512K (a multiple of 256K), or --map mem",
    );
    json(&[
        "estimate", "--size", "512K", "--align", "4K", "--map", "dev", "-j",
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
