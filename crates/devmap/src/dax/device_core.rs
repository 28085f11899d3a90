//! The device core ([`DeviceCore`], the kernel's `struct dev_dax`) that a device handle, its
//! mappings and its fault handler hold: the range table (`dax_pgoff_to_phys`), the registry of
//! mappings with their faulted leaves (the `i_mmap` of the device's address space), the
//! liveness gate, the device's userfaultfd, and the fault path itself, after
//! `__dev_dax_{pte,pmd,pud}_fault`.
//!
//! One fault, in the kernel's order: enter the gate (`dax_read_lock` + `dax_alive`), find the
//! leaf's pfns in one range, look the leaf's folio up once (a `FolioRef`: its descriptors
//! synced, during async init only its own sub-ranges), and through that cursor check poison,
//! `dax_set_mapping`, take the mapping's reference and mapcount ([`DeviceCore::install_leaf`]),
//! and only then insert the page-table entries ([`DeviceCore::finish_leaf`]): where the
//! mapping is registered with the device's userfaultfd, map the whole leaf with one
//! `UFFDIO_ZEROPAGE` (a fresh shmem leaf) or allocate its bytes in the backing and map it with
//! one `UFFDIO_CONTINUE` (at once, for a leaf the zero-ahead pool of `zero_ahead.rs` had
//! ready); `entries.rs` has those steps. The leaf's bit in the mapping is set once its
//! metadata and reference are in place and before its entries are mapped (mapping them wakes
//! the toucher), so a pin by address that sees the bit finds the metadata complete; a touch
//! that still finds no entry is caught and mapped again. The handler's side of a caught touch, and fault-around, which
//! installs a window of leaves this way and maps them with one ioctl, are in `fault_around.rs`.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::gate::{Gate, Inside};
use super::latency::LatencyHistogram;
use super::leaves::LeafBits;
use super::pin_view::{PinLedger, PinView};
use super::poison::{BadblocksSink, Granularity, OwnerSlot, PoisonLock};
use super::zero_ahead::ZeroAhead;
use super::{DaxError, MappingId};
use crate::addr::{Order, PAGE_SIZE, Pfn, PfnRange};
use crate::backing::{Backing, Mmap, Userfaultfd};
use crate::folio::{FolioRef, MappedFolio};
use crate::pgmap::{Pgmap, PgmapRef};

/// One entry of the range table: `pfns` hold the device's bytes from page offset `pgoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DaxRange {
    pub(super) pfns: PfnRange,
    pub(super) pgoff: u64,
}

/// `dax_pgoff_to_phys` over a range table: the first pfn of `nr_pages` pages at device page
/// offset `pgoff`, if they all lie in one range.
pub(super) fn pgoff_to_pfn(ranges: &[DaxRange], pgoff: u64, nr_pages: u64) -> Option<Pfn> {
    ranges.iter().find_map(|r| {
        let rel = pgoff.checked_sub(r.pgoff)?;
        (rel.checked_add(nr_pages)? <= r.pfns.len()).then(|| r.pfns.start().add(rel))
    })
}

/// What faults did on one device, counted since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Touches caught by the device's userfaultfd and handled by its handler thread.
    pub user_faults: u64,
    /// Leaves faulted in (metadata set, references taken, entries mapped), by any path.
    pub leaves_mapped: u64,
    /// Faults of a leaf another fault of the same mapping had just mapped.
    pub raced: u64,
    /// Touches answered with SIGBUS: the device was being torn down, or the fault failed.
    pub sigbus: u64,
    /// Leaves faulted in by fault-around: neighbours of a caught touch's leaf, mapped with it
    /// (counted in `leaves_mapped` too). At 4 KiB its window; with a zero-ahead pool, the
    /// ready leaves after it.
    pub fault_around: u64,
    /// How long the handler took to resolve a caught touch, from reading its event to the
    /// last ioctl: the median, within 12.5% (0 before the first).
    pub resolve_p50_ns: u64,
    /// The same, 99th percentile.
    pub resolve_p99_ns: u64,
    /// Leaves the zero-ahead pool allocated, zeroed, before their touch
    /// ([`DaxOptions::zero_ahead`](super::DaxOptions::zero_ahead)).
    pub zeroed_ahead: u64,
    /// Leaves a fault took ready from the pool, mapped with one `UFFDIO_CONTINUE`: a caught
    /// touch's own leaf, or one mapped after it.
    pub zero_ahead_hits: u64,
    /// Leaves the pool could not allocate ahead (no huge page or memory left); their touches
    /// allocate them as without the pool.
    pub zero_ahead_failed: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) user_faults: AtomicU64,
    pub(super) leaves_mapped: AtomicU64,
    pub(super) raced: AtomicU64,
    pub(super) sigbus: AtomicU64,
    pub(super) fault_around: AtomicU64,
    pub(super) resolve: LatencyHistogram,
}

