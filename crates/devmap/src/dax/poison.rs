//! The device's side of memory failure (`mf_generic_kill_procs` and `unmap_and_kill` for
//! device-dax): revoking a poisoned leaf from every mapping that has it, telling each mapping's
//! owner what it lost, keeping the device's list of bad pages, and clearing poison again.
//!
//! Revocation follows the device's [`Granularity`]. `Leaf` (the kernel's) zaps the leaf's
//! page-table entries in each mapping and drops the mapping's reference on the folio; the next
//! access is caught and the fault path refuses the poisoned leaf, so every page of it raises
//! SIGBUS. `Page` zaps only the poisoned page's entry and puts a `UFFDIO_POISON` marker in its
//! place, so only that page raises SIGBUS and the mapping keeps the rest of the leaf, mapped,
//! with its bytes; a mapping that faults the leaf later gets the same markers from the fault
//! path. A device that does not catch touches (files, `/dev/dax`) is always `Leaf`: the leaf
//! is fenced in each mapping (replaced by a mapping of an empty file, so that a touch raises
//! SIGBUS) and mapped back by `clear_poison`.
//!
//! Faults hold the device's poison lock shared for their whole run, revocation and clearing
//! hold it exclusively (the kernel's `dax_lock_folio`), so a fault either finishes before the
//! poison is flagged and is then revoked, or starts after and sees it.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use super::registry;
use super::shared::{MappingCore, Shared};
use super::{DaxDevice, DaxError, DaxMapping, MappingId};
use crate::addr::{Order, PAGE_SIZE, Pfn};
use crate::folio::FolioRef;
use crate::pgmap::Pgmap;

/// How much of a leaf a 4 KiB memory error takes from the mappings that use it. The default
/// is `Page`, which applies where it can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// The kernel's: the whole leaf the mapping used is lost (a 4 KiB error under a 1 GiB
    /// mapping takes the GiB).
    Leaf,
    /// Only the poisoned 4 KiB pages are lost; the rest of the leaf is mapped again at 4 KiB
    /// and keeps its data. Needs a backing with 4 KiB pages whose touches the device catches
    /// (a memfd); elsewhere `Leaf` applies.
    #[default]
    Page,
}

impl Granularity {
    /// Every granularity.
    pub const ALL: [Granularity; 2] = [Granularity::Page, Granularity::Leaf];

    /// The lower-case name the front ends use.
    pub const fn name(self) -> &'static str {
        match self {
            Granularity::Page => "page",
            Granularity::Leaf => "leaf",
        }
    }
}

crate::units::named_values!(Granularity, "granularity", ["page", "leaf"]);

/// What one mapping's owner is told about one memory error (the kernel's `kill_procs`
/// arguments: the address, how much is lost around it, and whether the error was met by an
/// access).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoisonNotice {
    /// The mapping.
    pub mapping: MappingId,
    /// The poisoned page's pfn.
    pub pfn: Pfn,
    /// The poisoned page's user address in the mapping.
    pub addr: usize,
    /// log2 of the bytes lost around `addr` (`addr_lsb`): 12 in `Page` mode, the leaf's
    /// shift (21, 30) in `Leaf` mode.
    pub shift: u32,
    /// Whether an access met the error (`MF_ACTION_REQUIRED`), as opposed to a scrub finding
    /// it.
    pub action_required: bool,
}

impl PoisonNotice {
    /// Bytes lost: `1 << shift`.
    pub fn len(&self) -> u64 {
        1 << self.shift
    }

    /// Never true.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An owner's callback, given each notice for its mapping.
pub type OwnerFn = dyn Fn(&PoisonNotice) + Send + Sync;

/// Told the device's whole badblocks list, as [`DaxDevice::badblocks`] gives it, each time it
/// changes: how a namespace keeps its list on disk as errors arrive.
pub(crate) type BadblocksFn = dyn Fn(&[(u64, u64)]) + Send + Sync;

/// Where a device's badblocks list goes as it changes; calls are serialised, and each is
/// given the list as it is when the call starts, so the last call made has the newest list.
#[derive(Default)]
pub(super) struct BadblocksSink(Mutex<Option<Arc<BadblocksFn>>>);

impl BadblocksSink {
    /// Tells the sink, if there is one, `shared`'s list as it is now.
    fn tell(&self, shared: &Shared) {
        let sink = self.0.lock();
        if let Some(f) = sink.as_ref() {
            f(&merge(&shared.badblocks.lock()));
        }
    }
}

impl std::fmt::Debug for BadblocksSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BadblocksSink({})",
            if self.0.lock().is_some() {
                "set"
            } else {
                "none"
            }
        )
    }
}

