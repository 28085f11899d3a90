//! `devmap gup-test`: the kernel's `tools/testing/selftests/mm/gup_test` against an emulated
//! device-dax namespace. Each repeat pins the whole namespace in calls of `-n` pages, timing
//! the get loop and the put loop separately, then checks (untimed) that every folio is idle
//! again, and prints the kernel's `<CMD>: Time: get:<usec> put:<usec> us` line.
//!
//! By default each call is the library's plain `pin_pages`/`pin_folios`, which allocates its
//! result inside the timed loop (32 MiB of entries for 16 GiB through the page-array API).
//! `--prealloc` measures the selftest's way, whose `pages[]` exists before the clock starts:
//! an untimed warm-up repeat allocates and faults in the entry buffers and every timed repeat
//! refills them (`pin_pages_into`, `unpin_keep_buffer`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use devmap::addr::format_size;
use devmap::gup::{unpin_folios, unpin_user_pages};
use devmap::{
    DeviceSpace, FolioMapping, GupFlags, InitMode, Layout, MemoryType, Order, PAGE_SIZE, Pfn,
    PfnRange, Pgmap, PgmapConfig, PinnedFolio, PinnedFolios, PinnedPages,
};
use serde::Serialize;

use crate::estimate::geometry;
use crate::procfs;
use crate::shape::{Shape, smaller_fitting};
use crate::units::human;

/// Which benchmark (the kernel's ioctl commands, plus the folio API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
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
    pub fn name(self) -> &'static str {
        match self {
            Mode::GupFast => "GUP_FAST_BENCHMARK",
            Mode::PinFast => "PIN_FAST_BENCHMARK",
            Mode::PinLongterm => "PIN_LONGTERM_BENCHMARK",
            Mode::PinFolios => "PIN_FOLIOS_BENCHMARK",
        }
    }
}

/// What `gup-test` was asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Namespace shape.
    pub shape: Shape,
    /// Layout of the memmap.
    pub layout: Layout,
    /// Benchmark.
    pub mode: Mode,
    /// Repeats.
    pub repeats: u32,
    /// Pages per call (the whole namespace for `None`).
    pub pages_per_call: Option<u64>,
    /// `FOLL_WRITE`.
    pub write: bool,
    /// Fill entry buffers allocated before timing (the selftest's way) rather than letting
    /// each call allocate its result.
    pub reuse_buffers: bool,
}

/// One repeat's result.
#[derive(Debug, Serialize)]
pub struct Repeat {
    /// Kernel command name.
    pub mode: &'static str,
    /// Microseconds in the get/pin loop.
    pub get_us: u64,
    /// Microseconds in the put/unpin loop.
    pub put_us: u64,
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
}

/// Parses `-n`: a positive page count, or a negative one for "all".
pub fn pages_per_call(n: i64) -> Result<Option<u64>> {
    match n {
        0 => bail!("-n must not be 0: give pages per call (e.g. -n 512), or -n -1 for all"),
        n if n < 0 => Ok(None),
        n => Ok(Some(n as u64)),
    }
}

/// Host bytes a run of `plan` holds at its peak: the memmap, the entries of every call (a
/// repeat pins the whole namespace before it unpins any), the per-call handles and buffer
/// slots, and for fsdax one mapping per folio.
pub fn planned_bytes(plan: &Plan) -> Result<u64> {
    let shape = &plan.shape;
    let cost = plan.layout.cost(&geometry(shape, plan.layout)?);
    let pages = shape.pages();
    let per_call = plan.pages_per_call.unwrap_or(pages).clamp(1, pages);
    let calls = pages.div_ceil(per_call);
    let size = |bytes: usize| bytes as u64;
    let (entries, handle) = if plan.mode == Mode::PinFolios {
        // `pin_folios_into` reserves two entries beyond the compounds a call spans.
        let entries = (pages >> shape.shift.get()).saturating_add(calls.saturating_mul(2));
        (
            entries.saturating_mul(size(size_of::<PinnedFolio>())),
            size(size_of::<PinnedFolios>()),
        )
    } else {
        (
            pages.saturating_mul(size(size_of::<Pfn>())),
            size(size_of::<PinnedPages>()),
        )
    };
    // A handle in the held list, a slot in each of the two buffer lists, and the allocator's
    // overhead for the entry buffer.
    const MALLOC_OVERHEAD: u64 = 32;
    let per_call_bytes = handle + 2 * size(size_of::<Vec<Pfn>>()) + MALLOC_OVERHEAD;
    let mappings = if shape.mode.memory_type() == MemoryType::FsDax {
        (pages / (shape.align / PAGE_SIZE)).saturating_mul(size(size_of::<FolioMapping>()))
    } else {
        0
    };
    Ok((cost.metadata_bytes + cost.device_bytes)
        .saturating_add(entries)
        .saturating_add(calls.saturating_mul(per_call_bytes))
        .saturating_add(mappings))
}

