//! The memmap: `pfn → descriptor` for one contiguous pfn range, in one of three layouts.
//!
//! `Memmap` answers the same questions in every layout — `compound_head(pfn)`, `folio(pfn)`,
//! `order` — and accounts its own cost ([`Cost`]) by the same arithmetic that
//! [`Layout::cost`] uses to estimate it without allocating:
//!
//! * [`Layout::Flat`]: one 64-byte [`Page`] per pfn in one array (16 GiB per TiB);
//! * [`Layout::Vmemmap`]: the kernel's device-dax vmemmap with tail-block dedup, in software,
//!   with the kernel's page-table levels: a PMD entry per 2 MiB of descriptors, either a 2 MiB
//!   leaf or a PTE table of 512 entries, one per 4 KiB block of 64 descriptors. Per compound of
//!   order ≥ 8 only blocks 0 and 1 are unique and every further PTE aliases block 1 (4 GiB/TiB
//!   plus 32 MiB of PTE tables at 2 MiB, ~40 MiB/TiB at 1 GiB); each 128 MiB section also
//!   has its usage record, as in the kernel;
//! * [`Layout::Heads`]: one descriptor per compound, tails computed (32 MiB/TiB at 2 MiB).
//!
//! A memmap covers one range of a pgmap; the first `altmap_pfns` of the range may hold the
//! memmap itself ("map=dev") and have no descriptors of their own. Stores hand out only shared
//! references to atomics; every lookup takes a `Synced` token, which the init layer mints once
//! a span is initialised, so no lookup can reach a descriptor before it is written.

mod array;
mod cost;
mod flat;
mod geometry;
mod heads;
mod layout;
mod room;
mod sums;
mod synced;
mod vmemmap;
mod walk;

use crate::addr::{Order, Pfn, PfnRange};
use crate::backing::{BackingError, PageHint};
use crate::desc::{HeadWord, Page, PageFlags};

pub use self::cost::{Cost, Resident};
pub(crate) use self::flat::FlatStore;
pub use self::geometry::{AltmapGeometry, Geometry, MemmapError};
pub(crate) use self::heads::HeadsStore;
pub(crate) use self::layout::page_round;
pub use self::layout::{
    DEDUP_MIN_ORDER, DESC_SIZE, DESCS_PER_BLOCK, DIR_ENTRY_SIZE, Layout, VMEMMAP_RESERVE_NR,
};
pub(crate) use self::room::MemmapRoom;
pub use self::sums::RoomSums;
pub(crate) use self::sums::{Units, unit_sum};
pub(crate) use self::synced::Synced;
use self::vmemmap::VmemmapPlan;
pub(crate) use self::vmemmap::VmemmapStore;
pub use self::vmemmap::{DESCS_PER_PMD, SECTION_USAGE_BYTES};
pub(crate) use self::walk::{FolioLookup, SpanFolios};

impl Layout {
    /// Descriptors initialisation writes per compound: all of them (Flat, and Vmemmap without
    /// dedup), the two unique blocks (Vmemmap with dedup: 128), or the head alone (Heads).
    pub fn descriptors_per_compound(self, geo: &Geometry) -> u64 {
        match self {
            Layout::Flat => geo.shift.nr_pages(),
            Layout::Vmemmap if geo.dedups() => VMEMMAP_RESERVE_NR * DESCS_PER_BLOCK,
            Layout::Vmemmap => geo.shift.nr_pages(),
            Layout::Heads => 1,
        }
    }

    /// What a memmap of this layout and geometry costs, computed without allocating.
    pub fn cost(self, geo: &Geometry) -> Cost {
        let n = geo.range.len();
        let c = geo.shift.nr_pages();
        let mut cost = match self {
            Layout::Flat => Cost::descriptors_only(geo, page_round(n * DESC_SIZE)),
            Layout::Vmemmap => VmemmapPlan::new(geo).cost(geo),
            Layout::Heads => Cost::descriptors_only(geo, page_round((n / c) * DESC_SIZE)),
        };
        cost.descriptors_initialized = geo.data_pages() / c * self.descriptors_per_compound(geo);
        cost
    }
}

