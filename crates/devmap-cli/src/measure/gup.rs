//! `devmap gup-test`: the kernel's `tools/testing/selftests/mm/gup_test` against an emulated
//! device-dax (or fsdax) namespace. `-m` MiB is what the selftest maps and pins: the data of
//! the smallest namespace that holds it (the info block comes first). Each repeat pins all of
//! it in calls of `-n` pages, timing the get loop and the put loop separately, then checks
//! (untimed) that every folio is idle again, and prints the kernel's
//! `<CMD>: Time: get:<usec> put:<usec> us` line, followed by the bare loop of the same range
//! (`Pgmap::bare_head_loop`: one atomic add per folio head, the floor under a pin).
//!
//! By default each call is the library's plain `pin_pages`/`pin_folios`, which allocates its
//! result inside the timed loop (32 MiB of entries for 16 GiB through the page-array API).
//! `--prealloc` measures the selftest's way, whose `pages[]` exists before the clock starts:
//! an untimed warm-up repeat allocates and faults in the entry buffers and every timed repeat
//! refills them (`pin_pages_into`, `unpin_keep_buffer`).
//!
//! `--by-address` pins the way a VMM or an RDMA stack does, by user address through a device-dax
//! mapping (`by_address`), and pins the same folios by pfn in the same repeat for comparison.

mod by_address;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Args;
use devmap::{
    DeviceSpace, Folios, GupFlags, InitMode, Layout, MappedFolio, MemmapLocation, MemoryType,
    Namespace, NamespaceMode, Order, PAGE_SIZE, Pages, Pfn, PfnRange, Pgmap, Pinned, PinnedFolio,
};
use serde::Serialize;

use crate::args::{self, LayoutArg, MAX_SIZE, ModeArg, count, smaller_fitting};
use crate::measure::estimate;
use crate::output;
use crate::procfs;
use crate::units::{format_size, human};

/// `gup-test`, with the kernel selftest's flags.
#[derive(Debug, Args)]
pub struct GupTestArgs {
    /// MiB to pin: the namespace's data (the selftest's mapping); the info block comes on top.
    #[arg(short = 'm', default_value_t = 128, allow_negative_numbers = true, value_parser = mib)]
    mb: u64,
    /// Repeats.
    #[arg(short = 'r', default_value_t = 1, allow_negative_numbers = true, value_parser = count::<u32>)]
    repeats: u32,
    /// Pages per call; negative for all at once [default: 512, as the seed's `-n 512`].
    #[arg(short = 'n', default_value_t = 512, allow_negative_numbers = true, value_parser = count::<i64>)]
    pages_per_call: i64,
    /// FOLL_WRITE.
    #[arg(short = 'w')]
    write: bool,
    /// PIN_FAST_BENCHMARK: pin_user_pages_fast.
    #[arg(short = 'a', conflicts_with_all = ["longterm", "gup_fast"])]
    pin_fast: bool,
    /// PIN_LONGTERM_BENCHMARK: pins with FOLL_LONGTERM.
    #[arg(short = 'L', conflicts_with_all = ["gup_fast", "folios"])]
    longterm: bool,
    /// GUP_FAST_BENCHMARK: plain references (the default).
    #[arg(short = 'u', conflicts_with = "folios")]
    gup_fast: bool,
    /// Pin through the folio-range API (one entry per folio).
    #[arg(short = 'F')]
    folios: bool,
    /// Page size of the namespace's folios: 4K, 2M or 1G.
    #[arg(long, default_value = "2M", allow_hyphen_values = true)]
    align: String,
    /// Memmap layout.
    #[arg(long, value_enum, default_value = "heads")]
    layout: LayoutArg,
    /// Namespace mode.
    #[arg(long, value_enum, default_value = "devdax")]
    mode: ModeArg,
    /// Fill entry buffers that an untimed warm-up repeat allocated and faulted in, as the
    /// kernel selftest allocates its `pages[]` before timing (`pin_pages_into`), instead of
    /// letting every call allocate its result inside the timed loop (`pin_pages`).
    #[arg(long)]
    prealloc: bool,
    /// Also pin by user address (`DaxMapping::pin_user_pages` / `pin_user_folios`): the data
    /// becomes a device-dax device over a sparse memfd, mapped and faulted in (metadata only)
    /// before timing, and every repeat pins it by pfn and then by address, one row each.
    #[arg(long, conflicts_with_all = ["prealloc", "gup_fast"])]
    by_address: bool,
    /// Print a JSON array of objects, one per repeat.
    #[arg(long, short = 'j')]
    json: bool,
}

