//! `devmap create-namespace`, `destroy-namespace` and `check-namespace`: ndctl's namespace verbs
//! over a region file. This module owns their arguments, what each does to the region (through
//! the library's [`Region`], which holds the region's lock for the two that change it), and
//! their refusals in terms of the flags: a size off the align, a name in use, no room, a region
//! another process manages. `create-namespace` prints the namespace it made, one object with
//! its `daxregion`, as ndctl's does; `check-namespace` prints the namespace's object with what
//! it checked beside it; `destroy-namespace` says what it destroyed in one line, or with
//! `--json` prints the object of the namespace it destroyed. A namespace is named by its name
//! or its dev (`namespace0.N`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use devmap::namespace::{Access, INFO_BLOCK_OFFSET, InfoFlags, Region, RegionError};
use serde::Serialize;

use super::json::{Bytes, Detail, NamespaceObject, OutputArgs, find, format_uuid};
use super::open::{open, region_error};
use crate::args::{MapArg, ModeArg, namespace, refusal};
use crate::output;
use crate::units::format_size;

/// `create-namespace`'s arguments.
#[derive(Debug, Args)]
pub struct CreateNamespaceArgs {
    /// The region file (made by `devmap create-region`).
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// Namespace mode.
    #[arg(long, short = 'm', value_enum, default_value = devmap::NamespaceMode::default().name())]
    mode: ModeArg,
    /// Namespace size, info block included, with K/M/G/T suffixes in powers of 1024 (e.g.
    /// 16G); a multiple of --align. Without it, the largest the region has room for, as ndctl
    /// does.
    #[arg(long, short = 's', allow_hyphen_values = true)]
    size: Option<String>,
    /// Page size of the namespace's folios, and the alignment of its data: 4K, 2M or 1G.
    #[arg(long, short = 'a', default_value = "2M", allow_hyphen_values = true)]
    align: String,
    /// Where the memmap lives: host memory, or the device itself (an altmap).
    #[arg(long, short = 'M', value_enum, default_value = devmap::MemmapLocation::default().name())]
    map: MapArg,
    /// Namespace name, unique in the region (1 to 64 bytes). Without it, the first free of
    /// namespace0, namespace1, ...
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Owner uid of the namespace, for `devmap serve`: who may open it (with --gid and
    /// --perm, as a /dev/dax node's owner, group and mode). Default root.
    #[arg(long, default_value_t = 0)]
    uid: u32,
    /// Owner gid (default root).
    #[arg(long, default_value_t = 0)]
    gid: u32,
    /// Permission bits in octal, at most 0777 (default 0600: the owner alone). Opening needs
    /// read and write. (`--mode` is the namespace mode, as in ndctl.)
    #[arg(long, default_value = "0600")]
    perm: String,
    #[command(flatten)]
    out: OutputArgs,
}

/// The `--perm` value: octal permission bits, at most 0777.
fn perm(text: &str) -> Result<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(p) if p <= 0o777 => Ok(p),
        _ => Err(anyhow!(
            "--perm {text:?} is not octal permission bits of at most 0777: use e.g. 0660 (owner \
             and group may open it) or 0600"
        )),
    }
}

