//! `report --svg`: the rows as one SVG bar chart, drawn with plotters' SVG backend. Each
//! section is a panel with its title and its own log-scale axis (the figures of a section span
//! several orders of magnitude), drawn under its rows with labelled ticks and gridlines, so a
//! bar's length reads as a value: 4 KiB beside 2 MiB sits nine ticks of a power of two apart,
//! not at a sixth. Each row is a pair of horizontal bars, ours and its reference, coloured by
//! what the reference is (a published figure, one scaled to `--quick`'s smaller run and marked
//! so, another figure of this run, or a target; the legend says which is which), with both
//! values and the ratio written beside them. The SVG backend writes text as `<text>` elements,
//! so no font is needed; a row with nothing measured shows why instead of bars.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{RefKind, Row, Unit, ratio_text};

const WIDTH: u32 = 1300;
const LABEL_X: i32 = 10;
const BAR_X: i32 = 500;
const BAR_W: i32 = 520;
const ROW_H: i32 = 32;
const TITLE_H: i32 = 30;
const AXIS_H: i32 = 46;
const GAP: i32 = 18;
const TOP: i32 = 96;

const OURS: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
const PUBLISHED: RGBColor = RGBColor(0xc0, 0x50, 0x2a);
const SCALED: RGBColor = RGBColor(0xf0, 0xb8, 0xa0);
const THIS_RUN: RGBColor = RGBColor(0x2e, 0x8b, 0x57);
const TARGET: RGBColor = RGBColor(0x80, 0x80, 0x80);
const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);

/// The colour of a reference bar of `kind`, and its name in the legend.
fn reference_style(kind: RefKind) -> (RGBColor, &'static str) {
    match kind {
        RefKind::Published => (PUBLISHED, "kernel's or seed's published figure"),
        RefKind::Scaled => (SCALED, "published figure scaled to --quick's size"),
        RefKind::ThisRun => (THIS_RUN, "another figure of this run (our cold enable)"),
        RefKind::Target => (TARGET, "target"),
    }
}

