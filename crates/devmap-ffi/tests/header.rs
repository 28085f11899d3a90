//! `include/devmap.h` is what cbindgen makes of this crate: regenerate it and compare.
//! `DEVMAP_BLESS=1` writes it instead.

use std::path::{Path, PathBuf};

/// The checked-in header.
fn header_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/devmap.h")
}

/// The header cbindgen generates from the crate's source now.
fn generate() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml"))
        .expect("crates/devmap-ffi/cbindgen.toml is readable and valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn header_is_current() {
    let want = generate();
    let path = header_path();
    if std::env::var_os("DEVMAP_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("include/devmap.h is writable");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have == want {
        return;
    }
    let first = have
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
    let show = |text: &str| -> String {
        text.lines()
            .skip(first.saturating_sub(2))
            .take(6)
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "include/devmap.h is not what cbindgen makes of crates/devmap-ffi (it has {} lines, \
         cbindgen {}); first difference at line {}:\n--- include/devmap.h\n{}\n+++ generated\n{}\n\
         Regenerate it with: DEVMAP_BLESS=1 cargo test -p devmap-ffi --locked --test header",
        have.lines().count(),
        want.lines().count(),
        first + 1,
        show(&have),
        show(&want)
    );
}