impl Counters {
    pub(super) fn bump(c: &AtomicU64) {
        Self::add(c, 1);
    }

    pub(super) fn add(c: &AtomicU64, n: u64) {
        // Relaxed: statistics, ordered with nothing.
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, pool: Option<&ZeroAhead>) -> FaultStats {
        let pool = pool.map(ZeroAhead::stats).unwrap_or_default();
        FaultStats {
            user_faults: self.user_faults.load(Ordering::Relaxed),
            leaves_mapped: self.leaves_mapped.load(Ordering::Relaxed),
            raced: self.raced.load(Ordering::Relaxed),
            sigbus: self.sigbus.load(Ordering::Relaxed),
            fault_around: self.fault_around.load(Ordering::Relaxed),
            resolve_p50_ns: self.resolve.quantile(0.5),
            resolve_p99_ns: self.resolve.quantile(0.99),
            zeroed_ahead: pool.zeroed,
            zero_ahead_hits: pool.taken,
            zero_ahead_failed: pool.failed,
        }
    }
}

/// One mapping as the device knows it.
#[derive(Debug)]
pub(super) struct MappingCore {
    pub(super) id: MappingId,
    /// Device offset of the first byte.
    pub(super) offset: u64,
    /// User address of the first byte.
    pub(super) base: usize,
    pub(super) len: u64,
    /// False once the mapping is being unmapped: faults hold the read side while they run,
    /// the unmap takes the write side, so no fault inserts into a window after it is gone.
    pub(super) live: RwLock<bool>,
    /// The faulted leaves by device page offset, each holding its reference and mapcount.
    pub(super) leaves: Mutex<BTreeMap<u64, MappedFolio>>,
    /// The same leaves by index in the mapping, for lock-free checks.
    pub(super) bits: LeafBits,
    /// The userfaultfd this mapping's touches are caught on: the device's own for a mapping
    /// in this process, the client's for a mapping in a client; none where they are not caught.
    pub(super) uffd: Option<Arc<Userfaultfd>>,
    /// Who is told when memory under this mapping fails.
    pub(super) owner: OwnerSlot,
    /// The window's entry in the lock-free address table; declared before the window so that
    /// it leaves the table before the unmap.
    pub(super) _listed: Option<super::ranges::Registered>,
    /// Where the bytes are mapped. A window in this process is unmapped when the last holder
    /// of the mapping lets go: its `DaxMapping`, or a handler or memory failure finishing with
    /// it (they hold it only while they work in it, and see it unmapping at once).
    pub(super) window: Window,
    /// The pgmap liveness reference of an open VMA; goes with the window.
    pub(super) _live: PgmapRef,
    /// What a client mapping shares with its client for fast pins (none in this process).
    pub(super) fast: Option<FastPinFiles>,
}

/// A client mapping's [`PinView`] and [`PinLedger`].
#[derive(Debug)]
pub(super) struct FastPinFiles {
    pub(super) view: PinView,
    pub(super) ledger: PinLedger,
}

/// Where a mapping's bytes are mapped.
#[derive(Debug)]
pub(super) enum Window {
    /// In this process, by the device (`DaxDevice::mmap`); the `DaxMapping` holds it too.
    Local(Arc<Mmap>),
    /// In the client process `pid`, which mapped the backing itself (`ClientMapping`): the
    /// device sets up the metadata and resolves caught touches, but cannot zap, fence or read
    /// the client's entries.
    Client {
        /// The client's process id.
        pid: u32,
    },
}

impl Window {
    /// The window, if it is in this process.
    pub(super) fn local(&self) -> Option<&Mmap> {
        match self {
            Window::Local(m) => Some(m),
            Window::Client { .. } => None,
        }
    }
}

/// What one fault did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faulted {
    /// The leaf at `pfn` (its head) is now mapped here.
    Mapped {
        /// The leaf's first pfn.
        pfn: Pfn,
    },
    /// The leaf was mapped here already; nothing changed.
    AlreadyMapped {
        /// The leaf's first pfn.
        pfn: Pfn,
    },
}

