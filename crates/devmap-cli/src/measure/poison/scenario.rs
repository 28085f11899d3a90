//! The running half of `poison-test`: one granularity's scenario from a fresh device to the
//! cleared poison. It owns the device and its mappings, the owners' notice counters, the
//! pattern every byte of the device holds, the threads that write it and read it back (only
//! ever through `read_mc`, which reports lost bytes where a plain read would die of SIGBUS),
//! the `memory_failure` calls, and the checks that every mapping was told of, and lost,
//! exactly what the granularity says.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use devmap::backing::Backing;
use devmap::dax::{DaxDevice, DaxError, DaxMapping, DaxOptions, Faults, Granularity, PoisonNotice};
use devmap::memory_failure::{MfFlags, memory_failure};
use devmap::{DeviceSpace, Order, PAGE_SIZE};

use super::checks::huge_page_size;
use super::{BackingArg, Badblock, Injected, Plan, granularity_name, handled_name};
use crate::units::format_size;

/// Bytes one read or write covers: a whole number of pages, small enough for one buffer per
/// thread at any align.
const CHUNK: u64 = 256 << 10;

/// What one mapping's owner callback has been told.
#[derive(Debug, Default)]
struct Told {
    /// Notices for this mapping.
    notices: AtomicU64,
    /// Bytes they said were lost.
    bytes: AtomicU64,
    /// Notices naming another mapping: never expected.
    strays: AtomicU64,
}

/// What one pass of the readers found.
#[derive(Debug, Clone, Default)]
struct Tally {
    /// Bytes refused, per mapping.
    lost: Vec<u64>,
    /// Bytes read back with their pattern, all mappings together.
    intact: u64,
}

impl Tally {
    fn lost_total(&self) -> u64 {
        self.lost.iter().sum()
    }
}

/// Runs the scenario once at granularity `g` and returns its row.
pub(super) fn run(plan: &Plan, g: Granularity) -> Result<Injected> {
    let what = granularity_name(g);
    let space = DeviceSpace::new();
    let align = Order::from_bytes(plan.align)?;
    let backing = match plan.backing {
        BackingArg::Memfd => Backing::memfd(plan.size)?,
        BackingArg::Hugetlb => Backing::hugetlb(plan.size, huge_page_size(plan.align)?)?,
    };
    let mut opts = DaxOptions::new(align);
    opts.faults = Faults::Auto;
    opts.granularity = g;
    // One handler per reader, up to the library's bound.
    opts.handlers = plan.readers.min(DaxOptions::MAX_HANDLERS);
    let dev = DaxDevice::with_options(&space, backing, opts)
        .with_context(|| format!("cannot make a device over the {}", plan.backing.name()))?;
    let applied = dev.granularity();
    let mut maps = Vec::with_capacity(plan.mappings);
    let mut told = Vec::with_capacity(plan.mappings);
    for i in 0..plan.mappings {
        let m = dev
            .mmap(0, plan.size, true)
            .with_context(|| format!("cannot map the device a {}th time", i + 1))?;
        let t = Arc::new(Told::default());
        let (mine, id) = (Arc::clone(&t), m.id());
        m.set_owner(Arc::new(move |n: &PoisonNotice| {
            if n.mapping == id {
                mine.notices.fetch_add(1, Ordering::Relaxed);
                mine.bytes.fetch_add(n.len(), Ordering::Relaxed);
            } else {
                mine.strays.fetch_add(1, Ordering::Relaxed);
            }
        }));
        // Told of errors no access of its own met (by pfn, no mapping is current): the kernel
        // signals only early-kill tasks then.
        m.set_early_kill(true);
        maps.push(m);
        told.push(t);
    }
    let result = scenario(plan, g, applied, &space, &dev, &maps, &told);
    drop(maps);
    let shut = dev.close(None);
    drop(dev);
    let row = result.with_context(|| format!("granularity {what}"))?;
    shut.context("cannot tear the device down")?;
    Ok(row)
}

