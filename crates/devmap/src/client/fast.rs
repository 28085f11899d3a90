//! Fast pins on the client's side (DESIGN §9.5): the service's [`PinView`] of one mapping,
//! mapped read-only, and the mapping's [`PinLedger`], mapped read-write. A pin whose every
//! leaf the view vouches for is counted in the ledger and translated here (the mapping's pfns
//! run on from the first, which the service sent), with no request; anything else is asked of
//! the service.

use std::os::fd::OwnedFd;

use crate::addr::{Order, PAGE_SIZE};
use crate::backing::BackingError;
use crate::dax::{PinLedger, PinView};
use crate::service::proto::{Mapped, NO_PFN, WireExtent};

/// What one mapping needs to pin without asking.
#[derive(Debug)]
pub(super) struct FastPath {
    view: PinView,
    ledger: PinLedger,
    /// The pfn of the mapping's first byte.
    first_pfn: u64,
    /// Namespace offset and length of the mapping.
    offset: u64,
    len: u64,
    align: Order,
}

impl FastPath {
    /// Maps the two files the service passed with `m` (view, ledger), the reply to a map of
    /// `len` bytes from `offset`; none if the mapping's pfns do not run on (every pin is then
    /// a request).
    pub(super) fn adopt(
        [view, ledger]: [OwnedFd; 2],
        m: &Mapped,
        offset: u64,
        len: u64,
        align: Order,
    ) -> Result<Option<FastPath>, BackingError> {
        if m.first_pfn == NO_PFN {
            return Ok(None);
        }
        Ok(Some(FastPath {
            view: PinView::open(view, len / align.bytes())?,
            ledger: PinLedger::open(ledger)?,
            first_pfn: m.first_pfn,
            offset,
            len,
            align,
        }))
    }

    /// A fast pin of `nr_pages` pages from `addr` (rounded down to its page) in the mapping at
    /// `base`: its one extent, or none if the range is not all inside the mapping and vouched
    /// for (the request then pins it, or says what is wrong).
    pub(super) fn try_pin(&self, base: usize, addr: usize, nr_pages: u64) -> Option<WireExtent> {
        let start = addr - addr % PAGE_SIZE as usize;
        let rel = (start.checked_sub(base)?) as u64;
        let len = nr_pages.checked_mul(PAGE_SIZE).filter(|&l| l > 0)?;
        let end = rel.checked_add(len).filter(|&e| e <= self.len)?;
        let leaf = self.align.bytes();
        if !self
            .view
            .take(&self.ledger, rel / leaf, end.div_ceil(leaf), nr_pages)
        {
            return None;
        }
        Some(WireExtent {
            addr: start as u64,
            offset: self.offset + rel,
            pfn: self.first_pfn + rel / PAGE_SIZE,
            len,
        })
    }

    /// Gives back a fast pin of `nr_pages` pages.
    pub(super) fn give_back(&self, nr_pages: u64) {
        self.ledger.give_back(nr_pages);
    }

    /// The service is gone: no fast pin succeeds from now on.
    pub(super) fn revoke(&self) {
        self.ledger.revoke();
    }
}
