//! Walking the folios of a span. [`SpanFolios`] is the one cursor every "folios of a span" loop
//! uses (pins, unpins, busy checks): it yields each folio with the part of it the span covers,
//! asking a lookup for the folio at each step. Where folios never change shape (every memory
//! type but fsdax) the lookup is [`Memmap::static_folios`]: the range is checked once, each head
//! is arithmetic, and only head descriptors are read (for Vmemmap, through the head's PMD
//! entry and PTE). Where they can (fsdax), it is a per-pfn lookup, and a caller that finds a
//! folio reshaped under it restarts the cursor at that pfn.

use std::iter::StepBy;
use std::marker::PhantomData;
use std::slice;

use crate::addr::{Order, Pfn, PfnRange};
use crate::desc::Page;

use super::{Folio, LookupError, Memmap, Synced, VmemmapStore};

/// The folios a range touches, in pfn order (see [`Memmap::static_folios`]).
#[derive(Debug)]
pub(crate) struct StaticFolios<'a> {
    heads: Heads<'a>,
    next: Pfn,
    end: Pfn,
    order: Order,
}

#[derive(Debug)]
enum Heads<'a> {
    /// Flat and Heads layouts: the head descriptors are every `step`-th slot of one slice.
    Dense(StepBy<slice::Iter<'a, Page>>),
    /// Vmemmap: each head goes through its PMD entry and PTE (or its section's leaf).
    Vmemmap(&'a VmemmapStore),
}

impl Memmap {
    /// The folios `range` touches when folios have the memmap's order and never change shape
    /// (fsdax forms and splits folios at run time and must look each pfn up). The range's ends
    /// are checked against the data range and `s` once; since both are contiguous, every head
    /// in between is then covered.
    pub(crate) fn static_folios(
        &self,
        s: &Synced,
        range: PfnRange,
    ) -> Result<StaticFolios<'_>, LookupError> {
        let order = self.geometry().shift;
        let first = range.start().align_down(order);
        if range.is_empty() {
            return Ok(StaticFolios {
                heads: Heads::Dense([].iter().step_by(1)),
                next: range.start(),
                end: range.start(),
                order,
            });
        }
        let last = Pfn::new(range.end().raw() - 1);
        self.check(s, first)?;
        self.check(s, last)?;
        let last_head = last.align_down(order);
        let heads = match self {
            Memmap::Flat(f) => {
                let slots = f.span(first, last_head);
                Heads::Dense(slots.iter().step_by(order.nr_pages() as usize))
            }
            Memmap::Heads(f) => Heads::Dense(f.span(first, last_head).iter().step_by(1)),
            Memmap::Vmemmap(v) => Heads::Vmemmap(v),
        };
        Ok(StaticFolios {
            heads,
            next: first,
            end: range.end(),
            order,
        })
    }
}

/// The folios of a span in pfn order, each with the part of it the span covers, found by a
/// [`FolioLookup`].
#[derive(Debug)]
pub(crate) struct SpanFolios<'a, L> {
    next: Pfn,
    end: Pfn,
    lookup: L,
    folios: PhantomData<Folio<'a>>,
}

/// What a [`SpanFolios`] asks for each folio: any closure from pfn to folio, or a
/// [`StaticFolios`], which steps its heads in order and ignores the pfn.
pub(crate) trait FolioLookup<'a> {
    /// The folio holding `pfn`.
    fn folio_at(&mut self, pfn: Pfn) -> Result<Folio<'a>, LookupError>;
}

impl<'a, F> FolioLookup<'a> for F
where
    F: FnMut(Pfn) -> Result<Folio<'a>, LookupError>,
{
    #[inline]
    fn folio_at(&mut self, pfn: Pfn) -> Result<Folio<'a>, LookupError> {
        self(pfn)
    }
}

impl<'a> FolioLookup<'a> for StaticFolios<'a> {
    #[inline]
    fn folio_at(&mut self, pfn: Pfn) -> Result<Folio<'a>, LookupError> {
        self.next()
            .unwrap_or(Err(LookupError::Uninitialized { pfn }))
    }
}

impl<'a, L: FolioLookup<'a>> SpanFolios<'a, L> {
    /// A walk over `span` asking `lookup` for each folio.
    pub(crate) fn new(span: PfnRange, lookup: L) -> Self {
        Self {
            next: span.start(),
            end: span.end(),
            lookup,
            folios: PhantomData,
        }
    }

    /// Continues the walk at `pfn` (a dynamic walk whose folio changed shape under it looks
    /// the pfn up again). Not for static walks, whose heads step on by themselves.
    pub(crate) fn restart_at(&mut self, pfn: Pfn) {
        self.next = pfn;
    }
}

impl<'a, L: FolioLookup<'a>> Iterator for SpanFolios<'a, L> {
    /// The folio and the pfns of it covered, or the pfn whose lookup failed and why.
    type Item = Result<(Folio<'a>, PfnRange), (Pfn, LookupError)>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let pfn = self.next;
        match self.lookup.folio_at(pfn) {
            Ok(folio) => {
                let end = folio.range().end().min(self.end);
                self.next = end;
                Some(Ok((folio, PfnRange::new_unchecked(pfn, end))))
            }
            Err(e) => {
                self.next = self.end;
                Some(Err((pfn, e)))
            }
        }
    }
}

impl Memmap {
    /// A [`SpanFolios`] over `span` by arithmetic, for folios that never change shape.
    pub(crate) fn span_folios_static(
        &self,
        s: &Synced,
        span: PfnRange,
    ) -> Result<SpanFolios<'_, StaticFolios<'_>>, (Pfn, LookupError)> {
        let heads = self.static_folios(s, span).map_err(|e| (span.start(), e))?;
        Ok(SpanFolios::new(span, heads))
    }
}

impl<'a> Iterator for StaticFolios<'a> {
    type Item = Result<Folio<'a>, LookupError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let head = self.next;
        self.next = head.add(self.order.nr_pages());
        let desc = match &mut self.heads {
            Heads::Dense(slots) => slots.next().ok_or(LookupError::Uninitialized { pfn: head }),
            Heads::Vmemmap(v) => v.page(head).ok_or(LookupError::Uninitialized { pfn: head }),
        };
        Some(desc.map(|desc| Folio {
            head,
            order: self.order,
            desc,
        }))
    }
}