/// The device's poison lock (the kernel's `dax_lock_folio`): faults run inside a shared
/// section, revoking and clearing poison inside an exclusive one. A page is flagged poisoned
/// before the exclusive section that revokes it, so a fault's shared section either ends
/// before that section (and the fault's mapping is revoked by it) or starts after it (and sees
/// the flag). `loom_tests` checks both orders.
#[derive(Debug, Default)]
pub(super) struct PoisonLock(crate::primitive::RwLock<()>);

impl PoisonLock {
    /// A fault's section.
    pub(super) fn shared(&self) -> crate::primitive::RwLockReadGuard<'_, ()> {
        crate::primitive::read(&self.0)
    }

    /// A revocation's or a clearing's section.
    pub(super) fn exclusive(&self) -> crate::primitive::RwLockWriteGuard<'_, ()> {
        crate::primitive::write(&self.0)
    }
}

/// A mapping's owner, if one was named.
#[derive(Default)]
pub(super) struct OwnerSlot(Mutex<Option<Arc<OwnerFn>>>);

impl OwnerSlot {
    pub(super) fn set(&self, owner: Arc<OwnerFn>) {
        *self.0.lock() = Some(owner);
    }

    fn get(&self) -> Option<Arc<OwnerFn>> {
        self.0.lock().clone()
    }
}

impl std::fmt::Debug for OwnerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OwnerSlot({})",
            if self.0.lock().is_some() {
                "set"
            } else {
                "none"
            }
        )
    }
}

/// The generic memory-failure path for a device-dax pfn (the caller has flagged the page):
/// revokes the leaf from every mapping of the device that has it and tells their owners.
/// The device is the one whose address space the folio's `mapping` names, or, for a folio
/// no mapping ever named, the one whose pgmap holds it (so its bad pages still record the
/// error). `None` if no device-dax device owns the pgmap (a bare pgmap has no mappings).
pub(crate) fn revoke(
    pgmap: &Pgmap,
    pfn: Pfn,
    folio_mapping: u64,
    action_required: bool,
) -> Option<Vec<PoisonNotice>> {
    let device = registry::device_by_address_space(folio_mapping)
        .filter(|d| std::ptr::eq(Arc::as_ptr(&d.pgmap), pgmap))
        .or_else(|| registry::device_by_pgmap(pgmap))?;
    Some(device.revoke(pfn, action_required))
}

impl Shared {
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

    /// Revokes the leaf holding `pfn` from every mapping that has it faulted, records the bad
    /// page, and tells the owners (after every revocation, outside every lock).
    fn revoke(&self, pfn: Pfn, action_required: bool) -> Vec<PoisonNotice> {
        let Some(pgoff) = self.pfn_to_pgoff(pfn) else {
            return Vec::new();
        };
        let leaf_pages = self.align.nr_pages();
        let leaf_pgoff = pgoff - pgoff % leaf_pages;
        let granularity = self.effective_granularity();
        let shift = match granularity {
            Granularity::Page => Order::BASE.get() + 12,
            Granularity::Leaf => self.align.get() + 12,
        };
        let mappings: Vec<Arc<MappingCore>> = self.mappings.lock().values().cloned().collect();
        let mut told: Vec<(PoisonNotice, Option<Arc<OwnerFn>>)> = Vec::new();
        let mut released = Vec::new();
        let new;
        {
            let _exclusive = self.poison_lock.exclusive();
            new = self.badblocks.lock().insert(pgoff);
            for m in &mappings {
                let live = m.live.read();
                if !*live {
                    continue;
                }
                let leaf_byte = leaf_pgoff * PAGE_SIZE;
                if leaf_byte < m.offset || leaf_byte >= m.offset + m.len {
                    continue;
                }
                let rel = leaf_byte - m.offset;
                match granularity {
                    Granularity::Leaf => {
                        let Some(fm) = m.leaves.lock().remove(&leaf_pgoff) else {
                            continue;
                        };
                        m.bits.clear(rel / self.align.bytes());
                        // Caught: zapped, the next touch is refused by the fault path. Not
                        // caught: fenced, so that a touch raises SIGBUS rather than reach the
                        // bytes again. Neither fails for a range inside the mapping.
                        let _ = if m.caught {
                            m.window.discard(rel, self.align.bytes())
                        } else {
                            m.window.fence(rel, self.align.bytes())
                        };
                        released.push(fm);
                    }
                    Granularity::Page => {
                        if !m.leaves.lock().contains_key(&leaf_pgoff) {
                            continue;
                        }
                        // Only the poisoned page goes: its entry is zapped and replaced by a
                        // poison marker; the mapping keeps the leaf and its other pages.
                        let page = pgoff * PAGE_SIZE - m.offset;
                        let _ = m.window.discard(page, PAGE_SIZE);
                        if let Some(uffd) = &self.uffd {
                            let _ = uffd.poison(m.base as u64 + page, PAGE_SIZE);
                        }
                    }
                }
                let notice = PoisonNotice {
                    mapping: m.id,
                    pfn,
                    addr: m.base + (pgoff * PAGE_SIZE - m.offset) as usize,
                    shift,
                    action_required,
                };
                told.push((notice, m.owner.get()));
            }
        }
        drop(released);
        if new {
            self.badblocks_sink.tell(self);
        }
        let mut notices = Vec::with_capacity(told.len());
        for (notice, owner) in told {
            if let Some(owner) = owner {
                owner(&notice);
            }
            notices.push(notice);
        }
        notices
    }
}

