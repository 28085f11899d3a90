//! `devmap enable-namespace` and `disable-namespace`: ndctl's verbs for a namespace that, in
//! devmap, is enabled by the process that uses it and for as long as that process runs (the
//! region's lock is the proof). This module owns their arguments, the timed enable (warm,
//! cold or in host memory, and how long until the namespace is usable and until its memmap is
//! whole), the progress bar of a background init on a terminal, and the repair a
//! `disable-namespace` does for a namespace its process left enabled when it died. Each prints
//! one object: the namespace's, as `create-namespace` prints it, with what the verb did beside
//! it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use devmap::dax::DaxOptions;
use devmap::init::InitMode;
use devmap::memmap::Geometry;
use devmap::namespace::{Access, EnabledNamespace, InfoFlags, Region, StopSignal, StopSignals};
use devmap::{DeviceSpace, InitProgress, Layout, Order, PAGE_SIZE, Pfn, PfnRange};
use serde::Serialize;
use serde_json::json;

use super::json::{Detail, NamespaceObject, OutputArgs, REGION_ID, find};
use super::open::{open, region_error};
use super::served::through_service;
use crate::output;

/// `--layout` of an enable: one layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnableLayout {
    /// One descriptor per 4 KiB page (16 GiB per TiB, kept on the device with --map dev).
    Flat,
    /// Software vmemmap with tail-block dedup (always in host memory).
    Vmemmap,
    /// Head descriptors only (kept on the device with --map dev).
    Heads,
}

impl EnableLayout {
    fn layout(self) -> Layout {
        match self {
            EnableLayout::Flat => Layout::Flat,
            EnableLayout::Vmemmap => Layout::Vmemmap,
            EnableLayout::Heads => Layout::Heads,
        }
    }
}

/// `--init` of an enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnableInit {
    /// On the calling thread.
    Sync,
    /// On every core, the caller included.
    Parallel,
    /// In the background on every core; the namespace is usable at once.
    Async,
}

impl EnableInit {
    fn mode(self) -> InitMode {
        match self {
            EnableInit::Sync => InitMode::Sync,
            EnableInit::Parallel => InitMode::parallel_default(),
            EnableInit::Async => InitMode::async_default(),
        }
    }
}

