//! The Heads layout: one descriptor per compound, indexed by `(pfn - start) >> shift`. Tails are
//! never stored; a tail's head is computed. Per-subpage state that cannot live in the head
//! (hwpoison of one 4 KiB page) goes to a sparse side table, which costs nothing until used.
//! With `shift = 0` this is the Flat layout.

use std::collections::BTreeSet;

use parking_lot::Mutex;

use crate::addr::{Pfn, PfnRange};
use crate::backing::{BackingError, PageHint};
use crate::desc::Page;

use super::array::ZeroedArray;
use super::room::MemmapRoom;
use super::{Geometry, Resident};

/// Bytes charged per side-table entry: a `BTreeSet<u64>` node slot and its share of the node.
const SIDE_ENTRY_BYTES: u64 = 16;

/// One descriptor per compound.
#[derive(Debug)]
pub(crate) struct HeadsStore {
    geo: Geometry,
    descs: ZeroedArray<Page>,
    poisoned: Mutex<BTreeSet<Pfn>>,
}

impl HeadsStore {
    pub(crate) fn new(
        geo: Geometry,
        dense: PageHint,
        room: Option<&MemmapRoom>,
    ) -> Result<Self, BackingError> {
        let compounds = geo.range().len() >> geo.shift().get();
        // An array smaller than a huge page would only be padded by one.
        let hint = if dense == PageHint::Huge && compounds * super::DESC_SIZE < 2 << 20 {
            PageHint::Base
        } else {
            dense
        };
        Ok(Self {
            descs: ZeroedArray::new(compounds, hint, room)?,
            geo,
            poisoned: Mutex::new(BTreeSet::new()),
        })
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The descriptor of `pfn` if it is a compound head (in range, checked by the caller).
    pub(crate) fn head_page(&self, pfn: Pfn) -> Option<&Page> {
        if !pfn.is_aligned(self.geo.shift()) {
            return None;
        }
        Some(&self.descs.as_slice()[self.geo.compound_index(pfn) as usize])
    }

    /// The descriptors of the compounds headed at `first` through `last` (in range, checked by
    /// the caller).
    pub(crate) fn span(&self, first: Pfn, last: Pfn) -> &[Page] {
        let (i, j) = (
            self.geo.compound_index(first),
            self.geo.compound_index(last),
        );
        &self.descs.as_slice()[i as usize..=j as usize]
    }

    /// The one descriptor of the compound headed at `head`.
    pub(crate) fn compound_slots(&self, head: Pfn) -> &[Page] {
        let i = self.geo.compound_index(head) as usize;
        &self.descs.as_slice()[i..=i]
    }

    pub(crate) fn record_subpage_poison(&self, pfn: Pfn) {
        self.poisoned.lock().insert(pfn);
    }

    /// Forgets `pfn`'s poison; whether it was recorded.
    pub(crate) fn clear_subpage_poison(&self, pfn: Pfn) -> bool {
        self.poisoned.lock().remove(&pfn)
    }

    pub(crate) fn subpage_poisoned(&self, pfn: Pfn) -> bool {
        self.poisoned.lock().contains(&pfn)
    }

    /// The lowest poisoned pfn of `range`, if any.
    pub(crate) fn first_poisoned(&self, range: PfnRange) -> Option<Pfn> {
        self.poisoned
            .lock()
            .range(range.start()..range.end())
            .next()
            .copied()
    }

    /// Side-table bytes beyond the descriptor array.
    pub(crate) fn extra_bytes(&self) -> u64 {
        self.poisoned.lock().len() as u64 * SIDE_ENTRY_BYTES
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
