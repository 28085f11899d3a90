//! What a user mapping asks of its device, whether it is mapped in this process
//! ([`DaxMapping`](super::DaxMapping)) or in a client's
//! ([`ClientMapping`](super::ClientMapping)): the range checks against the mapping, faults
//! and populate through the fault path, and pins by user address (`pin_user_pages_fast` on a
//! device-dax VMA: walk the mapping's leaves, fault in the ones not yet faulted unless
//! [`GupFlags::NOFAULT`], translate the range to pfn runs through the range table, and pin the
//! runs with the pin-by-pfn path, one atomic per folio; the result is a
//! [`Pinned`]`<_, `[`ByAddress`]`>`, every entry with its pfn and user address).
//!
//! The walk reads the mapping's faulted-leaf bits a word (64 leaves) at a time and takes no
//! lock, so pinning faulted leaves by address costs little more than pinning their pfns.

use crate::addr::{PAGE_SIZE, Pfn, PfnRange};
use crate::gup::{
    ByAddress, Folios, GupFlags, Pages, Pinned, pin_device_folios as device_folios,
    pin_device_pages as device_pages,
};

use super::DaxError;
use super::device_core::{DeviceCore, Faulted, MappingCore};

/// What a populate ([`DaxMapping::populate`](super::DaxMapping::populate)) did, in leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Populated {
    /// Leaves faulted in by this call.
    pub mapped: u64,
    /// Leaves that were mapped already.
    pub already: u64,
}

/// A mapping and its device, as the fault path and the pins see them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Vma<'a> {
    pub(super) dev: &'a DeviceCore,
    pub(super) core: &'a MappingCore,
}