/// The scenario proper, on a device and mappings the caller tears down.
fn scenario(
    plan: &Plan,
    g: Granularity,
    applied: Granularity,
    space: &DeviceSpace,
    dev: &DaxDevice,
    maps: &[DaxMapping],
    told: &[Arc<Told>],
) -> Result<Injected> {
    let whole = plan.size * maps.len() as u64;
    write_pattern(plan, &maps[0], 0, plan.size)?;
    let before = read_all(plan, maps).context("reading before the error")?;
    ensure!(
        before.lost_total() == 0 && before.intact == whole,
        "before any error the mappings lost {} and read {} of {} bytes: every byte should read",
        before.lost_total(),
        before.intact,
        whole
    );

    // The errors, back to back, nothing reading in between.
    let flags = if plan.action_required {
        MfFlags::ACTION_REQUIRED
    } else {
        MfFlags::NONE
    };
    let pages: Vec<u64> = (0..plan.count)
        .map(|i| plan.offset + i * PAGE_SIZE)
        .collect();
    let mut reports = Vec::with_capacity(pages.len());
    let mut inject_ns = 0;
    for &at in &pages {
        let pfn = dev
            .pfn_at(at)
            .ok_or_else(|| anyhow!("the device has no pfn at offset {}", format_size(at)))?;
        let t = Instant::now();
        let report = memory_failure(space, pfn, flags)
            .with_context(|| format!("memory_failure of pfn {pfn} (offset {})", format_size(at)))?;
        inject_ns += t.elapsed().as_nanos() as u64;
        reports.push(report);
    }
    let first = reports
        .first()
        .ok_or_else(|| anyhow!("no error was injected"))?;
    let handled_by = first.handled_by;
    ensure!(
        reports.iter().all(|r| r.handled_by == handled_by),
        "the errors were not all handled the same way: {:?}",
        reports.iter().map(|r| r.handled_by).collect::<Vec<_>>()
    );

    // What each mapping must have lost: every unit (page, or leaf) holding a poisoned page.
    let unit = match applied {
        Granularity::Page => PAGE_SIZE,
        Granularity::Leaf => plan.align,
    };
    let units: BTreeSet<u64> = pages.iter().map(|p| p / unit).collect();
    let want_told = units.len() as u64;
    let want_lost = want_told * unit;
    let notices: u64 = reports.iter().map(|r| r.notices.len() as u64).sum();
    for (i, t) in told.iter().enumerate() {
        let (n, bytes, strays) = (
            t.notices.load(Ordering::Relaxed),
            t.bytes.load(Ordering::Relaxed),
            t.strays.load(Ordering::Relaxed),
        );
        ensure!(
            strays == 0,
            "mapping {i}'s owner was given {strays} notice(s) naming another mapping"
        );
        ensure!(
            n == want_told && bytes == want_lost,
            "mapping {i}'s owner was told {n} time(s) of {} lost; it should be told exactly \
             {want_told} time(s) of {} ({} {} unit(s) poisoned)",
            format_size(bytes),
            format_size(want_lost),
            want_told,
            granularity_name(applied)
        );
    }
    let owners_told: u64 = told.iter().map(|t| t.notices.load(Ordering::Relaxed)).sum();
    ensure!(
        owners_told == notices,
        "the owners were told {owners_told} time(s), memory_failure reported {notices} notice(s)"
    );

    let after = read_all(plan, maps).context("reading after the error")?;
    for (i, &lost) in after.lost.iter().enumerate() {
        ensure!(
            lost == want_lost,
            "mapping {i} lost {} after the error; at {} granularity it should lose exactly {}",
            format_size(lost),
            granularity_name(applied),
            format_size(want_lost)
        );
    }
    ensure!(
        after.intact + after.lost_total() == whole,
        "after the error the mappings read {} and lost {} of {whole} bytes",
        after.intact,
        after.lost_total()
    );
    let badblocks: Vec<Badblock> = dev
        .badblocks()
        .into_iter()
        .map(|(offset, len)| Badblock { offset, len })
        .collect();
    let poisoned = plan.count * PAGE_SIZE;
    ensure!(
        matches!(badblocks.as_slice(), [b] if b.offset == plan.offset && b.len == poisoned),
        "the device's badblocks are {badblocks:?}; they should be the {} from offset {}",
        format_size(poisoned),
        format_size(plan.offset)
    );

    // Clear, rewrite, and read everything again.
    let cleared_pages = dev
        .clear_poison(plan.offset, poisoned)
        .context("cannot clear the poison")?;
    ensure!(
        cleared_pages == plan.count,
        "clear_poison found {cleared_pages} poisoned page(s), not the {} injected",
        plan.count
    );
    write_pattern(plan, &maps[0], plan.offset, poisoned)?;
    let again = read_all(plan, maps).context("reading after clearing the poison")?;
    ensure!(
        again.lost_total() == 0 && again.intact == whole,
        "after clearing the poison the mappings lost {} and read {} of {whole} bytes: every \
         byte should read again",
        again.lost_total(),
        again.intact
    );
    ensure!(
        dev.badblocks().is_empty(),
        "the device still lists badblocks after clearing them: {:?}",
        dev.badblocks()
    );

    Ok(Injected {
        granularity: granularity_name(g),
        applied: granularity_name(applied),
        backing: plan.backing.name(),
        size: plan.size,
        align: plan.align,
        mappings: maps.len(),
        readers: plan.readers,
        offset: plan.offset,
        count: plan.count,
        pfn: first.pfn.raw(),
        head: first.head.raw(),
        handled_by: handled_name(handled_by),
        owners_told,
        inject_ns,
        revoke_ns: reports.iter().map(|r| r.elapsed.as_nanos() as u64).sum(),
        bytes_lost_per_mapping: want_lost,
        bytes_lost_total: after.lost_total(),
        bytes_intact: after.intact,
        badblocks,
        pins: reports.iter().map(|r| r.pins).max().unwrap_or(0),
        cleared: true,
        cleared_pages,
    })
}

