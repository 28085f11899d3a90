//! Everything `devmap` writes to stdout: tables for people, JSON arrays of objects with raw
//! integers for programs, single JSON objects, and single lines. A closed or full stdout is an error here, never a
//! panic as with `println!`; [`broken_pipe`] lets `main` end quietly when the reader has gone.

use std::io::{self, Write};

use anyhow::{Context, Result};
use serde::Serialize;

/// A table row: `(column header, cell)` pairs, in column order.
pub type Cells = Vec<(&'static str, String)>;

/// Writes `text` and a newline to stdout and flushes it, failing with an error where
/// `println!` would panic: when the reader has gone (`| head`) or the disk is full.
pub fn say(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Whether `e` comes from writing to a pipe whose reader has gone.
pub fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

/// Prints `rows` as one pretty JSON array.
pub fn json<T: Serialize>(rows: &[T]) -> Result<()> {
    say(&serde_json::to_string_pretty(rows)?)
}

/// Prints `row` as one pretty JSON object.
pub fn object<T: Serialize>(row: &T) -> Result<()> {
    say(&serde_json::to_string_pretty(row)?)
}

/// Prints `rows` as JSON with `--json`, else as a table: one header line, then one line per
/// row, every column right-aligned to its widest cell and columns two spaces apart.
pub fn print<T: Serialize>(as_json: bool, rows: &[T], columns: impl Fn(&T) -> Cells) -> Result<()> {
    if as_json {
        return json(rows);
    }
    match table(rows.iter().map(columns).collect()) {
        Some(text) => say(&text),
        None => Ok(()),
    }
}

/// The table of `cells` (every row with the same columns), or `None` for no rows.
fn table(cells: Vec<Cells>) -> Option<String> {
    let first = cells.first()?;
    let widths: Vec<usize> = (0..first.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].1.len())
                .chain([first[i].0.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<&str>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut text = line(first.iter().map(|c| c.0).collect());
    for r in &cells {
        text.push('\n');
        text.push_str(&line(r.iter().map(|c| c.1.as_str()).collect()));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_right_aligned_to_the_widest_cell() {
        let rows = vec![
            vec![("layout", "flat".to_owned()), ("n", "1".to_owned())],
            vec![("layout", "vmemmap".to_owned()), ("n", "12345".to_owned())],
        ];
        assert_eq!(
            table(rows).as_deref(),
            Some(" layout      n\n   flat      1\nvmemmap  12345")
        );
        assert_eq!(table(Vec::new()), None);
    }
}
