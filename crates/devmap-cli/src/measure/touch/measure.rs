//! The measuring half of `touch-test`: the device side (a [`DaxDevice`] over the backing,
//! mapped whole and touched leaf by leaf), the baseline side (a fresh backing of the same kind
//! mapped plainly and touched the same way), the threads that share the leaves and time each
//! one, the percentiles, and the leaves the kernel says it mapped (`/proc/self/smaps`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use devmap::backing::{Backing, Mmap, smaps_at};
use devmap::dax::{DaxDevice, DaxOptions, FaultStats, Faults};
use devmap::{DeviceSpace, InitState, InitStats, PAGE_SIZE};

use super::{Plan, Source, TOUCH, pages_per_leaf};
use crate::measure::latency::{Latencies, percentiles};

/// Leaves the kernel has mapped in one mapping, by page size.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KernelLeaves {
    pub(super) k4: u64,
    pub(super) m2: u64,
    pub(super) g1: u64,
}

/// What touching one mapping measured.
#[derive(Debug, Clone, Copy)]
pub(super) struct Side {
    /// Nanoseconds to map the whole device (for the device, userfaultfd registration
    /// included).
    pub(super) mmap_ns: u64,
    pub(super) lat: Latencies,
    pub(super) wall_ns: u64,
    pub(super) kernel: KernelLeaves,
}

/// What the device side measured, beyond the touches.
#[derive(Debug, Clone, Copy)]
pub(super) struct DevmapSide {
    pub(super) side: Side,
    /// Whether the device caught touches with its userfaultfd.
    pub(super) caught: bool,
    pub(super) stats: FaultStats,
    pub(super) init_active_at_start: bool,
    pub(super) init_active_at_end: bool,
    pub(super) init: InitStats,
}

/// Makes the device over `backing`, maps it whole, touches every leaf, reads what the kernel
/// and the device did, and tears both down (the mapping first, as the device's drop waits for
/// its mappings).
pub(super) fn devmap_side(plan: &Plan, backing: Backing) -> Result<DevmapSide> {
    let space = DeviceSpace::new();
    let mut opts = DaxOptions::new(plan.align);
    opts.layout = plan.layout;
    opts.init = plan.init;
    opts.faults = Faults::Auto;
    opts.handlers = plan.handlers;
    opts.fault_around = plan.fault_around;
    opts.zero_ahead = plan.zero_ahead;
    // Where touches are not caught, each leaf's metadata is faulted in beside its touch,
    // timed with it, as the kernel's own fault would be; not all at once by the mmap.
    opts.populate_on_map = false;
    let dev = DaxDevice::with_options(&space, backing, opts)
        .with_context(|| format!("cannot make a device over the {}", plan.source.name()))?;
    let t = Instant::now();
    let m = dev
        .mmap(0, plan.size, true)
        .context("cannot map the device")?;
    let mmap_ns = t.elapsed().as_nanos() as u64;
    let caught = dev.catches_touches();
    let align = plan.align.bytes();
    let base = m.addr();
    let init_active_at_start = dev.pgmap().init_state() == InitState::Active;
    let (lat, wall_ns) = touch_all(plan, |leaf| {
        if !caught {
            let addr = usize::try_from(leaf)
                .ok()
                .and_then(|l| base.checked_add(l))
                .ok_or_else(|| anyhow!("leaf offset {leaf} does not fit an address"))?;
            m.populate(addr, align)?;
        }
        touch_leaf(m.bytes(), leaf, plan)
    })?;
    let init_active_at_end = dev.pgmap().init_state() == InitState::Active;
    let kernel = kernel_leaves(base)?;
    let stats = dev.fault_stats();
    let init = dev.pgmap().init_stats();
    drop(m);
    dev.close(None).context("cannot tear the device down")?;
    drop(dev);
    Ok(DevmapSide {
        side: Side {
            mmap_ns,
            lat,
            wall_ns,
            kernel,
        },
        caught,
        stats,
        init_active_at_start,
        init_active_at_end,
        init,
    })
}