/// Parses `-m`, a count of MiB; a size with a suffix gets the count it means.
fn mib(text: &str) -> Result<u64, String> {
    count(text).map_err(|e| match args::parse_size(text) {
        Ok(bytes) if bytes > 0 && bytes % (1 << 20) == 0 => {
            format!("-m counts MiB: did you mean -m {}?", bytes >> 20)
        }
        _ => e,
    })
}

/// Runs `gup-test`: validates the flags, checks the run fits in memory, and prints a line per
/// repeat as it ends (or, with `--json`, one array at the end).
pub fn run(a: GupTestArgs) -> Result<()> {
    let plan = plan(&a)?;
    check_budget(&plan)?;
    // Lines go out as each repeat ends, as the selftest prints them, so a long -r shows
    // progress and holds nothing; JSON is one array at the end.
    let mut rows = Vec::new();
    bench(&plan, |r| {
        if a.json {
            rows.push(r);
            Ok(())
        } else {
            output::say(&line(&r))
        }
    })?;
    if a.json {
        output::json(&rows)?;
    }
    Ok(())
}

/// Runs `gup-test` as `a` asks and returns every repeat's result instead of printing it
/// (`report` reads them).
pub(crate) fn repeats(a: &GupTestArgs) -> Result<Vec<Repeat>> {
    let plan = plan(a)?;
    check_budget(&plan)?;
    let mut rows = Vec::new();
    bench(&plan, |r| {
        rows.push(r);
        Ok(())
    })?;
    Ok(rows)
}

/// The plan `a` asks for, or the first thing wrong with it.
fn plan(a: &GupTestArgs) -> Result<Plan> {
    if a.mb == 0 {
        bail!("-m {} is not a usable size in MiB: try -m 16384", a.mb);
    }
    let size =
        a.mb.checked_mul(1 << 20)
            .filter(|s| *s <= MAX_SIZE)
            .ok_or_else(|| {
                anyhow!(
                    "-m {} MiB is larger than the largest namespace, {}: did you mean -m {}?",
                    a.mb,
                    format_size(MAX_SIZE),
                    MAX_SIZE >> 20
                )
            })?;
    let align = args::parse_align(&a.align, a.mode)?;
    if align >= 1 << 20 && size % align != 0 {
        let mb = align >> 20;
        let down = a.mb / mb * mb;
        let hint = if down == 0 {
            format!("-m {}", down + mb)
        } else {
            format!("-m {down} or -m {}", down + mb)
        };
        bail!(
            "-m {} MiB is not a multiple of align {}: did you mean {hint}?",
            a.mb,
            format_size(align)
        );
    }
    let ns = namespace_for(size, align, a.mode.into())?;
    let layout = match a.layout.layouts().as_slice() {
        [one] => *one,
        _ => bail!("gup-test runs one layout: choose --layout flat, vmemmap or heads"),
    };
    if a.repeats == 0 {
        bail!("-r must be at least 1");
    }
    if a.longterm && a.mode == ModeArg::Fsdax {
        bail!(
            "-L pins with FOLL_LONGTERM, and FsDax memory cannot be pinned long-term: use -a, \
             or -L with --mode devdax"
        );
    }
    if a.by_address && a.mode == ModeArg::Fsdax {
        bail!("--by-address maps a device-dax device: use --mode devdax");
    }
    if a.by_address && !(a.folios || a.pin_fast || a.longterm) {
        bail!("--by-address pins: add -a (pin_user_pages_fast), -L or -F");
    }
    let mode = if a.folios {
        Mode::PinFolios
    } else if a.pin_fast {
        Mode::PinFast
    } else if a.longterm {
        Mode::PinLongterm
    } else {
        Mode::GupFast
    };
    Ok(Plan {
        ns,
        layout,
        mode,
        repeats: a.repeats,
        pages_per_call: pages_per_call(a.pages_per_call)?,
        write: a.write,
        reuse_buffers: a.prealloc,
        by_address: a.by_address,
    })
}

/// The smallest namespace (memmap in host memory) whose data is `data_bytes`.
fn namespace_for(data_bytes: u64, align: u64, mode: NamespaceMode) -> Result<Namespace> {
    Namespace::for_data(data_bytes, align, mode, MemmapLocation::Mem).map_err(args::refusal)
}

/// Which benchmark (the kernel's ioctl commands, plus the folio API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `-u`: `get_user_pages_fast`, plain references.
    GupFast,
    /// `-a`: `pin_user_pages_fast`.
    PinFast,
    /// `-L`: `pin_user_pages` with `FOLL_LONGTERM`.
    PinLongterm,
    /// `-F`: one entry per folio.
    PinFolios,
}

