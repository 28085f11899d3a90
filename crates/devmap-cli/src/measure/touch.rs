//! `devmap touch-test`: first-touch fault latency of a device-dax device against the kernel's
//! own first touches. This module owns the command's arguments, the row it prints and that
//! row's columns; `checks` turns the arguments into a plan (size, align, backing, file path,
//! threads, the huge page pool and the memory the touches will take); `measure` makes the
//! device and the baseline mapping, touches them and reads back what the kernel mapped.
//!
//! The run makes a device over a fresh backing (`--backing memfd|hugetlb|file`), maps all of
//! it, and has `--threads` threads touch its leaves, each a contiguous share: per leaf, one
//! timed section writes the leaf's first byte (the caught fault, which maps the whole leaf;
//! for a file, which has no userfaultfd, a `populate` of the leaf instead) and then one byte
//! in every other 4 KiB page of it, which must not fault again. At `--align 4K` the device
//! faults around (`--fault-around`): a caught touch maps the neighbours of its leaf too, so a
//! thread's later touches of them find their leaf mapped and are timed as such, as the
//! program being measured would find them. The device is then torn down
//! and the baseline runs: a fresh backing of the same kind and size mapped plainly by the
//! kernel (no device, no userfaultfd), the same threads touching every 4 KiB page of each leaf
//! with the same timing. So the two sides never hold their memory at the same time. An
//! untimed baseline run goes first, so neither side pays for the machine's first use of that
//! much free memory.
//!
//! One row per run, not one per side: the baseline exists to be compared with the device, so
//! its figures sit next to the device's in the same row with the ratios of the two, and the
//! device-only figures (faults handled, leaves mapped, init) would be empty in a baseline row.

mod checks;
mod measure;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use devmap::backing::HugePageSize;
use devmap::dax::DaxOptions;
use devmap::{InitMode, Layout, Order, PAGE_SIZE};
use serde::Serialize;

use crate::args::{LayoutArg, count};
use crate::output::{self, Cells};
use crate::units::{format_size, nanos};

/// `touch-test`'s arguments.
#[derive(Debug, Args)]
pub struct TouchTestArgs {
    /// Device size, with K/M/G/T suffixes in powers of 1024 (e.g. 1G); a multiple of --align.
    #[arg(long, short = 's', default_value = "1G", allow_hyphen_values = true)]
    size: String,
    /// Leaf size of the device (its folios and faults): 4K, 2M or 1G.
    #[arg(long, short = 'a', default_value = "2M", allow_hyphen_values = true)]
    align: String,
    /// Where the device's bytes live.
    #[arg(long, value_enum, default_value = "memfd")]
    backing: BackingArg,
    /// With --backing file: the file holding the device. A missing file is created sparse at
    /// --size and kept; an empty one is extended to --size; one of exactly --size is used as it
    /// is (the touches overwrite one byte of each of its 4 KiB pages); any other is refused.
    /// The baseline uses a second file next to it, removed at the end.
    #[arg(long, value_name = "PATH")]
    path: Option<PathBuf>,
    /// Threads touching leaves, each a contiguous share of them.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = count::<usize>)]
    threads: usize,
    /// The device's fault handler threads (userfaultfd readers), 1 to 256 [default: the
    /// library's, one per core]. With fewer handlers than touching threads, touches of new
    /// leaves queue behind each other, where the kernel faults them in parallel.
    #[arg(long, allow_negative_numbers = true, value_parser = count::<usize>)]
    handlers: Option<usize>,
    /// With --align 4K: the most leaves a caught touch faults in at once, the touched one and
    /// its neighbours (fault-around; the window grows to this on sequential touches):
    /// a power of two, 1 (off) to 512. 16 (64 KiB) is the kernel's fault_around_bytes.
    #[arg(long, default_value_t = DaxOptions::DEFAULT_FAULT_AROUND, allow_negative_numbers = true, value_parser = count::<usize>)]
    fault_around: usize,
    /// Leaves the device allocates and zeroes ahead of the touches (its zero-ahead pool, a
    /// background thread in the SCHED_IDLE class following sequential touchers; a caught touch
    /// maps the ready leaves after its own with it), at most this many ready at once: 0 (off)
    /// to 1 GiB of leaves (512 at 2M, 1 at 1G). With --align 2M or 1G on a memfd or hugetlb
    /// backing.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = count::<usize>)]
    zero_ahead: usize,
    /// Microseconds each touching thread waits after each leaf it touches, on both sides: the
    /// work a program does between first touches, and the time a zero-ahead pool has to keep
    /// up (0: touch back to back).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = count::<u64>)]
    pace_us: u64,
    /// How the device's memmap is initialised; with async the touches start while background
    /// workers (one per core) are still at it.
    #[arg(long, value_enum, default_value = "async")]
    init: InitArg,
    /// Memmap layout.
    #[arg(long, value_enum, default_value = "heads")]
    layout: LayoutArg,
    /// Touch only this many leaves, spread evenly over the device (all of them by default):
    /// a large sparse device, e.g. --size 1T --leaves 256, costs only the leaves touched.
    #[arg(long, allow_negative_numbers = true, value_parser = count::<u64>)]
    leaves: Option<u64>,
    /// Allow touching more than 16G (each side touches, and so allocates, all it touches).
    #[arg(long)]
    force: bool,
    /// Print a JSON array of one object with raw integers (nanoseconds, bytes, counts).
    #[arg(long, short = 'j')]
    json: bool,
}

