//! Walking the folios of a range whose folios never change shape (every memory type but fsdax):
//! the range is checked once, each head is arithmetic, and only head descriptors are read (for
//! Vmemmap, through the head's PMD entry and PTE). This is what batched pins and unpins iterate;
//! a per-pfn [`Memmap::folio`] lookup re-checks the range and re-dispatches on the layout for
//! every folio.

use std::iter::StepBy;
use std::slice;

use crate::addr::{Order, Pfn, PfnRange};
use crate::desc::Page;
use crate::init::Synced;

use super::{Folio, LookupError, Memmap, VmemmapStore};

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
