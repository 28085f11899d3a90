//! `devmap enable`: builds an emulated (anonymous, unbacked) namespace in this process,
//! initialises its memmap, and measures it: resident growth, init time, and the time to
//! `memset` the same number of bytes freshly mapped the same way (the bandwidth baseline).

use std::num::NonZeroUsize;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use devmap::addr::format_size;
use devmap::backing::{PageHint, Reservation};
use devmap::{DeviceSpace, InitMode, Layout, PagemapConfig};
use serde::Serialize;

use crate::estimate::geometry;
use crate::procfs;
use crate::shape::Shape;
use crate::units::human;

/// `--init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// On the calling thread.
    Sync,
    /// On `--threads` threads (default: every core), the caller included.
    Parallel,
}

/// Never let one run take more than this share of the memory the kernel says is available.
const MEMORY_BUDGET_PERCENT: u64 = 80;

/// One row of `enable`.
#[derive(Debug, Serialize)]
pub struct Enabled {
    /// Namespace bytes.
    pub size: u64,
    /// Alignment bytes.
    pub align: u64,
    /// Layout name.
    pub layout: &'static str,
    /// `mem` or `dev`.
    pub map: &'static str,
    /// `devdax` or `fsdax`.
    pub mode: &'static str,
    /// `sync` or `parallel`.
    pub init: &'static str,
    /// Threads that initialised.
    pub threads: usize,
    /// Host memory the memmap accounts for.
    pub metadata_bytes: u64,
    /// Device memory given to the memmap (emulated in host memory here).
    pub device_bytes: u64,
    /// Descriptors written.
    pub descriptors_initialized: u64,
    /// Measured resident growth of the process across enable.
    pub rss_bytes: u64,
    /// Time spent initialising descriptors.
    pub init_ns: u64,
    /// Time from the start of enable until the pgmap was registered and usable.
    pub enable_ns: u64,
    /// Time to `memset` `metadata_bytes + device_bytes` of freshly mapped memory.
    pub memset_ns: u64,
}

/// The init mode for `--init` and `--threads`.
pub fn init_mode(init: InitArg, threads: Option<usize>) -> Result<InitMode> {
    match (init, threads) {
        (InitArg::Sync, Some(_)) => {
            bail!("--threads applies to --init parallel; --init sync always uses one thread")
        }
        (InitArg::Sync, None) => Ok(InitMode::Sync),
        (InitArg::Parallel, None) => Ok(InitMode::parallel_default()),
        (InitArg::Parallel, Some(n)) => match NonZeroUsize::new(n) {
            Some(threads) => Ok(InitMode::Parallel { threads }),
            None => bail!(
                "--threads must be at least 1 (this machine has {} cores)",
                cores()
            ),
        },
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Enables `shape` in `layout`, measures it, and tears it down.
pub fn run_one(shape: &Shape, layout: Layout, mode: InitMode) -> Result<Enabled> {
    let planned = layout.cost(&geometry(shape, layout)?);
    let host_bytes = planned.metadata_bytes + planned.device_bytes;
    let available = procfs::mem_available()?;
    if host_bytes > available / 100 * MEMORY_BUDGET_PERCENT {
        bail!(
            "enabling {} in the {} layout needs {} of memmap, but only {} of memory is \
             available: try --layout folio, or a smaller --size",
            format_size(shape.size),
            layout.name(),
            human(host_bytes),
            human(available)
        );
    }

    // Warm-up: fault in and free as much memory as the memmap will take, so the kernel's free
    // huge pages are in the same state for enable and for the memset baseline measured after it.
    memset_ns(host_bytes)?;

    let space = DeviceSpace::new();
    let range = space.reserve_range(shape.size, shape.align)?;
    let mut cfg = PagemapConfig::devdax(range, shape.shift);
    cfg.memory_type = shape.mode.memory_type();
    cfg.layout = layout;
    cfg.altmap_reserve = shape.altmap_reserve();
    cfg.init = mode;

    let rss_before = procfs::rss_bytes()?;
    let start = Instant::now();
    let pgmap = space
        .memremap_pages(cfg)
        .with_context(|| format!("cannot enable the {} namespace", layout.name()))?;
    let enable_ns = start.elapsed().as_nanos() as u64;
    let rss_after = procfs::rss_bytes()?;
    let cost = pgmap.cost();
    let stats = pgmap.init_stats();
    space.memunmap_pages(&pgmap);
    drop(pgmap);

    let memset_ns = memset_ns(cost.metadata_bytes + cost.device_bytes)?;
    Ok(Enabled {
        size: shape.size,
        align: shape.align,
        layout: layout.name(),
        map: shape.map.name(),
        mode: shape.mode.name(),
        init: mode.name(),
        threads: stats.threads,
        metadata_bytes: cost.metadata_bytes,
        device_bytes: cost.device_bytes,
        descriptors_initialized: stats.descriptors,
        rss_bytes: rss_after.saturating_sub(rss_before),
        init_ns: stats.elapsed.as_nanos() as u64,
        enable_ns,
        memset_ns,
    })
}

/// Times one `memset` of `bytes` freshly mapped like a descriptor array (anonymous,
/// `MAP_NORESERVE`, `MADV_HUGEPAGE`), first-touch faults included.
fn memset_ns(bytes: u64) -> Result<u64> {
    if bytes == 0 {
        return Ok(0);
    }
    let mut buf = Reservation::new(bytes, PageHint::Huge)?;
    let start = Instant::now();
    buf.as_mut_slice().fill(0xff);
    let ns = start.elapsed().as_nanos() as u64;
    std::hint::black_box(buf.as_mut_slice().last().copied());
    Ok(ns)
}
