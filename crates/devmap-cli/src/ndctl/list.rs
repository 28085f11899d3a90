//! `devmap list`: a region's namespaces and the region itself as `ndctl list` prints them, with
//! ndctl's display rules: an array of objects, except that under `-u` one object prints alone,
//! and nothing prints when nothing matches. This module owns its arguments and which objects it
//! prints: `-N` the namespaces (the default), `-R` the region, both the region with its
//! namespaces nested in it; `-n` (a name or a `namespace0.N`) and `-m` filter the namespaces;
//! `-X` prints a devdax namespace's `daxregion` instead of its `chardev` (and alone lists only
//! devdax namespaces, as ndctl's does); `-M` adds the bad ranges. It opens the region read-only,
//! taking no lock, so it lists a region another process is managing.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use devmap::NamespaceMode;
use devmap::namespace::Access;

use super::json::{Detail, NamespaceObject, OutputArgs, RegionObject, find, print_list};
use super::open::open;
use crate::args::ModeArg;

/// `list`'s arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// Include the namespaces (the default when neither -N nor -R is given).
    #[arg(long = "namespaces", short = 'N')]
    namespaces: bool,
    /// Include the region: its dev, size, align, free bytes, type, and devmap's path, uuid and
    /// namespace count.
    #[arg(long = "regions", short = 'R')]
    regions: bool,
    /// Only this namespace: its name, or its dev (`namespace0.N`).
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Only namespaces of this mode.
    #[arg(long, short = 'm', value_enum)]
    mode: Option<ModeArg>,
    /// Include each devdax namespace's dax region and device (`daxregion`) instead of its
    /// `chardev`, as `ndctl list -X`; alone, list only devdax namespaces.
    #[arg(long = "device-dax", short = 'X')]
    dax: bool,
    /// Include the bad ranges (`badblocks`, in 512-byte sectors), as `ndctl list
    /// --media-errors`. `badblock_count` is printed whenever there are any.
    #[arg(long = "media-errors", short = 'M')]
    media_errors: bool,
    #[command(flatten)]
    out: OutputArgs,
}

/// Runs `list`.
pub fn run(a: ListArgs) -> Result<()> {
    let region = open(&a.region, Access::Read)?;
    let mut mode = a.mode.map(NamespaceMode::from);
    if a.dax && !a.namespaces && !a.regions && mode.is_none() {
        mode = Some(NamespaceMode::Devdax);
    }
    let only = match &a.name {
        Some(ident) => find(&region, ident).ok().map(|l| l.name.as_str()),
        None => None,
    };
    let detail = Detail {
        human: a.out.human,
        dax: a.dax,
        media_errors: a.media_errors,
    };
    let namespaces: Vec<NamespaceObject> = region
        .namespaces()
        .iter()
        .filter(|l| a.name.is_none() || only == Some(l.name.as_str()))
        .filter(|l| mode.is_none_or(|m| m == l.namespace.mode()))
        .map(|l| NamespaceObject::new(&region, l, detail))
        .collect::<Result<_>>()?;
    if !a.regions {
        return print_list(&namespaces, a.out.human);
    }
    let mut object = RegionObject::new(&region, detail)?;
    if a.namespaces && !namespaces.is_empty() {
        object.namespaces = Some(namespaces);
    }
    print_list(&[object], a.out.human)
}
