//! The batch loop behind every pin, get and unpin: the caller holds the pgmap's liveness
//! reference; each range of the pgmap the span crosses is synced once into a [`Piece`] (a
//! range cursor: the memmap and the token of one range's part of the span), then every folio
//! costs one reference update through its folio cursor (`FolioRef::walked`, no lookup).
//! Pgmaps whose folios never change shape (every type but fsdax) walk their folios by
//! arithmetic over a range checked once ([`Memmap::span_folios_static`]); fsdax looks each
//! folio up and re-checks it after the grab, because a split may race the lookup. A grab that
//! fails part-way gives back what it took.

use std::sync::atomic::AtomicU64;

use crate::addr::{Pfn, PfnRange};
use crate::folio::FolioRef;
use crate::folio::refcount::{self, Refused};
use crate::init::SyncError;
use crate::memmap::{Folio, FolioLookup, LookupError, Memmap, SpanFolios, Synced};
use crate::pgmap::{MemoryType, Pgmap, PgmapError};

use super::flags::{GupError, GupFlags, Kind};

/// The count word of the head of every folio of `span`, which lies in `pgmap`'s data ranges
/// (the caller holds a liveness reference), found as a grab finds them: the bare loop's
/// targets ([`super::BareLoop`]).
pub(super) fn head_words(pgmap: &Pgmap, span: PfnRange) -> Result<Vec<&AtomicU64>, GupError> {
    let mut words = Vec::new();
    let mut pfn = span.start();
    while pfn < span.end() {
        let piece = pgmap
            .data_piece(pfn, span.end())
            .ok_or(GupError::NoPgmap { pfn })?;
        let (memmap, s) = sync_piece(pgmap, piece)?;
        let mut at = piece.start();
        while at < piece.end() {
            let folio = memmap.folio(&s, at).map_err(|e| lookup_failed(at, e))?;
            words.push(folio.head_page().counts_word());
            at = folio.range().end();
        }
        pfn = piece.end();
    }
    Ok(words)
}

/// A failed grab: the pfn it stopped at (everything before it is held) and why.
type Stopped = (Pfn, GupError);

