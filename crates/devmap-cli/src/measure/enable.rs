//! `devmap enable`: builds an emulated (anonymous, unbacked) namespace in this process,
//! initialises its memmap, and measures it: resident growth, init time, and the time to
//! `memset` the same number of bytes freshly mapped the same way (the bandwidth baseline). Its
//! arguments, their checks against each other and the memory budget, the measurement and the
//! row it prints live here.

use std::num::NonZeroUsize;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use devmap::backing::{PageHint, Reservation};
use devmap::{DeviceSpace, InitMode, Layout, Namespace, PfnRange, Pgmap};
use serde::Serialize;

use crate::args::{LayoutArg, NamespaceArgs, count, smaller_fitting};
use crate::measure::estimate;
use crate::output::{self, Cells};
use crate::procfs;
use crate::units::{format_size, human, ms};

/// `enable`'s arguments.
#[derive(Debug, Args)]
pub struct EnableArgs {
    #[command(flatten)]
    ns: NamespaceArgs,
    /// Layout(s) to enable, one after another.
    #[arg(long, value_enum, default_value = "heads")]
    layout: LayoutArg,
    /// How to initialise the memmap.
    #[arg(long, value_enum, default_value = "parallel")]
    init: InitArg,
    /// Threads for --init parallel (the caller included) or async workers
    /// [default: every core].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<usize>)]
    threads: Option<usize>,
    /// With --init async: time N first-touch syncs of one compound each at random offsets
    /// while the background runs.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count::<u64>)]
    touch: Option<u64>,
    /// With --init async: finish the init with sync_all on the calling thread.
    #[arg(long)]
    sync: bool,
}

/// `--init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InitArg {
    /// On the calling thread.
    Sync,
    /// On `--threads` threads (default: every core), the caller included.
    Parallel,
    /// In the background on `--threads` workers (default: every core); usable at once.
    Async,
}

/// What to do while and after an `--init async` enable runs in the background.
#[derive(Debug, Clone, Copy, Default)]
struct AsyncPlan {
    /// First-touch syncs of one compound each at random offsets, timed.
    touches: Option<u64>,
    /// Finish with `sync_all` on this thread instead of waiting for the workers.
    sync_all: bool,
}

/// The most threads `--threads` may ask for (or one per core, on machines with more): threads
/// beyond the cores cannot speed up an init, and a few tens of thousands exhaust the process's
/// memory maps, which aborts it.
const MAX_THREADS: usize = 1024;

/// One row of `enable`.
#[derive(Debug, Serialize)]
pub(crate) struct Enabled {
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
    /// Measured resident growth of the process across enable. With `--map dev` it includes the
    /// emulated device memory of `device_rss_bytes`.
    pub rss_bytes: u64,
    /// Measured resident bytes of the on-device memmap (`--map dev`), which this emulation
    /// keeps in host memory: `rss_bytes - device_rss_bytes` is the host memory to compare with
    /// `metadata_bytes`. 0 with `--map mem`.
    pub device_rss_bytes: u64,
    /// Time spent initialising descriptors.
    pub init_ns: u64,
    /// Time from the start of enable until the pgmap was registered and usable.
    pub enable_ns: u64,
    /// Time to `memset` `metadata_bytes + device_bytes` of freshly mapped memory.
    pub memset_ns: u64,
    /// Time until the namespace was usable (enable returned).
    pub ready_ns: u64,
    /// Time until every descriptor was initialised.
    pub full_init_ns: u64,
    /// First touches measured (`--touch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touches: Option<u64>,
    /// Median first-touch latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touch_p50_ns: Option<u64>,
    /// 99th-percentile first-touch latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touch_p99_ns: Option<u64>,
    /// Slowest first touch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touch_max_ns: Option<u64>,
    /// Time `sync_all` took on the calling thread (`--sync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_all_ns: Option<u64>,
    /// `--init async`: how often a sync (a touch, `--sync`) waited because another thread was
    /// writing a piece it needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_waits: Option<u64>,
    /// `--init async`: how often such a wait raised the writing worker's priority for the rest
    /// of its piece (at most once per wait; 0 without `CAP_SYS_NICE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_boosts: Option<u64>,
}

fn columns(r: &Enabled) -> Cells {
    vec![
        ("layout", r.layout.to_owned()),
        ("size", format_size(r.size)),
        ("init", format!("{} x{}", r.init, r.threads)),
        ("metadata", human(r.metadata_bytes)),
        ("rss", human(r.rss_bytes)),
        ("of it on device", human(r.device_rss_bytes)),
        ("descriptors", r.descriptors_initialized.to_string()),
        ("ready", ms(r.ready_ns)),
        ("full init", ms(r.full_init_ns)),
        ("memset", ms(r.memset_ns)),
        (
            "touch p50/p99/max",
            match (r.touch_p50_ns, r.touch_p99_ns, r.touch_max_ns) {
                (Some(a), Some(b), Some(c)) => {
                    format!("{}/{}/{} us", a / 1000, b / 1000, c / 1000)
                }
                _ => "-".to_owned(),
            },
        ),
    ]
}