/// The pattern's 8-byte word at device byte `at` (a multiple of 8): different in every word
/// of the device, so a page read from the wrong place shows.
fn word(at: u64) -> u64 {
    at.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_d00d_cafe_f00d
}

/// Fills `buf` with the pattern of the device bytes from `at` (a multiple of 8).
fn fill(buf: &mut [u8], at: u64) {
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&word(at + 8 * i as u64).to_le_bytes());
    }
}

/// The device offset of the first byte of `buf` (read from device byte `at`) that does not
/// hold its pattern.
fn mismatch(buf: &[u8], at: u64) -> Option<u64> {
    buf.chunks_exact(8).enumerate().find_map(|(i, w)| {
        let at = at + 8 * i as u64;
        let got = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        (got != word(at)).then_some(at)
    })
}

/// Runs `work` on `plan.readers` threads, each given a contiguous share of `0..units`, and
/// collects their results in thread order.
fn share<T: Send>(
    plan: &Plan,
    units: u64,
    work: impl Fn(std::ops::Range<u64>) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    crate::threads::share("reader", plan.readers as u64, units, work)
}

/// The chunks of `[from, from + len)`: (device offset, bytes).
fn chunk(from: u64, len: u64, i: u64) -> (u64, u64) {
    let at = from + i * CHUNK;
    (at, CHUNK.min(from + len - at))
}

