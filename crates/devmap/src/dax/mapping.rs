//! A mapping of a device-dax device (the VMA): its fault entry points and its unmap. The
//! fault path itself, after `__dev_dax_{pte,pmd,pud}_fault`, is [`DeviceCore::fault_leaf`]: the
//! fault size is the device align (smaller is SIGBUS, larger falls back to the align), the pfn
//! comes from the range table and the leaf must lie in one range, the leaf's descriptors are
//! synced (during async init, only its own sub-ranges), `dax_set_mapping` writes the folio's
//! mapping and index, the mapping takes its reference and mapcount, and then the leaf is
//! mapped. A leaf faulted before is left alone.
//!
//! Dropping the mapping unregisters it, waits for faults running in it, releases every
//! faulted leaf (references and mapcounts: device-dax folios go back to their idle count of 1)
//! and then unmaps the window. Pins taken on its folios hold their own liveness references
//! and outlive it.

use std::sync::Arc;

use crate::addr::PAGE_SIZE;
use crate::backing::Mmap;

use super::device_core::{DeviceCore, Faulted, MappingCore};
use super::poison::{Granularity, OwnerFn};
use super::registry::MappingListed;
use super::vma::Populated;
use super::vma::Vma;
use super::{DaxError, MappingId};
use crate::gup::{ByAddress, Folios, GupFlags, Pages, Pinned};

/// A shared mapping of part of a device-dax device (returned by
/// [`DaxDevice::mmap`](super::DaxDevice::mmap)).
#[derive(Debug)]
pub struct DaxMapping {
    pub(super) dev: Arc<DeviceCore>,
    // Holds the window and the liveness reference; `Drop::drop` releases the leaves first, so
    // the bytes stay mapped while any reference to them is counted.
    pub(super) core: Arc<MappingCore>,
    /// The window, which the core holds too (a handler working in the mapping keeps it mapped).
    window: Arc<Mmap>,
    /// The mapping's entry in the registry `memory_failure_at` finds mappings by: it leaves
    /// with the mapping, before the window can be unmapped.
    _registered: MappingListed,
}

impl DaxMapping {
    pub(super) fn new(
        dev: Arc<DeviceCore>,
        core: Arc<MappingCore>,
        window: Arc<Mmap>,
        listed: MappingListed,
    ) -> Self {
        Self {
            dev,
            core,
            window,
            _registered: listed,
        }
    }

    /// The mapping's id in its device's registry (what [`DaxDevice::rmap`](super::DaxDevice::rmap)
    /// names).
    pub fn id(&self) -> MappingId {
        self.core.id
    }

    /// The first user address, a multiple of the device align.
    pub fn addr(&self) -> usize {
        self.core.base
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> u64 {
        self.core.len
    }

    /// Never true: empty mappings are refused.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The device offset the mapping starts at.
    pub fn offset(&self) -> u64 {
        self.core.offset
    }

    /// The mapped bytes (bounds-checked reads and writes at offsets into the mapping). Where
    /// the device catches touches, a read or write of a leaf not yet faulted in goes through
    /// the fault path first, as it would from any other code touching these addresses.
    pub fn bytes(&self) -> &Mmap {
        &self.window
    }

    /// Names who is told when memory under this mapping fails (the task `kill_proc` would
    /// signal): called with what this mapping lost, from the thread that handles the error,
    /// after the leaf is revoked, when the kernel's rules pick this mapping: it is the current
    /// one (`BUS_MCEERR_AR`: the error was reported with `MF_ACTION_REQUIRED` at an address
    /// of this mapping, as [`memory_failure_at`](crate::memory_failure::memory_failure_at)
    /// does), or it is early-kill ([`set_early_kill`](Self::set_early_kill), `BUS_MCEERR_AO`).
    /// Otherwise the owner learns of the loss when the mapping touches it (SIGBUS).
    /// Replaces any earlier owner.
    pub fn set_owner(&self, owner: Arc<OwnerFn>) {
        self.core.owner.set(owner);
    }

    /// Makes the owner hear of errors in this mapping's leaves that its own accesses have not
    /// met (`BUS_MCEERR_AO`): `prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY)` for
    /// the task behind the mapping; `false` is `PR_MCE_KILL_LATE`, the default (the kernel's
    /// `vm.memory_failure_early_kill` is 0).
    pub fn set_early_kill(&self, early: bool) {
        self.core.owner.set_early_kill(early);
    }

    /// Whether the owner is told of errors it has not met ([`set_early_kill`](Self::set_early_kill)).
    pub fn early_kill(&self) -> bool {
        self.core.owner.early_kill()
    }

    /// Whether the leaf holding `addr` is faulted into this mapping.
    pub fn is_faulted(&self, addr: usize) -> bool {
        self.vma().is_faulted(addr)
    }

    /// The mapping as the fault path and the pins see it.
    pub(super) fn vma(&self) -> Vma<'_> {
        Vma {
            dev: &self.dev,
            core: &self.core,
        }
    }