impl Mode {
    /// The kernel's name for the command.
    fn name(self) -> &'static str {
        match self {
            Mode::GupFast => "GUP_FAST_BENCHMARK",
            Mode::PinFast => "PIN_FAST_BENCHMARK",
            Mode::PinLongterm => "PIN_LONGTERM_BENCHMARK",
            Mode::PinFolios => "PIN_FOLIOS_BENCHMARK",
        }
    }
}

impl Plan {
    /// The `FOLL_*` flags of each call.
    fn flags(&self) -> GupFlags {
        let mut flags = GupFlags::NONE;
        if self.write {
            flags = flags | GupFlags::WRITE;
        }
        if self.mode == Mode::PinLongterm {
            flags = flags | GupFlags::LONGTERM;
        }
        flags
    }
}

/// What `gup-test` was asked to do.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The namespace whose data is pinned.
    ns: Namespace,
    /// Layout of the memmap.
    layout: Layout,
    /// Benchmark.
    mode: Mode,
    /// Repeats.
    repeats: u32,
    /// Pages per call (all the data for `None`).
    pages_per_call: Option<u64>,
    /// `FOLL_WRITE`.
    write: bool,
    /// Fill entry buffers allocated before timing (the selftest's way) rather than letting
    /// each call allocate its result.
    reuse_buffers: bool,
    /// Pin by pfn and by user address, a row each.
    by_address: bool,
}

/// One repeat's result.
#[derive(Debug, Serialize)]
pub(crate) struct Repeat {
    /// Kernel command name.
    pub mode: &'static str,
    /// Microseconds in the get/pin loop.
    pub get_us: u64,
    /// Microseconds in the put/unpin loop.
    pub put_us: u64,
    /// The floor of the same range in the same run (`Pgmap::bare_head_loop`): nanoseconds of
    /// one atomic add on every folio's head descriptor, then of one subtract each.
    pub bare_get_ns: u64,
    pub bare_put_ns: u64,
    /// `get_us` over `bare_get_ns` (issue 20: ≤ 2 for a folio-range pin).
    pub get_over_bare: f64,
    /// 4 KiB pages pinned.
    pub pages: u64,
    /// Folios touched.
    pub folios: u64,
    /// Entries returned (pages for the page-array API, folios for the folio API).
    pub entries: u64,
    /// Calls made.
    pub calls: u64,
    /// Namespace bytes.
    pub size: u64,
    /// Alignment bytes.
    pub align: u64,
    /// Layout name.
    pub layout: &'static str,
    /// Repeat number, from 0.
    pub repeat: u32,
    /// Whether the entry buffers were allocated before timing and reused.
    pub reused_buffers: bool,
    /// What the pins named: `pfn` or `address`.
    pub by: &'static str,
}

/// Parses `-n`: a positive page count, or a negative one for "all".
fn pages_per_call(n: i64) -> Result<Option<u64>> {
    match n {
        0 => bail!("-n must not be 0: give pages per call (e.g. -n 512), or -n -1 for all"),
        n if n < 0 => Ok(None),
        n => Ok(Some(n as u64)),
    }
}

/// Host bytes a run of `plan` holds at its peak: the memmap, the entries of every call (a
/// repeat pins all the data before it unpins any), the per-call handles and buffer slots, and
/// for fsdax one mapping per folio.
fn planned_bytes(plan: &Plan) -> Result<u64> {
    let ns = &plan.ns;
    let memmap = estimate::host_bytes(ns, plan.layout)?;
    let pages = ns.data_bytes() / PAGE_SIZE;
    let per_call = plan.pages_per_call.unwrap_or(pages).clamp(1, pages);
    let calls = pages.div_ceil(per_call);
    let size = |bytes: usize| bytes as u64;
    let (entries, handle) = if plan.mode == Mode::PinFolios {
        // `pin_folios_into` reserves two entries beyond the compounds a call spans.
        let entries = (pages >> ns.vmemmap_shift().get()).saturating_add(calls.saturating_mul(2));
        (
            entries.saturating_mul(size(size_of::<PinnedFolio>())),
            size(size_of::<Pinned<Folios>>()),
        )
    } else {
        (
            pages.saturating_mul(size(size_of::<Pfn>())),
            size(size_of::<Pinned<Pages>>()),
        )
    };
    // A handle in the held list, a slot in each of the two buffer lists, and the allocator's
    // overhead for the entry buffer.
    const MALLOC_OVERHEAD: u64 = 32;
    let per_call_bytes = handle + 2 * size(size_of::<Vec<Pfn>>()) + MALLOC_OVERHEAD;
    let mappings = if ns.mode().memory_type() == MemoryType::FsDax {
        (pages / (ns.align() / PAGE_SIZE)).saturating_mul(size(size_of::<MappedFolio>()))
    } else {
        0
    };
    Ok(memmap
        .saturating_add(entries)
        .saturating_add(calls.saturating_mul(per_call_bytes))
        .saturating_add(mappings))
}

