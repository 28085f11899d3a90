//! Hardware poison at folio level: whether a folio is poisoned, and which of its pages to name
//! when a pin or a fault refuses it. Marking, clearing and asking about one 4 KiB page are
//! operations of the folio cursor (`FolioRef::poison_subpage` and its siblings in
//! `cursor.rs`). Every user of poison state above the memmap comes through here or the cursor;
//! the memmap below keeps only the per-layout storage (a descriptor flag, a Vmemmap block
//! un-shared for it, the Heads layout's side table). Memory failure handling (finding
//! mappings, revoking them, telling owners) builds on this.

use crate::addr::Pfn;
use crate::desc::PageFlags;
use crate::memmap::{Folio, Memmap};

impl Folio<'_> {
    /// Whether the folio, or any page in it, is poisoned.
    pub fn is_poisoned(&self) -> bool {
        let f = self.head_page().flags();
        f.contains(PageFlags::HWPOISON) || f.contains(PageFlags::HAS_HWPOISONED)
    }
}

/// The page to name when `folio` is refused for poison: its lowest poisoned page, or its head
/// if a poisoning racing the caller has flagged the folio but not yet the page. `None` if the
/// folio is clean.
pub(super) fn poisoned_page(memmap: &Memmap, folio: &Folio<'_>) -> Option<Pfn> {
    folio
        .is_poisoned()
        .then(|| memmap.first_hwpoison(folio).unwrap_or(folio.pfn()))
}