/// Runs `enable`: each layout in turn, one row each.
pub fn run(a: EnableArgs) -> Result<()> {
    let rows = rows(&a)?;
    output::print(a.ns.json, &rows, columns)
}

/// Enables and measures each layout `a` names in turn: the rows `enable` prints (`report`
/// reads them too).
pub(crate) fn rows(a: &EnableArgs) -> Result<Vec<Enabled>> {
    let ns = a.ns.namespace()?;
    let plan = AsyncPlan {
        touches: a.touch,
        sync_all: a.sync,
    };
    let mode = init_mode(a.init, a.threads, plan)?;
    a.layout
        .layouts()
        .into_iter()
        .map(|l| run_one(&ns, l, mode, plan))
        .collect()
}

/// The init mode for `--init` and `--threads`, checked against the async-only options.
fn init_mode(init: InitArg, threads: Option<usize>, plan: AsyncPlan) -> Result<InitMode> {
    if init != InitArg::Async {
        if plan.touches.is_some() {
            bail!("--touch measures first touches during background init: add --init async");
        }
        if plan.sync_all {
            bail!("--sync finishes a background init on the calling thread: add --init async");
        }
    }
    if plan.touches == Some(0) {
        bail!("--touch needs at least one touch, e.g. --touch 1000");
    }
    let n = match threads {
        None => None,
        Some(_) if init == InitArg::Sync => {
            bail!("--threads applies to --init parallel or async; --init sync uses one thread")
        }
        Some(n) if n > MAX_THREADS.max(cores()) => bail!(
            "--threads {n} is more than devmap starts: use at most {} (this machine has {} \
             cores)",
            MAX_THREADS.max(cores()),
            cores()
        ),
        Some(n) => Some(NonZeroUsize::new(n).ok_or_else(|| {
            anyhow::anyhow!(
                "--threads must be at least 1 (this machine has {} cores)",
                cores()
            )
        })?),
    };
    Ok(match (init, n) {
        (InitArg::Sync, _) => InitMode::Sync,
        (InitArg::Parallel, None) => InitMode::parallel_default(),
        (InitArg::Parallel, Some(threads)) => InitMode::Parallel { threads },
        (InitArg::Async, None) => InitMode::async_default(),
        (InitArg::Async, Some(workers)) => InitMode::Async { workers },
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Enables `ns` in `layout`, measures it, and tears it down.
fn run_one(ns: &Namespace, layout: Layout, mode: InitMode, plan: AsyncPlan) -> Result<Enabled> {
    let host_bytes = estimate::host_bytes(ns, layout)?;
    // Each first touch keeps its latency until the percentiles are taken.
    let touch_bytes = plan
        .touches
        .map_or(0, |n| n.saturating_mul(size_of::<u64>() as u64));
    let (budget, available) = procfs::memory_budget()?;
    if host_bytes.saturating_add(touch_bytes) > budget {
        return Err(over_budget(
            ns,
            layout,
            (host_bytes, touch_bytes),
            (budget, available),
        ));
    }

    // Warm-up: fault in and free as much memory as the memmap will take, so the kernel's free
    // huge pages are in the same state for enable and for the memset baseline measured after it.
    memset_ns(host_bytes)?;
    warm_up_threads(mode);

    let space = DeviceSpace::new();
    let range = space.reserve_range(ns.size(), ns.start_align())?;
    let mut cfg = ns.pgmap_config(range, layout)?;
    cfg.init = mode;

    let rss_before = procfs::rss_bytes()?;
    let start = Instant::now();
    let pgmap = space
        .memremap_pages(cfg)
        .with_context(|| format!("cannot enable the {} namespace", layout.name()))?;
    let ready_ns = start.elapsed().as_nanos() as u64;

    let touch = match plan.touches {
        Some(n) => Some(touch(&pgmap, n)?),
        None => None,
    };
    let sync_all_ns = if plan.sync_all {
        let t = Instant::now();
        pgmap.sync_all()?;
        Some(t.elapsed().as_nanos() as u64)
    } else {
        None
    };
    pgmap
        .wait_init_idle()
        .context("the background init was stopped before it finished")?;
    let full_init_ns = match mode {
        // The engine's clock starts inside enable, after the store is reserved.
        InitMode::Async { .. } => ready_ns.max(pgmap.init_stats().elapsed.as_nanos() as u64),
        _ => ready_ns,
    };
    let rss_after = procfs::rss_bytes()?;
    let resident = pgmap
        .resident()
        .context("cannot measure the memmap's resident memory")?;
    let cost = pgmap.cost();
    let stats = pgmap.init_stats();
    space.memunmap_pages(&pgmap, None)?;
    drop(pgmap);

    let memset_ns = memset_ns(host_bytes)?;
    let is_async = matches!(mode, InitMode::Async { .. });
    Ok(Enabled {
        size: ns.size(),
        align: ns.align(),
        layout: layout.name(),
        map: ns.map().name(),
        mode: ns.mode().name(),
        init: mode.name(),
        threads: stats.threads,
        metadata_bytes: cost.metadata_bytes,
        device_bytes: cost.device_bytes,
        descriptors_initialized: stats.descriptors,
        rss_bytes: rss_after.saturating_sub(rss_before),
        device_rss_bytes: resident.device_bytes,
        init_ns: stats.elapsed.as_nanos() as u64,
        enable_ns: ready_ns,
        memset_ns,
        ready_ns,
        full_init_ns,
        touches: plan.touches,
        touch_p50_ns: touch.map(|t| t.p50),
        touch_p99_ns: touch.map(|t| t.p99),
        touch_max_ns: touch.map(|t| t.max),
        sync_all_ns,
        init_waits: is_async.then_some(stats.waits),
        init_boosts: is_async.then_some(stats.boosts),
    })
}

/// Starts and joins as many threads as `mode` initialises with. A thread that allocates gets a
/// malloc arena, which the C library keeps when the thread exits and hands to the next thread.
/// Paid here, before the RSS baseline, the init threads reuse them and the measured growth is
/// the memmap's alone (without this, parallel init measured 19 to 67 pages more).
fn warm_up_threads(mode: InitMode) {
    let threads = match mode {
        InitMode::Sync => 0,
        _ => mode.threads(),
    };
    std::thread::scope(|s| {
        let started: Vec<_> = (0..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .spawn_scoped(s, || std::hint::black_box(vec![1u8; 64]))
                    .ok()
            })
            .collect();
        // Joined one by one: the scope alone waits for the closures, not for the threads to
        // exit, and an exiting thread still returns its stack pages to the kernel.
        for t in started {
            let _ = t.join();
        }
    });
}

/// The refusal of a run that needs `host_bytes` of memmap and `touch_bytes` of latencies when
/// it may take only `budget` of the `available` memory, with what would fit instead.
fn over_budget(
    ns: &Namespace,
    layout: Layout,
    (host_bytes, touch_bytes): (u64, u64),
    (budget, available): (u64, u64),
) -> anyhow::Error {
    let fits = |n: &Namespace, l: Layout| {
        estimate::host_bytes(n, l).is_ok_and(|b| b.saturating_add(touch_bytes) <= budget)
    };
    let mut hints = Vec::new();
    if host_bytes <= budget {
        let most = (budget - host_bytes) / size_of::<u64>() as u64;
        hints.push(format!("--touch {most} or fewer"));
    } else {
        if layout != Layout::Heads && fits(ns, Layout::Heads) {
            hints.push("--layout heads".to_owned());
        }
        let smaller = smaller_fitting(ns.size(), ns.align(), |size| {
            Namespace::new(size, ns.align(), ns.mode(), ns.map()).is_ok_and(|n| fits(&n, layout))
        });
        hints.push(match smaller {
            Some(size) => format!("--size {}", format_size(size)),
            None => "a smaller --size".to_owned(),
        });
    }
    let touches = if touch_bytes > 0 {
        format!(" and {} of --touch latencies", human(touch_bytes))
    } else {
        String::new()
    };
    anyhow::anyhow!(
        "enabling {} in the {} layout needs {} of memmap{touches}, more than the {} devmap \
         allows itself ({}% of the {} available): try {}",
        format_size(ns.size()),
        layout.name(),
        human(host_bytes),
        human(budget),
        procfs::MEMORY_BUDGET_PERCENT,
        human(available),
        hints.join(" or ")
    )
}

/// Latency percentiles of a set of touches.
#[derive(Debug, Clone, Copy)]
struct Touches {
    p50: u64,
    p99: u64,
    max: u64,
}

/// `n` first-touch syncs of one compound each at random compound-aligned offsets of the data,
/// timed one by one, while the background init runs. The offsets come from a fixed-seed
/// xorshift, so runs touch the same places.
fn touch(pgmap: &Pgmap, n: u64) -> Result<Touches> {
    let range = pgmap
        .data_ranges()
        .next()
        .context("the namespace has no data range")?;
    let shift = pgmap.vmemmap_shift();
    let compounds = range.len() >> shift.get();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut lat: Vec<u64> = Vec::with_capacity(n as usize);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pfn = range.start().add((x % compounds) << shift.get());
        let t = Instant::now();
        pgmap.sync(PfnRange::new(pfn, shift.nr_pages())?)?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Ok(Touches {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    })
}

/// Times one `memset` of `bytes` freshly mapped like a descriptor array (anonymous,
/// `MAP_NORESERVE`, `MADV_HUGEPAGE`), first-touch faults included.
fn memset_ns(bytes: u64) -> Result<u64> {
    if bytes == 0 {
        return Ok(0);
    }
    let mut buf = Reservation::new(bytes, PageHint::Huge)
        .context("the memset baseline (and warm-up) needs as much memory as the memmap")?;
    let start = Instant::now();
    buf.as_mut_slice().fill(0xff);
    let ns = start.elapsed().as_nanos() as u64;
    std::hint::black_box(buf.as_mut_slice().last().copied());
    Ok(ns)
}
