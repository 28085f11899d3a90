//! `gup-test --by-address`: the data as a device-dax device over a sparse memfd, mapped whole
//! and faulted in before the clock starts, then pinned each repeat twice in calls of `-n`
//! pages: by pfn through the device's pgmap, and by user address through the mapping
//! (`pin_user_pages_fast` on a device-dax VMA). The two rows of a repeat compare the address
//! walk against the pfn path on the same folios, in the same run.
//!
//! The device does not catch touches (`Faults::Explicit`): faulting sets up every leaf's
//! metadata and reference but allocates no bytes, so pinning 16 GiB by address needs no
//! 16 GiB of memory. The pin path reads only the metadata and the mapping's faulted-leaf bits,
//! so the bytes would not change what is timed.

use std::time::Instant;

use anyhow::{Context, Result};
use devmap::backing::Backing;
use devmap::dax::{DaxDevice, DaxMapping, DaxOptions, Faults};
use devmap::{
    ByAddress, DeviceSpace, Folios, GupFlags, InitMode, Order, PAGE_SIZE, Pages, PfnRange, Pinned,
};

use super::{Mode, Plan, Repeat, check_idle, chunks, micros};
use crate::units::format_size;

/// Runs the by-pfn / by-address pair of every repeat, handing each row to `emit`.
pub(super) fn bench(plan: &Plan, mut emit: impl FnMut(Repeat) -> Result<()>) -> Result<()> {
    let ns = &plan.ns;
    let size = ns.data_bytes();
    let align = Order::from_bytes(ns.align())?;
    let space = DeviceSpace::new();
    let backing = Backing::memfd(size)?;
    let mut opts = DaxOptions::new(align);
    opts.layout = plan.layout;
    opts.init = InitMode::parallel_default();
    opts.faults = Faults::Explicit;
    let dev = DaxDevice::with_options(&space, backing, opts)
        .with_context(|| format!("cannot make a {} device-dax device", format_size(size)))?;
    let m = dev.mmap(0, size, true)?;
    m.populate(m.addr(), size)?;
    let data = dev.ranges()[0];
    let per_call = plan.pages_per_call.unwrap_or(data.len()).min(data.len());
    let flags = plan.flags();
    let folios = data.len().div_ceil(align.nr_pages());
    for repeat in 0..plan.repeats {
        for by in ["pfn", "address"] {
            let (get_us, put_us, entries, calls) =
                one(&dev, &m, data, per_call, plan.mode, flags, by == "address")?;
            check_idle(dev.pgmap(), data)?;
            let bare = dev.pgmap().bare_head_loop(data)?;
            emit(Repeat {
                mode: plan.mode.name(),
                get_us,
                put_us,
                bare_get_ns: bare.get.as_nanos() as u64,
                bare_put_ns: bare.put.as_nanos() as u64,
                get_over_bare: super::over_bare(get_us, bare.get),
                pages: data.len(),
                folios,
                entries,
                calls,
                size,
                align: ns.align(),
                layout: plan.layout.name(),
                repeat,
                reused_buffers: false,
                by,
            })?;
        }
    }
    drop(m);
    dev.close(None)?;
    Ok(())
}

/// What one call's pins are held as.
enum Held {
    Pages(Pinned<Pages>),
    Folios(Pinned<Folios>),
    PagesByAddress(Pinned<Pages, ByAddress>),
    FoliosByAddress(Pinned<Folios, ByAddress>),
}

impl Held {
    fn entries(&self) -> u64 {
        (match self {
            Held::Pages(p) => p.len(),
            Held::Folios(f) => f.len(),
            Held::PagesByAddress(p) => p.len(),
            Held::FoliosByAddress(f) => f.len(),
        }) as u64
    }

    fn unpin(self) {
        match self {
            Held::Pages(p) => p.unpin(false),
            Held::Folios(f) => f.unpin(false),
            Held::PagesByAddress(p) => p.unpin(false),
            Held::FoliosByAddress(f) => f.unpin(false),
        }
    }
}

/// Pins all of `data` in calls of `per_call` pages, by address through `m` or by pfn, then
/// unpins it: get and put microseconds, entries and calls.
fn one(
    dev: &DaxDevice,
    m: &DaxMapping,
    data: PfnRange,
    per_call: u64,
    mode: Mode,
    flags: GupFlags,
    by_address: bool,
) -> Result<(u64, u64, u64, u64)> {
    let pgmap = dev.pgmap();
    let calls = data.len().div_ceil(per_call) as usize;
    let mut held = Vec::with_capacity(calls);
    let folios = mode == Mode::PinFolios;
    let t = Instant::now();
    for r in chunks(data, per_call) {
        let addr = m.addr() + (r.start().offset_from(data.start()) * PAGE_SIZE) as usize;
        held.push(match (by_address, folios) {
            (false, false) => Held::Pages(pgmap.pin_pages(r, flags)?),
            (false, true) => Held::Folios(pgmap.pin_folios(r, flags)?),
            (true, false) => Held::PagesByAddress(m.pin_user_pages(addr, r.len(), flags)?),
            (true, true) => Held::FoliosByAddress(m.pin_user_folios(addr, r.len(), flags)?),
        });
    }
    let get = t.elapsed();
    let entries = held.iter().map(Held::entries).sum();
    let t = Instant::now();
    for h in held {
        h.unpin();
    }
    Ok((micros(get), micros(t.elapsed()), entries, calls as u64))
}
