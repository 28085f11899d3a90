//! `devmap report --quick` as a user meets it: a JSON row for every section, every figure of
//! ours measured (a positive integer), every command it
//! lists a real `devmap` command (the `estimate` ones run and give the same figure), and the
//! `--svg` chart a well-formed SVG document naming every section.

mod common;

use std::collections::BTreeSet;

use common::{devmap, field, json};
use serde_json::Value;

const SECTIONS: [&str; 7] = [
    "metadata per TiB",
    "time until usable",
    "first touch during async init",
    "first touch of device leaves",
    "pin and unpin",
    "memory-failure bytes lost per 4 KiB error",
    "warm vs cold enable",
];

/// One `report --quick --json --svg` run (the report is the slow part, so one run serves every
/// check): its rows and the chart's text.
fn quick_report() -> (Vec<Value>, String) {
    let svg = std::env::temp_dir().join(format!("devmap-report-{}.svg", std::process::id()));
    let path = svg.to_str().expect("utf-8 temp path");
    let rows = json(&["report", "--quick", "--json", "--svg", path]);
    let text = std::fs::read_to_string(&svg).expect("the chart was written");
    let _ = std::fs::remove_file(&svg);
    (rows, text)
}

#[test]
fn quick_report_measures_every_section_and_draws_it() {
    let (rows, svg) = quick_report();

    let sections: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["section"].as_str().expect("section"))
        .collect();
    assert_eq!(sections, SECTIONS.into_iter().collect(), "{rows:?}");

    for r in &rows {
        for key in ["name", "unit", "source", "command"] {
            assert!(r[key].is_string(), "{key} in {r}");
        }
        assert!(field(r, "ours") > 0, "{r}");
        if !r["reference"].is_null() {
            assert!(field(r, "reference") > 0, "{r}");
            let ratio = r["ratio"].as_f64().expect("a ratio beside a reference");
            let want = field(r, "ours") as f64 / field(r, "reference") as f64;
            assert!((ratio - want).abs() <= want * 1e-9, "{r}");
        }
        check_command(r);
    }

    // A well-formed SVG document with every section's name and a figure of each row.
    let body = svg.trim();
    assert!(
        body.starts_with("<svg") || body.starts_with("<?xml"),
        "{}",
        &body[..body.len().min(200)]
    );
    assert!(body.ends_with("</svg>"), "the chart is not closed");
    assert_eq!(body.matches("<svg").count(), 1);
    for s in SECTIONS {
        assert!(svg.contains(s), "the chart lacks {s:?}");
    }
    for r in &rows {
        let name = r["name"].as_str().expect("name");
        assert!(svg.contains(name), "the chart lacks the row {name:?}");
    }
}

/// The row's command is a `devmap` command that exists; an `estimate` (instant) is run and
/// must give the row's figure.
fn check_command(r: &Value) {
    let command = r["command"].as_str().expect("command");
    let args: Vec<&str> = command
        .strip_prefix("devmap ")
        .unwrap_or_else(|| panic!("{command:?} is not a devmap command"))
        .split_whitespace()
        .collect();
    let help = devmap(&[args[0], "--help"]);
    assert!(help.status.success(), "{command:?}: no such command");
    if args[0] == "estimate" {
        let mut full = args.clone();
        full.push("--json");
        let layout = r["name"]
            .as_str()
            .and_then(|n| n.split_whitespace().next())
            .expect("layout");
        let out = json(&full);
        let row = out
            .iter()
            .find(|e| e["layout"] == layout)
            .unwrap_or_else(|| panic!("{command:?} has no {layout} row"));
        assert_eq!(field(row, "metadata_bytes"), field(r, "ours"), "{command}");
    }
}

#[test]
fn report_takes_no_size() {
    let out = devmap(&["report", "--size", "16G"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}
