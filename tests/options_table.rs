//! The reader of `tests/options.tsv`, included by the Rust runners of the table (the command
//! line's `tests/options.rs` and the C ABI's `src/tests/options.rs`) with `#[path]`, so that
//! both read the table the same way. Python reads it in `test_options.py`.

/// One row of the table.
#[derive(Debug)]
pub struct Row {
    /// `create-namespace`, `enable-namespace` or `device`.
    pub verb: String,
    /// The option the row sets.
    pub option: String,
    /// Its value, as a user writes it.
    pub value: String,
    /// `ok`, `refused` or `default`.
    pub expect: String,
    /// Other options the row fixes (`size=2G`).
    pub with: Vec<(String, String)>,
}

/// The table's rows, comments and blank lines left out.
pub fn table() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/options.tsv");
    let text = std::fs::read_to_string(path).expect("tests/options.tsv");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert!(c.len() >= 4, "a row has verb, option, value, expect: {l:?}");
            let with = c
                .get(4)
                .map(|w| {
                    w.split(',')
                        .map(|kv| kv.split_once('=').expect("k=v"))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            Row {
                verb: c[0].into(),
                option: c[1].into(),
                value: c[2].into(),
                expect: c[3].into(),
                with,
            }
        })
        .collect()
}
