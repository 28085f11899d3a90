//! `devmap report`: runs the benchmarks of BENCHMARKS.md in this process and prints each one's
//! figures beside the kernel's (or a seed's) published ones. This module owns the command's
//! arguments, the row every section produces, how rows are printed (a table per section, or
//! one JSON array), and the run order; `sections` makes the measurements, each through the
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
    /// The kernel's or a seed's published figure, in the same unit, where there is one.
    pub reference: Option<u64>,
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
        reference: Option<u64>,
        source: impl Into<String>,
        command: &str,
    ) -> Row {
        let ratio = reference.filter(|r| *r > 0).map(|r| ours as f64 / r as f64);
        Row {
            section,
            name: name.into(),
            ours: Some(ours),
            unit,
            reference,
            source: source.into(),
            ratio,
            command: format!("devmap {command}"),
        }
    }
}

fn columns(r: &Row) -> Cells {
    let ratio = match r.ratio {
        Some(x) if x >= 0.01 => format!("{x:.2}x"),
        Some(x) => format!("{x:.2e}x"),
        None => "-".to_owned(),
    };
    vec![
        ("figure", r.name.clone()),
        (
            "ours",
            r.ours
                .map_or_else(|| "not measured".to_owned(), |v| r.unit.show(v)),
        ),
        (
            "kernel/seed",
            r.reference
                .map_or_else(|| "-".to_owned(), |v| r.unit.show(v)),
        ),
        ("ours/ref", ratio),
        ("reference", r.source.clone()),
        ("command", r.command.clone()),
    ]
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
                output::print(false, &got, columns)
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
