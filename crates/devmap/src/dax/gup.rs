//! Pins by user address (`pin_user_pages_fast` on a device-dax VMA): walk the mapping's
//! leaves, fault in the ones not yet faulted (unless [`GupFlags::NOFAULT`]), translate the
//! range to pfn runs through the range table, and pin the runs with the pin-by-pfn path, one
//! atomic per folio. The result is a [`Pinned`]`<_, `[`ByAddress`]`>`: every entry has its
//! pfn and its user address, so a caller can hand it to VFIO or an RDMA NIC.
//!
//! The walk reads the mapping's faulted-leaf bits a word (64 leaves) at a time and takes no
//! lock, so pinning faulted leaves by address costs little more than pinning their pfns.

use crate::addr::{PAGE_SIZE, Pfn, PfnRange};
use crate::gup::{
    ByAddress, Folios, GupFlags, Pages, Pinned, pin_device_folios as device_folios,
    pin_device_pages as device_pages,
};

use super::{DaxError, DaxMapping};

impl DaxMapping {
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
    pub fn pin_user_folios(
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
                    addr: self.addr() + (hole * step) as usize,
                });
            }
            self.dev.fault_leaf(&self.core, hole * step, false)?;
            from = hole + 1;
        }
        Ok((start, (self.offset() + rel) / PAGE_SIZE))
    }
}

/// The `n` pfns from `pfn`.
fn run(pfn: Pfn, n: u64) -> PfnRange {
    PfnRange::new_unchecked(pfn, pfn.add(n))
}
