//! `devmap gup-test`: the kernel's `tools/testing/selftests/mm/gup_test` against an emulated
//! device-dax namespace. Each repeat pins the whole namespace in calls of `-n` pages, timing
//! the get loop and the put loop separately, then checks (untimed) that every folio is idle
//! again, and prints the kernel's `<CMD>: Time: get:<usec> put:<usec> us` line.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use devmap::addr::format_size;
use devmap::gup::{unpin_folios, unpin_user_pages};
use devmap::{
    DevPagemap, DeviceSpace, GupFlags, InitMode, Layout, MemoryType, Order, PAGE_SIZE,
    PagemapConfig, PfnRange,
};
use serde::Serialize;

use crate::shape::Shape;

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
}

/// Parses `-n`: a positive page count, or a negative one for "all".
pub fn pages_per_call(n: i64) -> Result<Option<u64>> {
    match n {
        0 => bail!("-n must not be 0: give pages per call (e.g. -n 512), or -n -1 for all"),
        n if n < 0 => Ok(None),
        n => Ok(Some(n as u64)),
    }
}

/// Runs the benchmark.
pub fn run(plan: &Plan) -> Result<Vec<Repeat>> {
    let shape = &plan.shape;
    let space = DeviceSpace::new();
    let range = space.reserve_range(shape.size, shape.align)?;
    let mut cfg = PagemapConfig::devdax(range, shape.shift);
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
    let mut out = Vec::with_capacity(plan.repeats as usize);
    for repeat in 0..plan.repeats {
        let (get_us, put_us, entries, calls) =
            one_repeat(&pgmap, data, per_call, plan.mode, flags)?;
        check_idle(&pgmap, data)?;
        out.push(Repeat {
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
        });
    }
    drop(mappings);
    space.memunmap_pages(&pgmap, None)?;
    Ok(out)
}

fn chunks(data: PfnRange, per_call: u64) -> impl Iterator<Item = PfnRange> {
    (0..data.len().div_ceil(per_call)).map(move |i| {
        let start = data.start().add(i * per_call);
        let end = start.add(per_call).min(data.end());
        PfnRange::new_unchecked(start, end)
    })
}

fn one_repeat(
    pgmap: &Arc<DevPagemap>,
    data: PfnRange,
    per_call: u64,
    mode: Mode,
    flags: GupFlags,
) -> Result<(u64, u64, u64, u64)> {
    let calls = data.len().div_ceil(per_call);
    if mode == Mode::PinFolios {
        let mut held = Vec::with_capacity(calls as usize);
        let t = Instant::now();
        for r in chunks(data, per_call) {
            held.push(pgmap.pin_folios(r, flags)?);
        }
        let get = t.elapsed();
        let entries = held.iter().map(|p| p.len() as u64).sum();
        let t = Instant::now();
        for p in held {
            unpin_folios(p, false);
        }
        return Ok((
            get.as_micros() as u64,
            t.elapsed().as_micros() as u64,
            entries,
            calls,
        ));
    }
    let mut held = Vec::with_capacity(calls as usize);
    let t = Instant::now();
    for r in chunks(data, per_call) {
        held.push(match mode {
            Mode::GupFast => pgmap.get_pages(r, flags)?,
            _ => pgmap.pin_pages(r, flags)?,
        });
    }
    let get = t.elapsed();
    let entries = held.iter().map(|p| p.len() as u64).sum();
    let t = Instant::now();
    for p in held {
        unpin_user_pages(p);
    }
    Ok((
        get.as_micros() as u64,
        t.elapsed().as_micros() as u64,
        entries,
        calls,
    ))
}

/// Every folio back to its idle count plus its mappings, with no pins (the kernel's untimed
/// verification).
fn check_idle(pgmap: &DevPagemap, data: PfnRange) -> Result<()> {
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
