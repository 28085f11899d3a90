//! `devmap check-namespace`: reads a namespace's label and the info block it points to,
//! checks that both are valid and agree, and prints the namespace's object with what was
//! checked and found beside it: the generation, whether the last disable was clean, the memmap
//! kept on the device, and the namespace's enable state, with the command that repairs one
//! left enabled by a process that ended (the check then fails). In-process it reads the region
//! file read-only, so it works while another process manages the region; given the socket
//! (`--socket`, or `DEVMAP_SOCKET`) of a service that serves the region, the service reads
//! and checks it, between its enables and disables of that namespace, and says whether it
//! has the namespace enabled.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use devmap::namespace::{Access, INFO_BLOCK_OFFSET, InfoFlags, Label, Region};
use serde::Serialize;

use super::json::{Bytes, Detail, NamespaceObject, OutputArgs, REGION_ID, find, format_uuid};
use super::namespaces::existing;
use super::open::{open, region_error};
use super::served::Via;
use crate::output;

/// `check-namespace`'s arguments.
#[derive(Debug, Args)]
pub struct CheckNamespaceArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace to check: its name, or its dev (`namespace0.N`; through a service,
    /// `namespaceX.N` of its region X).
    name: String,
    /// A running `devmap serve`: when it serves the region, it checks the namespace (an
    /// enabled one too) and says whether it has it enabled; a region it does not serve is
    /// read here.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

/// What `check-namespace` prints: the namespace's object, and what was checked.
#[derive(Debug, Serialize)]
struct Check {
    #[serde(flatten)]
    namespace: NamespaceObject,
    /// Where the info block was read from, in the region file.
    info_block_offset: Bytes,
    /// The info block's generation.
    generation: u64,
    /// Whether the namespace was last disabled cleanly.
    clean: bool,
    /// The layout of the memmap kept on the device (what a warm enable adopts), or null.
    memmap_layout: Option<String>,
    /// The first pfn that memmap describes, or null.
    memmap_base_pfn: Option<u64>,
    /// `clean` (disabled cleanly: a warm enable may adopt its memmap), `never enabled`,
    /// `enabled by process N` (which holds the region now; through a service, the service
    /// when it has the namespace enabled), or `left enabled` (by a process that ended without
    /// disabling it: its memmap is not to be trusted until repaired).
    enable_state: String,
    /// The command that repairs a namespace left enabled, or null.
    repair: Option<String>,
    checked: [&'static str; 6],
    /// Whether the label and info block are valid and agree, and the namespace was not left
    /// enabled.
    ok: bool,
    /// The service's socket, when it checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<String>,
}

/// What the check read of the info block, and the namespace's enable state.
struct Found {
    generation: u64,
    clean: bool,
    memmap: Option<(String, u64)>,
    /// The pid of the process that has the namespace enabled, if one has.
    enabled_by: Option<u32>,
}

/// Runs `check-namespace`: reads the label and the info block it points to, and checks that
/// both are valid and agree. A namespace left enabled by a process that ended is printed with
/// the repair, and fails.
pub fn check(a: CheckNamespaceArgs) -> Result<()> {
    if let Some(socket) = &a.socket
        && let Some(via) = Via::serving(socket, &a.region)?
    {
        return check_served(&via, &a);
    }
    let region = open(&a.region, Access::Read)?;
    let what = || failed(&a.name, &a.region);
    let label = named(&region, &a, REGION_ID).with_context(what)?;
    let block = region
        .info_block(label)
        .map_err(region_error)
        .with_context(what)?;
    // The library checks the block against the label and the region; checked again here, so
    // that the reason names both sides.
    if block.parent_uuid != region.uuid() {
        return Err(anyhow!(
            "the info block names region {} as its parent, but this region is {}",
            format_uuid(&block.parent_uuid),
            format_uuid(&region.uuid())
        ))
        .with_context(what);
    }
    if block.name != label.name {
        return Err(anyhow!(
            "the info block names the namespace {:?}, the label {:?}",
            block.name,
            label.name
        ))
        .with_context(what);
    }
    // An enable marks the block in use (its generation goes past 1) and a clean disable marks
    // it clean; in between, the enabling process holds the region's lock.
    let found = Found {
        generation: block.generation,
        clean: block.flags.contains(InfoFlags::CLEAN),
        memmap: block
            .memmap
            .map(|m| (m.layout.name().to_owned(), m.base.raw())),
        enabled_by: crate::procfs::flock_holder(&a.region),
    };
    let repair = format!(
        "devmap disable-namespace -r {} {}",
        a.region.display(),
        label.name
    );
    let detail = Detail::one(a.out);
    report(&region, label, found, detail, repair, None)
}

/// `check-namespace --socket`: the service reads and checks the label and the info block.
/// It holds every region it serves, so the namespace is enabled only if the service has it
/// enabled; one left enabled by a process that ended is repaired through the service.
fn check_served(via: &Via, a: &CheckNamespaceArgs) -> Result<()> {
    let region = via.read()?;
    let what = || failed(&a.name, &a.region);
    let label = named(&region, a, via.index).with_context(what)?;
    let checked = via
        .client
        .check_namespace(Some(&via.region), &label.name)
        .with_context(|| via.failed(&format!("check namespace {:?}", label.name)))?;
    let found = Found {
        generation: checked.generation,
        clean: checked.clean,
        memmap: (!checked.memmap_layout.is_empty())
            .then_some((checked.memmap_layout, checked.memmap_base_pfn)),
        enabled_by: (checked.enabled_by != 0).then_some(checked.enabled_by),
    };
    let served = |verb: &str| {
        format!(
            "devmap {verb}-namespace --socket {} -r {} {}",
            via.socket.display(),
            a.region.display(),
            label.name
        )
    };
    let repair = format!("{} && {}", served("enable"), served("disable"));
    let service = Some(via.socket.display().to_string());
    report(&region, label, found, via.detail(a.out), repair, service)
}

/// The label `a` names in `region` (of index `id`), or a refusal naming the ones there are.
fn named<'r>(region: &'r Region, a: &CheckNamespaceArgs, id: u64) -> Result<&'r Label> {
    find(region, &a.name, id).map_err(|e| anyhow!("{e}: {}", existing(region, &a.region)))
}