/// `--backing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackingArg {
    /// A shmem memfd (4 KiB pages; first touches caught with userfaultfd).
    Memfd,
    /// A hugetlb memfd with pages of --align (2M or 1G; first touches caught with
    /// userfaultfd), taken from the kernel's pool.
    Hugetlb,
    /// A regular file at --path (no userfaultfd: each leaf is populated, then touched).
    File,
}

/// `--init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InitArg {
    /// On the calling thread, before the touches.
    Sync,
    /// On one thread per core, before the touches.
    Parallel,
    /// In the background on one worker per core; the touches start at once.
    Async,
}

/// The largest `--size` without `--force`: each side touches every page, so each allocates
/// all of it (twice over the run, one side after the other).
const MAX_UNFORCED: u64 = 16 << 30;

/// The most threads `--threads` may ask for: as `enable`, beyond a few thousand threads the
/// process runs out of memory maps.
const MAX_THREADS: usize = 1024;

/// Where the device's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A shmem memfd.
    Memfd,
    /// A hugetlb memfd of this page size.
    Hugetlb(HugePageSize),
    /// A regular file.
    File(PathBuf),
}

impl Source {
    /// The `--backing` name.
    fn name(&self) -> &'static str {
        match self {
            Source::Memfd => "memfd",
            Source::Hugetlb(_) => "hugetlb",
            Source::File(_) => "file",
        }
    }
}

/// What `touch-test` was asked to do, checked.
#[derive(Debug, Clone)]
struct Plan {
    /// Device bytes.
    size: u64,
    /// Leaf size.
    align: Order,
    /// Backing.
    source: Source,
    /// Touching threads.
    threads: usize,
    /// Fault handler threads of the device.
    handlers: usize,
    /// The device's fault-around bound, in leaves.
    fault_around: usize,
    /// The device's zero-ahead pool, in leaves (0: none).
    zero_ahead: usize,
    /// Wait after each touch, per thread, both sides.
    pace: std::time::Duration,
    /// Memmap init of the device.
    init: InitMode,
    /// Memmap layout.
    layout: Layout,
    /// Leaves touched, spread evenly over the device.
    touched: u64,
}

impl Plan {
    /// Leaves touched on each side.
    fn leaves(&self) -> u64 {
        self.touched
    }

    /// Byte offset of the `i`-th leaf touched.
    fn leaf_offset(&self, i: u64) -> u64 {
        let total = self.size / self.align.bytes();
        let index = u128::from(i) * u128::from(total) / u128::from(self.touched.max(1));
        index as u64 * self.align.bytes()
    }

    /// Bytes each side touches, and so allocates.
    fn touched_bytes(&self) -> u64 {
        self.touched * self.align.bytes()
    }
}

