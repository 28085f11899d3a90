//! `devmap poison-test` as a user meets it: the row each granularity prints (what every
//! mapping's owner is told, what each mapping loses and keeps, the badblocks list, the cleared
//! poison), the table, and every refusal.

mod common;

use common::{devmap, fails, field, json};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The rows of a run that must succeed.
fn rows(args: &[&str]) -> Vec<Value> {
    let mut full = vec!["poison-test"];
    full.extend_from_slice(args);
    full.push("--json");
    json(&full)
}

/// What every row must hold whatever the granularity: every owner told once per lost unit,
/// every byte of every mapping either lost or intact, the poison listed and then cleared.
fn check_row(r: &Value, lost_per_mapping: u64) {
    let (size, mappings) = (field(r, "size"), field(r, "mappings"));
    assert_eq!(field(r, "bytes_lost_per_mapping"), lost_per_mapping, "{r}");
    assert_eq!(
        field(r, "bytes_lost_total"),
        mappings * lost_per_mapping,
        "{r}"
    );
    assert_eq!(
        field(r, "bytes_intact"),
        mappings * size - mappings * lost_per_mapping,
        "{r}"
    );
    assert_eq!(r["handled_by"], "generic", "{r}");
    assert_eq!(field(r, "pins"), 0, "{r}");
    assert_eq!(r["cleared"], true, "{r}");
    assert_eq!(field(r, "cleared_pages"), field(r, "count"), "{r}");
    assert!(field(r, "revoke_ns") > 0, "{r}");
    assert!(field(r, "inject_ns") >= field(r, "revoke_ns"), "{r}");
    let bb = r["badblocks"].as_array().expect("badblocks is an array");
    assert_eq!(bb.len(), 1, "{r}");
    assert_eq!(field(&bb[0], "offset"), field(r, "offset"), "{r}");
    assert_eq!(field(&bb[0], "len"), 4096 * field(r, "count"), "{r}");
}

