//! Pins by user address (`pin_user_pages_fast` on a device-dax VMA): walk the mapping's
//! leaves, fault in the ones not yet faulted (unless [`GupFlags::NOFAULT`]), translate the
//! range to pfn runs through the range table, and pin each run with the pin-by-pfn path, one
//! atomic per folio. Every entry carries its pfn and its user address, so a caller can hand
//! it to VFIO or an RDMA NIC.
//!
//! The walk reads the mapping's faulted-leaf bits a word (64 leaves) at a time and takes no
//! lock, so pinning faulted leaves by address costs little more than pinning their pfns.

use crate::addr::{Order, PAGE_SIZE, Pfn, PfnRange};
use crate::gup::{
    GupFlags, PinnedFolios, PinnedPages, pin_device_folios as device_folios,
    pin_device_pages as device_pages, unpin_folios, unpin_user_pages_dirty_lock,
};

use super::{DaxError, DaxMapping};

/// Pages pinned by user address, one entry per 4 KiB page (returned by
/// [`DaxMapping::pin_user_pages`]). Dropping it unpins, as does
/// [`unpin`](UserPages::unpin).
#[derive(Debug)]
pub struct UserPages {
    /// Per pfn run: the user address of its first page and its pins. The first run is kept
    /// inline: a static device always has one, and a pin then allocates only its entries.
    first: (usize, PinnedPages),
    rest: Vec<(usize, PinnedPages)>,
    /// Device byte offset of the first pinned page: user addresses and device offsets run
    /// together through a pin, so every entry's offset follows from its address.
    offset: u64,
}

impl UserPages {
    /// Every pinned page: its user address and its pfn, in address order.
    pub fn entries(&self) -> impl Iterator<Item = (usize, Pfn)> + '_ {
        self.runs().flat_map(|(addr, pins)| {
            pins.pages()
                .iter()
                .enumerate()
                .map(move |(i, pfn)| (addr + i * PAGE_SIZE as usize, *pfn))
        })
    }

    /// Number of pages pinned.
    pub fn len(&self) -> usize {
        self.runs().map(|(_, p)| p.len()).sum()
    }

    /// Never true: empty pins are refused.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The user address of the first pinned page.
    pub fn addr(&self) -> usize {
        self.first.0
    }

    /// The device byte offset of the first pinned page (the backing's byte offset: for a
    /// file window, from the window's start). The page at `addr() + n` is at `offset() + n`.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The pfn runs, each with the user address of its first page (one run unless the range
    /// crosses ranges of a dynamic device).
    pub fn runs(&self) -> impl Iterator<Item = &(usize, PinnedPages)> + '_ {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// `unpin_user_pages_dirty_lock`: gives every pin back, marking each folio dirty once if
    /// asked.
    pub fn unpin(self, make_dirty: bool) {
        for (_, pins) in std::iter::once(self.first).chain(self.rest) {
            unpin_user_pages_dirty_lock(pins, make_dirty);
        }
    }
}

/// One pinned folio in a pin by user address: the part of the folio pinned and where that part
/// is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserFolio {
    /// The folio's head.
    pub head: Pfn,
    /// The folio's order.
    pub order: Order,
    /// The pfns of the folio that the pin covers.
    pub range: PfnRange,
    /// The user address of `range.start()`.
    pub addr: usize,
}

/// Folios pinned by user address, one entry per folio (returned by
/// [`DaxMapping::pin_user_folios`]). Dropping it unpins, as does
/// [`unpin`](UserFolios::unpin).
#[derive(Debug)]
pub struct UserFolios {
    /// Per pfn run: the user address and pfn of its first page, and its pins; the first run
    /// inline, as in [`UserPages`].
    first: (usize, Pfn, PinnedFolios),
    rest: Vec<(usize, Pfn, PinnedFolios)>,
    /// Device byte offset of the first pinned page, as in [`UserPages`].
    offset: u64,
}

impl UserFolios {
    /// Every pinned folio with its user address, in address order.
    pub fn folios(&self) -> impl Iterator<Item = UserFolio> + '_ {
        self.runs().flat_map(|(addr, first, pins)| {
            pins.folios().iter().map(move |f| UserFolio {
                head: f.head(),
                order: f.order(),
                range: f.range(),
                addr: addr + (f.range().start().offset_from(*first) * PAGE_SIZE) as usize,
            })
        })
    }

    /// Number of folios pinned.
    pub fn len(&self) -> usize {
        self.runs().map(|(_, _, p)| p.len()).sum()
    }

    /// Never true: empty pins are refused.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The user address of the first pinned page.
    pub fn addr(&self) -> usize {
        self.first.0
    }

    /// The device byte offset of the first pinned page, as [`UserPages::offset`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Pages pinned.
    pub fn nr_pages(&self) -> u64 {
        self.runs().map(|(_, _, p)| p.nr_pages()).sum()
    }

    fn runs(&self) -> impl Iterator<Item = &(usize, Pfn, PinnedFolios)> + '_ {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// Gives every pin back, marking each folio dirty once if asked.
    pub fn unpin(self, make_dirty: bool) {
        for (_, _, pins) in std::iter::once(self.first).chain(self.rest) {
            unpin_folios(pins, make_dirty);
        }
    }
}

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
    ) -> Result<UserPages, DaxError> {
        let pgmap = &self.dev.pgmap;
        let (first, rest, offset) = self.pin_runs(addr, nr_pages, flags, |at, pfns| {
            Ok((at, device_pages(pgmap, pfns, flags)?))
        })?;
        Ok(UserPages {
            first,
            rest,
            offset,
        })
    }

    /// As [`pin_user_pages`](Self::pin_user_pages), one entry per folio with the part of it
    /// pinned and that part's user address: what a caller registering a range for DMA wants.
    pub fn pin_user_folios(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
    ) -> Result<UserFolios, DaxError> {
        let pgmap = &self.dev.pgmap;
        let (first, rest, offset) = self.pin_runs(addr, nr_pages, flags, |at, pfns| {
            Ok((at, pfns.start(), device_folios(pgmap, pfns, flags)?))
        })?;
        Ok(UserFolios {
            first,
            rest,
            offset,
        })
    }

    /// Checks and faults in the range, then runs `pin` on each of its pfn runs with the user
    /// address of the run's first page: the first run apart (there always is one), the rest
    /// collected, and the device byte offset of the first page. A failure drops, and so
    /// unpins, the runs pinned before it.
    fn pin_runs<T>(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
        pin: impl Fn(usize, PfnRange) -> Result<T, DaxError>,
    ) -> Result<(T, Vec<T>, u64), DaxError> {
        let (start, pgoff) = self.prepare_pin(addr, nr_pages, flags)?;
        // Usually the range lies in one range of the device (always, for a static device):
        // one run, pinned without building the list of runs.
        if let Some(pfn) = self.dev.pgoff_to_pfn(pgoff, nr_pages) {
            let first = pin(start, PfnRange::new_unchecked(pfn, pfn.add(nr_pages)))?;
            return Ok((first, Vec::new(), pgoff * PAGE_SIZE));
        }
        let mut runs = self
            .dev
            .pfn_runs(pgoff, nr_pages)
            .map(|(page, pfns)| pin(start + (page * PAGE_SIZE) as usize, pfns));
        let first = runs.next().ok_or(DaxError::LeafStraddles {
            offset: pgoff * PAGE_SIZE,
        })??;
        let rest = runs.collect::<Result<_, _>>()?;
        Ok((first, rest, pgoff * PAGE_SIZE))
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
