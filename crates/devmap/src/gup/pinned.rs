//! The one pin result: [`Pinned<U, A>`], generic over what an entry is (`U`: a 4 KiB page,
//! [`Pages`], or a folio's covered part, [`Folios`]) and how the range was named (`A`: by pfn,
//! [`ByPfn`], the default; or by user address, [`ByAddress`], which adds the address and device
//! offset of the first page).
//!
//! Every result holds a liveness reference on each pgmap its pages belong to (so teardown
//! waits for it) and gives its references back exactly once: when unpinned
//! ([`Pinned::unpin`], [`Pinned::unpin_keep_buffer`], [`Pinned::unpin_as_range`]) or dropped.
//! Page entries are given back as `unpin_user_pages_dirty_lock` walks its `pages[]`
//! (consecutive entries of one folio in one update); folio entries, and pages unpinned as a
//! range, by arithmetic over the pinned spans.

use std::marker::PhantomData;

use crate::addr::{Order, PAGE_SIZE, Pfn, PfnRange};
use crate::pgmap::Pgmap;

use super::batch;
use super::flags::{GupFlags, Kind};
use super::held::Held;

/// One pinned folio and the part of it a pin covers: 16 bytes, against 4 KiB of page-array
/// entries for a 2 MiB folio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedFolio {
    start: Pfn,
    /// Pages covered (a folio has at most 2^30).
    nr: u32,
    order: Order,
}

impl PinnedFolio {
    /// The entry for `range`, which lies inside one folio of `order`.
    pub(super) fn new(range: PfnRange, order: Order) -> PinnedFolio {
        PinnedFolio {
            start: range.start(),
            // Within one folio, so at most 2^Order::MAX pages.
            nr: range.len() as u32,
            order,
        }
    }

    /// The folio's head pfn (folios are naturally aligned to their order).
    pub fn head(&self) -> Pfn {
        self.start.align_down(self.order)
    }

    /// The folio's order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// The pinned pfns of this folio.
    pub fn range(&self) -> PfnRange {
        PfnRange::new_unchecked(self.start, self.start.add(u64::from(self.nr)))
    }
}

mod sealed {
    use crate::addr::Pfn;

    /// What an entry is; sealed, so only [`super::Pages`] and [`super::Folios`] are units.
    pub trait Unit {
        /// One result entry.
        type Entry: Copy + std::fmt::Debug + Send + Sync + 'static;
        /// Pages an entry covers.
        fn pages(entry: &Self::Entry) -> u64;
        /// The entries as page pfns, for a unit whose entries are given back by walking them
        /// (`unpin_user_pages`); `None` for one given back by arithmetic over the spans.
        fn as_pfns(entries: &[Self::Entry]) -> Option<&[Pfn]>;
    }

    /// What a pin's range was named by; sealed.
    pub trait Source {
        /// What the result keeps about the naming.
        type At: Copy + std::fmt::Debug + Send + Sync + 'static;
    }
}

/// What one entry of a [`Pinned`] is: [`Pages`] or [`Folios`].
pub trait Unit: sealed::Unit {}
/// How a [`Pinned`]'s range was named: [`ByPfn`] or [`ByAddress`].
pub trait Source: sealed::Source {}

/// One entry per 4 KiB page, a pfn, like `pin_user_pages_fast` fills its `pages[]` (the entries
/// are written by a `record_subpages` loop; the references are taken once per folio).
#[derive(Debug)]
pub enum Pages {}
/// One entry per folio with the part of it the range covers ([`PinnedFolio`]), what
/// `memfd_pin_folios` would be for device-dax.
#[derive(Debug)]
pub enum Folios {}
/// The range was named by pfns (`Pgmap::pin_pages`, `DeviceSpace::pin_folios`).
#[derive(Debug)]
pub enum ByPfn {}
/// The range was named by a user address in a device-dax mapping (`DaxMapping::pin_user_pages`):
/// the result knows where each entry is mapped.
#[derive(Debug)]
pub enum ByAddress {}

impl Unit for Pages {}
impl Unit for Folios {}
impl Source for ByPfn {}
impl Source for ByAddress {}

impl sealed::Unit for Pages {
    type Entry = Pfn;

    fn pages(_: &Pfn) -> u64 {
        1
    }

    fn as_pfns(entries: &[Pfn]) -> Option<&[Pfn]> {
        Some(entries)
    }
}

impl sealed::Unit for Folios {
    type Entry = PinnedFolio;

    fn pages(entry: &PinnedFolio) -> u64 {
        u64::from(entry.nr)
    }

    fn as_pfns(_: &[PinnedFolio]) -> Option<&[Pfn]> {
        // The folios cannot change shape while pinned, so walking the spans finds exactly the
        // entries' folios, with the same pages each.
        None
    }
}

impl sealed::Source for ByPfn {
    type At = ();
}

impl sealed::Source for ByAddress {
    type At = UserSpan;
}

/// Where a pin by address starts: the user address and the device byte offset of its first
/// page. Addresses and offsets run on together through the pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSpan {
    pub(super) addr: usize,
    pub(super) offset: u64,
}

/// Gives back what `held` took, recorded as the page pfns `entries`: each part recorded one
/// entry per page of its span, in order.
fn release_entries(held: &Held, entries: &[Pfn], kind: Kind, dirty: bool) {
    let mut entries = entries;
    for part in held.iter() {
        let n = (part.span.len() as usize).min(entries.len());
        let (mine, rest) = entries.split_at(n);
        batch::release_entries(&part.pgmap, mine, kind == Kind::Pin, dirty);
        entries = rest;
    }
}