/// Writes the chart of `rows` to `path`.
pub(super) fn write(path: &Path, rows: &[Row]) -> Result<()> {
    let mut sections: Vec<&str> = Vec::new();
    for r in rows {
        if !sections.contains(&r.section) {
            sections.push(r.section);
        }
    }
    let height =
        TOP + sections.len() as i32 * (TITLE_H + AXIS_H + GAP) + rows.len() as i32 * ROW_H + 10;
    let root = SVGBackend::new(path, (WIDTH, height as u32)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let font = |size: i32, color: &RGBColor| ("sans-serif", size).into_font().color(color);

    root.draw(&Text::new(
        "devmap report: our figures against the kernel's, a seed's, or a target; \
         each section on its own log scale",
        (LABEL_X, 10),
        font(20, &BLACK),
    ))
    .map_err(err)?;
    // The legend: ours, then every kind of reference.
    let mut x = LABEL_X;
    let kinds = [
        RefKind::Published,
        RefKind::Scaled,
        RefKind::ThisRun,
        RefKind::Target,
    ];
    let legend = std::iter::once((OURS, "ours, measured in this run"))
        .chain(kinds.into_iter().map(reference_style));
    for (i, (color, name)) in legend.enumerate() {
        let y = 44 + (i as i32 / 3) * 22;
        if i % 3 == 0 {
            x = LABEL_X;
        }
        root.draw(&Rectangle::new([(x, y), (x + 24, y + 12)], color.filled()))
            .map_err(err)?;
        root.draw(&Text::new(name, (x + 30, y - 1), font(14, &BLACK)))
            .map_err(err)?;
        x += 400;
    }

    let mut y = TOP;
    for section in sections {
        let these: Vec<&Row> = rows.iter().filter(|r| r.section == section).collect();
        let unit = these.first().map_or(Unit::Ns, |r| r.unit);
        root.draw(&Text::new(
            section.to_owned(),
            (LABEL_X, y + 6),
            font(19, &BLACK),
        ))
        .map_err(err)?;
        y += TITLE_H;
        let values: Vec<u64> = these
            .iter()
            .flat_map(|r| [r.ours, r.reference])
            .flatten()
            .filter(|v| *v > 0)
            .collect();
        let axis = Axis::new(unit, &values);
        let rows_top = y;
        let rows_bottom = y + these.len() as i32 * ROW_H;
        // Gridlines first, so the bars are drawn over them.
        for &(v, _) in &axis.ticks {
            let gx = axis.x(v);
            root.draw(&PathElement::new(
                [(gx, rows_top - 4), (gx, rows_bottom + 2)],
                GRID,
            ))
            .map_err(err)?;
        }
        for r in &these {
            root.draw(&Text::new(
                r.name.clone(),
                (LABEL_X, y + 8),
                font(14, &BLACK),
            ))
            .map_err(err)?;
            let Some(ours) = r.ours else {
                root.draw(&Text::new(r.source.clone(), (BAR_X, y + 8), font(14, &RED)))
                    .map_err(err)?;
                y += ROW_H;
                continue;
            };
            let ratio = r
                .ratio
                .map(|x| format!(" ({} of the reference)", ratio_text(x)));
            let ours_label = format!("{}{}", r.unit.show(ours), ratio.unwrap_or_default());
            let mut bars = vec![(ours, OURS, ours_label, 1)];
            if let (Some(v), Some(kind)) = (r.reference, r.reference_kind) {
                let (color, name) = reference_style(kind);
                let label = match kind {
                    RefKind::Published => r.unit.show(v),
                    _ => format!("{} ({})", r.unit.show(v), short(kind, name)),
                };
                bars.push((v, color, label, 15));
            }
            for (v, color, label, dy) in bars {
                let end = if v == 0 { BAR_X } else { axis.x(v as f64) };
                root.draw(&Rectangle::new(
                    [(BAR_X, y + dy), (end.max(BAR_X + 1), y + dy + 12)],
                    color.filled(),
                ))
                .map_err(err)?;
                root.draw(&Text::new(label, (end + 6, y + dy), font(13, &BLACK)))
                    .map_err(err)?;
            }
            y += ROW_H;
        }
        // The axis: a line under the rows, a tick and its label at each gridline, and the
        // axis's title under them.
        let ay = rows_bottom + 4;
        root.draw(&PathElement::new([(BAR_X, ay), (BAR_X + BAR_W, ay)], BLACK))
            .map_err(err)?;
        for (v, label) in &axis.ticks {
            let tx = axis.x(*v);
            root.draw(&PathElement::new([(tx, ay), (tx, ay + 5)], BLACK))
                .map_err(err)?;
            root.draw(&Text::new(
                label.clone(),
                (tx, ay + 8),
                font(12, &BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(err)?;
        }
        root.draw(&Text::new(
            format!("{}, log scale", axis_title(unit)),
            (BAR_X + BAR_W / 2, ay + 24),
            font(12, &BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(err)?;
        y = rows_bottom + AXIS_H + GAP;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// The legend's name of `kind`, short enough to follow a value.
fn short(kind: RefKind, name: &'static str) -> &'static str {
    match kind {
        RefKind::Scaled => "scaled to this run",
        RefKind::ThisRun => "this run",
        _ => name,
    }
}

/// The axis's title for `unit`.
fn axis_title(unit: Unit) -> &'static str {
    match unit {
        Unit::Bytes => "bytes",
        Unit::Ns | Unit::Us => "time",
    }
}

/// A section's log-scale axis: its ticks (value, label), the first and last its ends.
struct Axis {
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// The axis that holds `values` (of `unit`; zeros left out) between two ticks, the
    /// smallest above the first so that its bar shows: powers of two (every 1, 2, 5 or 10th,
    /// at most 9 ticks) for bytes, powers of ten (every 1, 2 or 3rd) for time.
    fn new(unit: Unit, values: &[u64]) -> Axis {
        let min = values.iter().copied().min().unwrap_or(1).max(1) as f64;
        let max = values.iter().copied().max().unwrap_or(1).max(1) as f64;
        let base: f64 = if unit == Unit::Bytes { 2.0 } else { 10.0 };
        let lo_e = min.log(base).floor() as i64;
        // A value on the first tick would get no bar: start a power lower.
        let lo_e = if lo_e > 0 && base.powi(lo_e as i32) == min {
            lo_e - 1
        } else {
            lo_e
        };
        let hi_e = (max.log(base).ceil() as i64).max(lo_e + 1);
        let steps: &[i64] = if unit == Unit::Bytes {
            &[1, 2, 5, 10]
        } else {
            &[1, 2, 3]
        };
        let (lo, hi, step) = steps
            .iter()
            .map(|&s| (lo_e.div_euclid(s) * s, -((-hi_e).div_euclid(s)) * s, s))
            .find(|(lo, hi, s)| (hi - lo) / s <= 8)
            .unwrap_or((lo_e, hi_e, hi_e - lo_e));
        let ticks = (0..=(hi - lo) / step)
            .map(|k| {
                let v = base.powi((lo + k * step) as i32);
                (v, tick_label(unit, v))
            })
            .collect();
        Axis { ticks }
    }

    /// The x of `v` on the axis (clamped to its ends).
    fn x(&self, v: f64) -> i32 {
        let (lo, hi) = match (self.ticks.first(), self.ticks.last()) {
            (Some(lo), Some(hi)) if hi.0 > lo.0 => (lo.0.ln(), hi.0.ln()),
            _ => return BAR_X,
        };
        let f = ((v.max(1e-9).ln() - lo) / (hi - lo)).clamp(0.0, 1.0);
        BAR_X + (f * f64::from(BAR_W)).round() as i32
    }
}

/// A tick's label: a power of two in bytes (`512 B`, `32 KiB`, `1 GiB`), a power of ten of
/// time in its unit (`100 ns`, `10 us`, `1 s`), without decimals.
fn tick_label(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Bytes => {
            let mut v = v;
            let mut i = 0;
            const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
            while v >= 1024.0 && i + 1 < UNITS.len() {
                v /= 1024.0;
                i += 1;
            }
            format!("{v:.0} {}", UNITS[i])
        }
        Unit::Ns | Unit::Us => {
            let ns = if unit == Unit::Us { v * 1e3 } else { v };
            let (div, name) = match ns {
                x if x >= 1e9 => (1e9, "s"),
                x if x >= 1e6 => (1e6, "ms"),
                x if x >= 1e3 => (1e3, "us"),
                _ => (1.0, "ns"),
            };
            format!("{:.0} {name}", ns / div)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(axis: &Axis) -> Vec<&str> {
        axis.ticks.iter().map(|(_, l)| l.as_str()).collect()
    }

    #[test]
    fn axes_have_labelled_ticks_around_their_values() {
        let bytes = Axis::new(Unit::Bytes, &[4096, 2 << 20, 1 << 30]);
        assert_eq!(
            labels(&bytes),
            ["1 KiB", "32 KiB", "1 MiB", "32 MiB", "1 GiB"]
        );
        // 4 KiB and 2 MiB are 9 powers of two apart: over a third of this axis, not a sixth.
        let gap = bytes.x((2 << 20) as f64) - bytes.x(4096.0);
        assert_eq!(gap, (f64::from(BAR_W) * 9.0 / 20.0).round() as i32);
        let time = Axis::new(Unit::Ns, &[300_000, 2_000_000_000]);
        assert_eq!(
            labels(&time),
            ["100 us", "1 ms", "10 ms", "100 ms", "1 s", "10 s"]
        );
        assert_eq!(labels(&Axis::new(Unit::Us, &[62_000])), ["10 ms", "100 ms"]);
        assert_eq!(labels(&Axis::new(Unit::Bytes, &[])), ["1 B", "2 B"]);
    }

    #[test]
    fn the_chart_has_a_legend_axes_and_marks_scaled_references() {
        let rows = vec![
            Row::new(
                "metadata",
                "heads 2M",
                (32 << 20, Unit::Bytes),
                Some((4 << 30, RefKind::Published)),
                "kernel",
                "estimate",
            ),
            Row::new(
                "usable",
                "flat 16G sync: ready",
                (20_000_000, Unit::Ns),
                Some((39_000_000, RefKind::Scaled)),
                "seed, x16/128",
                "enable",
            ),
            Row::new(
                "warm",
                "warm vs cold",
                (300_000, Unit::Ns),
                Some((900_000_000, RefKind::ThisRun)),
                "cold enable, this run",
                "enable-namespace",
            ),
            Row::new(
                "warm",
                "warm vs 1 ms",
                (300_000, Unit::Ns),
                Some((1_000_000, RefKind::Target)),
                "target",
                "enable-namespace",
            ),
        ];
        let path = std::env::temp_dir().join(format!("devmap-chart-{}.svg", std::process::id()));
        write(&path, &rows).expect("write the chart");
        let svg = std::fs::read_to_string(&path).expect("read the chart");
        let _ = std::fs::remove_file(&path);
        for text in [
            "ours, measured in this run",
            "published figure scaled to --quick",
            "another figure of this run",
            "bytes, log scale",
            "time, log scale",
            "1 GiB",
            "1 ms",
            "(scaled to this run)",
            "(this run)",
            "(target)",
            "(1/128x of the reference)",
            "(0.51x of the reference)",
        ] {
            assert!(svg.contains(text), "the chart lacks {text:?}");
        }
        assert!(svg.contains("(1/3000x of the reference)"), "{svg}");
        let exponent = svg.as_bytes().windows(3).any(|w| {
            w[0].is_ascii_digit() && w[1] == b'e' && (w[2] == b'-' || w[2].is_ascii_digit())
        });
        assert!(!exponent, "no exponent in the chart");
        // Four colours of bar: ours, and three kinds of reference.
        for c in [OURS, SCALED, THIS_RUN, TARGET] {
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            assert!(svg.contains(&hex), "no bar in {hex}");
        }
    }
}