/// Refuses a plan whose peak would exceed the share of available memory one run may take,
/// with the largest `-m` that fits.
fn check_budget(plan: &Plan) -> Result<()> {
    let need = planned_bytes(plan)?;
    let (budget, available) = procfs::memory_budget()?;
    if need <= budget {
        return Ok(());
    }
    let ns = &plan.ns;
    let fits = |data| {
        namespace_for(data, ns.align(), ns.mode())
            .and_then(|ns| planned_bytes(&Plan { ns, ..*plan }))
            .is_ok_and(|b| b <= budget)
    };
    // Data comes in whole data aligns: max(align, 2 MiB).
    let step = devmap::namespace::data_align(ns.align());
    let hint = match smaller_fitting(ns.data_bytes(), step, fits) {
        Some(size) => format!("try -m {}", size >> 20),
        None => "try a smaller -m".to_owned(),
    };
    bail!(
        "gup-test -m {} needs {} (memmap, pinned entries and their handles), more than the {} \
         devmap allows itself ({}% of the {} available): {hint}",
        ns.data_bytes() >> 20,
        human(need),
        human(budget),
        procfs::MEMORY_BUDGET_PERCENT,
        human(available)
    )
}

/// Runs the benchmark, handing each repeat's result to `emit` as it ends.
fn bench(plan: &Plan, mut emit: impl FnMut(Repeat) -> Result<()>) -> Result<()> {
    if plan.by_address {
        return by_address::bench(plan, emit);
    }
    let ns = &plan.ns;
    let space = DeviceSpace::new();
    let range = space.reserve_range(ns.size(), ns.start_align())?;
    let mut cfg = ns.pgmap_config(range, plan.layout)?;
    cfg.init = InitMode::parallel_default();
    let pgmap = space
        .memremap_pages(cfg)
        .with_context(|| format!("cannot enable a {} namespace", format_size(ns.size())))?;
    // What the selftest maps: the namespace's data, after the info block.
    let data = ns.data_range(range)?;
    // Like the selftest, which faults the range in from userspace first: fsdax folios exist
    // only while mapped (formed here at the namespace's align), device-dax ones always do.
    let mappings = if ns.mode().memory_type() == MemoryType::FsDax {
        let order = Order::from_bytes(ns.align())?;
        (0..data.len() >> order.get())
            .map(|i| pgmap.map_folio(data.start().add(i << order.get()), order))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let per_call = plan.pages_per_call.unwrap_or(data.len()).min(data.len());
    let flags = plan.flags();
    let folio_pages = if mappings.is_empty() {
        ns.vmemmap_shift().nr_pages()
    } else {
        ns.align() / PAGE_SIZE
    };
    let folios = data.len().div_ceil(folio_pages);
    let mut bench = Bench {
        pgmap: &pgmap,
        data,
        per_call,
        mode: plan.mode,
        flags,
        reuse: plan.reuse_buffers,
        pages: Vec::new(),
        folios: Vec::new(),
    };
    if bench.reuse {
        bench.repeat()?;
        check_idle(&pgmap, data)?;
    }
    for repeat in 0..plan.repeats {
        let (get_us, put_us, entries, calls) = bench.repeat()?;
        check_idle(&pgmap, data)?;
        let bare = pgmap.bare_head_loop(data)?;
        emit(Repeat {
            mode: plan.mode.name(),
            get_us,
            put_us,
            bare_get_ns: bare.get.as_nanos() as u64,
            bare_put_ns: bare.put.as_nanos() as u64,
            get_over_bare: over_bare(get_us, bare.get),
            pages: data.len(),
            folios,
            entries,
            calls,
            size: data.len() * PAGE_SIZE,
            align: ns.align(),
            layout: plan.layout.name(),
            repeat,
            reused_buffers: plan.reuse_buffers,
            by: "pfn",
        })?;
    }
    drop(mappings);
    space.memunmap_pages(&pgmap, None)?;
    Ok(())
}

fn chunks(data: PfnRange, per_call: u64) -> impl Iterator<Item = PfnRange> {
    (0..data.len().div_ceil(per_call)).map(move |i| {
        let start = data.start().add(i * per_call);
        let end = start.add(per_call).min(data.end());
        PfnRange::new_unchecked(start, end)
    })
}

/// One benchmark's state: what to pin, how, and the entry buffers kept across repeats.
struct Bench<'a> {
    pgmap: &'a Arc<Pgmap>,
    data: PfnRange,
    per_call: u64,
    mode: Mode,
    flags: GupFlags,
    reuse: bool,
    /// One buffer per call, reused when `reuse` (empty until the warm-up fills them).
    pages: Vec<Vec<Pfn>>,
    folios: Vec<Vec<PinnedFolio>>,
}

