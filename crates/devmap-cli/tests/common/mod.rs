//! Running the `devmap` binary from the integration tests: its output, its JSON rows (an
//! array, or as `list` prints them, ndctl's way), its JSON objects, and its refusals. Each
//! test file uses some of these.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `devmap` with `args`.
pub fn devmap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devmap"))
        .args(args)
        .output()
        .expect("run devmap")
}

/// The JSON rows of a run that must succeed.
pub fn json(args: &[&str]) -> Vec<Value> {
    let out = devmap(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("valid JSON") {
        Value::Array(rows) => rows,
        other => panic!("not an array: {other}"),
    }
}

/// The one JSON object a run that must succeed prints (what the ndctl verbs on one namespace or
/// region print).
pub fn object(args: &[&str]) -> Value {
    let out = devmap(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("valid JSON") {
        Value::Object(o) => Value::Object(o),
        other => panic!("not an object: {other}"),
    }
}

/// The objects `list` prints, as ndctl's `list` prints them: an array, or nothing for no
/// objects, or under `-u` one object alone.
pub fn list(args: &[&str]) -> Vec<Value> {
    let out = devmap(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.is_empty() {
        return Vec::new();
    }
    match serde_json::from_slice(&out.stdout).expect("valid JSON") {
        Value::Array(rows) => rows,
        Value::Object(o) => vec![Value::Object(o)],
        other => panic!("neither an array nor an object: {other}"),
    }
}

/// Checks that a run fails with `want` in its message, printing nothing and never panicking.
pub fn fails(args: &[&str], want: &str) {
    let out = devmap(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

/// An integer field of a JSON row.
pub fn field(row: &Value, name: &str) -> u64 {
    row[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} is not an integer in {row}"))
}

/// A region file path of its own under the temp dir, removed when dropped.
pub struct TempRegion(pub PathBuf);

impl TempRegion {
    /// `devmap-<tag>-<pid>.img` in the temp dir, removed first if a killed run left it.
    pub fn new(tag: &str) -> TempRegion {
        let path = std::env::temp_dir().join(format!("devmap-{tag}-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempRegion(path)
    }

    /// The path, as a command-line argument.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempRegion {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