/// A fresh backing of the plan's kind and size, mapped by the kernel alone (no device, no
/// userfaultfd) at the same alignment and touched the same way. A file goes next to `--path`
/// and is removed at the end.
pub(super) fn baseline_side(plan: &Plan) -> Result<Side> {
    let (backing, _file) = match &plan.source {
        Source::Memfd => (Backing::memfd(plan.size)?, None),
        Source::Hugetlb(page) => (Backing::hugetlb(plan.size, *page)?, None),
        Source::File(path) => {
            let twin = RemoveOnDrop(twin_path(path)?);
            let b = Backing::create_file(&twin.0, plan.size)
                .with_context(|| format!("cannot create the baseline file {}", twin.0.display()))?;
            (b, Some(twin))
        }
    };
    let t = Instant::now();
    let map = backing
        .map_shared(0, plan.size, plan.align)
        .context("cannot map the baseline")?;
    let mmap_ns = t.elapsed().as_nanos() as u64;
    let (lat, wall_ns) = touch_all(plan, |leaf| touch_leaf(&map, leaf, plan))?;
    let kernel = kernel_leaves(map.as_ptr().as_ptr() as usize)?;
    Ok(Side {
        mmap_ns,
        lat,
        wall_ns,
        kernel,
    })
}

/// The baseline file next to `path`: its name with `.touch-baseline-<pid>` added.
fn twin_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("--path {} does not name a file", path.display()))?;
    let mut twin = name.to_os_string();
    twin.push(format!(".touch-baseline-{}", std::process::id()));
    Ok(path.with_file_name(twin))
}

/// A file this run created, removed when the run is done with it (or fails).
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes one byte at the start of every 4 KiB page of the leaf at byte `leaf` of `bytes`,
/// the leaf's first byte first.
fn touch_leaf(bytes: &Mmap, leaf: u64, plan: &Plan) -> Result<()> {
    for page in 0..pages_per_leaf(plan.align) {
        bytes.write(leaf + page * PAGE_SIZE, &TOUCH)?;
    }
    Ok(())
}

/// Shares the plan's leaves among its threads, each a contiguous run, and times `touch` of
/// each leaf (given its byte offset), each thread waiting the plan's pace after each. Returns the latency percentiles and the wall time of
/// the whole.
fn touch_all(plan: &Plan, touch: impl Fn(u64) -> Result<()> + Sync) -> Result<(Latencies, u64)> {
    let leaves = plan.leaves();
    let start = Instant::now();
    let results = crate::threads::share("touch", plan.threads as u64, leaves, |share| {
        let mut lat = Vec::with_capacity((share.end - share.start) as usize);
        for leaf in share {
            let offset = plan.leaf_offset(leaf);
            let t = Instant::now();
            touch(offset)?;
            lat.push(t.elapsed().as_nanos() as u64);
            if !plan.pace.is_zero() {
                std::thread::sleep(plan.pace);
            }
        }
        Ok(lat)
    })?;
    let wall_ns = start.elapsed().as_nanos() as u64;
    let lat: Vec<u64> = results.into_iter().flatten().collect();
    Ok((percentiles(lat), wall_ns))
}

/// The leaves the kernel has mapped in the mapping at `addr`, by page size.
fn kernel_leaves(addr: usize) -> Result<KernelLeaves> {
    let smaps =
        smaps_at(addr)?.ok_or_else(|| anyhow!("/proc/self/smaps has no mapping at {addr:#x}"))?;
    let mut out = KernelLeaves::default();
    for (page, n) in smaps.leaves() {
        match page {
            0x1000 => out.k4 += n,
            0x20_0000 => out.m2 += n,
            0x4000_0000 => out.g1 += n,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_file_sits_next_to_the_path() {
        let t = twin_path(Path::new("/tmp/dev.img")).expect("twin");
        let want = format!("/tmp/dev.img.touch-baseline-{}", std::process::id());
        assert_eq!(t, PathBuf::from(want));
    }
}