/// `enable-namespace`'s arguments.
#[derive(Debug, Args)]
pub struct EnableNamespaceArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace: its name, or its dev (`namespace0.N`; through a service, `namespaceX.N`
    /// of its region X).
    name: String,
    /// Descriptor layout. A --map dev namespace keeps a flat or heads memmap on the device,
    /// where the next enable with the same layout adopts it.
    #[arg(long, value_enum, default_value = devmap::Layout::default().name())]
    layout: EnableLayout,
    /// How a memmap that cannot be adopted is initialised.
    #[arg(long, value_enum, default_value = devmap::InitMode::default().name())]
    init: EnableInit,
    /// Seconds to keep the namespace enabled before disabling it (0: disable at once).
    /// Ctrl-C, SIGTERM or SIGHUP end it early, with a clean disable.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// A running `devmap serve` that serves the region: the service enables the namespace and
    /// keeps it enabled (for its clients) until `disable-namespace --socket` or its end.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

/// What `enable-namespace` prints.
#[derive(Debug, Serialize)]
pub struct EnableObject {
    /// The namespace, as it is after the disable.
    #[serde(flatten)]
    pub namespace: NamespaceObject,
    /// How the memmap was had: "warm" (adopted from the device), "cold" (initialised on the
    /// device) or "host" (initialised in host memory).
    pub enable_path: &'static str,
    /// Whether the last disable was clean.
    pub was_clean: bool,
    /// The descriptor layout of the memmap.
    pub layout: &'static str,
    /// How a memmap that could not be adopted was to be initialised.
    pub init: &'static str,
    /// Nanoseconds until the namespace was usable: the region opened, the device built, the
    /// bad pages poisoned again and the info block marked in use.
    pub enable_ns: u64,
    /// Nanoseconds until every descriptor was initialised (equal to `enable_ns` unless a
    /// background init ran on).
    pub memmap_ns: u64,
    /// Descriptors this enable wrote (0 when warm).
    pub descriptors_initialized: u64,
    /// Bad pages the namespace's list holds.
    pub bad_pages: u64,
    /// Nanoseconds the clean disable took.
    pub disable_ns: u64,
    /// The signal (`SIGINT`, `SIGTERM` or `SIGHUP`) that ended `--hold` early, or null. The
    /// namespace was disabled cleanly all the same, and the command exits 0.
    pub signal: Option<&'static str>,
}

/// Runs `enable-namespace`: enables the namespace, reports how, holds it, and disables it
/// cleanly (so that the next enable can be warm). Ctrl-C, SIGTERM or SIGHUP end the hold
/// early (one that came during the enable ends it as it starts); the namespace is disabled
/// cleanly all the same, and the result printed with the signal named.
pub fn enable(a: EnableNamespaceArgs) -> Result<()> {
    if let Some(socket) = &a.socket {
        return through_service(
            socket,
            &a.region,
            &a.name,
            a.out,
            "enable",
            |c, region, name| {
                let warm = c.enable(Some(region), name)?;
                Ok(json!({ "enable_path": if warm { "warm" } else { "cold" } }))
            },
        );
    }
    // Before any thread starts: the device's and the init's threads inherit the mask, so the
    // signals pend for the hold instead of ending the process with the namespace in use.
    let stop = StopSignals::block().context("cannot block SIGINT, SIGTERM and SIGHUP")?;
    let space = DeviceSpace::new();
    let mut signal = None;
    let obj = enable_timed(&space, &a.region, &a.name, a.layout, a.init, a.out, |_| {
        signal = stop.wait(Duration::from_secs(a.hold));
    })?;
    let printed = output::object(&EnableObject {
        signal: signal.map(StopSignal::name),
        ..obj
    });
    // A signal that came during the disable is spent: the namespace is clean (and printed),
    // so it is taken here rather than left to end the process once the guard unblocks it.
    while stop.wait(Duration::ZERO).is_some() {}
    printed
}

/// Opens the region, enables the namespace `ident` names and times it, runs `hold` with the
/// namespace enabled once its memmap is whole (a progress bar on a terminal meanwhile), then
/// disables it. `out` says how the namespace's object is printed.
pub fn enable_timed(
    space: &DeviceSpace,
    region: &std::path::Path,
    ident: &str,
    layout: EnableLayout,
    init: EnableInit,
    out: OutputArgs,
    hold: impl FnOnce(&EnabledNamespace),
) -> Result<EnableObject> {
    let start = Instant::now();
    let mut r = open(region, Access::Manage)?;
    let name = &find(&r, ident, REGION_ID).map_or_else(|_| ident.to_owned(), |l| l.name.clone());
    let mut opts = DaxOptions::new(Order::PMD);
    opts.layout = layout.layout();
    opts.init = init.mode();
    let progress = InitProgress::new();
    opts.progress = Some(Arc::clone(&progress));
    let bar = init_bar(&r, name, layout.layout());
    // The enable runs on a thread of its own so that this one can draw the bar while a sync
    // or parallel init writes the memmap before the enable returns; its end is stamped on
    // that thread, so the bar's period never adds to the time printed.
    let (enabled, usable) = crate::threads::while_drawing(
        "the enable",
        || r.enable(space, name, opts),
        BAR_PERIOD,
        || bar.set_position(progress.descriptors()),
    )?;
    let ns = enabled
        .map_err(region_error)
        .with_context(|| format!("cannot enable namespace {name:?} of {}", region.display()))?;
    let enable_ns = nanos_between(start, usable);
    let whole = wait_for_memmap(&ns, &bar, &progress)?;
    let memmap_ns = nanos_between(start, whole);
    let pgmap = ns.device().pgmap();
    let enable_path = ns.path().name();
    let was_clean = ns.was_clean();
    let descriptors_initialized = pgmap.init_stats().descriptors;
    let bad_pages = ns.device().badblocks().iter().map(|&(_, l)| l / 4096).sum();
    let layout = pgmap.layout().name();
    hold(&ns);
    let t = Instant::now();
    r.disable(ns)
        .map_err(region_error)
        .with_context(|| format!("cannot disable namespace {name:?}"))?;
    let disable_ns = t.elapsed().as_nanos() as u64;
    let label = r.namespace(name).map_err(region_error)?;
    Ok(EnableObject {
        namespace: NamespaceObject::new(&r, label, Detail::one(out))?,
        enable_path,
        was_clean,
        layout,
        init: init.mode().name(),
        enable_ns,
        memmap_ns,
        descriptors_initialized,
        bad_pages,
        disable_ns,
        signal: None,
    })
}

/// A bar of the descriptors an init of `name` in `layout` writes, drawn on a terminal only
/// (indicatif draws nothing when stderr is not one, so piped output stays clean).
fn init_bar(r: &Region, name: &str, layout: Layout) -> indicatif::ProgressBar {
    let total = r.namespace(name).ok().and_then(|label| {
        let ns = &label.namespace;
        let order = Order::from_bytes(ns.align()).ok()?;
        let pfns = PfnRange::new(Pfn::new(0), ns.data_bytes() / PAGE_SIZE).ok()?;
        let geo = Geometry::new(pfns, order).ok()?;
        Some(layout.cost(&geo).descriptors_initialized)
    });
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "memmap init {bar:30} {pos}/{len} descriptors [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// How often the bar is redrawn while an init runs.
const BAR_PERIOD: Duration = Duration::from_millis(20);

/// Nanoseconds from `start` to `end`.
fn nanos_between(start: Instant, end: Instant) -> u64 {
    u64::try_from(end.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

/// Waits for a background init to finish, moving `bar` with `progress`, then clears it, and
/// returns when the init ended (now, if none was running), stamped where the wait ends.
fn wait_for_memmap(
    ns: &EnabledNamespace,
    bar: &indicatif::ProgressBar,
    progress: &InitProgress,
) -> Result<Instant> {
    let pgmap = ns.device().pgmap();
    let (idle, whole) = crate::threads::while_drawing(
        "the wait for the memmap init",
        || pgmap.wait_init_idle(),
        BAR_PERIOD,
        || bar.set_position(progress.descriptors()),
    )?;
    bar.finish_and_clear();
    idle.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(whole)
}

/// `disable-namespace`'s arguments.
#[derive(Debug, Args)]
pub struct DisableNamespaceArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace: its name, or its dev (`namespace0.N`; through a service, `namespaceX.N`
    /// of its region X).
    name: String,
    /// A running `devmap serve` that serves the region: the service disables the namespace
    /// (refused while clients map or pin it, naming their pids, unless --force).
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: Option<PathBuf>,
    /// With --socket: take the namespace's mappings and pins from the clients that hold them.
    #[arg(long, short = 'f')]
    force: bool,
    #[command(flatten)]
    out: OutputArgs,
}

/// What `disable-namespace` prints.
#[derive(Debug, Serialize)]
pub struct DisableObject {
    /// The namespace, as it is after the disable.
    #[serde(flatten)]
    pub namespace: NamespaceObject,
    /// Whether it was already disabled cleanly (nothing to do).
    pub was_clean: bool,
    /// Whether its memmap was rebuilt (it had been left enabled by a process that died).
    pub rebuilt: bool,
}

/// Runs `disable-namespace`. A namespace enabled by a live process cannot be disabled from
/// another (the region is locked: end that process). One left enabled by a process that died
/// is enabled here, which rebuilds its memmap, and disabled cleanly, so that the next enable
/// is warm.
pub fn disable(a: DisableNamespaceArgs) -> Result<()> {
    if let Some(socket) = &a.socket {
        let force = a.force;
        return through_service(
            socket,
            &a.region,
            &a.name,
            a.out,
            "disable",
            |c, region, name| {
                c.disable(Some(region), name, force)?;
                Ok(json!({ "disabled": true, "forced": force }))
            },
        );
    }
    let (was_clean, layout, object) = {
        let r = open(&a.region, Access::Manage).with_context(|| {
            format!(
                "namespace {:?} is enabled by the process that manages the region: end that \
                 process to disable it",
                a.name
            )
        })?;
        let label = find(&r, &a.name, REGION_ID).map_err(region_error)?;
        let (was_clean, layout) = clean(&r, &label.name)?;
        (
            was_clean,
            layout,
            NamespaceObject::new(&r, label, Detail::one(a.out))?,
        )
    };
    let namespace = if was_clean {
        object
    } else {
        let space = DeviceSpace::new();
        let name = object.name.clone();
        let init = EnableInit::Parallel;
        enable_timed(&space, &a.region, &name, layout, init, a.out, |_| {})?.namespace
    };
    output::object(&DisableObject {
        namespace,
        was_clean,
        rebuilt: !was_clean,
    })
}

/// Whether `name`'s info block says it was disabled cleanly, and the layout to rebuild its
/// memmap in (the one on the device, else heads).
fn clean(r: &Region, name: &str) -> Result<(bool, EnableLayout)> {
    let label = r.namespace(name).map_err(region_error)?.clone();
    if label.namespace.mode() != devmap::NamespaceMode::Devdax {
        bail!("namespace {name:?} is not devdax: only devdax namespaces are enabled");
    }
    let block = r.info_block(&label).map_err(region_error)?;
    let layout = match block.memmap.map(|m| m.layout) {
        Some(Layout::Flat) => EnableLayout::Flat,
        Some(Layout::Vmemmap) => EnableLayout::Vmemmap,
        Some(Layout::Heads) | None => EnableLayout::Heads,
    };
    Ok((block.flags.contains(InfoFlags::CLEAN), layout))
}
