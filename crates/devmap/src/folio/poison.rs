//! Hardware poison at folio level: marking one 4 KiB page poisoned, asking whether a page or a
//! folio is, and naming the poisoned page of a folio a pin refused. Every user of poison state
//! above the memmap comes here; the memmap below keeps only the per-layout storage (a
//! descriptor flag, a Vmemmap block un-shared for it, the Heads layout's side table). Memory
//! failure handling (finding mappings, revoking them, telling owners) builds on this.

use crate::addr::Pfn;
use crate::desc::PageFlags;
use crate::memmap::{Folio, Memmap};
use crate::pgmap::{Pgmap, PgmapError};

impl Folio<'_> {
    /// Whether the folio, or any page in it, is poisoned.
    pub fn is_poisoned(&self) -> bool {
        let f = self.head_page().flags();
        f.contains(PageFlags::HWPOISON) || f.contains(PageFlags::HAS_HWPOISONED)
    }
}

impl Pgmap {
    /// Poisons one 4 KiB page, writing only state private to it (Vmemmap un-shares the page's
    /// descriptor block first; the Heads layout uses its side table) and flags the folio head
    /// `HAS_HWPOISONED`.
    pub fn poison_subpage(&self, pfn: Pfn) -> Result<(), PgmapError> {
        let (m, s) = self.synced_span(pfn, 1)?;
        Ok(m.mark_subpage_hwpoison(&s, pfn)?)
    }

    /// Clears one 4 KiB page's poison once its bytes are good again (`clear_page_hwpoison`),
    /// and its folio's `HAS_HWPOISONED` when no other page of it is poisoned. Returns whether
    /// the page was poisoned.
    pub fn unpoison_subpage(&self, pfn: Pfn) -> Result<bool, PgmapError> {
        let (m, s) = self.synced_span(pfn, 1)?;
        Ok(m.clear_subpage_hwpoison(&s, pfn)?)
    }

    /// The lowest poisoned page of the folio holding `pfn`, if any.
    pub fn folio_poisoned_page(&self, pfn: Pfn) -> Result<Option<Pfn>, PgmapError> {
        let (m, s) = self.synced_span(pfn, 1)?;
        let folio = m.folio(&s, pfn)?;
        Ok(poisoned_page(m, &folio))
    }

    /// Whether this 4 KiB page is poisoned.
    pub fn subpage_poisoned(&self, pfn: Pfn) -> Result<bool, PgmapError> {
        let (m, s) = self.synced_span(pfn, 1)?;
        Ok(m.subpage_hwpoison(&s, pfn)?)
    }
}

/// The page to name when `folio` is refused for poison: its lowest poisoned page, or its head
/// if a poisoning racing the caller has flagged the folio but not yet the page. `None` if the
/// folio is clean.
pub(crate) fn poisoned_page(memmap: &Memmap, folio: &Folio<'_>) -> Option<Pfn> {
    folio
        .is_poisoned()
        .then(|| memmap.first_hwpoison(folio).unwrap_or(folio.pfn()))
}
