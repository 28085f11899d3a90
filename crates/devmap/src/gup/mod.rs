//! Pinning pages for DMA (`mm/gup.c`, seeds 000 and 004): one reference update per folio,
//! never per 4 KiB page, for both pin and unpin.
//!
//! Every pin returns one type, [`Pinned<U, A>`](Pinned): `U` says whether an entry is a 4 KiB
//! page ([`Pages`], like `pin_user_pages_fast`'s `pages[]`) or a folio's covered part
//! ([`Folios`]); `A` says whether the range was named by pfn ([`ByPfn`], here) or by user address
//! ([`ByAddress`], `DaxMapping::pin_user_pages` and `pin_user_folios`).
//!
//! Accounting follows `GUP_PIN_COUNTING_BIAS`: a large folio's count and pincount grow by the
//! pages pinned; a small folio's count grows by 1024 per pin. Plain gets (`FOLL_GET`,
//! [`Pgmap::get_pages`]) add references without the bias. Every result holds a liveness
//! reference on its pgmap, so teardown waits for it, and gives its references back when it is
//! dropped or unpinned, optionally marking each folio dirty once. A failure part-way gives back
//! everything taken before it: nothing is left pinned.

use std::sync::Arc;

use crate::addr::{Pfn, PfnRange};
use crate::memmap::Folio;
use crate::pgmap::{DeviceSpace, Pgmap};

pub use self::bare::BareLoop;
pub use self::extents::{Extent, ExtentLimits};
use self::flags::Kind;
pub use self::flags::{GupError, GupFlags};
use self::held::Held;
pub use self::pinned::{ByAddress, ByPfn, Folios, Pages, Pinned, PinnedFolio, Source, Unit};

impl DeviceSpace {
    /// Pins `range`, finding the pgmap of each pfn (`pin_user_pages_fast`): a range may run
    /// across adjacent pgmaps. The whole range is checked before anything is taken.
    pub fn pin_pages(&self, range: PfnRange, flags: GupFlags) -> Result<Pinned<Pages>, GupError> {
        let held = Held::cover_space(self, range, flags)?;
        grab_pages(held, flags, Kind::Pin, Vec::new())
    }

    /// Pins `range` one entry per folio, finding the pgmap of each pfn.
    pub fn pin_folios(&self, range: PfnRange, flags: GupFlags) -> Result<Pinned<Folios>, GupError> {
        let held = Held::cover_space(self, range, flags)?;
        grab_folios(held, flags, Vec::new())
    }
}

impl Pgmap {
    /// Pins every page of `range`, one entry per 4 KiB page, one reference update per folio.
    pub fn pin_pages(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
    ) -> Result<Pinned<Pages>, GupError> {
        self.grab_pages(range, flags, Kind::Pin, Vec::new())
    }

    /// As [`pin_pages`](Self::pin_pages), writing the entries into `buf` (emptied first) the
    /// way `pin_user_pages_fast` fills its caller's `pages[]`. A caller that pins repeatedly
    /// gets `buf` back from [`Pinned::unpin_keep_buffer`] and so allocates, and faults
    /// in, 8 bytes per page once instead of on every call. On error `buf` is dropped.
    pub fn pin_pages_into(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        buf: Vec<Pfn>,
    ) -> Result<Pinned<Pages>, GupError> {
        self.grab_pages(range, flags, Kind::Pin, buf)
    }

    /// Takes plain references (`FOLL_GET`, `get_user_pages_fast`) on every page of `range`.
    pub fn get_pages(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
    ) -> Result<Pinned<Pages>, GupError> {
        self.grab_pages(range, flags, Kind::Get, Vec::new())
    }

    /// As [`get_pages`](Self::get_pages), into a reused buffer (see
    /// [`pin_pages_into`](Self::pin_pages_into)).
    pub fn get_pages_into(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        buf: Vec<Pfn>,
    ) -> Result<Pinned<Pages>, GupError> {
        self.grab_pages(range, flags, Kind::Get, buf)
    }

    fn grab_pages(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        kind: Kind,
        pages: Vec<Pfn>,
    ) -> Result<Pinned<Pages>, GupError> {
        let held = Held::cover_pgmap(self, range, flags)?;
        grab_pages(held, flags, kind, pages)
    }

    /// Pins every folio `range` touches, one entry per folio with the part covered.
    pub fn pin_folios(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
    ) -> Result<Pinned<Folios>, GupError> {
        self.pin_folios_into(range, flags, Vec::new())
    }

    /// As [`pin_folios`](Self::pin_folios), writing the entries into `buf` (emptied first);
    /// [`Pinned::unpin_keep_buffer`] hands it back. On error `buf` is dropped.
    pub fn pin_folios_into(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        folios: Vec<PinnedFolio>,
    ) -> Result<Pinned<Folios>, GupError> {
        let held = Held::cover_pgmap(self, range, flags)?;
        grab_folios(held, flags, folios)
    }
}

/// [`Pgmap::pin_pages`] of `runs`, ranges the caller knows lie in `pgmap`'s data ranges (the
/// pfn runs of a device's range table behind a pin by user address, in address order): they
/// are not checked against the data ranges first, and the entries follow the runs' order. The
/// grab still finds each range of them, and a pfn outside them fails as it would (`NoPgmap`,
/// nothing left pinned).
pub(crate) fn pin_device_pages(
    pgmap: &Arc<Pgmap>,
    runs: impl IntoIterator<Item = PfnRange>,
    flags: GupFlags,
) -> Result<Pinned<Pages>, GupError> {
    let held = Held::known(pgmap, runs, flags)?;
    grab_pages(held, flags, Kind::Pin, Vec::new())
}

/// [`Pgmap::pin_folios`] of `runs`, as [`pin_device_pages`].
pub(crate) fn pin_device_folios(
    pgmap: &Arc<Pgmap>,
    runs: impl IntoIterator<Item = PfnRange>,
    flags: GupFlags,
) -> Result<Pinned<Folios>, GupError> {
    let held = Held::known(pgmap, runs, flags)?;
    grab_folios(held, flags, Vec::new())
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
    flags: GupFlags,
    kind: Kind,
    mut pages: Vec<Pfn>,
) -> Result<Pinned<Pages>, GupError> {
    reserve_entries(&mut pages, held.iter().map(|p| p.span.len()).sum())?;
    grab_held(&held, kind, |_, sub| {
        // record_subpages: one entry per 4 KiB page of the folio's covered part.
        pages.extend((0..sub.len()).map(|i| sub.start().add(i)));
    })?;
    Ok(Pinned::new(held, pages, kind, flags))
}

/// The folio-range grab over a checked cover.
fn grab_folios(
    held: Held,
    flags: GupFlags,
    mut folios: Vec<PinnedFolio>,
) -> Result<Pinned<Folios>, GupError> {
    // Folios of each pgmap's order, plus a partial one at each end of each part.
    let expect = held.iter().fold(0u64, |n, p| {
        n.saturating_add((p.span.len() >> p.pgmap.vmemmap_shift().get()) + 2)
    });
    reserve_entries(&mut folios, expect)?;
    grab_held(&held, Kind::Pin, |f, sub| {
        folios.push(PinnedFolio::new(sub, f.order()));
    })?;
    Ok(Pinned::new(held, folios, Kind::Pin, flags))
}

mod bare;
mod batch;
mod extents;
mod flags;
mod held;
mod pinned;

#[cfg(all(test, not(loom)))]
mod cover_tests;
#[cfg(all(test, not(loom)))]
mod extents_tests;
#[cfg(all(test, not(loom)))]
mod tests;