    /// `dev_dax_huge_fault` at user address `addr` for a fault of `size` bytes: a size below
    /// the device align is refused ([`DaxError::FaultTooSmall`], SIGBUS in the kernel); a
    /// larger one is handled at the align, as the kernel's fallback ends up. Maps the leaf of
    /// the device align holding `addr`.
    pub fn fault(&self, addr: usize, size: u64) -> Result<Faulted, DaxError> {
        self.vma().fault(addr, size)
    }

    /// Faults in every leaf that `addr..addr + len` touches, in order, stopping at the first
    /// error (leaves mapped before it stay mapped). Where the device catches touches, the
    /// leaves' bytes are mapped too, so later touches do not fault; elsewhere only the
    /// metadata is set up and the bytes are the backing's, untouched.
    pub fn populate(&self, addr: usize, len: u64) -> Result<Populated, DaxError> {
        self.vma().populate(addr, len)
    }

    /// `pin_user_pages_fast(addr, nr_pages, flags)`: pins the `nr_pages` pages from `addr`
    /// (rounded down to its page, as the kernel does), faulting in every leaf not yet faulted
    /// unless `flags` has [`GupFlags::NOFAULT`]. One entry per page, each with its user
    /// address; one reference update per folio. The range must lie inside this mapping. On
    /// any error nothing stays pinned (leaves faulted in stay faulted).
    pub fn pin_user_pages(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
    ) -> Result<Pinned<Pages, ByAddress>, DaxError> {
        self.vma().pin_user_pages(addr, nr_pages, flags)
    }

    /// As [`pin_user_pages`](Self::pin_user_pages), one entry per folio with the part of it
    /// pinned ([`Pinned::with_addresses`] gives each part's user address): what a caller
    /// registering a range for DMA wants.
    pub fn pin_user_folios(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
    ) -> Result<Pinned<Folios, ByAddress>, DaxError> {
        self.vma().pin_user_folios(addr, nr_pages, flags)
    }

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
        let rel = self.vma().rel(
            self.addr().saturating_add(offset as usize),
            len.max(1),
            "read",
        )?;
        let dev = &self.dev;
        let leaf = dev.align.bytes();
        let (first, end) = (rel / leaf, (rel + len.max(1)).div_ceil(leaf));
        loop {
            // Fault in (outside the lock) every leaf not yet faulted; a poisoned leaf at
            // `Leaf` granularity refuses, which is the answer.
            let mut from = first;
            while let Some(hole) = self.core.bits.first_clear(from, end) {
                match dev.fault_leaf(&self.core, hole * leaf, false) {
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
            let _read = dev.poison_lock.read();
            if self.core.bits.first_clear(first, end).is_some() {
                continue; // revoked since: fault it in again
            }
            // What is lost: a poisoned page at `Page` granularity, a leaf holding one at
            // `Leaf` (reported but not yet revoked, if the revocation waits for this lock).
            let unit = match dev.effective_granularity() {
                Granularity::Page => PAGE_SIZE,
                Granularity::Leaf => leaf,
            };
            let at = self.offset() + rel;
            let unit_first = at / unit;
            let unit_end = (at + len.max(1)).div_ceil(unit);
            for u in unit_first..unit_end {
                let Some(pfn) = dev.pgoff_to_pfn(u * unit / PAGE_SIZE, 1) else {
                    continue;
                };
                let lost = if unit == PAGE_SIZE {
                    dev.pgmap.subpage_poisoned(pfn)?
                } else {
                    dev.pgmap.folio_poisoned_page(pfn)?.is_some()
                };
                if lost {
                    return Err(DaxError::MemoryLost {
                        addr: self.addr() + (u * unit - self.offset()) as usize,
                        len: unit,
                    });
                }
            }
            return Ok(self.window.read(rel, buf)?);
        }
    }
}

impl Drop for DaxMapping {
    fn drop(&mut self) {
        // The window and the liveness reference go with the last holder of the core.
        self.dev.unmap(&self.core);
    }
}
