//! `devmap report`: runs the benchmarks of BENCHMARKS.md in this process and prints each one's
//! figures beside the kernel's (or a seed's) published ones. This module owns the command's
//! arguments, the row every section produces, how rows are printed (a table per section within
//! 100 columns, each row's source and command in numbered notes under it, or one JSON array),
//! how a ratio reads, and the run order; `sections` makes the measurements, each through the
//! internals of the command that reproduces it (whose exact command line is in the row), and
//! `chart` draws the rows as an SVG bar chart for `--svg`.

mod chart;
mod sections;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::output::{self, Cells};
use crate::units::{human, nanos};

/// `report`'s arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Smaller sizes where the full ones take long (each such row says which size it ran):
    /// under two minutes on a 2-core machine.
    #[arg(long)]
    quick: bool,
    /// Print a JSON array of objects with raw integers, one per row.
    #[arg(long, short = 'j')]
    json: bool,
    /// Also write the figures as an SVG bar chart to FILE (ours against the reference, a log
    /// scale per section).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// The unit of a row's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Unit {
    /// Bytes.
    Bytes,
    /// Nanoseconds.
    Ns,
    /// Microseconds.
    Us,
}

impl Unit {
    /// `value` in this unit, for people.
    fn show(self, value: u64) -> String {
        match self {
            Unit::Bytes => human(value),
            Unit::Ns => nanos(value),
            Unit::Us => nanos(value.saturating_mul(1000)),
        }
    }
}

/// What a row's reference is, which the table and the chart both say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RefKind {
    /// The kernel's or a seed's figure as published.
    Published,
    /// A published figure scaled to this run's smaller size (`--quick`).
    Scaled,
    /// Another figure of this run (the cold enable the warm one is compared with).
    ThisRun,
    /// A target the project set itself.
    Target,
}

impl RefKind {
    /// The words after a reference's value in the table (none for a published figure).
    fn mark(self) -> &'static str {
        match self {
            RefKind::Published => "",
            RefKind::Scaled => " (scaled)",
            RefKind::ThisRun => " (this run)",
            RefKind::Target => " (target)",
        }
    }
}

/// One figure: ours (measured in this run) against the published one.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// The section's name.
    pub section: &'static str,
    /// What was measured.
    pub name: String,
    /// Our figure, measured in this run; `None` where it cannot be measured yet.
    pub ours: Option<u64>,
    /// The unit of `ours` and `reference`.
    pub unit: Unit,
    /// The kernel's or a seed's published figure (or a target, or another figure of this
    /// run: `reference_kind` says), in the same unit, where there is one.
    pub reference: Option<u64>,
    /// What `reference` is, where there is one.
    pub reference_kind: Option<RefKind>,
    /// Where `reference` comes from (and how it was scaled, if it was), or why there is none.
    pub source: String,
    /// `ours / reference`.
    pub ratio: Option<f64>,
    /// The `devmap` command that reproduces `ours` (empty where nothing is measured).
    pub command: String,
}

impl Row {
    /// A row of `section` comparing `ours` with `reference` from `source`; `ratio` filled in.
    fn new(
        section: &'static str,
        name: impl Into<String>,
        (ours, unit): (u64, Unit),
        reference: Option<(u64, RefKind)>,
        source: impl Into<String>,
        command: &str,
    ) -> Row {
        let ratio = reference
            .filter(|(r, _)| *r > 0)
            .map(|(r, _)| ours as f64 / r as f64);
        Row {
            section,
            name: name.into(),
            ours: Some(ours),
            unit,
            reference: reference.map(|(r, _)| r),
            reference_kind: reference.map(|(_, k)| k),
            source: source.into(),
            ratio,
            command: format!("devmap {command}"),
        }
    }
}

/// `ours / reference` for people: two decimals from 0.01 to 100 (`0.25x`, `20.31x`), whole
/// above (`1024x`), and below 0.01 as the fraction it is (`1/129x`), never in exponent form.
pub(crate) fn ratio_text(x: f64) -> String {
    if !x.is_finite() || x < 0.0 {
        "-".to_owned()
    } else if x == 0.0 {
        "0x".to_owned()
    } else if x >= 100.0 {
        format!("{x:.0}x")
    } else if x >= 0.01 {
        format!("{x:.2}x")
    } else {
        format!("1/{:.0}x", 1.0 / x)
    }
}