/// Gives back what `held` took, span by span, by arithmetic over each span's folios.
fn release_spans(held: &Held, kind: Kind, dirty: bool) {
    for part in held.iter() {
        batch::release_range(&part.pgmap, part.span, kind == Kind::Pin, dirty);
    }
}

/// The references a pin took and its entries: gives the references back once, when released
/// or dropped. Kept apart from [`Pinned`] so that a result can change its [`Source`] by moving
/// this.
#[derive(Debug)]
struct Grab<U: Unit> {
    held: Held,
    entries: Vec<U::Entry>,
    kind: Kind,
    released: bool,
}

impl<U: Unit> Grab<U> {
    fn release(&mut self, dirty: bool) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        match U::as_pfns(&self.entries) {
            Some(pfns) => release_entries(&self.held, pfns, self.kind, dirty),
            None => release_spans(&self.held, self.kind, dirty),
        }
    }
}

impl<U: Unit> Drop for Grab<U> {
    fn drop(&mut self) {
        self.release(false);
    }
}

/// Pages or folios pinned (or, for [`Pages`] by pfn, referenced with `FOLL_GET`): the result
/// of every pin, by pfn or by user address. Dropping it unpins.
#[derive(Debug)]
pub struct Pinned<U: Unit, A: Source = ByPfn> {
    grab: Grab<U>,
    flags: GupFlags,
    at: A::At,
    _source: PhantomData<A>,
}

impl<U: Unit> Pinned<U, ByPfn> {
    /// A result over what `held` took, recorded as `entries`.
    pub(super) fn new(held: Held, entries: Vec<U::Entry>, kind: Kind, flags: GupFlags) -> Self {
        Pinned {
            grab: Grab {
                held,
                entries,
                kind,
                released: false,
            },
            flags,
            at: (),
            _source: PhantomData,
        }
    }

    /// The same pin, named by the user address `addr` of its first page, which is at device
    /// byte offset `offset` (a pin by address is taken by pfn, then told where it is mapped).
    pub(crate) fn at_user(self, addr: usize, offset: u64) -> Pinned<U, ByAddress> {
        Pinned {
            grab: self.grab,
            flags: self.flags,
            at: UserSpan { addr, offset },
            _source: PhantomData,
        }
    }
}

impl<U: Unit, A: Source> Pinned<U, A> {
    /// The entries, in order: pfns for [`Pages`], [`PinnedFolio`]s for [`Folios`].
    pub fn entries(&self) -> &[U::Entry] {
        &self.grab.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.grab.entries.len()
    }

    /// Whether no entry is held (never true for a successful pin: empty pins are refused).
    pub fn is_empty(&self) -> bool {
        self.grab.entries.is_empty()
    }

    /// Pages covered, summed over the entries.
    pub fn nr_pages(&self) -> u64 {
        self.grab.held.iter().map(|p| p.span.len()).sum()
    }

    /// The flags the pin was taken with.
    pub fn flags(&self) -> GupFlags {
        self.flags
    }

    /// The pgmap of the first page (a range pinned through `DeviceSpace::pin_pages` may run
    /// on into adjacent pgmaps).
    pub fn pgmap(&self) -> &Pgmap {
        self.grab.held.first_pgmap()
    }

    /// Gives every pin back (`unpin_user_pages_dirty_lock`, `unpin_folios`), marking each
    /// folio dirty once first if `make_dirty`. Dropping the result does the same without
    /// marking.
    pub fn unpin(mut self, make_dirty: bool) {
        self.grab.release(make_dirty);
    }

    /// As [`unpin`](Self::unpin), and hands back the entry buffer, emptied, for the next
    /// `pin_pages_into` or `pin_folios_into`: a caller that pins repeatedly allocates, and
    /// faults in, its entries once.
    pub fn unpin_keep_buffer(mut self, make_dirty: bool) -> Vec<U::Entry> {
        self.grab.release(make_dirty);
        let mut buf = std::mem::take(&mut self.grab.entries);
        buf.clear();
        buf
    }
}

impl<A: Source> Pinned<Pages, A> {
    /// `unpin_user_page_range_dirty_lock`: the pages are one contiguous range per pgmap, so
    /// their folios are found by arithmetic over it rather than by walking the entries.
    pub fn unpin_as_range(mut self, make_dirty: bool) {
        if !std::mem::replace(&mut self.grab.released, true) {
            release_spans(&self.grab.held, self.grab.kind, make_dirty);
        }
    }
}

impl<U: Unit> Pinned<U, ByAddress> {
    /// The user address of the first pinned page.
    pub fn addr(&self) -> usize {
        self.at.addr
    }

    /// The device byte offset of the first pinned page (the backing's byte offset: for a file
    /// window, from the window's start). The page at `addr() + n` is at `offset() + n`.
    pub fn offset(&self) -> u64 {
        self.at.offset
    }

    /// Every entry with the user address of its first page, in address order.
    pub fn with_addresses(&self) -> impl Iterator<Item = (usize, U::Entry)> + '_ {
        let mut at = self.at.addr;
        self.grab.entries.iter().map(move |e| {
            let here = at;
            at += (U::pages(e) * PAGE_SIZE) as usize;
            (here, *e)
        })
    }
}