#[test]
fn the_default_run_loses_a_page_then_a_leaf_from_each_of_three_mappings() {
    let rows = rows(&[]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (page, leaf) = (&rows[0], &rows[1]);
    for (r, name) in [(page, "page"), (leaf, "leaf")] {
        assert_eq!(r["granularity"], name, "{r}");
        assert_eq!(r["applied"], name, "{r}");
        assert_eq!(r["backing"], "memfd", "{r}");
        assert_eq!(field(r, "size"), 64 * MIB, "{r}");
        assert_eq!(field(r, "align"), 2 * MIB, "{r}");
        assert_eq!(field(r, "mappings"), 3, "{r}");
        assert_eq!(field(r, "readers"), 2, "{r}");
        assert_eq!(field(r, "count"), 1, "{r}");
        // The 8th page of the second leaf.
        assert_eq!(field(r, "offset"), 2 * MIB + 7 * 4096, "{r}");
        assert_eq!(field(r, "owners_told"), 3, "{r}");
        assert_eq!(field(r, "head") + 7, field(r, "pfn"), "{r}");
    }
    check_row(page, 4096);
    check_row(leaf, 2 * MIB);
}

#[test]
fn at_align_4k_both_granularities_lose_one_page() {
    let rows = rows(&["--size", "8M", "--align", "4K"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(field(r, "owners_told"), 3, "{r}");
        assert_eq!(field(r, "pfn"), field(r, "head"), "{r}");
        check_row(r, 4096);
    }
}

#[test]
fn one_granularity_with_more_mappings_readers_and_errors() {
    // Three pages straddling the first two leaves: three pages lost at page granularity, two
    // leaves at leaf granularity, and each owner told once per lost unit.
    let offset = (2 * MIB - 4096).to_string();
    let args = [
        "--size",
        "8M",
        "--mappings",
        "5",
        "--readers",
        "3",
        "--offset",
        offset.as_str(),
        "--count",
        "3",
    ];
    let mut page_args = args.to_vec();
    page_args.extend(["--granularity", "page"]);
    let page = rows(&page_args);
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(field(&page[0], "owners_told"), 5 * 3);
    check_row(&page[0], 3 * 4096);
    let mut leaf_args = args.to_vec();
    leaf_args.extend(["--granularity", "leaf", "--action-required"]);
    let leaf = rows(&leaf_args);
    assert_eq!(leaf.len(), 1, "{leaf:?}");
    assert_eq!(leaf[0]["granularity"], "leaf");
    assert_eq!(field(&leaf[0], "owners_told"), 5 * 2);
    check_row(&leaf[0], 2 * 2 * MIB);
}

#[test]
fn the_table_has_a_header_and_a_row_per_granularity() {
    let out = devmap(&["poison-test", "--size", "8M"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for col in [
        "granularity",
        "applied",
        "told",
        "revoke",
        "lost/map",
        "cleared",
    ] {
        assert!(lines[0].contains(col), "{text}");
    }
    let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let (page, leaf) = (cells(lines[1]), cells(lines[2]));
    assert_eq!(&page[..2], ["page", "page"], "{text}");
    assert_eq!(&leaf[..2], ["leaf", "leaf"], "{text}");
    assert!(page.contains(&"2076K".to_owned()), "{text}");
    assert!(page.contains(&"4K".to_owned()), "{text}");
    assert!(leaf.contains(&"6M".to_owned()), "{text}");
    assert_eq!(page.last().map(String::as_str), Some("true"), "{text}");
    assert_eq!(leaf.last().map(String::as_str), Some("true"), "{text}");
}

#[test]
fn refusals_say_what_would_work() {
    fails(
        &["poison-test", "--offset", "5000"],
        "--offset 5000 is not a multiple of 4K: errors poison whole 4 KiB pages; did you mean \
         --offset 4K or --offset 8K?",
    );
    fails(
        &["poison-test", "--offset", "64M"],
        "--offset 64M is outside the 64M device: use an offset below 64M, e.g. --offset 65532K",
    );
    fails(
        &["poison-test", "--offset", "65532K", "--count", "2"],
        "use --count 1 or less, or a lower --offset",
    );
    fails(
        &["poison-test", "--mappings", "0"],
        "--mappings 0 is not a usable count of mappings: use 1 to 64",
    );
    fails(
        &["poison-test", "--readers", "0"],
        "--readers 0 is not a usable count of reading threads",
    );
    fails(
        &["poison-test", "--count", "0"],
        "--count must be at least 1",
    );
    fails(
        &["poison-test", "--granularity", "byte"],
        "[possible values: page, leaf, both]",
    );
    fails(&["poison-test", "--readers", "-1"], "must not be negative");
    fails(
        &["poison-test", "--size", "3M"],
        "size 3M is not a multiple of align 2M: did you mean --size 2M or --size 4M?",
    );
    fails(&["poison-test", "--size", "32G"], "use --size 16G or less");
    fails(
        &["poison-test", "--align", "4K", "--backing", "hugetlb"],
        "use --align 2M or --align 1G, or --backing memfd",
    );
}

/// Free 2 MiB huge pages, if the kernel has the pool.
fn free_2m() -> Option<u64> {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn hugetlb_takes_the_whole_leaf_even_when_page_is_asked() {
    let args = [
        "--backing",
        "hugetlb",
        "--size",
        "4M",
        "--granularity",
        "page",
    ];
    if free_2m().unwrap_or(0) < 2 {
        // No pool to run on: the refusal says how to make one.
        let mut full = vec!["poison-test"];
        full.extend_from_slice(&args);
        fails(&full, "free 2M huge pages, and the pool has");
        return;
    }
    let rows = rows(&args);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["granularity"], "page");
    assert_eq!(rows[0]["applied"], "leaf");
    assert_eq!(rows[0]["backing"], "hugetlb");
    assert_eq!(field(&rows[0], "owners_told"), 3);
    check_row(&rows[0], 2 * MIB);
}

#[test]
fn rust_log_turns_on_the_library_tracing_on_stderr_and_nothing_else_is_printed_there() {
    let args = [
        "poison-test",
        "--size",
        "8M",
        "--granularity",
        "page",
        "--json",
    ];
    let quiet = common::devmap(&args);
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let traced = std::process::Command::new(env!("CARGO_BIN_EXE_devmap"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run devmap");
    assert!(traced.status.success());
    let log = String::from_utf8_lossy(&traced.stderr);
    for event in [
        "memremap_pages: registered",
        "memory_failure: revoked and told",
    ] {
        assert!(log.contains(event), "{event:?} not in {log}");
    }
    assert!(
        !log.contains('\u{1b}'),
        "no colours when stderr is not a terminal"
    );
}
