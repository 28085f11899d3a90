//! `report --svg`: the rows as one SVG bar chart, drawn with plotters' SVG backend. Each
//! section is a panel with its title; each row a pair of horizontal bars, ours and the
//! published figure, on a log scale of that section's own range (the figures of a section
//! span several orders of magnitude), with the row's name and both values written beside
//! them. The SVG backend writes text as `<text>` elements, so no font is needed; a row with
//! nothing measured shows why instead of bars.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::Row;

const WIDTH: u32 = 1400;
const LABEL_X: i32 = 10;
const BAR_X: i32 = 520;
const BAR_W: f64 = 600.0;
const ROW_H: i32 = 30;
const TITLE_H: i32 = 34;
const TOP: i32 = 50;

const OURS: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
const REFERENCE: RGBColor = RGBColor(0xb0, 0x4a, 0x2b);

/// Writes the chart of `rows` to `path`.
pub(super) fn write(path: &Path, rows: &[Row]) -> Result<()> {
    let mut sections: Vec<&str> = Vec::new();
    for r in rows {
        if !sections.contains(&r.section) {
            sections.push(r.section);
        }
    }
    let height = TOP + sections.len() as i32 * (TITLE_H + 10) + rows.len() as i32 * ROW_H + 20;
    let root = SVGBackend::new(path, (WIDTH, height as u32)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let font = |size: i32, color: &RGBColor| ("sans-serif", size).into_font().color(color);

    root.draw(&Text::new(
        "devmap report: ours (blue) against the kernel's or a seed's published figure (red); \
         log scale per section",
        (LABEL_X, 14),
        font(20, &BLACK),
    ))
    .map_err(err)?;
    let mut y = TOP;
    for section in sections {
        let these: Vec<&Row> = rows.iter().filter(|r| r.section == section).collect();
        let unit = these.first().map_or("", |r| unit_name(r));
        root.draw(&Text::new(
            format!("{section} ({unit})"),
            (LABEL_X, y + 8),
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
        let lo = (values.iter().copied().min().unwrap_or(1) as f64 / 2.0).max(0.5);
        let hi = values.iter().copied().max().unwrap_or(1) as f64 * 1.5;
        let len = |v: u64| -> i32 {
            let f = ((v.max(1) as f64).ln() - lo.ln()) / (hi.ln() - lo.ln());
            (f.clamp(0.0, 1.0) * BAR_W).round() as i32
        };
        for r in these {
            root.draw(&Text::new(
                r.name.clone(),
                (LABEL_X, y + 8),
                font(15, &BLACK),
            ))
            .map_err(err)?;
            match r.ours {
                None => {
                    root.draw(&Text::new(r.source.clone(), (BAR_X, y + 8), font(15, &RED)))
                        .map_err(err)?;
                }
                Some(ours) => {
                    let bars = [(ours, OURS, 0), (r.reference.unwrap_or(0), REFERENCE, 13)];
                    for (v, color, dy) in bars {
                        if v == 0 {
                            continue;
                        }
                        let w = len(v).max(1);
                        root.draw(&Rectangle::new(
                            [(BAR_X, y + dy), (BAR_X + w, y + dy + 11)],
                            color.filled(),
                        ))
                        .map_err(err)?;
                        root.draw(&Text::new(
                            r.unit.show(v),
                            (BAR_X + w + 6, y + dy + 1),
                            font(14, &color),
                        ))
                        .map_err(err)?;
                    }
                }
            }
            y += ROW_H;
        }
        y += 10;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// The unit's name for a panel title.
fn unit_name(r: &Row) -> &'static str {
    match r.unit {
        super::Unit::Bytes => "bytes",
        super::Unit::Ns => "time",
        super::Unit::Us => "time",
    }
}