impl DaxDevice {
    /// The device's bad pages as (byte offset, length) ranges, merged, in order (a badblocks
    /// list): every page memory failure reported and `clear_poison` has not cleared.
    pub fn badblocks(&self) -> Vec<(u64, u64)> {
        merge(&self.shared.badblocks.lock())
    }

    /// The granularity memory errors on this device are handled at.
    pub fn granularity(&self) -> Granularity {
        self.shared.effective_granularity()
    }

    /// Clears the poison of `[offset, offset + len)` once its owner has rewritten or discarded
    /// the bytes (`ndctl clear-errors`): the pages' hwpoison flags, their entries in the
    /// badblocks list, and every mapping's entries for the leaves holding them (poison markers
    /// included), so the next touch maps them again. `offset` and `len` must be multiples of
    /// 4 KiB inside the device. Returns how many pages were poisoned.
    pub fn clear_poison(&self, offset: u64, len: u64) -> Result<u64, DaxError> {
        let shared = &self.shared;
        if len == 0 {
            return Err(DaxError::EmptyRange {
                what: "poison clear",
                unit: "byte",
            });
        }
        if !offset.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(DaxError::ClearUnaligned { offset, len });
        }
        if offset.checked_add(len).is_none_or(|end| end > shared.size) {
            return Err(DaxError::OutOfRange {
                offset,
                len,
                size: shared.size,
            });
        }
        let leaf = shared.align.bytes();
        let mappings: Vec<Arc<MappingCore>> = shared.mappings.lock().values().cloned().collect();
        let _exclusive = shared.poison_lock.exclusive();
        let mut cleared = 0;
        let mut leaves = BTreeSet::new();
        for pgoff in offset / PAGE_SIZE..(offset + len) / PAGE_SIZE {
            let Some(pfn) = shared.pgoff_to_pfn(pgoff, 1) else {
                continue;
            };
            if shared.pgmap.unpoison_subpage(pfn)? {
                cleared += 1;
                leaves.insert(pgoff * PAGE_SIZE / leaf * leaf);
            }
            shared.badblocks.lock().remove(&pgoff);
        }
        for m in &mappings {
            let live = m.live.read();
            if !*live {
                continue;
            }
            for &at in leaves.range(m.offset..m.offset + m.len) {
                let _ = if m.caught {
                    m.window.discard(at - m.offset, leaf)
                } else {
                    m.window.unfence(&shared.backing, at - m.offset, leaf)
                };
            }
        }
        drop(_exclusive);
        shared.badblocks_sink.tell(shared);
        Ok(cleared)
    }

    /// Has `sink` told the device's whole badblocks list each time it changes (a page
    /// reported, pages cleared), after the change and outside the poison lock.
    pub(crate) fn set_badblocks_sink(&self, sink: Arc<BadblocksFn>) {
        *self.shared.badblocks_sink.0.lock() = Some(sink);
    }
}

/// Page offsets as merged (byte offset, length) ranges.
fn merge(pages: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((start, len)) if *start + *len == p * PAGE_SIZE => *len += PAGE_SIZE,
            _ => out.push((p * PAGE_SIZE, PAGE_SIZE)),
        }
    }
    out
}