/// Writes the pattern to device bytes `[from, from + len)` through `m` (a mapping of the whole
/// device), the chunks shared among the threads.
fn write_pattern(plan: &Plan, m: &DaxMapping, from: u64, len: u64) -> Result<()> {
    let chunks = len.div_ceil(CHUNK);
    share(plan, chunks, |range| {
        let mut buf = vec![0u8; CHUNK as usize];
        for i in range {
            let (at, n) = chunk(from, len, i);
            let buf = &mut buf[..n as usize];
            fill(buf, at);
            m.bytes()
                .write(at, buf)
                .with_context(|| format!("cannot write the pattern at {}", format_size(at)))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Reads every byte of every mapping through `read_mc`, the (mapping, chunk) pairs shared among
/// the threads: counts the bytes refused per mapping and checks every byte read. A byte that
/// reads with the wrong value is an error.
fn read_all(plan: &Plan, maps: &[DaxMapping]) -> Result<Tally> {
    let per_map = plan.size.div_ceil(CHUNK);
    let tallies = share(plan, per_map * maps.len() as u64, |range| {
        let mut tally = Tally {
            lost: vec![0; maps.len()],
            intact: 0,
        };
        let mut buf = vec![0u8; CHUNK as usize];
        for u in range {
            let mi = (u / per_map) as usize;
            let (at, n) = chunk(0, plan.size, u % per_map);
            read_chunk(&maps[mi], at, n, &mut buf, &mut tally, mi)
                .with_context(|| format!("mapping {mi}"))?;
        }
        Ok(tally)
    })?;
    let mut total = Tally {
        lost: vec![0; maps.len()],
        intact: 0,
    };
    for t in tallies {
        for (sum, l) in total.lost.iter_mut().zip(&t.lost) {
            *sum += l;
        }
        total.intact += t.intact;
    }
    Ok(total)
}

/// Reads `[at, at + n)` of `m` through `read_mc`. A refusal names the first lost unit; the
/// bytes before it are read (they hold no lost unit, as the refusal names the first), its
/// bytes counted as lost, and the read goes on after it.
fn read_chunk(
    m: &DaxMapping,
    at: u64,
    n: u64,
    buf: &mut [u8],
    tally: &mut Tally,
    mi: usize,
) -> Result<()> {
    let end = at + n;
    let mut pos = at;
    while pos < end {
        match m.read_mc(pos, &mut buf[..(end - pos) as usize]) {
            Ok(()) => {
                check(&buf[..(end - pos) as usize], pos)?;
                tally.intact += end - pos;
                pos = end;
            }
            Err(DaxError::MemoryLost { addr, len }) => {
                let lost_at = (addr as u64).wrapping_sub(m.addr() as u64);
                let lost_end = lost_at.saturating_add(len);
                if lost_at >= end || lost_end <= pos {
                    bail!(
                        "read_mc of {} at {} reported {} lost at {}, outside the read",
                        format_size(end - pos),
                        format_size(pos),
                        format_size(len),
                        format_size(lost_at)
                    );
                }
                if lost_at > pos {
                    let b = &mut buf[..(lost_at - pos) as usize];
                    m.read_mc(pos, b).with_context(|| {
                        format!(
                            "read_mc of the {} before the lost bytes at {}",
                            format_size(lost_at - pos),
                            format_size(lost_at)
                        )
                    })?;
                    check(b, pos)?;
                    tally.intact += lost_at - pos;
                }
                let stop = lost_end.min(end);
                tally.lost[mi] += stop - lost_at.max(pos);
                pos = stop;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "read_mc of {} at {}",
                        format_size(end - pos),
                        format_size(pos)
                    )
                });
            }
        }
    }
    Ok(())
}

/// Checks that `buf`, read from device byte `at`, holds the pattern.
fn check(buf: &[u8], at: u64) -> Result<()> {
    match mismatch(buf, at) {
        None => Ok(()),
        Some(bad) => bail!(
            "byte {bad} (offset {}) does not hold the pattern written there: the error took \
             or changed bytes it should have left alone",
            format_size(bad - bad % PAGE_SIZE)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_round_trips_and_shows_a_wrong_byte() {
        let mut buf = vec![0u8; 2 * PAGE_SIZE as usize];
        fill(&mut buf, 3 * PAGE_SIZE);
        assert_eq!(mismatch(&buf, 3 * PAGE_SIZE), None);
        assert_eq!(mismatch(&buf, 4 * PAGE_SIZE), Some(4 * PAGE_SIZE));
        buf[PAGE_SIZE as usize + 9] ^= 1;
        assert_eq!(mismatch(&buf, 3 * PAGE_SIZE), Some(4 * PAGE_SIZE + 8));
    }

    #[test]
    fn chunks_cover_the_range() {
        assert_eq!(chunk(0, 64 << 20, 0), (0, CHUNK));
        assert_eq!(chunk(4096, 3 * 4096, 0), (4096, 3 * 4096));
        assert_eq!(chunk(0, CHUNK + 4096, 1), (CHUNK, 4096));
    }
}
