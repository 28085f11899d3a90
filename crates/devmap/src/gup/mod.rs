//! Pinning pages for DMA (`mm/gup.c`, seeds 000 and 004): one reference update per folio,
//! never per 4 KiB page, for both pin and unpin.
//!
//! Two shapes of result:
//!
//! * [`PinnedPages`]: one entry per 4 KiB page, like `pin_user_pages_fast` fills its `pages[]`
//!   (the entries are written by a `record_subpages` loop, the references are taken once per
//!   folio);
//! * [`PinnedFolios`]: one entry per folio with the part of it the range covers, what
//!   `memfd_pin_folios` would be for device-dax.
//!
//! Accounting follows `GUP_PIN_COUNTING_BIAS`: a large folio's count and pincount grow by the
//! pages pinned; a small folio's count grows by 1024 per pin. Plain gets (`FOLL_GET`,
//! [`Pgmap::get_pages`]) add references without the bias. Every result holds a liveness
//! reference on its pgmap, so teardown waits for it, and gives its references back when it is
//! dropped; the `unpin_*` functions do so explicitly, optionally marking each folio dirty once.
//! A failure part-way gives back everything taken before it: nothing is left pinned.

use std::sync::Arc;

use crate::addr::{Order, Pfn, PfnRange};
use crate::memmap::Folio;
use crate::pgmap::{DeviceSpace, Pgmap};

use self::flags::Kind;
pub use self::flags::{GupError, GupFlags};
use self::held::Held;

/// One pinned folio and the part of it a [`PinnedFolios`] covers: 16 bytes, against 4 KiB of
/// page-array entries for a 2 MiB folio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedFolio {
    start: Pfn,
    /// Pages covered (a folio has at most 2^30).
    nr: u32,
    order: Order,
}

impl PinnedFolio {
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

/// Pages pinned one entry per 4 KiB page (`pin_user_pages_fast`).
#[derive(Debug)]
pub struct PinnedPages {
    held: Held,
    pages: Vec<Pfn>,
    kind: Kind,
    flags: GupFlags,
    released: bool,
}

/// Folios pinned one entry per folio.
#[derive(Debug)]
pub struct PinnedFolios {
    held: Held,
    span: PfnRange,
    folios: Vec<PinnedFolio>,
    flags: GupFlags,
    released: bool,
}

impl DeviceSpace {
    /// Pins `range`, finding the pgmap of each pfn (`pin_user_pages_fast`): a range may run
    /// across adjacent pgmaps. The whole range is checked before anything is taken.
    pub fn pin_pages(&self, range: PfnRange, flags: GupFlags) -> Result<PinnedPages, GupError> {
        let held = Held::cover_space(self, range, flags)?;
        grab_pages(held, range, flags, Kind::Pin, Vec::new())
    }

    /// Pins `range` one entry per folio, finding the pgmap of each pfn.
    pub fn pin_folios(&self, range: PfnRange, flags: GupFlags) -> Result<PinnedFolios, GupError> {
        let held = Held::cover_space(self, range, flags)?;
        grab_folios(held, range, flags, Vec::new())
    }
}

impl Pgmap {
    /// Pins every page of `range`, one entry per 4 KiB page, one reference update per folio.
    pub fn pin_pages(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
    ) -> Result<PinnedPages, GupError> {
        self.grab_pages(range, flags, Kind::Pin, Vec::new())
    }

    /// As [`pin_pages`](Self::pin_pages), writing the entries into `buf` (emptied first) the
    /// way `pin_user_pages_fast` fills its caller's `pages[]`. A caller that pins repeatedly
    /// gets `buf` back from [`PinnedPages::unpin_keep_buffer`] and so allocates, and faults
    /// in, 8 bytes per page once instead of on every call. On error `buf` is dropped.
    pub fn pin_pages_into(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        buf: Vec<Pfn>,
    ) -> Result<PinnedPages, GupError> {
        self.grab_pages(range, flags, Kind::Pin, buf)
    }

    /// Takes plain references (`FOLL_GET`, `get_user_pages_fast`) on every page of `range`.
    pub fn get_pages(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
    ) -> Result<PinnedPages, GupError> {
        self.grab_pages(range, flags, Kind::Get, Vec::new())
    }

    /// As [`get_pages`](Self::get_pages), into a reused buffer (see
    /// [`pin_pages_into`](Self::pin_pages_into)).
    pub fn get_pages_into(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        buf: Vec<Pfn>,
    ) -> Result<PinnedPages, GupError> {
        self.grab_pages(range, flags, Kind::Get, buf)
    }

