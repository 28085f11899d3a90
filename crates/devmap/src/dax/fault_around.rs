//! The handler's side of a caught touch, and fault-around for 4 KiB leaves: a touch of a leaf
//! not yet faulted runs the fault path for a window of neighbouring leaves of the same mapping
//! and maps the window with one ioctl, as the kernel's `do_fault_around` (`mm/memory.c`) maps
//! the page-cache pages around a file fault. The kernel's device-dax does not fault around
//! (each 4 KiB fault is one `__dev_dax_pte_fault`); here every 4 KiB fault is a userfaultfd
//! round trip, two context switches for one page, so mapping the neighbours a sequential
//! toucher is about to reach saves most of them (DESIGN §6.4, §8). Larger leaves fault around
//! only on a device with a zero-ahead pool, and only over leaves the pool has ready, whose
//! pages are in the backing already, as the kernel's are in the page cache
//! ([`DeviceCore::fault_ready_run`]).
//!
//! The window is the aligned block of `size` leaves holding the touched one (aligned on the
//! device offset; the kernel aligns on the user address, for its page table), clamped to the
//! mapping, to the range of the device the touched leaf is in, and to the unfaulted leaves
//! around it. Its size adapts to what the mapping has seen, as readahead reads the page
//! cache's history rather than keeping a stream's: `size` is one leaf for a touch with no
//! faulted leaf beside it, and otherwise twice the run of faulted leaves next to it (either
//! side: touches going down grow it too), rounded up to a power of two, at most
//! `DaxOptions::fault_around` (128 leaves by default; see `DaxOptions::DEFAULT_FAULT_AROUND`
//! for why not the kernel's 64 KiB). A sequential toucher's windows so grow 1, 1, 2, 4, ...,
//! 64, 128, 128; random touches that land next to nothing stay at one leaf; and several
//! threads each touching their own run grow their own windows, which one per-mapping "last
//! fault" would reset at every switch between them.
//!
//! Every leaf of the window goes through the same per-leaf steps as a touch of it
//! ([`DeviceCore::install_leaf`]: sync, `dax_set_mapping`, reference and mapcount, the leaf's
//! bit), all inside one fault section, so memory failure and unmap see the window whole or not
//! at all. Only the ioctl is batched. The touched leaf is installed first; a neighbour another
//! fault counted (its bit set, or a lost race for its entry), one holding a poisoned page (its
//! own touch maps its poison markers) or one whose install fails ends the window there, so the
//! window is the contiguous run this fault counted. If the window's ioctl fails, its neighbours
//! keep their metadata (their next touch maps their entries again, as for any leaf counted and
//! not yet mapped) and the touched leaf is mapped alone, as a fault without fault-around would.

use std::ops::Range;
use std::sync::Arc;

use super::DaxError;
use super::device_core::{Counters, DeviceCore, Faulted, Installed, MappingCore};
use super::spread::Spread;
use crate::addr::PAGE_SIZE;
use crate::backing::Userfaultfd;

impl DeviceCore {
    /// The handler's side of a touch caught on `uffd` at `addr`: finds the mapping of this
    /// device that `uffd` catches and that holds `addr`, and answers the touch
    /// ([`DeviceCore::caught_touch`]). An address no such mapping holds (unmapped meanwhile)
    /// is woken, so the toucher retries.
    pub(super) fn user_fault(&self, uffd: &Arc<Userfaultfd>, addr: u64) {
        // Off a CPU another resolve is using, where a CPU is free (`spread.rs`).
        let _resolving = Spread::process().enter();
        let found = {
            let mappings = self.mappings.lock();
            mappings
                .values()
                .find(|m| {
                    m.uffd.as_ref().is_some_and(|u| Arc::ptr_eq(u, uffd))
                        && (m.base as u64..m.base as u64 + m.len).contains(&addr)
                })
                .map(Arc::clone)
        };
        match found {
            Some(m) => self.caught_touch(&m, addr),
            None => {
                Counters::bump(&self.counters.user_faults);
                let page = self.backing.page_size().bytes();
                let _ = uffd.wake(addr - addr % page, page);
            }
        }
    }