/// Refuses a plan whose peak would exceed the share of available memory one run may take,
/// with the largest `-m` that fits.
pub fn check_budget(plan: &Plan) -> Result<()> {
    let need = planned_bytes(plan)?;
    let (budget, available) = procfs::memory_budget()?;
    if need <= budget {
        return Ok(());
    }
    let with_size = |size| Plan {
        shape: Shape { size, ..plan.shape },
        ..*plan
    };
    let step = plan.shape.align.max(1 << 20);
    let hint = match smaller_fitting(plan.shape.size, step, |size| {
        planned_bytes(&with_size(size)).is_ok_and(|b| b <= budget)
    }) {
        Some(size) => format!("try -m {}", size >> 20),
        None => "try a smaller -m".to_owned(),
    };
    bail!(
        "gup-test -m {} needs {} (memmap, pinned entries and their handles), more than the {} \
         devmap allows itself ({}% of the {} available): {hint}",
        plan.shape.size >> 20,
        human(need),
        human(budget),
        procfs::MEMORY_BUDGET_PERCENT,
        human(available)
    )
}

/// Runs the benchmark, handing each repeat's result to `emit` as it ends.
pub fn run(plan: &Plan, mut emit: impl FnMut(Repeat) -> Result<()>) -> Result<()> {
    let shape = &plan.shape;
    let space = DeviceSpace::new();
    let range = space.reserve_range(shape.size, shape.align)?;
    let mut cfg = PgmapConfig::devdax(range, shape.shift);
    cfg.memory_type = shape.mode.memory_type();
    cfg.layout = plan.layout;
    cfg.altmap_reserve = shape.altmap_reserve();
    cfg.init = InitMode::parallel_default();
    let pgmap = space
        .memremap_pages(cfg)
        .with_context(|| format!("cannot enable a {} namespace", format_size(shape.size)))?;
    let data = pgmap
        .ranges()
        .next()
        .context("the namespace has no range")?;
    let data = match pgmap.altmap() {
        Some(a) => PfnRange::new(data.start().add(a.offset()), data.len() - a.offset())?,
        None => data,
    };
    // Like the selftest, which faults the range in from userspace first: fsdax folios exist
    // only while mapped (formed here at the namespace's align), device-dax ones always do.
    let mappings = if shape.mode.memory_type() == MemoryType::FsDax {
        let order = Order::from_bytes(shape.align)?;
        (0..data.len() >> order.get())
            .map(|i| pgmap.map_folio(data.start().add(i << order.get()), order))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let per_call = plan.pages_per_call.unwrap_or(data.len()).min(data.len());
    let mut flags = GupFlags::NONE;
    if plan.write {
        flags = flags | GupFlags::WRITE;
    }
    if plan.mode == Mode::PinLongterm {
        flags = flags | GupFlags::LONGTERM;
    }
    let folio_pages = if mappings.is_empty() {
        shape.shift.nr_pages()
    } else {
        shape.align / PAGE_SIZE
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
        emit(Repeat {
            mode: plan.mode.name(),
            get_us,
            put_us,
            pages: data.len(),
            folios,
            entries,
            calls,
            size: data.len() * PAGE_SIZE,
            align: shape.align,
            layout: plan.layout.name(),
            repeat,
            reused_buffers: plan.reuse_buffers,
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
                    unpin_folios(p, false);
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
                unpin_user_pages(p);
            }
        }
        Ok((micros(get), micros(t.elapsed()), entries, calls as u64))
    }
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros() as u64
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

/// The kernel's output line.
pub fn line(r: &Repeat) -> String {
    format!("{}: Time: get:{} put:{} us", r.mode, r.get_us, r.put_us)
}