    fn grab_pages(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        kind: Kind,
        pages: Vec<Pfn>,
    ) -> Result<PinnedPages, GupError> {
        let held = Held::cover_pgmap(self, range, flags)?;
        grab_pages(held, range, flags, kind, pages)
    }

    /// Pins every folio `range` touches, one entry per folio with the part covered.
    pub fn pin_folios(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
    ) -> Result<PinnedFolios, GupError> {
        self.pin_folios_into(range, flags, Vec::new())
    }

    /// As [`pin_folios`](Self::pin_folios), writing the entries into `buf` (emptied first);
    /// [`PinnedFolios::unpin_keep_buffer`] hands it back. On error `buf` is dropped.
    pub fn pin_folios_into(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        folios: Vec<PinnedFolio>,
    ) -> Result<PinnedFolios, GupError> {
        let held = Held::cover_pgmap(self, range, flags)?;
        grab_folios(held, range, flags, folios)
    }
}

/// [`Pgmap::pin_pages`] of a range the caller knows lies in `pgmap`'s data ranges (a run of a
/// device's range table, behind a pin by user address): the range is not checked against
/// the data ranges first. The grab still finds each range of it, and a pfn outside them
/// fails as it would (`NoPgmap`, nothing left pinned).
pub(crate) fn pin_device_pages(
    pgmap: &Arc<Pgmap>,
    range: PfnRange,
    flags: GupFlags,
) -> Result<PinnedPages, GupError> {
    let held = Held::known(pgmap, range, flags)?;
    grab_pages(held, range, flags, Kind::Pin, Vec::new())
}

/// [`Pgmap::pin_folios`] of a range the caller knows lies in `pgmap`'s data ranges, as
/// [`pin_device_pages`].
pub(crate) fn pin_device_folios(
    pgmap: &Arc<Pgmap>,
    range: PfnRange,
    flags: GupFlags,
) -> Result<PinnedFolios, GupError> {
    let held = Held::known(pgmap, range, flags)?;
    grab_folios(held, range, flags, Vec::new())
}

/// Empties `buf` and makes room for `n` entries, refusing what cannot be allocated rather
/// than aborting.
fn reserve_entries<T>(buf: &mut Vec<T>, n: u64) -> Result<(), GupError> {
    buf.clear();
    let too_many = || GupError::TooManyEntries {
        entries: n,
        bytes: n.saturating_mul(std::mem::size_of::<T>() as u64),
    };
    let n = usize::try_from(n).map_err(|_| too_many())?;
    buf.try_reserve(n).map_err(|_| too_many())
}

/// Takes references on every part of `held`, in order; on failure gives back the parts
/// already taken (the failing part unwinds itself).
fn grab_held(
    held: &Held,
    kind: Kind,
    mut record: impl FnMut(&Folio<'_>, PfnRange),
) -> Result<(), GupError> {
    for (i, part) in held.iter().enumerate() {
        if let Err(e) = batch::grab(&part.pgmap, part.span, kind, &mut record) {
            for done in held.iter().take(i) {
                batch::release_range(&done.pgmap, done.span, kind == Kind::Pin, false);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// The page-array grab over a checked cover: sizes the entries, then grabs.
fn grab_pages(
    held: Held,
    range: PfnRange,
    flags: GupFlags,
    kind: Kind,
    mut pages: Vec<Pfn>,
) -> Result<PinnedPages, GupError> {
    reserve_entries(&mut pages, range.len())?;
    grab_held(&held, kind, |_, sub| {
        // record_subpages: one entry per 4 KiB page of the folio's covered part.
        pages.extend((0..sub.len()).map(|i| sub.start().add(i)));
    })?;
    Ok(PinnedPages {
        held,
        pages,
        kind,
        flags,
        released: false,
    })
}

/// The folio-range grab over a checked cover.
fn grab_folios(
    held: Held,
    range: PfnRange,
    flags: GupFlags,
    mut folios: Vec<PinnedFolio>,
) -> Result<PinnedFolios, GupError> {
    // Folios of each pgmap's order, plus a partial one at each end of each part.
    let expect = held.iter().fold(0u64, |n, p| {
        n.saturating_add((p.span.len() >> p.pgmap.vmemmap_shift().get()) + 2)
    });
    reserve_entries(&mut folios, expect)?;
    grab_held(&held, Kind::Pin, |f, sub| {
        folios.push(PinnedFolio {
            start: sub.start(),
            // Within one folio, so at most 2^Order::MAX pages.
            nr: sub.len() as u32,
            order: f.order(),
        });
    })?;
    Ok(PinnedFolios {
        held,
        span: range,
        folios,
        flags,
        released: false,
    })
}

impl PinnedPages {
    /// The pinned pages, one per 4 KiB, in order.
    pub fn pages(&self) -> &[Pfn] {
        &self.pages
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether no page is held (never true for a successful pin).
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The flags the pages were pinned with.
    pub fn flags(&self) -> GupFlags {
        self.flags
    }

    /// The pgmap of the first page (a range pinned through [`DeviceSpace::pin_pages`] may
    /// run on into adjacent pgmaps).
    pub fn pgmap(&self) -> &Pgmap {
        self.held.first_pgmap()
    }

    /// Unpins like [`unpin_user_pages_dirty_lock`] and returns the entry buffer, emptied, for
    /// the next [`Pgmap::pin_pages_into`].
    pub fn unpin_keep_buffer(mut self, make_dirty: bool) -> Vec<Pfn> {
        self.release_entries(make_dirty);
        let mut buf = std::mem::take(&mut self.pages);
        buf.clear();
        buf
    }

    /// `unpin_user_pages_dirty_lock`: walks the entries, groups consecutive entries of one
    /// folio, and gives each folio its references back in one update (marking it dirty once
    /// first if `make_dirty`).
    fn release_entries(&mut self, make_dirty: bool) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let pin = self.kind == Kind::Pin;
        // Each part recorded one entry per page of its span, in order.
        let mut entries = &self.pages[..];
        for part in self.held.iter() {
            let n = (part.span.len() as usize).min(entries.len());
            let (mine, rest) = entries.split_at(n);
            batch::release_entries(&part.pgmap, mine, pin, make_dirty);
            entries = rest;
        }
    }

    /// `unpin_user_page_range_dirty_lock`: the pages are one contiguous range, so folios are
    /// found by arithmetic over it rather than by walking the entries.
    fn release_range(&mut self, dirty: bool) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        for part in self.held.iter() {
            batch::release_range(&part.pgmap, part.span, self.kind == Kind::Pin, dirty);
        }
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        self.release_entries(false);
    }
}

impl PinnedFolios {
    /// The pinned folios, in order.
    pub fn folios(&self) -> &[PinnedFolio] {
        &self.folios
    }

    /// Number of folios.
    pub fn len(&self) -> usize {
        self.folios.len()
    }

    /// Whether no folio is held (never true for a successful pin).
    pub fn is_empty(&self) -> bool {
        self.folios.is_empty()
    }

    /// Pages covered, summed over the folios.
    pub fn nr_pages(&self) -> u64 {
        self.span.len()
    }

    /// The flags the folios were pinned with.
    pub fn flags(&self) -> GupFlags {
        self.flags
    }

    /// The pgmap of the first folio (see [`PinnedPages::pgmap`]).
    pub fn pgmap(&self) -> &Pgmap {
        self.held.first_pgmap()
    }

    /// Unpins like [`unpin_folios`] and returns the entry buffer, emptied, for the next
    /// [`Pgmap::pin_folios_into`].
    pub fn unpin_keep_buffer(mut self, make_dirty: bool) -> Vec<PinnedFolio> {
        self.release(make_dirty);
        let mut buf = std::mem::take(&mut self.folios);
        buf.clear();
        buf
    }

    fn release(&mut self, dirty: bool) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        // The folios cannot change shape while pinned, so walking the span finds exactly the
        // entries' folios, with the same pages each.
        for part in self.held.iter() {
            batch::release_range(&part.pgmap, part.span, true, dirty);
        }
    }
}

impl Drop for PinnedFolios {
    fn drop(&mut self) {
        self.release(false);
    }
}

/// `unpin_user_pages`: releases every pin, one update per folio.
pub fn unpin_user_pages(mut pages: PinnedPages) {
    pages.release_entries(false);
}

/// `unpin_user_pages_dirty_lock`: as [`unpin_user_pages`], marking each folio dirty once
/// first when `make_dirty`.
pub fn unpin_user_pages_dirty_lock(mut pages: PinnedPages, make_dirty: bool) {
    pages.release_entries(make_dirty);
}

/// `unpin_user_page_range_dirty_lock`: as [`unpin_user_pages_dirty_lock`] for pages pinned as
/// one range, walking folios by arithmetic instead of entries.
pub fn unpin_user_page_range_dirty_lock(mut pages: PinnedPages, make_dirty: bool) {
    pages.release_range(make_dirty);
}

/// `unpin_folios`: releases every folio's pins, marking each dirty first when `make_dirty`.
pub fn unpin_folios(mut folios: PinnedFolios, make_dirty: bool) {
    folios.release(make_dirty);
}

mod batch;
mod flags;
mod held;

#[cfg(all(test, not(loom)))]
mod cover_tests;
#[cfg(all(test, not(loom)))]
mod tests;