    /// A touch of `m` at `addr` caught on its userfaultfd: runs the fault path for the leaf
    /// around it, with its neighbours where fault-around applies (a 4 KiB align, and windows of
    /// more than one leaf allowed); if that fails (teardown, or the fault cannot be served)
    /// answers SIGBUS by poisoning the touched page, or at least wakes the toucher so it
    /// retries.
    pub(super) fn caught_touch(&self, m: &MappingCore, addr: u64) {
        let started = std::time::Instant::now();
        Counters::bump(&self.counters.user_faults);
        let Some(uffd) = m.uffd.as_deref() else {
            return;
        };
        let page = self.backing.page_size().bytes();
        let at = addr - addr % page;
        let rel = addr - m.base as u64;
        let leaf = rel - rel % self.align.bytes();
        // For the zero-ahead pool: whether the leaf follows one faulted before this touch
        // (looked at first: the fault below sets this leaf's own bit, not its neighbour's).
        let index = rel / self.align.bytes();
        let follows = self.zero_ahead.is_some() && index > 0 && m.bits.test(index - 1);
        let (faulted, upto) = if self.fault_around > 1 {
            (self.fault_around(m, leaf), index + 1)
        } else if self.zero_ahead.is_some() {
            self.fault_ready_run(m, leaf)
        } else {
            (self.fault_leaf(m, leaf, true), index + 1)
        };
        // The pool moves on once the toucher is answered, so that its allocations do not
        // compete with this fault's.
        if let Some(pool) = &self.zero_ahead {
            let first = m.offset / self.align.bytes();
            let end = first + m.len / self.align.bytes();
            pool.touched(first + index, first + upto, end, follows);
        }
        if let Err(e) = faulted {
            tracing::debug!(addr, error = %e, "dax: a caught touch is answered with SIGBUS");
            Counters::bump(&self.counters.sigbus);
            if uffd.poison(at, page).is_err() {
                let _ = uffd.wake(at, page);
            }
        }
        self.counters.resolve.record(started.elapsed());
    }

    /// Faults in the leaf at byte `rel` of `m`, which a touch is waiting for, with the
    /// neighbours of its window (see the module's description), and maps them with one ioctl.
    /// A touched leaf another fault counted, or one holding a poisoned page, is handled as
    /// [`fault_leaf`](Self::fault_leaf) handles it, alone.
    fn fault_around(&self, m: &MappingCore, rel: u64) -> Result<Faulted, DaxError> {
        let leaf = self.align.bytes();
        let index = rel / leaf;
        let section = self.enter_fault(m)?;
        let window = self.window(m, index);
        let installed = self.install_leaf(&section, m, rel, false)?;
        let folio = match installed {
            Installed::Counted(folio) if window.end - window.start > 1 => {
                if folio.poisoned_page().is_some() {
                    return self.finish_leaf(&section, m, rel, true, Installed::Counted(folio));
                }
                folio
            }
            other => return self.finish_leaf(&section, m, rel, true, other),
        };
        let counted = |at: u64| {
            matches!(
                self.install_leaf(&section, m, at * leaf, true),
                Ok(Installed::Counted(_))
            )
        };
        let mut end = index + 1;
        while end < window.end && counted(end) {
            end += 1;
        }
        let mut start = index;
        while start > window.start && counted(start - 1) {
            start -= 1;
        }
        let around = end - start - 1;
        if around == 0 {
            return self.finish_leaf(&section, m, rel, true, Installed::Counted(folio));
        }
        Counters::add(&self.counters.fault_around, around);
        match self.map_window(m, start * leaf, (end - start) * leaf) {
            Ok(()) => Ok(Faulted::Mapped { pfn: folio.pfn() }),
            Err(e) => {
                tracing::debug!(
                    addr = m.base as u64 + rel,
                    leaves = end - start,
                    error = %e,
                    "dax: a fault-around window could not be mapped; mapping the touched leaf alone"
                );
                self.finish_leaf(&section, m, rel, true, Installed::Counted(folio))
            }
        }
    }

    /// Faults in the leaf at byte `rel` of `m`, which a touch is waiting for, on a device with
    /// a zero-ahead pool, with the run of leaves after it that the pool has ready: fault-around
    /// over leaves whose pages are already in the backing, as the kernel's maps the page-cache
    /// pages around a file fault. Returns the fault's outcome and the mapping's leaf index
    /// where the leaves it mapped end.
    ///
    /// The run takes the following leaves of the mapping while the pool has them waiting (and
    /// no fault has claimed them), at most the pool's cap; a leaf another fault counted, one
    /// holding a poisoned page, or one whose install fails ends it. Each gets the per-leaf steps
    /// of a touch of it inside the touched leaf's fault section, is claimed from the pool, and
    /// the run is mapped with one `UFFDIO_CONTINUE` (with the touched leaf when that was ready
    /// too). A sequential toucher then walks through the run without a fault, where each leaf
    /// would otherwise cost a userfaultfd round trip, and its next caught touch is at the
    /// run's end, which the pool prepares meanwhile. If the run cannot be mapped, its leaves
    /// keep their metadata (their touches map their entries, as for any leaf counted and not
    /// yet mapped) and the touched leaf is mapped alone.
    fn fault_ready_run(&self, m: &MappingCore, rel: u64) -> (Result<Faulted, DaxError>, u64) {
        let leaf = self.align.bytes();
        let index = rel / leaf;
        let alone = index + 1;
        let (Some(pool), Some(uffd)) = (&self.zero_ahead, m.uffd.as_deref()) else {
            return (self.fault_leaf(m, rel, true), alone);
        };
        let section = match self.enter_fault(m) {
            Ok(s) => s,
            Err(e) => return (Err(e), alone),
        };
        let folio = match self.install_leaf(&section, m, rel, false) {
            Ok(Installed::Counted(folio)) if folio.poisoned_page().is_none() => folio,
            Ok(other) => return (self.finish_leaf(&section, m, rel, true, other), alone),
            Err(e) => return (Err(e), alone),
        };
        let first = m.offset / leaf;
        let limit = (m.len / leaf).min(alone.saturating_add(pool.cap()));
        let mut end = alone;
        while end < limit
            && pool.waiting(first + end)
            && matches!(
                self.install_leaf(&section, m, end * leaf, true),
                Ok(Installed::Counted(_))
            )
        {
            end += 1;
        }
        let around = end - alone;
        if around == 0 {
            return (
                self.finish_leaf(&section, m, rel, true, Installed::Counted(folio)),
                alone,
            );
        }
        Counters::add(&self.counters.fault_around, around);
        // Claimed whatever happens next, so the pool leaves them alone. One another mapping's
        // fault claimed meanwhile is mapped all the same: its pages are in the backing.
        pool.take_run(first + alone..first + end);
        let mapped = if self.take_ready(m, rel) {
            self.map_ready(uffd, m, rel, (end - index) * leaf)
        } else {
            self.map_run(uffd, m, rel, leaf)
                .and_then(|()| self.map_ready(uffd, m, rel + leaf, around * leaf))
        };
        match mapped {
            Ok(()) => (Ok(Faulted::Mapped { pfn: folio.pfn() }), end),
            Err(e) => {
                tracing::debug!(
                    addr = m.base as u64 + rel,
                    leaves = end - index,
                    error = %e,
                    "dax: leaves ready ahead could not be mapped; mapping the touched leaf alone"
                );
                let alone_result =
                    self.finish_leaf(&section, m, rel, true, Installed::Counted(folio));
                (alone_result, end)
            }
        }
    }