/// Runs `create-namespace`: validates the geometry, creates the namespace (info block, then
/// label) and prints it.
pub fn create(a: CreateNamespaceArgs) -> Result<()> {
    // The owner and a geometry given in full are checked before the region is touched.
    let owner = devmap::namespace::Owner {
        uid: a.uid,
        gid: a.gid,
        mode: perm(&a.perm)?,
    };
    if let Some(size) = &a.size {
        namespace(size, &a.align, a.mode, a.map)?;
    }
    let mut region = open(&a.region, Access::Manage)?;
    let size = match &a.size {
        Some(size) => size.clone(),
        None => largest(&region, &a)?,
    };
    let ns = namespace(&size, &a.align, a.mode, a.map)?;
    let name = match a.name {
        Some(name) => name,
        None => (0..)
            .map(|i| format!("namespace{i}"))
            .find(|n| region.namespace(n).is_err())
            .ok_or_else(|| anyhow!("no free default name: give one with -n NAME"))?,
    };
    let label = region
        .create_namespace(&name, ns.size(), ns.align(), ns.mode(), ns.map())
        .map_err(|e| create_refusal(e, &name))
        .with_context(|| {
            format!(
                "cannot create namespace {name:?} in region {}",
                a.region.display()
            )
        })?;
    let label = if owner == devmap::namespace::Owner::DEFAULT {
        label
    } else {
        region
            .set_owner(&name, owner)
            .map_err(region_error)
            .with_context(|| format!("cannot set the owner of namespace {name:?}"))?;
        region.namespace(&name).map_err(region_error)?.clone()
    };
    output::object(&NamespaceObject::new(&region, &label, Detail::one(a.out))?)
}

/// The largest `--size` at `--align` the region has room for, for a `create-namespace` without
/// one.
fn largest(region: &Region, a: &CreateNamespaceArgs) -> Result<String> {
    let align = crate::args::parse_align(&a.align, a.mode)?;
    // A new namespace starts on max(align, 2 MiB), and its size past the last whole one of
    // those would be truncated (end_trunc).
    let start = devmap::namespace::data_align(align);
    let (_, run) = region.free_space(start).map_err(region_error)?;
    let size = run / start * start;
    if size == 0 {
        return Err(anyhow!(
            "region {} has no free run of {} aligned to {}: destroy a namespace, or try a \
             smaller --align",
            a.region.display(),
            format_size(start),
            format_size(start)
        ));
    }
    Ok(format_size(size))
}

/// A refusal of the library's, with what would work instead.
fn create_refusal(e: RegionError, name: &str) -> anyhow::Error {
    match e {
        RegionError::NameTaken { .. } => anyhow!(
            "{e}: choose another -n, or destroy the existing {name:?} first with \
             `devmap destroy-namespace`"
        ),
        RegionError::NoSpace {
            size,
            align,
            largest,
        } => {
            let fits = largest / align * align;
            let hint = if fits == 0 {
                format!(
                    "no free run starting on a {} boundary is left: destroy a namespace to \
                     make room, or try a smaller --align",
                    format_size(align)
                )
            } else {
                format!(
                    "the largest free run is {}: use --size {} or less",
                    format_size(largest),
                    format_size(fits)
                )
            };
            anyhow!(
                "no room for {} aligned to {}; {hint}",
                format_size(size),
                format_size(align)
            )
        }
        RegionError::Namespace(e) => refusal(e),
        e => region_error(e),
    }
}

/// `destroy-namespace`'s arguments.
#[derive(Debug, Args)]
pub struct DestroyNamespaceArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace to destroy: its name, or its dev (`namespace0.N`).
    name: String,
    /// Destroy it even if its last enable did not end with a disable (a process that enabled
    /// it ended without disabling it), or its info block cannot be read. A namespace enabled
    /// right now is never destroyed: its process holds the region.
    #[arg(long, short = 'f')]
    force: bool,
    #[command(flatten)]
    out: OutputArgs,
}