impl Vma<'_> {
    /// Whether the leaf holding `addr` is faulted into the mapping.
    pub(super) fn is_faulted(&self, addr: usize) -> bool {
        addr.checked_sub(self.core.base)
            .map(|rel| rel as u64)
            .filter(|rel| *rel < self.core.len)
            .is_some_and(|rel| self.core.bits.test(rel / self.dev.align.bytes()))
    }

    /// The byte offset of `[addr, addr + len)` in the mapping, if it lies inside:
    /// [`DaxError::NotInMapping`] if `addr` does not, [`DaxError::PastMappingEnd`] if the
    /// range runs past the end, [`DaxError::EmptyRange`] (a `what` of 0 bytes) if `len` is 0.
    pub(super) fn rel(&self, addr: usize, len: u64, what: &'static str) -> Result<u64, DaxError> {
        let (base, map_len) = (self.core.base, self.core.len);
        let rel = addr
            .checked_sub(base)
            .map(|rel| rel as u64)
            .filter(|rel| *rel < map_len)
            .ok_or(DaxError::NotInMapping {
                addr,
                base,
                len: map_len,
            })?;
        if len == 0 {
            return Err(DaxError::EmptyRange { what, unit: "byte" });
        }
        match rel.checked_add(len) {
            Some(end) if end <= map_len => Ok(rel),
            _ => Err(DaxError::PastMappingEnd {
                addr,
                len,
                base,
                map_len,
            }),
        }
    }

    /// `dev_dax_huge_fault` at user address `addr` for a fault of `size` bytes: a size below
    /// the device align is refused ([`DaxError::FaultTooSmall`], SIGBUS in the kernel); a
    /// larger one is handled at the align, as the kernel's fallback ends up. Maps the leaf of
    /// the device align holding `addr`.
    pub(super) fn fault(&self, addr: usize, size: u64) -> Result<Faulted, DaxError> {
        let align = self.dev.align;
        if size < align.bytes() {
            return Err(DaxError::FaultTooSmall { size, align });
        }
        let rel = self.rel(addr, 1, "fault")?;
        self.dev
            .fault_leaf(self.core, rel - rel % align.bytes(), false)
    }

    /// Faults in every leaf that `addr..addr + len` touches, in order, stopping at the first
    /// error (leaves mapped before it stay mapped). Where the device catches touches, the
    /// leaves' bytes are mapped too, so later touches do not fault; elsewhere only the
    /// metadata is set up and the bytes are the backing's, untouched.
    pub(super) fn populate(&self, addr: usize, len: u64) -> Result<Populated, DaxError> {
        let rel = self.rel(addr, len, "populate")?;
        let step = self.dev.align.bytes();
        let mut done = Populated::default();
        let mut leaf = rel - rel % step;
        while leaf < rel + len {
            match self.dev.fault_leaf(self.core, leaf, false)? {
                Faulted::Mapped { .. } => done.mapped += 1,
                Faulted::AlreadyMapped { .. } => done.already += 1,
            }
            leaf += step;
        }
        Ok(done)
    }

    /// Faults in the metadata of every leaf of a new mapping of a device that does not catch
    /// touches (`DaxOptions::populate_on_map`), as the kernel's faults would at the first
    /// touches: so the reverse map holds every leaf a touch can reach. A leaf refused as lost
    /// to a memory error is left out, as the kernel leaves a poisoned page unmapped; any
    /// other error fails the mapping.
    pub(super) fn populate_all(&self) -> Result<(), DaxError> {
        let step = self.dev.align.bytes();
        let mut leaf = 0;
        while leaf < self.core.len {
            match self.dev.fault_leaf(self.core, leaf, false) {
                Ok(_) | Err(DaxError::Poisoned { .. }) => {}
                Err(e) => return Err(e),
            }
            leaf += step;
        }
        Ok(())
    }

    /// `pin_user_pages_fast(addr, nr_pages, flags)`: pins the `nr_pages` pages from `addr`
    /// (rounded down to its page, as the kernel does), faulting in every leaf not yet faulted
    /// unless `flags` has [`GupFlags::NOFAULT`]. One entry per page, each with its user
    /// address; one reference update per folio. The range must lie inside this mapping. On
    /// any error nothing stays pinned (leaves faulted in stay faulted).
    pub(super) fn pin_user_pages(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
    ) -> Result<Pinned<Pages, ByAddress>, DaxError> {
        let (start, pgoff) = self.prepare_pin(addr, nr_pages, flags)?;
        let pinned = match self.dev.pgoff_to_pfn(pgoff, nr_pages) {
            // Usually the range lies in one range of the device (always, for a static device):
            // one run, pinned without building the list of runs.
            Some(pfn) => device_pages(&self.dev.pgmap, [run(pfn, nr_pages)], flags)?,
            None => device_pages(&self.dev.pgmap, self.runs(pgoff, nr_pages)?, flags)?,
        };
        Ok(pinned.at_user(start, pgoff * PAGE_SIZE))
    }

    /// As [`pin_user_pages`](Self::pin_user_pages), one entry per folio with the part of it
    /// pinned ([`Pinned::with_addresses`] gives each part's user address): what a caller
    /// registering a range for DMA wants.
    pub(super) fn pin_user_folios(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
    ) -> Result<Pinned<Folios, ByAddress>, DaxError> {
        let (start, pgoff) = self.prepare_pin(addr, nr_pages, flags)?;
        let pinned = match self.dev.pgoff_to_pfn(pgoff, nr_pages) {
            Some(pfn) => device_folios(&self.dev.pgmap, [run(pfn, nr_pages)], flags)?,
            None => device_folios(&self.dev.pgmap, self.runs(pgoff, nr_pages)?, flags)?,
        };
        Ok(pinned.at_user(start, pgoff * PAGE_SIZE))
    }

    /// The pfn runs of the `nr_pages` device pages from page offset `pgoff`, in address order
    /// (more than one only where the range crosses ranges of a dynamic device).
    fn runs(&self, pgoff: u64, nr_pages: u64) -> Result<Vec<PfnRange>, DaxError> {
        let runs: Vec<_> = self
            .dev
            .pfn_runs(pgoff, nr_pages)
            .map(|(_, pfns)| pfns)
            .collect();
        match runs.is_empty() {
            true => Err(DaxError::LeafStraddles {
                offset: pgoff * PAGE_SIZE,
            }),
            false => Ok(runs),
        }
    }

    /// Checks the range and faults in what it may; returns its page-aligned start and its
    /// device page offset.
    fn prepare_pin(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
    ) -> Result<(usize, u64), DaxError> {
        if nr_pages == 0 {
            return Err(DaxError::EmptyRange {
                what: "pin",
                unit: "page",
            });
        }
        let start = addr - addr % PAGE_SIZE as usize;
        let len = nr_pages.saturating_mul(PAGE_SIZE);
        let rel = self.rel(start, len, "pin")?;
        let step = self.dev.align.bytes();
        let (first, end) = (rel / step, (rel + len).div_ceil(step));
        let mut from = first;
        while let Some(hole) = self.core.bits.first_clear(from, end) {
            if flags.contains(GupFlags::NOFAULT) {
                return Err(DaxError::NotFaulted {
                    addr: self.core.base + (hole * step) as usize,
                });
            }
            self.dev.fault_leaf(self.core, hole * step, false)?;
            from = hole + 1;
        }
        Ok((start, (self.core.offset + rel) / PAGE_SIZE))
    }
}

/// The `n` pfns from `pfn`.
fn run(pfn: Pfn, n: u64) -> PfnRange {
    PfnRange::new_unchecked(pfn, pfn.add(n))
}
