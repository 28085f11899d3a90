//! `clear-errors` (ndctl's: the bytes were rewritten or discarded, so the pages are good
//! again): drops a range of a namespace's bad pages from its list, and says how many in one
//! line, or with `--json` prints the namespace's object with what is left (`badblocks`, in
//! sectors, as `list -M` prints them: `json::BadRange`). The list itself lives in the namespace
//! (its badblocks block); memory failure on an enabled namespace adds to it when the namespace
//! is disabled.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use devmap::PAGE_SIZE;
use devmap::namespace::Access;

use super::json::{Detail, NamespaceObject, OutputArgs, find};
use super::open::{open, region_error};
use crate::args::parse_size;
use crate::output;

/// `clear-errors`'s arguments.
#[derive(Debug, Args)]
pub struct ClearErrorsArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace: its name, or its dev (`namespace0.N`).
    name: String,
    /// First byte to clear, from the start of the namespace's data (a multiple of 4K)
    /// [default: 0].
    #[arg(long, short = 'o')]
    offset: Option<String>,
    /// Bytes to clear (a multiple of 4K) [default: to the end of the data].
    #[arg(long, short = 'l')]
    length: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

/// Runs `clear-errors`: drops the namespace's bad pages in the range from its list, and prints
/// what is left.
pub fn clear(a: ClearErrorsArgs) -> Result<()> {
    let mut region = open(&a.region, Access::Manage)?;
    let label = find(&region, &a.name)
        .map_err(region_error)
        .with_context(|| format!("in region {}", a.region.display()))?
        .clone();
    let data = label.namespace.data_bytes();
    let offset = a
        .offset
        .as_deref()
        .map(parse_size)
        .transpose()?
        .unwrap_or(0);
    let length = match a.length.as_deref() {
        Some(l) => parse_size(l)?,
        None => data.saturating_sub(offset),
    };
    for (what, v) in [("--offset", offset), ("--length", length)] {
        if !v.is_multiple_of(PAGE_SIZE) {
            bail!(
                "{what} {v} is not a multiple of 4K: errors are cleared a page at a time (try {})",
                v - v % PAGE_SIZE
            );
        }
    }
    if offset.checked_add(length).is_none_or(|end| end > data) {
        bail!("--offset {offset} --length {length} runs past the namespace's {data} data bytes");
    }
    let (first, end) = (offset / PAGE_SIZE, (offset + length) / PAGE_SIZE);
    let list = region.badblocks(&label).map_err(region_error)?;
    let before = list.pages().count();
    let left: Vec<u64> = list.pages().filter(|p| !(first..end).contains(p)).collect();
    let cleared = before - left.len();
    region
        .set_badblocks(&label, left)
        .map_err(region_error)
        .with_context(|| format!("cannot clear errors in region {}", a.region.display()))?;
    if a.out.json {
        let detail = Detail {
            human: a.out.human,
            dax: true,
            media_errors: true,
        };
        return output::object(&NamespaceObject::new(&region, &label, detail)?);
    }
    output::say(&format!(
        "cleared {cleared} bad page(s) of namespace {} ({} left)",
        label.name,
        before - cleared
    ))
}
