//! `devmap create-namespace` and `destroy-namespace`: ndctl's namespace verbs over a region
//! file (`check-namespace` is `super::check`). This module owns their arguments, what each does
//! to the region (through the library's [`Region`], which holds the region's lock), and their
//! refusals in terms of the flags: a size off the align, a name in use, no room, a region
//! another process manages. `create-namespace` prints the namespace it made, one object with
//! its `daxregion`, as ndctl's does, and like ndctl's (`setup_namespace`: `isatty(1)` turns on
//! `UTIL_JSON_HUMAN`) with sizes for people when its output is a terminal; `destroy-namespace` says what it destroyed in one line, or
//! with `--json` prints the object of the namespace it destroyed. A namespace is named by its
//! name or its dev (`namespace0.N`). Given the socket (`--socket`, or `DEVMAP_SOCKET`) of a
//! service that serves the region, each asks the service to do it (`super::served`) and
//! prints the same.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use devmap::namespace::{Access, Owner, Region, RegionError};
use devmap::service::proto::CreateNamespace;
use devmap::{MemmapLocation, NamespaceMode};
use serde_json::json;

use super::json::{Detail, NamespaceObject, OutputArgs, REGION_ID, find};
use super::open::{open, region_error};
use super::served::Via;
use crate::args::{MapArg, ModeArg, namespace, parse_align, parse_size, refusal};
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
    /// A running `devmap serve`: when it serves the region, it creates the namespace (while
    /// it serves the region's other namespaces); a region it does not serve is changed here.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: Option<PathBuf>,
    /// Output flags. On a terminal, sizes are for people without -u, as ndctl's
    /// create-namespace prints them there; piped, -u asks for them.
    #[command(flatten)]
    out: OutputArgs,
}

/// What `create-namespace` prints with: `out`, sizes for people when stdout is a terminal.
fn create_output(out: OutputArgs) -> OutputArgs {
    OutputArgs {
        human: out.human || std::io::stdout().is_terminal(),
        ..out
    }
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
    let owner = Owner {
        uid: a.uid,
        gid: a.gid,
        mode: perm(&a.perm)?,
    };
    if let Some(size) = &a.size {
        namespace(size, &a.align, a.mode, a.map)?;
    }
    if let Some(socket) = &a.socket
        && let Some(via) = Via::serving(socket, &a.region)?
    {
        return create_served(&via, &a, owner);
    }
    let mut region = open(&a.region, Access::Manage)?;
    let size = match &a.size {
        Some(size) => size.clone(),
        None => largest(&region, &a)?,
    };
    let ns = namespace(&size, &a.align, a.mode, a.map)?;
    let name = a.name.unwrap_or_else(|| region.default_name());
    let label = region
        .create_namespace(&name, ns.size(), ns.align(), ns.mode(), ns.map())
        .map_err(|e| create_refusal(e, &name))
        .with_context(|| {
            format!(
                "cannot create namespace {name:?} in region {}",
                a.region.display()
            )
        })?;
    let label = if owner == Owner::DEFAULT {
        label
    } else {
        region
            .set_owner(&name, owner)
            .map_err(region_error)
            .with_context(|| format!("cannot set the owner of namespace {name:?}"))?;
        region.namespace(&name).map_err(region_error)?.clone()
    };
    let out = create_output(a.out);
    output::object(&NamespaceObject::new(&region, &label, Detail::one(out))?)
}

/// `create-namespace --socket`: the service picks the name and the size where they are left
/// out, as this process would, and creates the namespace; it is printed from the region file.
fn create_served(via: &Via, a: &CreateNamespaceArgs, owner: Owner) -> Result<()> {
    let align = parse_align(&a.align, a.mode)?;
    let size = a.size.as_deref().map(parse_size).transpose()?.unwrap_or(0);
    let asked = a
        .name
        .as_ref()
        .map_or_else(|| "(the first free name)".to_owned(), |n| format!("{n:?}"));
    let created = via
        .client
        .create_namespace(&CreateNamespace {
            region: via.region.clone(),
            name: a.name.clone().unwrap_or_default(),
            size,
            align,
            mode: NamespaceMode::from(a.mode).name().into(),
            map: MemmapLocation::from(a.map).name().into(),
            uid: owner.uid,
            gid: owner.gid,
            perm: owner.mode,
        })
        .with_context(|| via.failed(&format!("create namespace {asked}")))?;
    let r = via.read()?;
    let label = via.find(&r, &created.name)?;
    let out = create_output(a.out);
    output::object(&via.object(&r, label, via.detail(out), json!({}))?)
}

/// The largest `--size` at `--align` the region has room for, for a `create-namespace` without
/// one.
fn largest(region: &Region, a: &CreateNamespaceArgs) -> Result<String> {
    let align = parse_align(&a.align, a.mode)?;
    let size = region.largest_namespace(align).map_err(region_error)?;
    if size == 0 {
        let start = devmap::namespace::data_align(align);
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
    /// The namespace to destroy: its name, or its dev (`namespace0.N`; through a service,
    /// `namespaceX.N` of its region X).
    name: String,
    /// Destroy it even if its last enable did not end with a disable (a process that enabled
    /// it ended without disabling it), or its info block cannot be read. A namespace enabled
    /// right now is never destroyed: its process holds the region (a service refuses it
    /// until it is disabled).
    #[arg(long, short = 'f')]
    force: bool,
    /// A running `devmap serve`: when it serves the region, it destroys the namespace
    /// (refused while it has it enabled: disable it first); a region it does not serve is
    /// changed here.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

/// Runs `destroy-namespace`: the label goes, then the info block.
pub fn destroy(a: DestroyNamespaceArgs) -> Result<()> {
    if let Some(socket) = &a.socket
        && let Some(via) = Via::serving(socket, &a.region)?
    {
        return destroy_served(&via, &a);
    }
    let mut region = open(&a.region, Access::Manage)?;
    let found = find(&region, &a.name, REGION_ID).ok().cloned();
    let name = found.as_ref().map_or(a.name.clone(), |l| l.name.clone());
    let object = match &found {
        Some(label) if a.out.json => {
            Some(NamespaceObject::new(&region, label, Detail::one(a.out))?)
        }
        _ => None,
    };
    if !a.force && found.is_some() {
        region.may_destroy(&name).map_err(region_error)?;
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
    destroyed(&name, &a.region)
}

/// `destroy-namespace --socket`: the namespace's object is read before the service destroys
/// it.
fn destroy_served(via: &Via, a: &DestroyNamespaceArgs) -> Result<()> {
    let r = via.read()?;
    let label = find(&r, &a.name, via.index).map_err(|e| match e {
        RegionError::NotFound { .. } => anyhow!("{e}: {}", existing(&r, &a.region)),
        e => region_error(e),
    })?;
    let object = match a.out.json {
        true => Some(via.object(&r, label, via.detail(a.out), json!({}))?),
        false => None,
    };
    via.client
        .destroy_namespace(Some(&via.region), &label.name, a.force)
        .with_context(|| via.failed(&format!("destroy namespace {:?}", label.name)))?;
    match object {
        Some(object) => output::object(&object),
        None => destroyed(&label.name, &a.region),
    }
}

/// The line `destroy-namespace` says without `--json`.
fn destroyed(name: &str, region: &Path) -> Result<()> {
    output::say(&format!(
        "destroyed 1 namespace: {name} in {}",
        region.display()
    ))
}

/// The names of `region`'s namespaces, for a refusal of a name that is not one.
pub(super) fn existing(region: &Region, path: &Path) -> String {
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