    /// The candidate window of a caught touch of leaf `index` of `m`, in leaf indices of the
    /// mapping: the aligned block of the adaptive size holding it, clamped to the mapping, to
    /// the device range holding the leaf, and to the leaves around it whose bits are clear.
    /// The bits are a hint read without a lock; the installs decide.
    fn window(&self, m: &MappingCore, index: u64) -> Range<u64> {
        let one = index..index + 1;
        let max = self.fault_around;
        let leaf = self.align.bytes();
        let nr_leaves = m.len / leaf;
        let behind = (1..=max.min(index))
            .take_while(|d| m.bits.test(index - d))
            .count() as u64;
        let ahead = (1..=max).take_while(|d| m.bits.test(index + d)).count() as u64;
        let seen = behind.max(ahead);
        if seen == 0 {
            return one;
        }
        let size = seen.saturating_mul(2).next_power_of_two().min(max);
        // Aligned on the device offset, so that the windows of every mapping of the device
        // group the same leaves (`do_fault_around` aligns on the user address, for its page
        // table); the mapping starts on a leaf boundary.
        let first = m.offset / leaf;
        let block = (first + index) & !(size - 1);
        let mut lo = block.saturating_sub(first);
        let mut hi = (block + size - first).min(nr_leaves);
        // The device range the touched leaf lies in: pfns run on only inside one.
        let nr_pages = self.align.nr_pages();
        let map_pgoff = m.offset / PAGE_SIZE;
        let pgoff = map_pgoff + index * nr_pages;
        let Some(r) = self
            .ranges
            .iter()
            .find(|r| (r.pgoff..r.pgoff + r.pfns.len()).contains(&pgoff))
        else {
            return one;
        };
        lo = lo.max(r.pgoff.saturating_sub(map_pgoff) / nr_pages);
        hi = hi.min((r.pgoff + r.pfns.len() - map_pgoff) / nr_pages);
        let mut end = index + 1;
        while end < hi && !m.bits.test(end) {
            end += 1;
        }
        let mut start = index;
        while start > lo && !m.bits.test(start - 1) {
            start -= 1;
        }
        start..end
    }

    /// Maps the `len` bytes from byte `rel` of `m`, a window of leaves this fault counted,
    /// with as few ioctls as it can: one `UFFDIO_ZEROPAGE` for a fresh window. From a page
    /// that already exists in the backing (`EEXIST`: another mapping of these bytes touched
    /// it), the rest is allocated and mapped by `UFFDIO_CONTINUE`, as for one leaf; and a page
    /// whose entry is already mapped here (a touch of it, caught after this fault counted its
    /// leaf, had it mapped alone) is stepped over.
    fn map_window(&self, m: &MappingCore, rel: u64, len: u64) -> Result<(), DaxError> {
        let Some(uffd) = m.uffd.as_deref() else {
            return Ok(());
        };
        let addr = m.base as u64 + rel;
        let mut at = 0;
        while at < len {
            let zeroed = uffd.zeropage(addr + at, len - at)?;
            if !zeroed.raced {
                return Ok(());
            }
            at += zeroed.bytes;
            self.allocate(m.offset + rel + at, len - at)?;
            let mapped = uffd.continue_(addr + at, len - at)?;
            if !mapped.raced {
                return Ok(());
            }
            at += mapped.bytes + PAGE_SIZE;
        }
        Ok(())
    }
}