/// The type rules every grab checks first (`try_grab_folio`, `folio_is_longterm_pinnable`).
pub(super) fn check_type(pgmap: &Pgmap, flags: GupFlags) -> Result<(), GupError> {
    let memory_type = pgmap.memory_type();
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

/// Takes references on every folio of `span`, which lies in `pgmap`'s data ranges (the caller
/// checked, and holds a liveness reference), telling `record` about each folio and the part of
/// it covered. Works range by range, one [`Piece`] each; unwinds on failure.
pub(super) fn grab(
    pgmap: &Pgmap,
    span: PfnRange,
    kind: Kind,
    record: &mut impl FnMut(&Folio<'_>, PfnRange),
) -> Result<(), GupError> {
    let pin = kind == Kind::Pin;
    let mut pfn = span.start();
    while pfn < span.end() {
        let grabbed = pgmap
            .data_piece(pfn, span.end())
            .ok_or((pfn, GupError::NoPgmap { pfn }))
            .and_then(|piece| {
                let (memmap, s) = sync_piece(pgmap, piece).map_err(|e| (pfn, e))?;
                Piece::new(pgmap, memmap, &s, piece).grab(pin, record)?;
                Ok(piece.end())
            });
        match grabbed {
            Ok(next) => pfn = next,
            Err((upto, e)) => {
                release_range(
                    pgmap,
                    PfnRange::new_unchecked(span.start(), upto),
                    pin,
                    false,
                );
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Gives back what a grab of `span` (in `pgmap`'s data ranges) took, folio by folio, marking
/// each dirty first if asked (`unpin_user_page_range_dirty_lock`).
pub(super) fn release_range(pgmap: &Pgmap, span: PfnRange, pin: bool, dirty: bool) {
    // Usually the span lies in one range: one sync finds its memmap.
    if let Ok((memmap, s)) = pgmap.synced_span(span.start(), span.len()) {
        Piece::new(pgmap, memmap, &s, span).release(pin, dirty);
        return;
    }
    let mut pfn = span.start();
    while pfn < span.end() {
        let Some(piece) = pgmap.data_piece(pfn, span.end()) else {
            // Cannot happen for a span this pgmap grabbed; stop rather than loop.
            return;
        };
        if let Ok((memmap, s)) = pgmap.synced_span(piece.start(), piece.len()) {
            Piece::new(pgmap, memmap, &s, piece).release(pin, dirty);
        }
        pfn = piece.end();
    }
}

/// Gives back what a grab recorded as `entries` (pfns of `pgmap`, grouped by folio:
/// consecutive entries of one folio are released in one update), as
/// `unpin_user_pages_dirty_lock` walks its `pages[]`.
///
/// Entries are synced a span at a time: when the rest of the entries can be one run of
/// consecutive pfns in one range (the usual case: a pinned range), that run in one go;
/// otherwise the compound of the entry at hand. A later entry the span does not cover fails
/// its lookup and gets a span of its own.
pub(super) fn release_entries(pgmap: &Pgmap, entries: &[Pfn], pin: bool, dirty: bool) {
    let mut synced: Option<(&Memmap, Synced)> = None;
    let mut i = 0;
    while i < entries.len() {
        let pfn = entries[i];
        let found = synced.and_then(|(m, s)| m.folio(&s, pfn).ok().map(|f| (m, s, f)));
        let (memmap, s, folio) = match found {
            Some(hit) => hit,
            None => {
                let Some(span) = release_span_for(pgmap, pfn, &entries[i..]) else {
                    return;
                };
                let Ok((m, s)) = pgmap.synced_span(span.start(), span.len()) else {
                    return;
                };
                synced = Some((m, s));
                // The entry was grabbed, so its folio is initialised and cannot change shape:
                // this lookup cannot fail; stop rather than loop if it does.
                let Ok(f) = m.folio(&s, pfn) else { return };
                (m, s, f)
            }
        };
        let fr = folio.range();
        let n = entries[i..].iter().take_while(|p| fr.contains(**p)).count();
        if dirty {
            folio.mark_dirty();
        }
        // Within one folio, so at most 2^Order::MAX pages.
        FolioRef::walked(pgmap, memmap, s, folio).ungrab(n as i32, pin);
        i += n;
    }
}

/// The span to sync for releasing `rest` from its first entry: all of it if its ends say it
/// can be one run of consecutive pfns inside one range, else the first entry alone.
fn release_span_for(pgmap: &Pgmap, pfn: Pfn, rest: &[Pfn]) -> Option<PfnRange> {
    let piece = pgmap.data_piece(pfn, Pfn::END)?;
    let last = *rest.last()?;
    let run = last >= pfn && last.offset_from(pfn) + 1 == rest.len() as u64 && piece.contains(last);
    Some(if run {
        PfnRange::new_unchecked(pfn, last.add(1))
    } else {
        PfnRange::new_unchecked(pfn, pfn.add(1))
    })
}

/// Syncs `piece` (async init), which lies in one range's data, and maps a failure to a pin
/// error.
fn sync_piece(pgmap: &Pgmap, piece: PfnRange) -> Result<(&Memmap, Synced), GupError> {
    match pgmap.synced_span(piece.start(), piece.len()) {
        Ok(x) => Ok(x),
        // The memmap set dies only after every liveness reference drained: final.
        Err(PgmapError::Sync(SyncError::TornDown)) => Err(GupError::TornDown {
            pfn: piece.start(),
            may_revive: false,
        }),
        Err(_) => Err(GupError::NoPgmap { pfn: piece.start() }),
    }
}

/// A range cursor: the part of a span that one range of a pgmap holds, synced once, with the
/// memmap that describes it. Every grab and release of the part walks its folios through it.
/// (It borrows the sync token where the sync left it: copying the token out of the sync's
/// result measurably slowed 2048 one-folio unpins, a store-forwarding stall per call.)
struct Piece<'a> {
    pgmap: &'a Pgmap,
    memmap: &'a Memmap,
    synced: &'a Synced,
    span: PfnRange,
}

impl<'a> Piece<'a> {
    #[inline]
    fn new(pgmap: &'a Pgmap, memmap: &'a Memmap, synced: &'a Synced, span: PfnRange) -> Self {
        Self {
            pgmap,
            memmap,
            synced,
            span,
        }
    }

    /// Grabs every folio of the piece. Returns where the grab failed on failure (everything
    /// before that is held).
    fn grab(
        &self,
        pin: bool,
        record: &mut impl FnMut(&Folio<'_>, PfnRange),
    ) -> Result<(), Stopped> {
        let (pgmap, memmap, s) = (self.pgmap, self.memmap, self.synced);
        if pgmap.memory_type() == MemoryType::FsDax {
            let walk = SpanFolios::new(self.span, |p| pgmap.lookup_folio(memmap, s, p));
            self.grab_walk(walk, true, pin, record)
        } else {
            let walk = memmap
                .span_folios_static(s, self.span)
                .map_err(|(p, e)| (p, lookup_failed(p, e)))?;
            self.grab_walk(walk, false, pin, record)
        }
    }

    /// The grab loop. Each folio costs its head's poison check and one compare-and-swap.
    ///
    /// Folios that can change shape (fsdax, `recheck`) are looked up again after the grab:
    /// the reference now held freezes the shape of whatever the head is, so if the second
    /// lookup finds the same head and order, the pfn is in the folio the references were taken
    /// for. Otherwise a reshape raced the grab (the kernel's `try_get_folio` re-check): the
    /// references go back with the shape they were taken with, and the walk restarts at the
    /// pfn.
    fn grab_walk<L>(
        &self,
        mut walk: SpanFolios<'a, L>,
        recheck: bool,
        pin: bool,
        record: &mut impl FnMut(&Folio<'_>, PfnRange),
    ) -> Result<(), Stopped>
    where
        L: FolioLookup<'a>,
    {
        while let Some(step) = walk.next() {
            let (folio, sub) = step.map_err(|(pfn, e)| (pfn, lookup_failed(pfn, e)))?;
            let pfn = sub.start();
            let cursor = FolioRef::walked(self.pgmap, self.memmap, *self.synced, folio);
            let refs = grab_folio(&cursor, pfn, sub.end(), pin).map_err(|e| (pfn, e))?;
            if recheck
                && !self
                    .memmap
                    .folio(self.synced, pfn)
                    .is_ok_and(|now| (now.pfn(), now.order()) == (folio.pfn(), folio.order()))
            {
                cursor.ungrab(refs, pin);
                walk.restart_at(pfn);
                continue;
            }
            record(&folio, sub);
        }
        Ok(())
    }

    /// Gives back what a grab of the piece took (see `release_range`). Pinned folios cannot
    /// change shape, so even an fsdax walk finds the folios grabbed.
    fn release(&self, pin: bool, dirty: bool) {
        let (memmap, s) = (self.memmap, self.synced);
        if self.pgmap.memory_type() == MemoryType::FsDax {
            let walk = SpanFolios::new(self.span, |p| memmap.folio(s, p));
            self.release_walk(walk, pin, dirty);
        } else if let Ok(walk) = memmap.span_folios_static(s, self.span) {
            // A span this pgmap grabbed is checked already; the else cannot happen.
            self.release_walk(walk, pin, dirty);
        }
    }

    fn release_walk<L>(&self, walk: SpanFolios<'a, L>, pin: bool, dirty: bool)
    where
        L: FolioLookup<'a>,
    {
        for step in walk {
            // Cannot fail for a span this pgmap grabbed; stop rather than guess.
            let Ok((folio, sub)) = step else { return };
            if dirty {
                folio.mark_dirty();
            }
            // Within one folio, so at most 2^Order::MAX pages.
            FolioRef::walked(self.pgmap, self.memmap, *self.synced, folio)
                .ungrab(sub.len() as i32, pin);
        }
    }
}

/// `try_grab_folio` for the pages `pfn..end` of `folio`: refuses a poisoned folio, then takes
/// the references in one update. Returns the reference count taken.
fn grab_folio(cursor: &FolioRef<'_>, pfn: Pfn, end: Pfn, pin: bool) -> Result<i32, GupError> {
    let folio = cursor.folio();
    if let Some(bad) = cursor.poisoned_page() {
        return Err(GupError::Poisoned {
            pfn: bad,
            folio: folio.pfn(),
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
