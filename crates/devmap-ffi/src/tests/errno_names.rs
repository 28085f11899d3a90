//! Every variant of every library error the C ABI can return is named in `errno.rs`: the
//! library's enums are `#[non_exhaustive]`, so the compiler cannot say when a new variant
//! falls through to the catch-all `-EIO`; this test reads the library's source and does.

use std::path::Path;

/// The error enums `errno.rs` maps, and the files that define them.
const ENUMS: &[(&str, &str)] = &[
    ("DaxError", "dax/mod.rs"),
    ("BackingError", "backing/mod.rs"),
    ("UffdError", "backing/uffd_types.rs"),
    ("FolioError", "folio/mod.rs"),
    ("GupError", "gup/mod.rs"),
    ("PgmapError", "pgmap/mod.rs"),
    ("SyncError", "init/set.rs"),
    ("LookupError", "memmap/mod.rs"),
    ("MemmapError", "memmap/geometry.rs"),
    ("AddrError", "addr.rs"),
    ("MfError", "memory_failure/mod.rs"),
    ("NamespaceError", "namespace/mod.rs"),
    ("RegionError", "namespace/region.rs"),
    ("LabelError", "namespace/label.rs"),
    ("InfoBlockError", "namespace/infoblock.rs"),
    ("BadblocksError", "namespace/badblocks.rs"),
];

/// The variant names of `pub enum name` in `source`: lines indented once that start with a
/// capital letter, between the enum's opening line and its closing brace.
fn variants(source: &str, name: &str) -> Vec<String> {
    let open = format!("pub enum {name} {{");
    let mut lines = source.lines().skip_while(|l| !l.contains(&open)).skip(1);
    let mut out = Vec::new();
    for line in lines.by_ref() {
        if line.starts_with('}') {
            break;
        }
        let Some(rest) = line.strip_prefix("    ") else {
            continue;
        };
        if rest.starts_with(|c: char| c.is_ascii_uppercase()) {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(ident);
        }
    }
    out
}

#[test]
fn errno_rs_names_every_variant() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../devmap/src");
    let errno = include_str!("../errno.rs");
    let mut missing = Vec::new();
    for (name, file) in ENUMS {
        let source = std::fs::read_to_string(lib.join(file)).expect("the library's source");
        let found = variants(&source, name);
        assert!(!found.is_empty(), "no variants of {name} found in {file}");
        for v in found {
            if !errno.contains(&format!("{name}::{v}")) {
                missing.push(format!("{name}::{v}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "crates/devmap-ffi/src/errno.rs does not choose an errno for {missing:?}: add them"
    );
}
