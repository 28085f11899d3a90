//! `devmap list`: a region's namespaces and the region itself as `ndctl list` prints them, with
//! ndctl's display rules: an array of objects, except that under `-u` one object prints alone,
//! and nothing prints when nothing matches. This module owns its arguments and which objects it
//! prints: `-N` the namespaces (the default), `-R` the region, both the region with its
//! namespaces nested in it; `-n` (a name or a `namespace0.N`) and `-m` filter the namespaces;
//! `-X` prints a devdax namespace's `daxregion` instead of its `chardev` (and alone lists only
//! devdax namespaces, as ndctl's does); `-M` adds the bad ranges; `-C` a region's capabilities;
//! `-v`, `-vv` and `-vvv` turn on what ndctl's do (the nodes and `raw_uuid`, then `-M -X -N`,
//! `-R`, `-C`). It opens the region read-only,
//! taking no lock, so it lists a region another process is managing. Without `-r`, with a
//! service's socket (`--socket` or `DEVMAP_SOCKET`), it lists every region the service serves,
//! `region0`, `region1`, ... in the service's order, each namespace with whether the service
//! has it `enabled`; with `-r` and a socket, that region alike when the service serves it, and
//! as a region file alone (`region0`) when it does not.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{ArgAction, Args};
use devmap::NamespaceMode;
use devmap::client::Client;
use devmap::namespace::Access;
use devmap::service::proto::{NamespaceEntry, Namespaces};
use serde_json::Value;

use super::json::{Detail, NamespaceObject, OutputArgs, REGION_ID, RegionObject, find, print_list};
use super::open::open;
use super::served::index_of;
use crate::args::ModeArg;

/// `list`'s arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The region file. Without it, every region of the service at --socket.
    #[arg(long, short = 'r')]
    region: Option<PathBuf>,
    /// A running `devmap serve`'s socket: list the regions it serves (when no -r is given).
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: Option<PathBuf>,
    /// Include the namespaces (the default when neither -N nor -R is given).
    #[arg(long = "namespaces", short = 'N')]
    namespaces: bool,
    /// Include the region: its dev, size, align, free bytes, type, and devmap's path, uuid and
    /// namespace count.
    #[arg(long = "regions", short = 'R')]
    regions: bool,
    /// Only this namespace: its name, or its dev (`namespace0.N`; through a service,
    /// `namespaceX.N` of its region X).
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
    /// Include each region's capabilities: the modes its namespaces may have and the aligns
    /// each takes, as `ndctl list -C`.
    #[arg(long = "capabilities", short = 'C')]
    capabilities: bool,
    /// Taken for ndctl's scripts, and changes nothing: ndctl lists a disabled namespace only
    /// with -i, devmap lists every namespace (disabled is where one rests between the
    /// processes that enable it).
    #[arg(long = "idle", short = 'i')]
    _idle: bool,
    /// More detail, as ndctl's -v: a namespace's raw_uuid and the numa_node and target_node
    /// of namespaces and regions (where the machine has one node with memory), with -M -X -N;
    /// -vv adds -R, -vvv -C.
    #[arg(long, short = 'v', action = ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    out: OutputArgs,
}

/// What `list` prints, its flags resolved as ndctl's `cmd_list` resolves them: `-X` alone
/// filters on devdax, then `-v`'s levels turn on more, then namespaces are the default.
#[derive(Debug, Clone, Copy)]
struct Shown {
    namespaces: bool,
    regions: bool,
    mode: Option<NamespaceMode>,
    detail: Detail,
}

impl Shown {
    fn new(a: &ListArgs) -> Shown {
        let mut mode = a.mode.map(NamespaceMode::from);
        if a.dax && !a.namespaces && !a.regions && mode.is_none() {
            mode = Some(NamespaceMode::Devdax);
        }
        let v = a.verbose;
        let regions = a.regions || v >= 2;
        Shown {
            namespaces: a.namespaces || v >= 1 || !regions,
            regions,
            mode,
            detail: Detail {
                human: a.out.human,
                dax: a.dax || v >= 1,
                media_errors: a.media_errors || v >= 1,
                region: REGION_ID,
                verbose: v >= 1,
                capabilities: a.capabilities || v >= 3,
            },
        }
    }
}

