//! The Flat layout: one 64-byte descriptor per pfn in one virtually contiguous array, the
//! kernel's memmap before tail dedup (16 GiB per TiB). `pfn_to_page` is one subtract and index.

use crate::addr::Pfn;
use crate::backing::{BackingError, PageHint};
use crate::desc::Page;

use super::array::ZeroedArray;
use super::room::MemmapRoom;
use super::{Geometry, Resident};

/// One descriptor per pfn.
#[derive(Debug)]
pub(crate) struct FlatStore {
    geo: Geometry,
    descs: ZeroedArray<Page>,
}

impl FlatStore {
    pub(crate) fn new(
        geo: Geometry,
        dense: PageHint,
        room: Option<&MemmapRoom>,
    ) -> Result<Self, BackingError> {
        Ok(Self {
            descs: ZeroedArray::new(geo.range().len(), dense, room)?,
            geo,
        })
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geo
    }

    fn index(&self, pfn: Pfn) -> usize {
        // In range (checked by the caller), so the offset fits the array's `usize` length.
        pfn.offset_from(self.geo.range().start()) as usize
    }

    /// The descriptor of an in-range pfn.
    pub(crate) fn page(&self, pfn: Pfn) -> &Page {
        &self.descs.as_slice()[self.index(pfn)]
    }

    /// The descriptors from `first` through `last` (both in range, checked by the caller).
    pub(crate) fn span(&self, first: Pfn, last: Pfn) -> &[Page] {
        &self.descs.as_slice()[self.index(first)..=self.index(last)]
    }

    /// Every descriptor of the compound headed at `head`.
    pub(crate) fn compound_slots(&self, head: Pfn) -> &[Page] {
        let i = self.index(head);
        let n = self.geo.shift().nr_pages() as usize;
        &self.descs.as_slice()[i..i + n]
    }

    /// The descriptor array's resident memory: host memory, or the device's with an altmap.
    pub(crate) fn resident(&self) -> Result<Resident, BackingError> {
        let held = self.descs.resident_bytes()?;
        Ok(Resident::split(
            0,
            held,
            self.geo.altmap().is_some() || self.descs.on_device(),
        ))
    }

    pub(crate) fn reserved_bytes(&self) -> u64 {
        self.descs.reserved_bytes() as u64
    }
}
