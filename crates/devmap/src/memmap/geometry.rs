//! The shape of one memmap ([`Geometry`]): its pfn range, compound order and altmap, checked
//! once at construction so that every store and every cost computed from it stays inside the
//! physical address space and never wraps. Also the errors of building a memmap.

use crate::addr::{Order, PAGE_SIZE, Pfn, PfnRange};
use crate::backing::BackingError;

use super::layout::{DEDUP_MIN_ORDER, Layout};

/// The altmap part of a geometry: the first pfns of the range hold the memmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AltmapGeometry {
    /// Pfns reserved before the memmap (an info block).
    pub reserve: u64,
    /// Pfns set aside for the memmap after the reserve (`vmem_altmap.free`): at least the
    /// memmap's own, plus padding up to the first data pfn, which is `reserve + free` pfns into
    /// the range and on a compound boundary.
    pub free: u64,
}

/// The shape of one memmap: its pfn range, compound order and altmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub(super) range: PfnRange,
    pub(super) shift: Order,
    pub(super) altmap: Option<AltmapGeometry>,
}

/// Errors from building a memmap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemmapError {
    /// The range is empty.
    #[error("empty pfn range {range:?}")]
    EmptyRange {
        /// The range.
        range: PfnRange,
    },
    /// The range is not made of whole compounds.
    #[error(
        "range {range:?} is not aligned to its compound size of {} pages (order {shift})",
        shift.nr_pages()
    )]
    Misaligned {
        /// The range.
        range: PfnRange,
        /// The compound order.
        shift: Order,
    },
    /// The range reaches past the physical address space a memmap describes.
    #[error(
        "range {range:?} reaches past pfn {end}, the end of the {bits}-bit physical address space",
        end = Pfn::END,
        bits = crate::addr::MAX_PHYSMEM_BITS
    )]
    BeyondPhysicalSpace {
        /// The range.
        range: PfnRange,
    },
    /// The altmap leaves no room for data.
    #[error("the altmap needs {altmap_pfns} of the range's {pages} pages, leaving none for data")]
    AltmapTooLarge {
        /// Pages the altmap takes.
        altmap_pfns: u64,
        /// Pages in the range.
        pages: u64,
    },
    /// The pfns an altmap sets aside cannot hold the layout's memmap.
    #[error(
        "the {} memmap needs {memmap_pfns} pages but the altmap sets aside {free}",
        layout.name()
    )]
    AltmapTooSmall {
        /// The layout.
        layout: Layout,
        /// Pages the memmap takes.
        memmap_pfns: u64,
        /// Pages the altmap sets aside for it.
        free: u64,
    },
    /// An altmap whose end, the first data pfn, is not on a compound boundary.
    #[error(
        "the altmap ends {altmap_pfns} pages into the range, not on a compound boundary of {} pages",
        shift.nr_pages()
    )]
    AltmapMisaligned {
        /// Pages the altmap takes.
        altmap_pfns: u64,
        /// The compound order.
        shift: Order,
    },
    /// The layout cannot live in a device's memmap room (its tables and un-shared blocks
    /// are allocated as it runs, so a later process could not find them).
    #[error(
        "the {} memmap cannot be kept on the device: use the flat or heads layout",
        layout.name()
    )]
    NotInRoom {
        /// The layout asked for.
        layout: Layout,
    },
    /// Memory for the store could not be reserved.
    #[error("cannot reserve the {layout:?} memmap")]
    Backing {
        /// The layout being built.
        layout: Layout,
        /// Why.
        #[source]
        source: BackingError,
    },
}

impl Geometry {
    /// A geometry without an altmap. The range must be non-empty and made of whole compounds.
    pub fn new(range: PfnRange, shift: Order) -> Result<Self, MemmapError> {
        if range.is_empty() {
            return Err(MemmapError::EmptyRange { range });
        }
        if range.end() > Pfn::END {
            return Err(MemmapError::BeyondPhysicalSpace { range });
        }
        if !range.start().is_aligned(shift) || !range.len().is_multiple_of(shift.nr_pages()) {
            return Err(MemmapError::Misaligned { range, shift });
        }
        Ok(Self {
            range,
            shift,
            altmap: None,
        })
    }