/// The one row of `touch-test`.
#[derive(Debug, Serialize)]
pub(crate) struct Touched {
    /// `memfd`, `hugetlb` or `file`.
    pub backing: &'static str,
    /// The file, for `--backing file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Device bytes.
    pub size: u64,
    /// Leaf bytes (the device align).
    pub align: u64,
    /// Touching threads.
    pub threads: usize,
    /// The device's fault handler threads.
    pub handlers: usize,
    /// The device's fault-around bound, in leaves (used at align 4K only).
    pub fault_around_max: usize,
    /// The device's zero-ahead pool, in leaves (0: none).
    pub zero_ahead: usize,
    /// Microseconds each thread waited after each touch, on both sides.
    pub pace_us: u64,
    /// `sync`, `parallel` or `async`.
    pub init: &'static str,
    /// Layout name.
    pub layout: &'static str,
    /// Leaves touched on each side.
    pub leaves: u64,
    /// Whether the device caught first touches with userfaultfd (else each leaf was
    /// populated inside its timed section).
    pub caught: bool,
    /// Median leaf first-touch latency on the device.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Slowest leaf.
    pub max_ns: u64,
    /// Wall time of all the device's touches, threads together.
    pub wall_ns: u64,
    /// Nanoseconds to map the whole device, userfaultfd registration included.
    pub mmap_ns: u64,
    /// Touches the device's userfaultfd handler caught.
    pub user_faults: u64,
    /// Leaves the device's fault path mapped.
    pub leaves_mapped: u64,
    /// Faults of a leaf another fault had just mapped.
    pub raced: u64,
    /// Leaves mapped by fault-around: neighbours of a touched leaf, mapped with it (among
    /// `leaves_mapped`): at 4K its window, with a zero-ahead pool the ready leaves after it.
    pub fault_around: u64,
    /// Leaves the zero-ahead pool allocated and zeroed before their touch.
    pub zeroed_ahead: u64,
    /// Leaves a fault took ready from the pool: a caught touch's own, or one mapped after it.
    pub zero_ahead_hits: u64,
    /// How long the device's handler took to resolve a caught touch, from its event to its
    /// last ioctl: the median, within 12.5%.
    pub resolve_p50_ns: u64,
    /// The same, 99th percentile.
    pub resolve_p99_ns: u64,
    /// Leaves the kernel had mapped in the device's mapping after the touches
    /// (`/proc/self/smaps`), by page size.
    pub kernel_leaves_4k: u64,
    /// 2 MiB leaves.
    pub kernel_leaves_2m: u64,
    /// 1 GiB leaves.
    pub kernel_leaves_1g: u64,
    /// Whether the memmap init was still running when the touches started.
    pub init_active_at_start: bool,
    /// Whether it was still running when they ended.
    pub init_active_at_end: bool,
    /// Descriptors the init had written when the touches ended.
    pub init_descriptors: u64,
    /// Async init: syncs (of touched leaves among them) that waited for a piece another
    /// thread was writing.
    pub init_waits: u64,
    /// Async init: waits that raised the writing worker's priority.
    pub init_boosts: u64,
    /// Median leaf first-touch latency of the plain kernel mapping.
    pub baseline_p50_ns: u64,
    /// 99th percentile.
    pub baseline_p99_ns: u64,
    /// Slowest leaf.
    pub baseline_max_ns: u64,
    /// Wall time of all the baseline's touches.
    pub baseline_wall_ns: u64,
    /// Nanoseconds to map the baseline (a plain shared mapping of the same size).
    pub baseline_mmap_ns: u64,
    /// Leaves the kernel had mapped in the baseline mapping, by page size.
    pub baseline_kernel_leaves_4k: u64,
    /// 2 MiB leaves.
    pub baseline_kernel_leaves_2m: u64,
    /// 1 GiB leaves.
    pub baseline_kernel_leaves_1g: u64,
    /// `p50_ns / baseline_p50_ns`, two decimals.
    pub ratio_p50: f64,
    /// `p99_ns / baseline_p99_ns`, two decimals.
    pub ratio_p99: f64,
}

/// Leaf counts by page size as one cell: `512x2M`, `16384x4K`, `0`.
fn leaves_cell(k4: u64, m2: u64, g1: u64) -> String {
    let parts: Vec<String> = [(k4, "4K"), (m2, "2M"), (g1, "1G")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}x{unit}"))
        .collect();
    if parts.is_empty() {
        "0".to_owned()
    } else {
        parts.join("+")
    }
}