impl Bench<'_> {
    /// Pins the whole range in calls of `per_call` pages, then unpins it; returns get and put
    /// microseconds, entries returned and calls made.
    fn repeat(&mut self) -> Result<(u64, u64, u64, u64)> {
        let calls = self.data.len().div_ceil(self.per_call) as usize;
        self.pages.resize_with(calls, Vec::new);
        self.folios.resize_with(calls, Vec::new);
        let (pgmap, flags, reuse) = (self.pgmap, self.flags, self.reuse);
        if self.mode == Mode::PinFolios {
            let mut held = Vec::with_capacity(calls);
            let t = Instant::now();
            for (r, buf) in chunks(self.data, self.per_call).zip(&mut self.folios) {
                held.push(if reuse {
                    pgmap.pin_folios_into(r, flags, std::mem::take(buf))?
                } else {
                    pgmap.pin_folios(r, flags)?
                });
            }
            let get = t.elapsed();
            let entries = held.iter().map(|p| p.len() as u64).sum();
            let t = Instant::now();
            for (p, buf) in held.into_iter().zip(&mut self.folios) {
                if reuse {
                    *buf = p.unpin_keep_buffer(false);
                } else {
                    p.unpin(false);
                }
            }
            return Ok((micros(get), micros(t.elapsed()), entries, calls as u64));
        }
        let mut held = Vec::with_capacity(calls);
        let t = Instant::now();
        for (r, buf) in chunks(self.data, self.per_call).zip(&mut self.pages) {
            let buf = std::mem::take(buf);
            held.push(match (self.mode, reuse) {
                (Mode::GupFast, true) => pgmap.get_pages_into(r, flags, buf)?,
                (Mode::GupFast, false) => pgmap.get_pages(r, flags)?,
                (_, true) => pgmap.pin_pages_into(r, flags, buf)?,
                (_, false) => pgmap.pin_pages(r, flags)?,
            });
        }
        let get = t.elapsed();
        let entries = held.iter().map(|p| p.len() as u64).sum();
        let t = Instant::now();
        for (p, buf) in held.into_iter().zip(&mut self.pages) {
            if reuse {
                *buf = p.unpin_keep_buffer(false);
            } else {
                p.unpin(false);
            }
        }
        Ok((micros(get), micros(t.elapsed()), entries, calls as u64))
    }
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros() as u64
}

/// `get_us` over the bare loop's time (0 if the loop took no measurable time).
fn over_bare(get_us: u64, bare: std::time::Duration) -> f64 {
    match bare.as_nanos() {
        0 => 0.0,
        ns => (get_us as f64 * 1e3 / ns as f64 * 100.0).round() / 100.0,
    }
}

/// Every folio back to its idle count plus its mappings, with no pins (the kernel's untimed
/// verification).
fn check_idle(pgmap: &Pgmap, data: PfnRange) -> Result<()> {
    let idle = pgmap.memory_type().idle_refcount();
    let mut pfn = data.start();
    while pfn < data.end() {
        let f = pgmap.folio(pfn)?;
        ensure!(
            f.refcount() - f.mapcount() == idle && f.pincount() == 0,
            "folio {} not idle after unpin: refcount {} mapcount {} pincount {}",
            f.pfn(),
            f.refcount(),
            f.mapcount(),
            f.pincount()
        );
        pfn = f.pfn().add(f.nr_pages());
    }
    Ok(())
}

/// The kernel's output line, then the bare loop of the same range (issue 20's floor).
fn line(r: &Repeat) -> String {
    format!(
        "{}: Time: get:{} put:{} us; bare loop: get:{:.1} put:{:.1} us, get {:.2}x",
        r.mode,
        r.get_us,
        r.put_us,
        r.bare_get_ns as f64 / 1e3,
        r.bare_put_ns as f64 / 1e3,
        r.get_over_bare
    )
}