/// Step 1 of a fault, held until it is done: inside the device's gate, its poison lock shared,
/// the mapping's read lock (so an unmap cannot pull the window from under the fault). Released
/// in the reverse order.
pub(super) struct FaultSection<'a> {
    _live: RwLockReadGuard<'a, bool>,
    _poison: crate::primitive::RwLockReadGuard<'a, ()>,
    _inside: Inside<'a>,
}

/// What steps 2 to 5 of a fault did for one leaf ([`DeviceCore::install_leaf`]).
pub(super) enum Installed<'p> {
    /// This fault counted the leaf: metadata, reference, mapcount and bit are in place; its
    /// entries are not mapped yet.
    Counted(FolioRef<'p>),
    /// The leaf's bit was set: another fault counted it before this one looked.
    Faulted(Pfn),
    /// Another fault of this mapping counted the leaf between this one's look and its
    /// insert; this fault's reference was given back.
    Raced(FolioRef<'p>),
}

/// The device itself, which its handle, its mappings and its handler threads hold (the
/// kernel's `struct dev_dax`).
#[derive(Debug)]
pub(super) struct DeviceCore {
    pub(super) pgmap: Arc<Pgmap>,
    pub(super) backing: Backing,
    pub(super) align: Order,
    /// The id written into `folio->mapping`: the device's address space.
    pub(super) address_space: u64,
    pub(super) ranges: Vec<DaxRange>,
    pub(super) size: u64,
    pub(super) next_mapping: AtomicU64,
    pub(super) mappings: Mutex<BTreeMap<MappingId, Arc<MappingCore>>>,
    pub(super) gate: Gate,
    /// The device's own userfaultfd, which its mappings in this process are registered with.
    pub(super) uffd: Option<Arc<Userfaultfd>>,
    pub(super) counters: Counters,
    /// What a memory error takes (asked for; see `effective_granularity`).
    pub(super) granularity: Granularity,
    /// Whether a mapping of a device that does not catch touches faults in the metadata of
    /// all its leaves when it is made (`DaxOptions::populate_on_map`).
    pub(super) populate_on_map: bool,
    /// Page offsets of the device's poisoned pages.
    pub(super) badblocks: Mutex<BTreeSet<u64>>,
    /// Read by faults, written when revoking and clearing poison (`dax_lock_folio`).
    /// Taken before a mapping's `live` lock.
    pub(super) poison_lock: PoisonLock,
    /// The leaves (by device leaf index) whose folio's `mapping` this device set: what a
    /// clean disable clears so that a memmap kept on the device is left as init wrote it.
    pub(super) named: LeafBits,
    /// Told the badblocks list as it changes.
    pub(super) badblocks_sink: BadblocksSink,
    /// The most leaves a caught touch of a 4 KiB leaf faults in at once
    /// (`DaxOptions::fault_around`; 1 where the align is larger, or turned off).
    pub(super) fault_around: u64,
    /// The whole backing mapped in this process, registered with no userfaultfd and
    /// reserving nothing (`Backing::map_unreserved`): where the device allocates the bytes of
    /// a hugetlb leaf before mapping it, and the zero-ahead pool allocates its leaves. Only
    /// where touches are caught on hugetlb or the pool is on. Like the kernel's direct map of
    /// device memory, it keeps the entries it allocated through until the device goes (or a
    /// hole punch of the backing zaps them): dropping each one again (`MADV_DONTNEED`)
    /// flushed the TLB of every core running the touchers, which share this process's page
    /// tables, at every fault. Nothing reads or writes bytes through it: its faults allocate,
    /// and a page that exists is left as it is.
    pub(super) side: Option<Mmap>,
    /// The leaves zeroed ahead of their touch, if `DaxOptions::zero_ahead` asked for them.
    pub(super) zero_ahead: Option<ZeroAhead>,
}

impl DeviceCore {
    /// Lists a new mapping in the registry, and has the zero-ahead pool expect its first
    /// touches at its start.
    pub(super) fn add_mapping(&self, core: &Arc<MappingCore>) {
        self.mappings.lock().insert(core.id, Arc::clone(core));
        if let Some(pool) = &self.zero_ahead {
            let leaf = self.align.bytes();
            pool.mapped(core.offset / leaf, (core.offset + core.len) / leaf);
        }
    }

    /// The granularity faults of this device apply: `Page` only where it can be honoured.
    pub(super) fn effective_granularity(&self) -> Granularity {
        if self.granularity == Granularity::Page
            && self.uffd.is_some()
            && self.backing.page_size() == Order::BASE
        {
            Granularity::Page
        } else {
            Granularity::Leaf
        }
    }

    /// The poisoned pages of the leaf `folio` starts at (a fault's cursor), in order.
    pub(super) fn poisoned_in_leaf(&self, folio: &FolioRef<'_>) -> Result<Vec<Pfn>, DaxError> {
        let head = folio.pfn();
        let mut bad = Vec::new();
        for i in 0..self.align.nr_pages() {
            let pfn = head.add(i);
            if folio.subpage_poisoned(pfn)? {
                bad.push(pfn);
            }
        }
        Ok(bad)
    }

    /// Unmaps `m` as the device sees it: out of the registry first (rmap and the handlers stop
    /// finding it), then waits for faults running in it and refuses new ones, then releases
    /// its leaves outside every lock (device-dax folios return to their idle count of 1).
    pub(super) fn unmap(&self, m: &MappingCore) {
        // First, so that the client's fast pins fail from now on.
        if let Some(f) = &m.fast {
            f.ledger.revoke();
        }
        self.mappings.lock().remove(&m.id);
        *m.live.write() = false;
        let leaves = std::mem::take(&mut *m.leaves.lock());
        drop(leaves);
    }

    /// `check_vma`'s rules for a mapping of `len` device bytes from `offset`: both multiples
    /// of the align, not empty, inside the device.
    pub(super) fn check_window(&self, offset: u64, len: u64) -> Result<(), DaxError> {
        let align = self.align;
        if len == 0 {
            return Err(DaxError::Empty);
        }
        for (what, value) in [("offset", offset), ("length", len)] {
            if !value.is_multiple_of(align.bytes()) {
                return Err(DaxError::Unaligned { what, value, align });
            }
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(DaxError::OutOfRange {
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    /// `dax_pgoff_to_phys` for this device.
    pub(super) fn pgoff_to_pfn(&self, pgoff: u64, nr_pages: u64) -> Option<Pfn> {
        pgoff_to_pfn(&self.ranges, pgoff, nr_pages)
    }

    /// The pfns of the `nr_pages` pages from device page offset `pgoff`, as runs of one range
    /// each, in order, each with its first page's index from `pgoff`.
    pub(super) fn pfn_runs(
        &self,
        pgoff: u64,
        nr_pages: u64,
    ) -> impl Iterator<Item = (u64, PfnRange)> + '_ {
        let end = pgoff + nr_pages;
        self.ranges.iter().filter_map(move |r| {
            let lo = pgoff.max(r.pgoff);
            let hi = end.min(r.pgoff + r.pfns.len());
            (lo < hi).then(|| {
                let first = r.pfns.start().add(lo - r.pgoff);
                (
                    lo - pgoff,
                    PfnRange::new_unchecked(first, first.add(hi - lo)),
                )
            })
        })
    }

    /// The device page offset of `pfn`, if the device holds it.
    pub(super) fn pfn_to_pgoff(&self, pfn: Pfn) -> Option<u64> {
        self.ranges
            .iter()
            .find(|r| r.pfns.contains(pfn))
            .map(|r| r.pgoff + pfn.offset_from(r.pfns.start()))
    }

    /// Faults in the leaf at byte `rel` of mapping `m` (a multiple of the align). A leaf
    /// already faulted in is left alone, unless `remap` asks for its entries to be mapped
    /// again (a touch caught after another fault set them up, or after they were zapped).
    pub(super) fn fault_leaf(
        &self,
        m: &MappingCore,
        rel: u64,
        remap: bool,
    ) -> Result<Faulted, DaxError> {
        let section = self.enter_fault(m)?;
        let installed = self.install_leaf(&section, m, rel, false)?;
        self.finish_leaf(&section, m, rel, remap, installed)
    }

    /// Step 1 of a fault in `m`: enters the device's gate, then its poison lock (shared), then
    /// the mapping's read lock; refuses a torn-down device and a mapping being unmapped. The
    /// section lasts until the fault is done.
    pub(super) fn enter_fault<'a>(
        &'a self,
        m: &'a MappingCore,
    ) -> Result<FaultSection<'a>, DaxError> {
        let inside = self.gate.enter().ok_or(DaxError::TornDown)?;
        let poison = self.poison_lock.read();
        let live = m.live.read();
        if !*live {
            return Err(DaxError::Unmapped { id: m.id });
        }
        Ok(FaultSection {
            _live: live,
            _poison: poison,
            _inside: inside,
        })
    }

    /// Steps 2 to 5 for the leaf at byte `rel` of `m`, inside a fault's section: its pfns, the
    /// one lookup, the poison check, `dax_set_mapping`, the reference and mapcount, the leaf's
    /// bit; its entries are not mapped yet. A leaf holding a poisoned page is refused at `Leaf`
    /// granularity, and at any granularity if `refuse_poison` (a neighbour a fault-around
    /// window would take: its own touch maps its poison markers).
    pub(super) fn install_leaf(
        &self,
        _section: &FaultSection<'_>,
        m: &MappingCore,
        rel: u64,
        refuse_poison: bool,
    ) -> Result<Installed<'_>, DaxError> {
        let align = self.align;
        let leaf_offset = m.offset + rel;
        let pgoff = leaf_offset / PAGE_SIZE;
        let index = rel / align.bytes();
        let nr_pages = align.nr_pages();
        let pfn = self
            .pgoff_to_pfn(pgoff, nr_pages)
            .ok_or(DaxError::LeafStraddles {
                offset: leaf_offset,
            })?;
        let pgmap = &self.pgmap;
        if m.bits.test(index) {
            return Ok(Installed::Faulted(pfn));
        }
        // The one lookup of this fault: syncs the leaf's descriptors (during async init, only
        // its own sub-ranges) and finds its folio; everything below goes through the cursor.
        let folio = FolioRef::block(pgmap, pfn, align)?;
        if let Some(bad) = folio.poisoned_page()
            && (refuse_poison || self.effective_granularity() == Granularity::Leaf)
        {
            return Err(DaxError::Poisoned { pfn: bad });
        }
        if folio.set_mapping(self.address_space, pgoff) {
            self.named.set(pgoff / nr_pages);
        }
        let mapped = folio.map(pgmap.live_folio_ref()?, align)?;
        let extra = {
            let mut leaves = m.leaves.lock();
            match leaves.entry(pgoff) {
                Entry::Vacant(e) => {
                    e.insert(mapped);
                    None
                }
                Entry::Occupied(_) => Some(mapped),
            }
        };
        if let Some(extra) = extra {
            // Another fault of this mapping counted the leaf first: give this reference back,
            // outside the lock.
            drop(extra);
            Counters::bump(&self.counters.raced);
            return Ok(Installed::Raced(folio));
        }
        // Counted before the entries are mapped: mapping them wakes the toucher, which may
        // look at the leaf's state at once.
        m.bits.set(index);
        // The same for a client's fast pins, so that a pin right after the touch returns finds
        // it. The poison lock's read side is held: no error can land between this check and
        // the bit, and a later one clears it (revoke.rs).
        let fast = m.fast.as_ref().filter(|_| folio.poisoned_page().is_none());
        if let Some(f) = fast {
            f.view.set(index);
        }
        Counters::bump(&self.counters.leaves_mapped);
        Ok(Installed::Counted(folio))
    }

    /// Step 6 for the leaf at byte `rel` of `m` after [`install_leaf`](Self::install_leaf):
    /// maps the entries of a leaf this fault counted (undoing its bit and reference if that
    /// fails), and of one another fault counted first if the fault lost a race for it or
    /// `remap` asks (the toucher waits for them).
    pub(super) fn finish_leaf(
        &self,
        _section: &FaultSection<'_>,
        m: &MappingCore,
        rel: u64,
        remap: bool,
        installed: Installed<'_>,
    ) -> Result<Faulted, DaxError> {
        match installed {
            Installed::Faulted(pfn) => {
                if remap {
                    self.map_entries(m, rel, &FolioRef::block(&self.pgmap, pfn, self.align)?)?;
                }
                Ok(Faulted::AlreadyMapped { pfn })
            }
            Installed::Raced(folio) => {
                // Make sure the entries are there before answering.
                self.map_entries(m, rel, &folio)?;
                Ok(Faulted::AlreadyMapped { pfn: folio.pfn() })
            }
            Installed::Counted(folio) => {
                if let Err(e) = self.map_entries(m, rel, &folio) {
                    m.bits.clear(rel / self.align.bytes());
                    if let Some(f) = &m.fast {
                        f.view.clear(rel / self.align.bytes());
                    }
                    let undo = m.leaves.lock().remove(&((m.offset + rel) / PAGE_SIZE));
                    drop(undo);
                    return Err(e);
                }
                Ok(Faulted::Mapped { pfn: folio.pfn() })
            }
        }
    }
}