/// The table row of `r`, whose source and command are note `note` under the table.
fn columns(r: &Row, note: usize) -> Cells {
    vec![
        ("figure", r.name.clone()),
        (
            "ours",
            r.ours
                .map_or_else(|| "not measured".to_owned(), |v| r.unit.show(v)),
        ),
        (
            "reference",
            r.reference.map_or_else(
                || "-".to_owned(),
                |v| {
                    let kind = r.reference_kind.map_or("", RefKind::mark);
                    format!("{}{kind}", r.unit.show(v))
                },
            ),
        ),
        (
            "ours/ref",
            r.ratio.map_or_else(|| "-".to_owned(), ratio_text),
        ),
        ("note", format!("[{note}]")),
    ]
}

/// Widest line of the notes under a table.
const NOTE_WIDTH: usize = 100;

/// `rows` as a table, then a note per distinct source and command: what each reference is and
/// the command that reproduces the row, wrapped within [`NOTE_WIDTH`] columns.
fn section_text(rows: &[Row]) -> Result<()> {
    let mut notes: Vec<(&str, &str)> = Vec::new();
    let mut numbered = Vec::new();
    for r in rows {
        let key = (r.source.as_str(), r.command.as_str());
        let n = match notes.iter().position(|k| *k == key) {
            Some(i) => i + 1,
            None => {
                notes.push(key);
                notes.len()
            }
        };
        numbered.push((r, n));
    }
    output::print(false, &numbered, |(r, n)| columns(r, *n))?;
    let mut text = String::new();
    for (i, (source, command)) in notes.iter().enumerate() {
        let tag = format!("[{}] ", i + 1);
        text.push_str(&wrap(&tag, source));
        text.push_str(&wrap(&" ".repeat(tag.len()), &format!("$ {command}")));
    }
    output::say(text.trim_end())
}

/// `text` wrapped at spaces within [`NOTE_WIDTH`] columns, the first line after `first` and
/// the rest indented as far; a word longer than a line stays whole.
fn wrap(first: &str, text: &str) -> String {
    let indent = " ".repeat(first.len());
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > NOTE_WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// Runs `report`: every section in turn, a table each as it ends (or one JSON array at the
/// end), then the chart.
pub fn run(a: ReportArgs) -> Result<()> {
    let scale = sections::Scale { quick: a.quick };
    let start = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let all = sections::all();
    // A bar on a terminal, nothing when stderr is piped (indicatif hides itself there).
    let bar = indicatif::ProgressBar::new(all.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{pos}/{len} {wide_msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    for (title, section) in all {
        bar.set_message(title);
        let t = Instant::now();
        let got = section(scale).with_context(|| format!("report section {title:?}"))?;
        bar.inc(1);
        if !a.json {
            bar.suspend(|| -> Result<()> {
                output::say(&format!(
                    "\n== {title} ({:.1} s) ==",
                    t.elapsed().as_secs_f64()
                ))?;
                section_text(&got)
            })?;
        }
        rows.extend(got);
    }
    bar.finish_and_clear();
    if a.json {
        output::json(&rows)?;
    }
    if let Some(path) = &a.svg {
        chart::write(path, &rows)
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
    }
    if !a.json {
        output::say(&format!(
            "\nreport{} took {:.1} s",
            if a.quick { " --quick" } else { "" },
            start.elapsed().as_secs_f64()
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_read_without_exponents() {
        assert_eq!(ratio_text(0.00775), "1/129x");
        assert_eq!(ratio_text(0.0001), "1/10000x");
        assert_eq!(ratio_text(0.01), "0.01x");
        assert_eq!(ratio_text(0.25), "0.25x");
        assert_eq!(ratio_text(1.0), "1.00x");
        assert_eq!(ratio_text(20.3), "20.30x");
        assert_eq!(ratio_text(1024.4), "1024x");
        assert_eq!(ratio_text(0.0), "0x");
        assert_eq!(ratio_text(f64::NAN), "-");
        for x in [1e-9, 7.75e-3, 0.5, 3.0, 1e6] {
            assert!(!ratio_text(x).contains('e'), "{x}: {}", ratio_text(x));
        }
    }

    #[test]
    fn notes_wrap_within_the_width_with_a_hanging_indent() {
        let text = "word ".repeat(60);
        let out = wrap("[12] ", &text);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() > 2);
        assert!(lines.iter().all(|l| l.len() <= NOTE_WIDTH), "{out}");
        assert!(lines[0].starts_with("[12] word"));
        assert!(
            lines[1..].iter().all(|l| l.starts_with("     word")),
            "{out}"
        );
        assert_eq!(out.split_whitespace().filter(|w| *w == "word").count(), 60);
        let long = "x".repeat(150);
        assert_eq!(
            wrap("", &long),
            format!("{long}\n"),
            "a long word stays whole"
        );
    }
}