fn columns(r: &Touched) -> Cells {
    vec![
        ("backing", r.backing.to_owned()),
        ("size", format_size(r.size)),
        ("align", format_size(r.align)),
        ("threads", r.threads.to_string()),
        ("handlers", r.handlers.to_string()),
        (
            "init",
            if r.init_active_at_start {
                format!("{} (busy)", r.init)
            } else {
                r.init.to_owned()
            },
        ),
        ("leaves", r.leaves.to_string()),
        ("p50", nanos(r.p50_ns)),
        ("p99", nanos(r.p99_ns)),
        ("max", nanos(r.max_ns)),
        ("base p50", nanos(r.baseline_p50_ns)),
        ("base p99", nanos(r.baseline_p99_ns)),
        ("base max", nanos(r.baseline_max_ns)),
        ("p50 x", format!("{:.2}", r.ratio_p50)),
        ("p99 x", format!("{:.2}", r.ratio_p99)),
        ("faults", r.user_faults.to_string()),
        ("mapped", r.leaves_mapped.to_string()),
        ("around", r.fault_around.to_string()),
        ("ready", r.zero_ahead_hits.to_string()),
        (
            "kernel leaves",
            leaves_cell(r.kernel_leaves_4k, r.kernel_leaves_2m, r.kernel_leaves_1g),
        ),
        (
            "base leaves",
            leaves_cell(
                r.baseline_kernel_leaves_4k,
                r.baseline_kernel_leaves_2m,
                r.baseline_kernel_leaves_1g,
            ),
        ),
    ]
}

/// Runs `touch-test`: checks the arguments, warms up, measures the device and then the
/// baseline, and prints the row.
///
/// The warm-up is an untimed baseline run whose figures are dropped. Without it the first side
/// measured pays for the machine's first use of that much free memory (its p99 came out 3–5×
/// the other side's, whichever side went first); with it both sides find memory the same way.
pub fn run(a: TouchTestArgs) -> Result<()> {
    let row = measured(&a)?;
    output::print(a.json, &[row], columns)
}

/// What `touch-test` with arguments `a` measures (see [`run`]).
pub(crate) fn measured(a: &TouchTestArgs) -> Result<Touched> {
    let plan = checks::plan(a)?;
    let backing = checks::open_device_backing(&plan)?;
    measure::baseline_side(&plan).context("warm-up")?;
    let dev = measure::devmap_side(&plan, backing)?;
    let base = measure::baseline_side(&plan)?;
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            (a as f64 / b as f64 * 100.0).round() / 100.0
        }
    };
    let row = Touched {
        backing: plan.source.name(),
        path: match &plan.source {
            Source::File(p) => Some(p.display().to_string()),
            _ => None,
        },
        size: plan.size,
        align: plan.align.bytes(),
        threads: plan.threads,
        handlers: plan.handlers,
        fault_around_max: plan.fault_around,
        zero_ahead: plan.zero_ahead,
        pace_us: a.pace_us,
        init: plan.init.name(),
        layout: plan.layout.name(),
        leaves: plan.leaves(),
        caught: dev.caught,
        p50_ns: dev.side.lat.p50,
        p99_ns: dev.side.lat.p99,
        max_ns: dev.side.lat.max,
        wall_ns: dev.side.wall_ns,
        mmap_ns: dev.side.mmap_ns,
        user_faults: dev.stats.user_faults,
        leaves_mapped: dev.stats.leaves_mapped,
        raced: dev.stats.raced,
        fault_around: dev.stats.fault_around,
        zeroed_ahead: dev.stats.zeroed_ahead,
        zero_ahead_hits: dev.stats.zero_ahead_hits,
        resolve_p50_ns: dev.stats.resolve_p50_ns,
        resolve_p99_ns: dev.stats.resolve_p99_ns,
        kernel_leaves_4k: dev.side.kernel.k4,
        kernel_leaves_2m: dev.side.kernel.m2,
        kernel_leaves_1g: dev.side.kernel.g1,
        init_active_at_start: dev.init_active_at_start,
        init_active_at_end: dev.init_active_at_end,
        init_descriptors: dev.init.descriptors,
        init_waits: dev.init.waits,
        init_boosts: dev.init.boosts,
        baseline_p50_ns: base.lat.p50,
        baseline_p99_ns: base.lat.p99,
        baseline_max_ns: base.lat.max,
        baseline_wall_ns: base.wall_ns,
        baseline_mmap_ns: base.mmap_ns,
        baseline_kernel_leaves_4k: base.kernel.k4,
        baseline_kernel_leaves_2m: base.kernel.m2,
        baseline_kernel_leaves_1g: base.kernel.g1,
        ratio_p50: ratio(dev.side.lat.p50, base.lat.p50),
        ratio_p99: ratio(dev.side.lat.p99, base.lat.p99),
    };
    Ok(row)
}

/// Bytes the touches write into each page: one, at the page's start.
const TOUCH: [u8; 1] = [0xa5];

/// 4 KiB pages per leaf of `align`.
fn pages_per_leaf(align: Order) -> u64 {
    align.bytes() / PAGE_SIZE
}
