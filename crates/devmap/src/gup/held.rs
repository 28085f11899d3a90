//! What a pin result holds: a liveness reference on each pgmap its pages belong to and the
//! span of pages in each, in the order of the result's entries. A range usually lies in one
//! pgmap (one part); a range that runs across adjacent pgmaps holds one part per pgmap, as the
//! kernel's GUP, which looks each pfn's pgmap up, would. Adjacent ranges of one pgmap stay one
//! part: one reference per pgmap per call. A pin by user address holds one part per pfn run
//! of the device's range table, in address order.
//!
//! The whole range is checked here, before anything is grabbed or any entry buffer sized, so a
//! range that runs past its device fails with the first pfn that is not device memory rather
//! than by asking for memory nobody has.

use std::sync::Arc;

use crate::addr::{Pfn, PfnRange};
use crate::pgmap::{DeviceSpace, Dying, Missing, Pgmap, PgmapRef};

use super::batch;
use super::flags::{GupError, GupFlags};

/// One pgmap's share of a pin: its liveness reference and the pfns pinned in it.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) pgmap: PgmapRef,
    pub(super) span: PfnRange,
}

/// Every part of one pin result; `rest` is empty (and unallocated) unless the range crossed
/// into another pgmap.
#[derive(Debug)]
pub(super) struct Held {
    first: Part,
    rest: Vec<Part>,
}

impl Held {
    /// The parts in the order their entries were recorded: pfn order, or for a pin by user
    /// address, address order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Part> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    /// The pgmap of the first page.
    pub(super) fn first_pgmap(&self) -> &Pgmap {
        &self.first.pgmap
    }

    /// `range` in pfn order, one part per pgmap: the pgmap of the first pfn, then of the
    /// first pfn it does not hold, and so on.
    pub(super) fn cover_space(
        space: &DeviceSpace,
        range: PfnRange,
        flags: GupFlags,
    ) -> Result<Self, GupError> {
        if range.is_empty() {
            return Err(GupError::Empty);
        }
        let mut parts: Vec<Part> = Vec::new();
        let mut pfn = range.start();
        while pfn < range.end() {
            let pgmap = space.find_live(pfn).map_err(|m| match m {
                Missing::Unregistered => GupError::NoPgmap { pfn },
                Missing::Dying(d) => torn_down(pfn, d),
            })?;
            let piece = pgmap
                .data_piece(pfn, range.end())
                .ok_or(GupError::NoPgmap { pfn })?;
            match parts.last_mut() {
                // Another range of the pgmap just covered: the reference already held serves.
                Some(last) if Arc::ptr_eq(last.pgmap.arc(), pgmap.arc()) => {
                    last.span = PfnRange::new_unchecked(last.span.start(), piece.end());
                }
                _ => {
                    batch::check_type(&pgmap, flags)?;
                    parts.push(Part { pgmap, span: piece });
                }
            }
            pfn = piece.end();
        }
        let mut parts = parts.into_iter();
        let first = parts.next().ok_or(GupError::Empty)?;
        Ok(Self {
            first,
            rest: parts.collect(),
        })
    }

    /// `range`, which must lie in `pgmap`'s data ranges (adjacent ranges together).
    pub(super) fn cover_pgmap(
        pgmap: &Arc<Pgmap>,
        range: PfnRange,
        flags: GupFlags,
    ) -> Result<Self, GupError> {
        let held = Self::known(pgmap, [range], flags)?;
        if let Some(pfn) = pgmap.first_uncovered(range) {
            return Err(GupError::NoPgmap { pfn });
        }
        Ok(held)
    }

    /// `runs` of `pgmap`, each of which the caller knows lies in its data ranges (the pfn runs
    /// of a device's range table): as [`Held::cover_pgmap`] without the check against the data
    /// ranges, one part per run, in the order given.
    pub(super) fn known(
        pgmap: &Arc<Pgmap>,
        runs: impl IntoIterator<Item = PfnRange>,
        flags: GupFlags,
    ) -> Result<Self, GupError> {
        let mut runs = runs.into_iter();
        let first = runs.next().ok_or(GupError::Empty)?;
        if first.is_empty() {
            return Err(GupError::Empty);
        }
        batch::check_type(pgmap, flags)?;
        let part = |span: PfnRange| -> Result<Part, GupError> {
            let held = pgmap.live_ref().map_err(|d| torn_down(span.start(), d))?;
            Ok(Part { pgmap: held, span })
        };
        let first = part(first)?;
        let rest = runs
            .map(|span| match span.is_empty() {
                true => Err(GupError::Empty),
                false => part(span),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { first, rest })
    }
}

/// The pin error for a pgmap whose teardown has begun.
pub(super) fn torn_down(pfn: Pfn, d: Dying) -> GupError {
    GupError::TornDown {
        pfn,
        may_revive: d.may_revive,
    }
}