impl DaxMapping {
    /// Copies `buf.len()` bytes at `offset` of the mapping into `buf`, or refuses with
    /// [`DaxError::MemoryLost`] if any of them is lost to a memory error (a poisoned page at
    /// `Page` granularity, any page of a poisoned leaf at `Leaf`), copying nothing: a read that
    /// cannot die of SIGBUS, as the kernel's `copy_mc` reads of pmem report a short copy
    /// instead of a machine check.
    ///
    /// The check and the copy run under the device's poison lock, shared, so no error is
    /// revoked between them; the leaves are faulted in first. An error the hardware raises on
    /// bytes not yet reported (no `memory_failure` for them) is not something a userspace copy
    /// can recover from.
    pub fn read_mc(&self, offset: u64, buf: &mut [u8]) -> Result<(), DaxError> {
        let len = buf.len() as u64;
        let rel = self.rel(
            self.addr().saturating_add(offset as usize),
            len.max(1),
            "read",
        )?;
        let shared = &self.shared;
        let leaf = shared.align.bytes();
        let (first, end) = (rel / leaf, (rel + len.max(1)).div_ceil(leaf));
        loop {
            // Fault in (outside the lock) every leaf not yet faulted; a poisoned leaf at
            // `Leaf` granularity refuses, which is the answer.
            let mut from = first;
            while let Some(hole) = self.core.bits.first_clear(from, end) {
                match shared.fault_leaf(&self.core, hole * leaf, false) {
                    Ok(_) => {}
                    Err(DaxError::Poisoned { .. }) => {
                        return Err(DaxError::MemoryLost {
                            addr: self.addr() + (hole * leaf) as usize,
                            len: leaf,
                        });
                    }
                    Err(e) => return Err(e),
                }
                from = hole + 1;
            }
            let _shared = shared.poison_lock.shared();
            if self.core.bits.first_clear(first, end).is_some() {
                continue; // revoked since: fault it in again
            }
            // What is lost: a poisoned page at `Page` granularity, a leaf holding one at
            // `Leaf` (reported but not yet revoked, if the revocation waits for this lock).
            let unit = match shared.effective_granularity() {
                Granularity::Page => PAGE_SIZE,
                Granularity::Leaf => leaf,
            };
            let at = self.offset() + rel;
            let unit_first = at / unit;
            let unit_end = (at + len.max(1)).div_ceil(unit);
            for u in unit_first..unit_end {
                let Some(pfn) = shared.pgoff_to_pfn(u * unit / PAGE_SIZE, 1) else {
                    continue;
                };
                let lost = if unit == PAGE_SIZE {
                    shared.pgmap.subpage_poisoned(pfn)?
                } else {
                    shared.pgmap.folio_poisoned_page(pfn)?.is_some()
                };
                if lost {
                    return Err(DaxError::MemoryLost {
                        addr: self.addr() + (u * unit - self.offset()) as usize,
                        len: unit,
                    });
                }
            }
            return Ok(self.core.window.read(rel, buf)?);
        }
    }
}

/// The poison lock against a fault: whatever the interleaving, a leaf is never left mapped
/// once its page is flagged and the revocation has run.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::PoisonLock;
    use crate::primitive::{AtomicBool, Ordering};
    use loom::sync::Arc;

    #[test]
    fn loom_poison_lock_no_mapping_of_a_poisoned_leaf_survives() {
        loom::model(|| {
            let lock = Arc::new(PoisonLock::default());
            let poisoned = Arc::new(AtomicBool::new(false));
            let mapped = Arc::new(AtomicBool::new(false));
            let fault = {
                let (lock, poisoned, mapped) = (
                    Arc::clone(&lock),
                    Arc::clone(&poisoned),
                    Arc::clone(&mapped),
                );
                loom::thread::spawn(move || {
                    let _shared = lock.shared();
                    // The fault path's poison check, then its insert.
                    if !poisoned.load(Ordering::Relaxed) {
                        mapped.store(true, Ordering::Relaxed);
                    }
                })
            };
            // memory_failure: the flag (a Relaxed descriptor write), then the revocation.
            poisoned.store(true, Ordering::Relaxed);
            {
                let _exclusive = lock.exclusive();
                mapped.store(false, Ordering::Relaxed);
            }
            fault.join().expect("fault");
            assert!(
                !mapped.load(Ordering::Relaxed),
                "a poisoned leaf stayed mapped"
            );
        });
    }
}
