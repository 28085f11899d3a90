//! `clear-errors` (ndctl's: the bytes were rewritten or discarded, so the pages are good
//! again): drops a range of a namespace's bad pages from its list, and says how many in one
//! line, or with `--json` prints the namespace's object with what is left (`badblocks`, in
//! sectors, as `list -M` prints them: `json::BadRange`). The list itself lives in the namespace
//! (its badblocks block); memory failure on an enabled namespace adds to it as it happens.
//! Given the socket (`--socket`, or `DEVMAP_SOCKET`) of a service that serves the region, the
//! service clears them: through the device when it has the namespace enabled (the pages'
//! poison goes too, so a mapping made from then on reads them), else in the list.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use devmap::PAGE_SIZE;
use devmap::namespace::{Access, Label, Region};
use serde_json::json;

use super::json::{Detail, NamespaceObject, OutputArgs, REGION_ID, find};
use super::open::{open, region_error};
use super::served::Via;
use crate::args::parse_size;
use crate::output;

/// `clear-errors`'s arguments.
#[derive(Debug, Args)]
pub struct ClearErrorsArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace: its name, or its dev (`namespace0.N`; through a service,
    /// `namespaceX.N` of its region X).
    name: String,
    /// First byte to clear, from the start of the namespace's data (a multiple of 4K)
    /// [default: 0].
    #[arg(long, short = 'o')]
    offset: Option<String>,
    /// Bytes to clear (a multiple of 4K) [default: to the end of the data].
    #[arg(long, short = 'l')]
    length: Option<String>,
    /// A running `devmap serve`: when it serves the region, it clears the errors (of an
    /// enabled namespace too, through its device); a region it does not serve is changed
    /// here.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

/// Runs `clear-errors`: drops the namespace's bad pages in the range from its list, and prints
/// what is left.
pub fn clear(a: ClearErrorsArgs) -> Result<()> {
    if let Some(socket) = &a.socket
        && let Some(via) = Via::serving(socket, &a.region)?
    {
        return clear_served(&via, &a);
    }
    let mut region = open(&a.region, Access::Manage)?;
    let label = find(&region, &a.name, REGION_ID)
        .map_err(region_error)
        .with_context(|| format!("in region {}", a.region.display()))?
        .clone();
    let (offset, length) = range(&a, &label)?;
    let done = region
        .clear_errors(&label.name, offset, length)
        .map_err(region_error)
        .with_context(|| format!("cannot clear errors in region {}", a.region.display()))?;
    if a.out.json {
        return output::object(&NamespaceObject::new(&region, &label, detail(a.out))?);
    }
    cleared(&label, done.cleared, done.left)
}

/// `clear-errors --socket`: the range is checked here, as in-process, then cleared by the
/// service; what is left is read from the region file, where the service wrote it.
fn clear_served(via: &Via, a: &ClearErrorsArgs) -> Result<()> {
    let label = via.find(&via.read()?, &a.name)?.clone();
    let (offset, length) = range(a, &label)?;
    let done = via
        .client
        .clear_errors(Some(&via.region), &label.name, offset, length)
        .with_context(|| via.failed(&format!("clear errors of namespace {:?}", label.name)))?;
    if a.out.json {
        let detail = Detail {
            region: via.index,
            ..detail(a.out)
        };
        let r: Region = via.read()?;
        let label = via.find(&r, &label.name)?;
        return output::object(&via.object(&r, label, detail, json!({}))?);
    }
    cleared(&label, done.cleared, done.left)
}

/// The byte range `a` asks to clear in `label`'s namespace: from `--offset` (0) for
/// `--length` bytes (to the end of the data), page-aligned and inside the data.
fn range(a: &ClearErrorsArgs, label: &Label) -> Result<(u64, u64)> {
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
    Ok((offset, length))
}

/// What `--json` prints of the namespace: its object with its bad ranges.
fn detail(out: OutputArgs) -> Detail {
    Detail {
        media_errors: true,
        ..Detail::one(out)
    }
}

/// The line `clear-errors` says without `--json`.
fn cleared(label: &Label, cleared: u64, left: u64) -> Result<()> {
    output::say(&format!(
        "cleared {cleared} bad page(s) of namespace {} ({left} left)",
        label.name
    ))
}