/// Why a lookup found no descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The pfn is not in this memmap.
    #[error("pfn {pfn} is outside {range:?}")]
    OutOfRange {
        /// The pfn.
        pfn: Pfn,
        /// The range the memmap covers.
        range: PfnRange,
    },
    /// The pfn holds the memmap itself (altmap) and has no descriptor.
    #[error("pfn {pfn} holds the on-device memmap (altmap) and has no descriptor")]
    AltmapPfn {
        /// The pfn.
        pfn: Pfn,
    },
    /// The descriptor has not been initialised.
    #[error("the descriptor of pfn {pfn} is not initialised")]
    Uninitialized {
        /// The pfn.
        pfn: Pfn,
    },
    /// The folio holding the pfn was being formed or split while it was looked up (fsdax
    /// only; retried under the pgmap's formation lock by the callers that can take it).
    #[error("the folio holding pfn {pfn} changed shape during the lookup")]
    Reshaping {
        /// The pfn.
        pfn: Pfn,
    },
    /// A lookup outside the span its caller synced (a bug in the caller, reported, not hidden).
    #[error("pfn {pfn} was looked up outside the span its caller synced")]
    NotSynced {
        /// The pfn.
        pfn: Pfn,
    },
}

/// A folio found by lookup: its head pfn, order and head descriptor.
#[derive(Debug, Clone, Copy)]
pub struct Folio<'a> {
    head: Pfn,
    order: Order,
    desc: &'a Page,
}

impl<'a> Folio<'a> {
    /// The head pfn.
    pub fn pfn(&self) -> Pfn {
        self.head
    }

    /// The order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// Pages in the folio.
    pub fn nr_pages(&self) -> u64 {
        self.order.nr_pages()
    }

    /// The pfns the folio spans.
    pub fn range(&self) -> PfnRange {
        // A folio lies inside a validated range, so `head + nr_pages` cannot overflow.
        PfnRange::new_unchecked(self.head, self.head.add(self.nr_pages()))
    }

    /// The head descriptor, which holds every folio-wide field.
    pub fn head_page(&self) -> &'a Page {
        self.desc
    }
}

/// A memmap in one of the three layouts.
#[derive(Debug)]
pub(crate) enum Memmap {
    Flat(FlatStore),
    Vmemmap(VmemmapStore),
    Heads(HeadsStore),
}

impl Memmap {
    /// Reserves a store of `layout` for `geo`, its dense arrays mapped with `dense`. Nothing is
    /// initialised or resident yet.
    #[cfg(test)]
    pub(crate) fn new(layout: Layout, geo: Geometry, dense: PageHint) -> Result<Self, MemmapError> {
        Self::new_in(layout, geo, dense, None)
    }

    /// As [`Memmap::new`], with the store's arrays in `room` if given (the Flat and Heads
    /// layouts only): a store whose descriptors outlive the process.
    pub(crate) fn new_in(
        layout: Layout,
        geo: Geometry,
        dense: PageHint,
        room: Option<&MemmapRoom>,
    ) -> Result<Self, MemmapError> {
        let wrap = |source| MemmapError::Backing { layout, source };
        Ok(match layout {
            Layout::Flat => Memmap::Flat(FlatStore::new(geo, dense, room).map_err(wrap)?),
            Layout::Vmemmap if room.is_some() => return Err(MemmapError::NotInRoom { layout }),
            Layout::Vmemmap => Memmap::Vmemmap(VmemmapStore::new(geo, dense).map_err(wrap)?),
            Layout::Heads => Memmap::Heads(HeadsStore::new(geo, dense, room).map_err(wrap)?),
        })
    }

    pub(crate) fn layout(&self) -> Layout {
        match self {
            Memmap::Flat(_) => Layout::Flat,
            Memmap::Vmemmap(_) => Layout::Vmemmap,
            Memmap::Heads(_) => Layout::Heads,
        }
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        match self {
            Memmap::Flat(s) => s.geometry(),
            Memmap::Vmemmap(s) => s.geometry(),
            Memmap::Heads(s) => s.geometry(),
        }
    }

    /// Current cost: the estimate plus anything that grew since (un-shared vmemmap blocks,
    /// folio side-table entries).
    pub(crate) fn cost(&self) -> Cost {
        let mut c = self.layout().cost(self.geometry());
        c.add_descriptor_bytes(match self {
            Memmap::Flat(_) => 0,
            Memmap::Vmemmap(s) => s.extra_bytes(),
            Memmap::Heads(s) => s.extra_bytes(),
        });
        c
    }

    /// The memory the store holds now, measured page by page: host memory to compare with
    /// [`Cost::metadata_bytes`], and the emulated device memory of an altmap. The Heads
    /// layout's poison side table lives on the heap and is not measured.
    pub(crate) fn resident(&self) -> Result<Resident, BackingError> {
        match self {
            Memmap::Flat(s) => s.resident(),
            Memmap::Vmemmap(s) => s.resident(),
            Memmap::Heads(s) => s.resident(),
        }
    }

