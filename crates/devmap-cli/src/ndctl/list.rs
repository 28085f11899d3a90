//! `devmap list`: a region's namespaces and the region itself as `ndctl list` prints them, a
//! JSON array of objects (raw byte counts, or with `--human` size strings). This module owns
//! its arguments and which objects it prints: `-N` the namespaces (the default), `-R` the
//! region, both the region with its namespaces nested in it; `-n` and `-m` filter the
//! namespaces; `-M` adds each namespace's media errors. It opens the region read-only, taking no lock, so it lists a region another
//! process is managing.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use devmap::NamespaceMode;
use devmap::namespace::Access;

use super::region::{NamespaceObject, RegionObject, open};
use crate::args::ModeArg;
use crate::output;

/// `list`'s arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// Include the namespaces (the default when neither -N nor -R is given).
    #[arg(long = "namespaces", short = 'N')]
    namespaces: bool,
    /// Include the region: its path, uuid, size, free bytes and namespace count.
    #[arg(long = "regions", short = 'R')]
    regions: bool,
    /// Only the namespace of this name.
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Only namespaces of this mode.
    #[arg(long, short = 'm', value_enum)]
    mode: Option<ModeArg>,
    /// Print sizes for people (`16.00 GiB`, offsets in hex) instead of raw byte counts.
    #[arg(long, short = 'u')]
    human: bool,
    /// Include each namespace's media errors (its badblocks list), as `ndctl list --media-errors`.
    #[arg(long = "media-errors", short = 'M')]
    media_errors: bool,
}

/// Runs `list`.
pub fn run(a: ListArgs) -> Result<()> {
    let region = open(&a.region, Access::Read)?;
    let mode = a.mode.map(NamespaceMode::from);
    let namespaces: Vec<NamespaceObject> = region
        .namespaces()
        .iter()
        .filter(|l| a.name.as_ref().is_none_or(|n| *n == l.name))
        .filter(|l| mode.is_none_or(|m| m == l.namespace.mode()))
        .map(|l| {
            let mut o = NamespaceObject::new(l, a.human);
            if a.media_errors {
                o.badblocks = Some(super::media::media_errors(&region, l, a.human)?);
            }
            Ok(o)
        })
        .collect::<Result<_>>()?;
    if !a.regions {
        return output::json(&namespaces);
    }
    let mut object = RegionObject::new(&region, a.human)?;
    if a.namespaces {
        object.namespaces = Some(namespaces);
    }
    output::json(&[object])
}