/// Runs `destroy-namespace`: the label goes, then the info block.
pub fn destroy(a: DestroyNamespaceArgs) -> Result<()> {
    let mut region = open(&a.region, Access::Manage)?;
    let found = find(&region, &a.name).ok().cloned();
    let name = found.as_ref().map_or(a.name.clone(), |l| l.name.clone());
    let object = match &found {
        Some(label) if a.out.json => {
            Some(NamespaceObject::new(&region, label, Detail::one(a.out))?)
        }
        _ => None,
    };
    if !a.force
        && let Some(label) = &found
    {
        match region.info_block(label) {
            Ok(block) if block.generation > 1 && !block.flags.contains(InfoFlags::CLEAN) => bail!(
                "namespace {:?} was not disabled cleanly (the process that last enabled it \
                 ended without disabling it): check its data, then destroy it with --force",
                name
            ),
            Ok(_) => {}
            Err(e) => bail!(
                "namespace {:?}: {}: destroy it anyway with --force",
                name,
                region_error(e)
            ),
        }
    }
    region
        .destroy_namespace(&name)
        .map_err(|e| match e {
            RegionError::NotFound { .. } => anyhow!("{e}: {}", existing(&region, &a.region)),
            e => region_error(e),
        })
        .with_context(|| {
            format!(
                "cannot destroy namespace {:?} in region {}",
                a.name,
                a.region.display()
            )
        })?;
    if let Some(object) = object {
        return output::object(&object);
    }
    output::say(&format!(
        "destroyed 1 namespace: {name} in {}",
        a.region.display()
    ))
}

/// The names of `region`'s namespaces, for a refusal of a name that is not one.
fn existing(region: &Region, path: &Path) -> String {
    let names: Vec<&str> = region
        .namespaces()
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    if names.is_empty() {
        format!("region {} has no namespaces", path.display())
    } else {
        format!(
            "the namespaces of region {} are: {}",
            path.display(),
            names.join(", ")
        )
    }
}

/// `check-namespace`'s arguments.
#[derive(Debug, Args)]
pub struct CheckNamespaceArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace to check: its name, or its dev (`namespace0.N`).
    name: String,
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
    memmap_layout: Option<&'static str>,
    /// The first pfn that memmap describes, or null.
    memmap_base_pfn: Option<u64>,
    /// `clean` (disabled cleanly: a warm enable may adopt its memmap), `never enabled`,
    /// `enabled by process N` (which holds the region now), or `left enabled` (by a process
    /// that ended without disabling it: its memmap is not to be trusted until repaired).
    enable_state: String,
    /// The command that repairs a namespace left enabled, or null.
    repair: Option<String>,
    checked: [&'static str; 6],
    /// Whether the label and info block are valid and agree, and the namespace was not left
    /// enabled.
    ok: bool,
}

/// Runs `check-namespace`: reads the label and the info block it points to, and checks that
/// both are valid and agree. Read-only, so it works while another process manages the region.
/// A namespace left enabled by a process that ended is printed with the repair, and fails.
pub fn check(a: CheckNamespaceArgs) -> Result<()> {
    let region = open(&a.region, Access::Read)?;
    let what = || {
        format!(
            "namespace {:?} of region {} failed its check",
            a.name,
            a.region.display()
        )
    };
    let label = find(&region, &a.name)
        .map_err(|e| anyhow!("{e}: {}", existing(&region, &a.region)))
        .with_context(what)?;
    let block = region
        .info_block(label)
        .map_err(region_error)
        .with_context(what)?;
    // The library checks the block against the label's uuid and geometry; its parent and name
    // are checked here.
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
    let clean = block.flags.contains(InfoFlags::CLEAN);
    // An enable marks the block in use (its generation goes past 1) and a clean disable marks
    // it clean; in between, the enabling process holds the region's lock.
    let (state, repair) = if clean {
        ("clean".to_owned(), None)
    } else if block.generation <= 1 {
        ("never enabled".to_owned(), None)
    } else if let Some(pid) = crate::procfs::flock_holder(&a.region) {
        (format!("enabled by process {pid}"), None)
    } else {
        (
            "left enabled".to_owned(),
            Some(format!(
                "devmap disable-namespace -r {} {}",
                a.region.display(),
                label.name
            )),
        )
    };
    let check = Check {
        namespace: NamespaceObject::new(&region, label, Detail::one(a.out))?,
        info_block_offset: Bytes::hex(label.offset + INFO_BLOCK_OFFSET, a.out.human),
        generation: block.generation,
        clean,
        memmap_layout: block.memmap.map(|m| m.layout.name()),
        memmap_base_pfn: block.memmap.map(|m| m.base.raw()),
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