/// A region `list` prints: the file to read, its index, and, through a service, the service's
/// name for it and its namespaces as the service lists them.
struct Listed<'s> {
    path: PathBuf,
    index: u64,
    served: Option<(&'s str, &'s [NamespaceEntry])>,
}

/// Region `i` of the service's `listing`.
fn served(listing: &Namespaces, i: usize) -> Listed<'_> {
    Listed {
        path: PathBuf::from(&listing.regions[i]),
        index: i as u64,
        served: Some((&listing.regions[i], &listing.entries)),
    }
}

/// Runs `list`.
pub fn run(a: ListArgs) -> Result<()> {
    let listing = match (&a.socket, &a.region) {
        (None, _) => None,
        (Some(socket), None) => Some(Client::connect(socket)?.listing()?),
        // A region the service cannot be asked about is listed as a region file alone.
        (Some(socket), Some(r)) => match Client::connect(socket).and_then(|c| c.listing()) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "devmap: warning: {e}; listing {} as a region file alone",
                    r.display()
                );
                None
            }
        },
    };
    let regions: Vec<Listed<'_>> = match (&a.region, &listing) {
        (Some(r), Some(l)) => match index_of(&l.regions, r) {
            Some(i) => vec![Listed {
                path: r.clone(),
                ..served(l, i as usize)
            }],
            None => vec![Listed {
                path: r.clone(),
                index: REGION_ID,
                served: None,
            }],
        },
        (Some(r), None) => vec![Listed {
            path: r.clone(),
            index: REGION_ID,
            served: None,
        }],
        (None, Some(l)) => (0..l.regions.len()).map(|i| served(l, i)).collect(),
        (None, None) => bail!(
            "list needs a region: give -r FILE, or a running service's socket with --socket \
             (or DEVMAP_SOCKET) to list every region it serves"
        ),
    };
    let shown = Shown::new(&a);
    let mut rows: Vec<Value> = Vec::new();
    for listed in &regions {
        rows.extend(region_rows(&a, shown, listed)?);
    }
    print_list(&rows, a.out.human)
}

/// The objects `list` prints for one region: its namespaces, or the region (with them nested
/// under `-N`); through a service, each namespace says whether it is `enabled` there.
fn region_rows(a: &ListArgs, shown: Shown, listed: &Listed<'_>) -> Result<Vec<Value>> {
    let path = &listed.path;
    let region = open(path, Access::Read)?;
    let only = match &a.name {
        Some(ident) => find(&region, ident, listed.index)
            .ok()
            .map(|l| l.name.as_str()),
        None => None,
    };
    let detail = Detail {
        region: listed.index,
        ..shown.detail
    };
    let namespaces: Vec<Value> = region
        .namespaces()
        .iter()
        .filter(|l| a.name.is_none() || only == Some(l.name.as_str()))
        .filter(|l| shown.mode.is_none_or(|m| m == l.namespace.mode()))
        .map(|l| {
            let mut v = serde_json::to_value(NamespaceObject::new(&region, l, detail)?)?;
            if let Some((shown, entries)) = listed.served {
                let e = entries
                    .iter()
                    .find(|e| e.region == shown && e.name == l.name);
                v["enabled"] = Value::Bool(e.is_some_and(|e| e.enabled));
            }
            Ok(v)
        })
        .collect::<Result<_>>()?;
    if !shown.regions {
        return Ok(namespaces);
    }
    let mut object = serde_json::to_value(RegionObject::new(&region, detail)?)?;
    if shown.namespaces && !namespaces.is_empty() {
        object["namespaces"] = Value::Array(namespaces);
    }
    Ok(vec![object])
}
