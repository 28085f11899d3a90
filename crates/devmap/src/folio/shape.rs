//! Dynamic fsdax folios: fsdax pgmaps have no `vmemmap_shift`, so a mapping that asks for a
//! larger order forms its folio from idle order-0 pages (`prep_compound_page`), and the free
//! path splits it back when it goes idle, both under the pgmap's fsdax lock (the kernel's DAX
//! entry lock). A folio at count 0 can't be pinned (`refcount::try_grab` never resurrects),
//! so a pinner can't see a folio that is being split.

use crate::addr::{Order, Pfn, PfnRange};
use crate::desc::PageFlags;
use crate::memmap::{Memmap, Synced};
use crate::pgmap::{Pgmap, PgmapError};
use crate::primitive::Ordering;

use super::FolioError;
use super::refcount;

/// fsdax: maps an existing folio of `order` at `pfn`, or forms one from idle order-0 pages
/// (the caller's cursor synced the whole block; `synced` is its token). Returns the head.
pub(super) fn fsdax_map(
    pgmap: &Pgmap,
    memmap: &Memmap,
    synced: &Synced,
    pfn: Pfn,
    order: Order,
) -> Result<Pfn, FolioError> {
    let busy = |why| FolioError::Busy { pfn, order, why };
    if !pfn.is_aligned(order) {
        return Err(busy("the pfn is not aligned to the order"));
    }
    let _formation = pgmap.fsdax_lock().lock();
    // Looked up again under the lock: the cursor's folio may have been formed or split since.
    let folio = memmap.folio(synced, pfn).map_err(PgmapError::from)?;
    if folio.pfn() == pfn && folio.order() == order {
        // Mapped already (or idle and not yet split): take a reference. A count of 0 is fine
        // here: under the lock nobody splits or frees concurrently, and pins refuse 0.
        refcount::add(folio.head_page().counts_word(), 1);
    } else {
        if folio.order() > order {
            return Err(busy("the pfn is inside a larger folio"));
        }
        let span = PfnRange::new_unchecked(pfn, pfn.add(order.nr_pages()));
        for p in (0..span.len()).map(|i| pfn.add(i)) {
            let f = memmap.folio(synced, p).map_err(PgmapError::from)?;
            if f.is_large() {
                return Err(busy("part of the range is in another folio"));
            }
            if f.refcount() != 0 {
                return Err(busy("part of the range is in use"));
            }
        }
        form(memmap, synced, span, order)?;
        let head = memmap.folio(synced, pfn).map_err(PgmapError::from)?;
        refcount::add(head.head_page().counts_word(), 1);
    }
    memmap
        .folio(synced, pfn)
        .map_err(PgmapError::from)?
        .head_page()
        .mapcount_word()
        .fetch_add(1, Ordering::Relaxed);
    Ok(pfn)
}

/// `prep_compound_page` on idle order-0 pages (fsdax lock held).
fn form(memmap: &Memmap, s: &Synced, span: PfnRange, order: Order) -> Result<(), PgmapError> {
    if order.get() == 0 {
        return Ok(());
    }
    let head = span.start();
    // A poisoned page makes the new folio poisoned, as `poison_subpage` would have.
    let mut poisoned = memmap.subpage_hwpoison(s, head)?;
    for i in 1..span.len() {
        let p = head.add(i);
        if let Some(d) = memmap.descriptor(s, p)? {
            let poison = d.flags().contains(PageFlags::HWPOISON);
            d.init_tail(head);
            if poison {
                d.set_flags(PageFlags::HWPOISON);
            }
        }
        poisoned |= memmap.subpage_hwpoison(s, p)?;
    }
    if let Some(d) = memmap.descriptor(s, head)? {
        d.set_flags(PageFlags::HEAD);
        if poisoned {
            d.set_flags(PageFlags::HAS_HWPOISONED);
        }
        d.prep_compound_head(order);
    }
    Ok(())
}

/// Splits an idle dynamic fsdax folio of `pgmap` back to order-0 pages (fsdax lock held).
pub(super) fn split(
    pgmap: &Pgmap,
    memmap: &Memmap,
    s: &Synced,
    head: Pfn,
    order: Order,
) -> Result<(), PgmapError> {
    for i in (0..order.nr_pages()).rev() {
        let p = head.add(i);
        // Read before the rewrite (Flat and Vmemmap keep it in the page's flags, Folio in its
        // side table).
        let poisoned = memmap.subpage_hwpoison(s, p)?;
        if let Some(d) = memmap.descriptor(s, p)? {
            let keep = d.flags().bits() & PageFlags::HWPOISON.bits();
            d.init_zone_device(pgmap.id(), pgmap.memory_type().idle_refcount());
            d.set_flags(PageFlags::from_bits(keep));
            if poisoned {
                // The page is its own folio again: flag it as `poison_subpage` does.
                d.set_flags(PageFlags::HAS_HWPOISONED);
            }
        }
    }
    Ok(())
}