    /// Descriptors initialisation writes for the compound headed at `head`, in order: head,
    /// first tail, then the remaining unique tails. Also maps the compound in the store
    /// (Vmemmap: its PMD entries and PTEs, and its sections' usage). `head` must be a compound
    /// head in the data range.
    pub(crate) fn populate_compound(&self, head: Pfn) -> &[Page] {
        match self {
            Memmap::Flat(s) => s.compound_slots(head),
            Memmap::Vmemmap(s) => s.populate_compound(head),
            Memmap::Heads(s) => s.compound_slots(head),
        }
    }

    /// The descriptors [`Memmap::populate_compound`] returns, without populating anything:
    /// for writers of a compound's later descriptors once its first part has populated it.
    pub(crate) fn compound_slots(&self, head: Pfn) -> &[Page] {
        match self {
            Memmap::Flat(s) => s.compound_slots(head),
            Memmap::Vmemmap(s) => s.compound_slots(head),
            Memmap::Heads(s) => s.compound_slots(head),
        }
    }

    fn check(&self, s: &Synced, pfn: Pfn) -> Result<(), LookupError> {
        let geo = self.geometry();
        if !geo.range.contains(pfn) {
            return Err(LookupError::OutOfRange {
                pfn,
                range: geo.range,
            });
        }
        if !geo.data_range().contains(pfn) {
            return Err(LookupError::AltmapPfn { pfn });
        }
        if !s.covers(pfn) {
            return Err(LookupError::NotSynced { pfn });
        }
        Ok(())
    }

    /// The stored descriptor of `pfn`: `None` for a Heads-layout tail, which has none.
    pub(crate) fn descriptor(&self, s: &Synced, pfn: Pfn) -> Result<Option<&Page>, LookupError> {
        self.check(s, pfn)?;
        self.stored(pfn)
    }

    /// The stored descriptor of a pfn already checked to be in the data range.
    fn stored(&self, pfn: Pfn) -> Result<Option<&Page>, LookupError> {
        Ok(match self {
            Memmap::Flat(f) => Some(f.page(pfn)),
            Memmap::Vmemmap(v) => Some(v.page(pfn).ok_or(LookupError::Uninitialized { pfn })?),
            Memmap::Heads(f) => f.head_page(pfn),
        })
    }

    /// The head pfn of the compound holding `pfn`: read from its descriptor's head word, or
    /// computed for a Heads-layout tail, which has no descriptor (and never belongs to a
    /// dynamic folio: those exist only at `vmemmap_shift = 0`, where every pfn is stored).
    pub(crate) fn compound_head(&self, s: &Synced, pfn: Pfn) -> Result<Pfn, LookupError> {
        self.check(s, pfn)?;
        self.head_of(pfn, self.stored(pfn)?)
    }

    fn head_of(&self, pfn: Pfn, stored: Option<&Page>) -> Result<Pfn, LookupError> {
        match stored {
            None => Ok(pfn.align_down(self.geometry().shift)),
            Some(page) => match page.head_word() {
                HeadWord::Unset => Err(LookupError::Uninitialized { pfn }),
                HeadWord::Pgmap(_) => Ok(pfn),
                HeadWord::Tail(head) => Ok(head),
            },
        }
    }

