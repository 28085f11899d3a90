//! A namespace's media errors on disk: `clear-errors` (ndctl's: the bytes were rewritten or
//! discarded, so the pages are good again) and the bad ranges `list --media-errors` prints
//! (`region::BadRange`). The list itself lives in the namespace (its badblocks block); memory
//! failure on an enabled namespace adds to it when the namespace is disabled.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use devmap::PAGE_SIZE;
use devmap::namespace::{Access, Label, Region};

use super::region::{BadRange, Bytes, open, region_error};
use crate::args::parse_size;
use crate::output;

/// The media errors of `label`'s namespace.
pub fn media_errors(region: &Region, label: &Label, human: bool) -> Result<Vec<BadRange>> {
    let list = region.badblocks(label).map_err(region_error)?;
    Ok(list
        .ranges
        .iter()
        .map(|&(first, n)| BadRange {
            offset: Bytes::offset(first * PAGE_SIZE, human),
            length: Bytes::new(n * PAGE_SIZE, human),
        })
        .collect())
}

/// `clear-errors`'s arguments.
#[derive(Debug, Args)]
pub struct ClearErrorsArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace.
    name: String,
    /// First byte to clear, from the start of the namespace's data (a multiple of 4K)
    /// [default: 0].
    #[arg(long, short = 'o')]
    offset: Option<String>,
    /// Bytes to clear (a multiple of 4K) [default: to the end of the data].
    #[arg(long, short = 'l')]
    length: Option<String>,
}

/// Runs `clear-errors`: drops the namespace's bad pages in the range from its list, and prints
/// what is left.
pub fn clear(a: ClearErrorsArgs) -> Result<()> {
    let mut region = open(&a.region, Access::Manage)?;
    let label = region
        .namespace(&a.name)
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
    output::say(&format!(
        "cleared {cleared} bad page(s) of namespace {} ({} left)",
        a.name,
        before - cleared
    ))
}
