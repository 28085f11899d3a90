//! The device's side of memory failure under its poison lock, held exclusively: revoking a
//! poisoned leaf from every mapping that has it (`mf_generic_kill_procs`, `unmap_and_kill`),
//! telling the owners `kill_proc` would signal ([`Recipients`]), and clearing poison again
//! (`ndctl clear-errors`). Both record the change in the device's bad pages and tell its
//! badblocks sink, outside the lock. How much a mapping loses follows the device's
//! [`Granularity`] (poison.rs).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::device_core::{DeviceCore, MappingCore};
use super::poison::{Granularity, OwnerFn, PoisonNotice};
use super::{DaxError, MappingId, registry};
use crate::addr::{Order, PAGE_SIZE, Pfn};
use crate::backing::{BackingError, Detached, Mmap};
use crate::pgmap::Pgmap;

/// Who is told of an error, as the kernel's `collect_procs` (with `force_early`, as
/// `mf_generic_kill_procs` calls it) and `kill_proc` choose: the current mapping, whose own
/// access met the error, gets `BUS_MCEERR_AR`; every other mapping that lost the page and is
/// early-kill (`DaxMapping::set_early_kill`) gets `AO`; the rest are not told, and learn
/// by SIGBUS when they touch the lost bytes. `tell_all` is devmap's own older rule instead:
/// every mapping that lost the page is told, with `action_required` as the caller passed it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Recipients {
    /// The mapping whose own access met the error (the kernel's `current`), if any.
    pub(crate) current: Option<MappingId>,
    /// Tell every mapping that lost the page (`MfFlags::TELL_ALL`).
    pub(crate) tell_all: bool,
    /// The caller's `MF_ACTION_REQUIRED`, which `tell_all` passes on to every notice.
    pub(crate) action_required: bool,
}

impl Recipients {
    /// Whether the owner of `m` (early-kill or not) is told, and with `BUS_MCEERR_AR`.
    fn choose(&self, m: MappingId, early_kill: bool) -> Option<bool> {
        let current = self.current == Some(m);
        if self.tell_all {
            Some(self.action_required)
        } else if current {
            Some(true)
        } else {
            early_kill.then_some(false)
        }
    }
}

/// What a revocation did.
#[derive(Debug, Default)]
pub(crate) struct Revocation {
    /// One per mapping that had the leaf and lost it (all or part), in mapping order, with
    /// what it lost.
    pub(crate) revoked: Vec<PoisonNotice>,
    /// What each owner chosen by [`Recipients`] was told, in mapping order.
    pub(crate) told: Vec<PoisonNotice>,
}

/// The generic memory-failure path for a device-dax pfn (the caller has flagged the page):
/// revokes the leaf from every mapping of the device that has it and tells the owners
/// `to` chooses. The device is the one whose address space the folio's `mapping` names, or,
/// for a folio no mapping ever named, the one whose pgmap holds it (so its bad pages still
/// record the error). `None` if no device-dax device owns the pgmap (a bare pgmap has no
/// mappings).
pub(crate) fn revoke(
    pgmap: &Pgmap,
    pfn: Pfn,
    folio_mapping: u64,
    to: Recipients,
) -> Option<Revocation> {
    let device = registry::device_by_address_space(folio_mapping)
        .filter(|d| std::ptr::eq(Arc::as_ptr(&d.pgmap), pgmap))
        .or_else(|| registry::device_by_pgmap(pgmap))?;
    Some(device.revoke(pfn, to))
}

