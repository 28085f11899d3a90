//! A mapping of a device-dax device (the VMA) and its fault path, after
//! `__dev_dax_{pte,pmd,pud}_fault`: the fault size is the device align (smaller is SIGBUS,
//! larger falls back to the align), the pfn comes from the range table and the leaf must lie in
//! one range, the leaf's descriptors are synced (during async init, only its own sub-ranges),
//! `dax_set_mapping` writes the folio's mapping and index, and only then does the mapping take
//! its reference and mapcount. A leaf faulted before is left alone.
//!
//! Dropping the mapping unregisters it, releases every faulted leaf (references and mapcounts:
//! device-dax folios go back to their idle count of 1) and then unmaps the window. Pins taken
//! on its folios hold their own liveness references and outlive it.

use std::sync::Arc;

use crate::addr::{PAGE_SIZE, Pfn, PfnRange};
use crate::backing::SharedMapping;
use crate::pgmap::PgmapRef;

use super::{DaxError, MappingId, Shared};

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

/// What [`DaxMapping::populate`] did, in leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Populated {
    /// Leaves faulted in by this call.
    pub mapped: u64,
    /// Leaves that were mapped already.
    pub already: u64,
}

/// A shared mapping of part of a device-dax device (returned by
/// [`DaxDevice::mmap`](super::DaxDevice::mmap)).
#[derive(Debug)]
pub struct DaxMapping {
    shared: Arc<Shared>,
    id: MappingId,
    offset: u64,
    // Dropped after `Drop::drop` has released the leaves: the bytes stay mapped while any
    // reference to them is counted, then the window goes, then the liveness reference.
    window: SharedMapping,
    _live: PgmapRef,
}

impl DaxMapping {
    pub(super) fn new(
        shared: Arc<Shared>,
        id: MappingId,
        offset: u64,
        window: SharedMapping,
        live: PgmapRef,
    ) -> Self {
        Self {
            shared,
            id,
            offset,
            window,
            _live: live,
        }
    }

    /// The mapping's id in its device's registry (what [`DaxDevice::rmap`](super::DaxDevice::rmap)
    /// names).
    pub fn id(&self) -> MappingId {
        self.id
    }

    /// The first user address, a multiple of the device align.
    pub fn addr(&self) -> usize {
        self.window.as_ptr().as_ptr() as usize
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> u64 {
        self.window.len() as u64
    }

    /// Never true: empty mappings are refused.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The device offset the mapping starts at.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The mapped bytes (bounds-checked reads and writes at offsets into the mapping).
    pub fn bytes(&self) -> &SharedMapping {
        &self.window
    }

    /// `dev_dax_huge_fault` at user address `addr` for a fault of `size` bytes: a size below
    /// the device align is refused ([`DaxError::FaultTooSmall`], SIGBUS in the kernel); a
    /// larger one is handled at the align, as the kernel's fallback ends up. Maps the leaf of
    /// the device align holding `addr`.
    pub fn fault(&self, addr: usize, size: u64) -> Result<Faulted, DaxError> {
        let align = self.shared.align;
        if size < align.bytes() {
            return Err(DaxError::FaultTooSmall { size, align });
        }
        let base = self.addr();
        let rel = addr
            .checked_sub(base)
            .map(|r| r as u64)
            .filter(|r| *r < self.len())
            .ok_or(DaxError::NotInMapping {
                addr,
                base,
                len: self.len(),
            })?;
        let leaf_offset = self.offset + (rel - rel % align.bytes());
        let pgoff = leaf_offset / PAGE_SIZE;
        if let Some(fm) = self.registered_leaf(pgoff) {
            return Ok(Faulted::AlreadyMapped { pfn: fm });
        }
        let nr_pages = align.nr_pages();
        let pfn = self
            .shared
            .pgoff_to_pfn(pgoff, nr_pages)
            .ok_or(DaxError::LeafStraddles {
                offset: leaf_offset,
            })?;
        let pgmap = &self.shared.pgmap;
        pgmap.sync(PfnRange::new_unchecked(pfn, pfn.add(nr_pages)))?;
        pgmap.set_folio_mapping(pfn, self.shared.address_space, pgoff)?;
        let mapped = pgmap.map_folio(pfn, align)?;
        let raced = {
            let mut mappings = self.shared.mappings.lock();
            match mappings.get_mut(&self.id) {
                Some(r) if !r.leaves.contains_key(&pgoff) => {
                    r.leaves.insert(pgoff, mapped);
                    None
                }
                _ => Some(mapped),
            }
        };
        // Another fault of this mapping inserted the leaf first: give this reference back,
        // outside the registry lock.
        Ok(match raced {
            None => Faulted::Mapped { pfn },
            Some(extra) => {
                drop(extra);
                Faulted::AlreadyMapped { pfn }
            }
        })
    }

    /// Faults in every leaf that `addr..addr + len` touches, in order, stopping at the first
    /// error (leaves mapped before it stay mapped). Only the metadata: the bytes are the
    /// backing's and are not touched.
    pub fn populate(&self, addr: usize, len: u64) -> Result<Populated, DaxError> {
        let base = self.addr();
        let out_of_mapping = DaxError::NotInMapping {
            addr,
            base,
            len: self.len(),
        };
        if len == 0 {
            return Err(out_of_mapping);
        }
        let Some(rel) = addr.checked_sub(base).map(|r| r as u64) else {
            return Err(out_of_mapping);
        };
        if rel.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(out_of_mapping);
        }
        let step = self.shared.align.bytes();
        let mut done = Populated::default();
        let mut leaf = rel - rel % step;
        while leaf < rel + len {
            let at = base.saturating_add(usize::try_from(leaf).unwrap_or(usize::MAX));
            match self.fault(at, step)? {
                Faulted::Mapped { .. } => done.mapped += 1,
                Faulted::AlreadyMapped { .. } => done.already += 1,
            }
            leaf += step;
        }
        Ok(done)
    }

    /// The head pfn of the leaf at device page offset `pgoff`, if this mapping has it.
    fn registered_leaf(&self, pgoff: u64) -> Option<Pfn> {
        let mappings = self.shared.mappings.lock();
        mappings
            .get(&self.id)
            .and_then(|r| r.leaves.get(&pgoff))
            .map(|fm| fm.pfn())
    }
}

impl Drop for DaxMapping {
    fn drop(&mut self) {
        // Out of the registry first (rmap stops naming it), then the leaves are released
        // outside the lock; the window and the liveness reference go with the fields.
        let gone = self.shared.mappings.lock().remove(&self.id);
        drop(gone);
    }
}