    /// A geometry whose memmap lives in the first pfns of the range (after `reserve` pfns),
    /// sized for `layout` and padded to a compound boundary, like ndctl's `--map=dev`.
    pub fn with_altmap(
        range: PfnRange,
        shift: Order,
        layout: Layout,
        reserve: u64,
    ) -> Result<Self, MemmapError> {
        // Validates the range first: memmap_bytes is exact only for ranges inside the physical
        // address space.
        Self::new(range, shift)?;
        let memmap_pages = layout.memmap_bytes(range.len(), shift).div_ceil(PAGE_SIZE);
        // A reserve beyond the range is refused like any altmap that leaves no data, without
        // wrapping on the way (a wrapped sum would put the memmap on top of the data).
        let total = reserve
            .checked_add(memmap_pages)
            .and_then(|t| t.checked_next_multiple_of(shift.nr_pages()))
            .unwrap_or(u64::MAX);
        let free = total.saturating_sub(reserve);
        Self::with_altmap_sized(range, shift, layout, AltmapGeometry { reserve, free })
    }

    /// A geometry whose memmap lives in the first pfns of the range with an altmap sized by the
    /// caller, as a driver sizes `vmem_altmap` from its info block (`crate::namespace`): data
    /// starts `reserve + free` pfns into the range, which must be a compound boundary short of
    /// the range's end, and the layout's memmap must fit in `free`.
    pub fn with_altmap_sized(
        range: PfnRange,
        shift: Order,
        layout: Layout,
        altmap: AltmapGeometry,
    ) -> Result<Self, MemmapError> {
        let mut g = Self::new(range, shift)?;
        let total = altmap.reserve.saturating_add(altmap.free);
        if total >= range.len() {
            return Err(MemmapError::AltmapTooLarge {
                altmap_pfns: total,
                pages: range.len(),
            });
        }
        if !total.is_multiple_of(shift.nr_pages()) {
            return Err(MemmapError::AltmapMisaligned {
                altmap_pfns: total,
                shift,
            });
        }
        let memmap_pfns = layout.memmap_bytes(range.len(), shift).div_ceil(PAGE_SIZE);
        if memmap_pfns > altmap.free {
            return Err(MemmapError::AltmapTooSmall {
                layout,
                memmap_pfns,
                free: altmap.free,
            });
        }
        g.altmap = Some(altmap);
        Ok(g)
    }

    /// The pfn range covered.
    pub fn range(&self) -> PfnRange {
        self.range
    }

    /// The compound order (`vmemmap_shift`).
    pub fn shift(&self) -> Order {
        self.shift
    }

    /// The altmap, if the memmap lives on the device.
    pub fn altmap(&self) -> Option<AltmapGeometry> {
        self.altmap
    }

    /// Pfns at the start of the range taken by the altmap (`vmem_altmap_offset`).
    pub fn altmap_pfns(&self) -> u64 {
        self.altmap.map_or(0, |a| a.reserve + a.free)
    }

    /// The pfns that hold data and get initialised descriptors.
    pub fn data_range(&self) -> PfnRange {
        let start = self.range.start().add(self.altmap_pfns());
        PfnRange::new_unchecked(start, self.range.end())
    }

    /// Number of data pages.
    pub fn data_pages(&self) -> u64 {
        self.range.len() - self.altmap_pfns()
    }

    /// Whether a Vmemmap store of this geometry deduplicates tail blocks (order ≥ 8, no altmap).
    pub fn dedups(&self) -> bool {
        self.shift >= DEDUP_MIN_ORDER && self.altmap.is_none()
    }

    /// Index of the compound holding `pfn` from the start of the range.
    #[inline]
    pub(crate) fn compound_index(&self, pfn: Pfn) -> u64 {
        pfn.offset_from(self.range.start()) >> self.shift.get()
    }
}