/// What a failed check says first.
fn failed(name: &str, region: &Path) -> String {
    format!(
        "namespace {name:?} of region {} failed its check",
        region.display()
    )
}

/// Prints the check of `label` from what was `found`, with `repair` for a namespace left
/// enabled, and fails for one.
fn report(
    region: &Region,
    label: &Label,
    found: Found,
    detail: Detail,
    repair: String,
    service: Option<String>,
) -> Result<()> {
    let (state, repair) = if found.clean {
        ("clean".to_owned(), None)
    } else if found.generation <= 1 {
        ("never enabled".to_owned(), None)
    } else if let Some(pid) = found.enabled_by {
        (format!("enabled by process {pid}"), None)
    } else {
        ("left enabled".to_owned(), Some(repair))
    };
    let check = Check {
        namespace: NamespaceObject::new(region, label, detail)?,
        info_block_offset: Bytes::hex(label.offset + INFO_BLOCK_OFFSET, detail.human),
        generation: found.generation,
        clean: found.clean,
        memmap_layout: found.memmap.as_ref().map(|(layout, _)| layout.clone()),
        memmap_base_pfn: found.memmap.as_ref().map(|&(_, base)| base),
        enable_state: state,
        repair: repair.clone(),
        checked: [
            "label index",
            "info block signature and version",
            "info block checksum",
            "info block geometry",
            "info block agrees with the label (uuid, geometry, name)",
            "info block parent is this region",
        ],
        ok: repair.is_none(),
        service,
    };
    output::object(&check)?;
    match repair {
        None => Ok(()),
        Some(repair) => Err(anyhow!(
            "namespace {:?} was left enabled by a process that ended without disabling it: its \
             memmap on the device is not to be trusted, and its next enable rebuilds it. \
             `{repair}` rebuilds it now and marks the namespace clean",
            label.name
        )),
    }
}
