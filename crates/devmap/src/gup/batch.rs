//! The batch loop behind every pin, get and unpin: one liveness reference and one sync for the
//! whole range, then one reference update per folio. Pgmaps whose folios never change shape
//! (every type but fsdax) walk their folios by arithmetic over a range checked once
//! ([`Memmap::static_folios`]); fsdax looks each folio up and re-checks it after the grab,
//! because a split may race the lookup. A grab that fails part-way gives back what it took.

use std::sync::Arc;

use crate::addr::{Pfn, PfnRange};
use crate::folio::refcount::{self, Refused};
use crate::init::SyncError;
use crate::memmap::{Folio, LookupError, Memmap, Synced};
use crate::pgmap::{MemoryType, Pgmap, PgmapError, PgmapRef};

use super::{GupError, GupFlags, Kind};

/// A failed grab: the pfn it stopped at (everything before it is held) and why.
type Stopped = (Pfn, GupError);

impl Pgmap {
    /// The type rules every grab checks first (`try_grab_folio`, `folio_is_longterm_pinnable`).
    fn check_grab(&self, range: PfnRange, flags: GupFlags) -> Result<(), GupError> {
        let memory_type = self.memory_type();
        if range.is_empty() {
            return Err(GupError::Empty);
        }
        match memory_type {
            MemoryType::Private => return Err(GupError::NotAddressable { memory_type }),
            MemoryType::P2pDma if !flags.contains(GupFlags::PCI_P2PDMA) => {
                return Err(GupError::P2pdmaNotRequested);
            }
            MemoryType::FsDax | MemoryType::Coherent if flags.contains(GupFlags::LONGTERM) => {
                return Err(GupError::LongtermNotPinnable { memory_type });
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes references on every folio of `range`, telling `record` about each folio and the
    /// part of it covered. Unwinds on failure.
    pub(super) fn grab(
        self: &Arc<Self>,
        range: PfnRange,
        flags: GupFlags,
        kind: Kind,
        mut record: impl FnMut(&Folio<'_>, PfnRange),
    ) -> Result<PgmapRef, GupError> {
        self.check_grab(range, flags)?;
        let pgmap = self.tryget().ok_or(GupError::Dead { pfn: range.start() })?;
        let (memmap, s) = self.span_for(range)?;
        let pin = kind == Kind::Pin;
        let taken = if self.memory_type() == MemoryType::FsDax {
            self.grab_dynamic(memmap, &s, range, pin, &mut record)
        } else {
            grab_static(memmap, &s, range, pin, &mut record)
        };
        if let Err((upto, e)) = taken {
            let held = PfnRange::new_unchecked(range.start(), upto);
            self.release_span(memmap, &s, held, pin, false);
            return Err(e);
        }
        Ok(pgmap)
    }

    /// Syncs `range` (async init) and maps lookup failures to pin errors.
    fn span_for(&self, range: PfnRange) -> Result<(&Memmap, Synced), GupError> {
        match self.synced_span(range.start(), range.len()) {
            Ok(x) => Ok(x),
            Err(PgmapError::Sync(SyncError::TornDown)) => {
                Err(GupError::Dead { pfn: range.start() })
            }
            Err(_) => {
                // Name the first pfn that is not ours: the start, or the end of its range.
                let pfn = self
                    .ranges()
                    .find(|r| r.contains(range.start()))
                    .map_or(range.start(), |r| r.end());
                Err(GupError::NoPgmap { pfn })
            }
        }
    }

    /// The fsdax grab loop. Each folio is looked up (consistently, see
    /// [`Pgmap::lookup_folio`]), grabbed, and looked up again: the reference now held
    /// freezes the shape of whatever the head is, so if the second lookup finds the same head
    /// and order, the pfn is in the folio the references were taken for. Otherwise a reshape
    /// raced the grab (the kernel's `try_get_folio` re-check): the references go back with
    /// the shape they were taken with, and the pfn is looked up afresh.
    fn grab_dynamic(
        &self,
        memmap: &Memmap,
        s: &Synced,
        range: PfnRange,
        pin: bool,
        record: &mut impl FnMut(&Folio<'_>, PfnRange),
    ) -> Result<(), Stopped> {
        let mut pfn = range.start();
        while pfn < range.end() {
            let folio = self
                .lookup_folio(memmap, s, pfn)
                .map_err(|e| (pfn, lookup_failed(pfn, e)))?;
            let end = folio.range().end().min(range.end());
            let refs = grab_folio(memmap, &folio, pfn, end, pin).map_err(|e| (pfn, e))?;
            let same = memmap
                .folio(s, pfn)
                .is_ok_and(|now| (now.pfn(), now.order()) == (folio.pfn(), folio.order()));
            if !same {
                self.ungrab_folio(memmap, &folio, refs, pin);
                continue;
            }
            record(&folio, PfnRange::new_unchecked(pfn, end));
            pfn = end;
        }
        Ok(())
    }

    /// Gives back what a grab of `span` took, folio by folio, marking each dirty first if asked
    /// (`unpin_user_page_range_dirty_lock`).
    pub(super) fn release_span(
        &self,
        memmap: &Memmap,
        s: &Synced,
        span: PfnRange,
        pin: bool,
        dirty: bool,
    ) {
        let release = |folio: &Folio<'_>, refs: u64| {
            if dirty {
                folio.mark_dirty();
            }
            // Within one folio, so at most 2^Order::MAX pages.
            self.ungrab_folio(memmap, folio, refs as i32, pin);
        };
        let mut pfn = span.start();
        if self.memory_type() != MemoryType::FsDax {
            // A span this pgmap grabbed is checked already; a failure cannot happen here.
            let Ok(folios) = memmap.static_folios(s, span) else {
                return;
            };
            for folio in folios {
                let Ok(folio) = folio else { return };
                let end = folio.range().end().min(span.end());
                release(&folio, end.offset_from(pfn));
                pfn = end;
            }
            return;
        }
        while pfn < span.end() {
            let Ok(folio) = memmap.folio(s, pfn) else {
                // Cannot happen for a span this pgmap grabbed; stop rather than loop.
                return;
            };
            let end = folio.range().end().min(span.end());
            release(&folio, end.offset_from(pfn));
            pfn = end;
        }
    }
}

/// The grab loop for folios that never change shape: the range is checked once, then each
/// folio costs its head descriptor's poison check and one compare-and-swap.
fn grab_static(
    memmap: &Memmap,
    s: &Synced,
    range: PfnRange,
    pin: bool,
    record: &mut impl FnMut(&Folio<'_>, PfnRange),
) -> Result<(), Stopped> {
    let start = range.start();
    let folios = memmap
        .static_folios(s, range)
        .map_err(|e| (start, lookup_failed(start, e)))?;
    let mut pfn = start;
    for folio in folios {
        let folio = folio.map_err(|e| (pfn, lookup_failed(pfn, e)))?;
        let end = folio.range().end().min(range.end());
        grab_folio(memmap, &folio, pfn, end, pin).map_err(|e| (pfn, e))?;
        record(&folio, PfnRange::new_unchecked(pfn, end));
        pfn = end;
    }
    Ok(())
}

/// `try_grab_folio` for the pages `pfn..end` of `folio`: refuses a poisoned folio, then takes
/// the references in one update. Returns the reference count taken.
fn grab_folio(
    memmap: &Memmap,
    folio: &Folio<'_>,
    pfn: Pfn,
    end: Pfn,
    pin: bool,
) -> Result<i32, GupError> {
    if folio.is_poisoned() {
        let head = folio.pfn();
        return Err(GupError::Poisoned {
            pfn: memmap.first_hwpoison(folio).unwrap_or(head),
            folio: head,
        });
    }
    // Within one folio, so at most 2^Order::MAX pages.
    let refs = end.offset_from(pfn) as i32;
    let head = folio.head_page();
    match refcount::try_grab(head.counts_word(), folio.is_large(), refs, pin) {
        Ok(()) => Ok(refs),
        Err(Refused::Free) => Err(GupError::NotMapped { pfn }),
        Err(Refused::Overflow) => Err(GupError::Overflow { pfn: folio.pfn() }),
    }
}

/// The pin error for a pfn the memmap has no folio for.
fn lookup_failed(pfn: Pfn, e: LookupError) -> GupError {
    match e {
        LookupError::AltmapPfn { .. } | LookupError::OutOfRange { .. } => GupError::NoPgmap { pfn },
        _ => GupError::NotMapped { pfn },
    }
}