    /// The folio holding `pfn`: one range check, one read of the pfn's head word, one of the
    /// head. The head is not checked against the sync token: a tail word is written only after
    /// its head was initialised (compound init, or forming a dynamic folio from synced pages).
    pub(crate) fn folio(&self, s: &Synced, pfn: Pfn) -> Result<Folio<'_>, LookupError> {
        self.check(s, pfn)?;
        let stored = self.stored(pfn)?;
        let head = self.head_of(pfn, stored)?;
        let desc = match stored {
            Some(d) if head == pfn => d,
            // A head word only ever names a pfn of the data range; checked anyway, so that a
            // bad word is an error rather than an out-of-bounds index.
            _ if !self.geometry().data_range().contains(head) => {
                return Err(LookupError::Uninitialized { pfn: head });
            }
            _ => self
                .stored(head)?
                .ok_or(LookupError::Uninitialized { pfn: head })?,
        };
        let folio = self.folio_at(head, desc)?;
        // The pfn's head word and the head's order are two reads: a dynamic (fsdax) folio
        // forming or splitting between them yields a folio that does not hold the pfn.
        if !folio.range().contains(pfn) {
            return Err(LookupError::Reshaping { pfn });
        }
        Ok(folio)
    }

    fn folio_at<'a>(&self, head: Pfn, desc: &'a Page) -> Result<Folio<'a>, LookupError> {
        if matches!(desc.head_word(), HeadWord::Unset) {
            return Err(LookupError::Uninitialized { pfn: head });
        }
        let order = if desc.flags().contains(PageFlags::HEAD) {
            desc.order()
                .ok_or(LookupError::Uninitialized { pfn: head })?
        } else {
            Order::BASE
        };
        Ok(Folio { head, order, desc })
    }

    /// Marks one 4 KiB page poisoned without touching its siblings' descriptors: a per-tail
    /// write. Vmemmap first gives the page's block its own copy; Heads records it in a side
    /// table. The folio's head gets `HAS_HWPOISONED`.
    pub(crate) fn mark_subpage_hwpoison(&self, s: &Synced, pfn: Pfn) -> Result<(), LookupError> {
        let folio = self.folio(s, pfn)?;
        match self {
            Memmap::Flat(f) => f.page(pfn).set_flags(PageFlags::HWPOISON),
            Memmap::Vmemmap(v) => v
                .page_for_write(pfn)
                .ok_or(LookupError::Uninitialized { pfn })?
                .set_flags(PageFlags::HWPOISON),
            Memmap::Heads(f) => f.record_subpage_poison(pfn),
        }
        folio.head_page().set_flags(PageFlags::HAS_HWPOISONED);
        Ok(())
    }

    /// Clears one 4 KiB page's poison (`clear_page_hwpoison` once the bytes were rewritten),
    /// and the head's `HAS_HWPOISONED` once no page of the folio is poisoned. A Vmemmap block
    /// un-shared for the poison stays un-shared. Returns whether the page was poisoned.
    pub(crate) fn clear_subpage_hwpoison(&self, s: &Synced, pfn: Pfn) -> Result<bool, LookupError> {
        let folio = self.folio(s, pfn)?;
        let was = match self {
            Memmap::Flat(f) => {
                let p = f.page(pfn);
                let was = p.flags().contains(PageFlags::HWPOISON);
                p.clear_flags(PageFlags::HWPOISON);
                was
            }
            Memmap::Vmemmap(v) => {
                let p = v
                    .page_for_write(pfn)
                    .ok_or(LookupError::Uninitialized { pfn })?;
                let was = p.flags().contains(PageFlags::HWPOISON);
                p.clear_flags(PageFlags::HWPOISON);
                was
            }
            Memmap::Heads(f) => f.clear_subpage_poison(pfn),
        };
        if self.first_hwpoison(&folio).is_none() {
            folio.head_page().clear_flags(PageFlags::HAS_HWPOISONED);
        }
        Ok(was)
    }

    /// The lowest poisoned 4 KiB page of `folio` (the head itself if the whole folio is), or
    /// `None` if none is visible yet (a poisoning running concurrently flags the page before
    /// the head, but with Relaxed stores). Reads every page's descriptor on Flat and
    /// Vmemmap, so it is for error paths, after the head flags said there is poison to find.
    ///
    /// It needs no sync token: a `Folio` comes from a synced lookup of its head, and every
    /// page of a folio is initialised once its head is (static folios are initialised whole;
    /// a dynamic one is formed only from synced pages). A caller's token may cover less than
    /// the folio: a pin of part of an fsdax folio syncs only that part.
    pub(crate) fn first_hwpoison(&self, folio: &Folio<'_>) -> Option<Pfn> {
        if folio.head_page().flags().contains(PageFlags::HWPOISON) {
            return Some(folio.pfn());
        }
        match self {
            Memmap::Heads(f) => f.first_poisoned(folio.range()),
            _ => (0..folio.nr_pages()).map(|i| folio.pfn().add(i)).find(|&pfn| {
                matches!(self.stored(pfn), Ok(Some(p)) if p.flags().contains(PageFlags::HWPOISON))
            }),
        }
    }

    /// Whether this 4 KiB page is poisoned.
    pub(crate) fn subpage_hwpoison(&self, s: &Synced, pfn: Pfn) -> Result<bool, LookupError> {
        self.check(s, pfn)?;
        Ok(match self {
            Memmap::Heads(f) => f.subpage_poisoned(pfn),
            _ => self
                .descriptor(s, pfn)?
                .is_some_and(|p| p.flags().contains(PageFlags::HWPOISON)),
        })
    }

    /// Address space reserved by the store (for diagnostics).
    pub(crate) fn reserved_bytes(&self) -> u64 {
        match self {
            Memmap::Flat(s) => s.reserved_bytes(),
            Memmap::Vmemmap(s) => s.reserved_bytes(),
            Memmap::Heads(s) => s.reserved_bytes(),
        }
    }
}

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod tests;