impl DeviceCore {
    /// Revokes the leaf holding `pfn` from every mapping that has it faulted, records the bad
    /// page, and tells the owners `to` chooses (after every revocation, outside every lock).
    /// The current mapping is told even if it no longer has the leaf (a `Leaf` revoked by an
    /// earlier error, which devmap does not fault again): its access met the error.
    fn revoke(&self, pfn: Pfn, to: Recipients) -> Revocation {
        let Some(pgoff) = self.pfn_to_pgoff(pfn) else {
            return Revocation::default();
        };
        let leaf_pages = self.align.nr_pages();
        let leaf_pgoff = pgoff - pgoff % leaf_pages;
        let granularity = self.effective_granularity();
        let shift = match granularity {
            Granularity::Page => Order::BASE.get() + 12,
            Granularity::Leaf => self.align.get() + 12,
        };
        let mappings: Vec<Arc<MappingCore>> = self.mappings.lock().values().cloned().collect();
        // A client's page tables are not this process's to zap: at `Page` granularity the
        // poisoned page is punched out of the shared file instead, which unmaps it in every
        // process that maps it (its bytes are lost anyway), and each caught mapping then gets
        // a poison marker there, so its next touch raises SIGBUS.
        let clients_have_it = granularity == Granularity::Page
            && mappings
                .iter()
                .any(|m| m.window.local().is_none() && m.leaves.lock().contains_key(&leaf_pgoff));
        let mut out = Revocation::default();
        let mut owners: Vec<Option<Arc<OwnerFn>>> = Vec::new();
        let mut released = Vec::new();
        let mut detached = Detached::new();
        let new;
        {
            let _write = self.poison_lock.write();
            new = self.badblocks.lock().insert(pgoff);
            if clients_have_it && let Err(e) = self.backing.punch_hole(pgoff * PAGE_SIZE, PAGE_SIZE)
            {
                tracing::error!(pgoff, error = %e, "dax: cannot punch a poisoned page out of a client's mapping");
            }
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
                // Whatever the granularity, a leaf with a poisoned page is pinned only by
                // request, which refuses it.
                if let Some(f) = &m.fast {
                    f.view.clear(rel / self.align.bytes());
                }
                let had = match granularity {
                    Granularity::Leaf => match m.leaves.lock().remove(&leaf_pgoff) {
                        Some(fm) => {
                            m.bits.clear(rel / self.align.bytes());
                            // Caught: its entries taken out (`take_leaf`), the next touch
                            // is refused by the fault path. Not caught: fenced, so that a
                            // touch raises SIGBUS rather than reach the bytes again. Neither
                            // fails for a range inside the mapping. A client's window is the
                            // client's: its entries stay (see DESIGN §9).
                            let _ = match (m.window.local(), &m.uffd) {
                                (Some(w), Some(_)) => self.take_leaf(w, rel, &mut detached),
                                (Some(w), None) => w.fence(rel, self.align.bytes()),
                                (None, _) => Ok(()),
                            };
                            released.push(fm);
                            true
                        }
                        None => false,
                    },
                    Granularity::Page => {
                        let had = m.leaves.lock().contains_key(&leaf_pgoff);
                        if had {
                            // Only the poisoned page goes: its entry is zapped and replaced
                            // by a poison marker; the mapping keeps the leaf and its other
                            // pages.
                            let page = pgoff * PAGE_SIZE - m.offset;
                            if let Some(w) = m.window.local() {
                                let _ = w.discard(page, PAGE_SIZE);
                            }
                            if let Some(uffd) = &m.uffd {
                                let _ = uffd.poison(m.base as u64 + page, PAGE_SIZE);
                            }
                        }
                        had
                    }
                };
                if !had && to.current != Some(m.id) {
                    continue;
                }
                let (owner, early_kill) = m.owner.snapshot();
                let mut notice = PoisonNotice {
                    mapping: m.id,
                    pfn,
                    addr: m.base + (pgoff * PAGE_SIZE - m.offset) as usize,
                    shift,
                    action_required: false,
                };
                let told = to.choose(m.id, early_kill);
                if let Some(ar) = told {
                    notice.action_required = ar;
                    out.told.push(notice);
                    owners.push(owner);
                }
                if had {
                    out.revoked.push(notice);
                }
            }
        }
        drop(released);
        detached.release();
        if new {
            self.badblocks_sink.tell(&self.badblocks.lock());
        }
        for (notice, owner) in out.told.iter().zip(owners) {
            if let Some(owner) = owner {
                owner(notice);
            }
        }
        out
    }

    /// Takes every entry of the leaf at `rel` out of the caught local window `w`, so that the
    /// next touch is caught. Where the backing's pages are smaller than the leaf (a memfd
    /// emulating a 2 MiB leaf with 512 entries) they are moved into `detached` in one step,
    /// and torn down by the reaper once the caller releases it: the per-page work of a zap is
    /// off memory failure's path. A leaf that is one entry (or a move the kernel refuses) is
    /// zapped in place.
    fn take_leaf(&self, w: &Mmap, rel: u64, detached: &mut Detached) -> Result<(), BackingError> {
        let leaf = self.align.bytes();
        if leaf > w.page_size().bytes() {
            match detached.take(w, rel, leaf) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(error = %e, "dax: cannot detach a leaf; zapping it"),
            }
        }
        w.discard(rel, leaf)
    }

    /// Clears the poison of `[offset, offset + len)` once its owner has rewritten or discarded
    /// the bytes (`ndctl clear-errors`): the pages' hwpoison flags, their entries in the
    /// badblocks list, and every mapping's entries for the leaves holding them (poison markers
    /// included), so the next touch maps them again. `offset` and `len` must be multiples of
    /// 4 KiB inside the device. Returns how many pages were poisoned.
    pub(super) fn clear_poison(&self, offset: u64, len: u64) -> Result<u64, DaxError> {
        let dev = self;
        if len == 0 {
            return Err(DaxError::EmptyRange {
                what: "poison clear",
                unit: "byte",
            });
        }
        if !offset.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(DaxError::ClearUnaligned { offset, len });
        }
        if offset.checked_add(len).is_none_or(|end| end > dev.size) {
            return Err(DaxError::OutOfRange {
                offset,
                len,
                size: dev.size,
            });
        }
        let leaf = dev.align.bytes();
        let mappings: Vec<Arc<MappingCore>> = dev.mappings.lock().values().cloned().collect();
        let _write = dev.poison_lock.write();
        let mut cleared = 0;
        let mut leaves = BTreeSet::new();
        for pgoff in offset / PAGE_SIZE..(offset + len) / PAGE_SIZE {
            let Some(pfn) = dev.pgoff_to_pfn(pgoff, 1) else {
                continue;
            };
            if dev.pgmap.unpoison_subpage(pfn)? {
                cleared += 1;
                leaves.insert(pgoff * PAGE_SIZE / leaf * leaf);
            }
            dev.badblocks.lock().remove(&pgoff);
        }
        for m in &mappings {
            let live = m.live.read();
            if !*live {
                continue;
            }
            for &at in leaves.range(m.offset..m.offset + m.len) {
                let _ = match (m.window.local(), &m.uffd) {
                    (Some(w), Some(_)) => w.discard(at - m.offset, leaf),
                    (Some(w), None) => w.unfence(&dev.backing, at - m.offset, leaf),
                    (None, _) => Ok(()),
                };
            }
        }
        drop(_write);
        dev.badblocks_sink.tell(&dev.badblocks.lock());
        Ok(cleared)
    }
}
