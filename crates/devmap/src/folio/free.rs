//! The free path (`free_zone_device_folio`), run by whoever brings a folio's count back to its
//! idle value: fsdax splits a dynamic folio back to order 0 and wakes layout-break waiters;
//! device-dax has nothing to do (its count already rests at 1); driver memory (private,
//! coherent, P2P) calls the pgmap's `folio_free` callback. Every put goes through [`ungrab`],
//! on the folio's cursor.

use crate::desc::PageFlags;
use crate::pgmap::{MemoryType, Pgmap};
use crate::primitive::{Ordering, fence};

use super::cursor::FolioRef;
use super::refcount;

/// Releases `refs` pins (`pin`) or plain references from the cursor's folio, runs the free
/// path if that made it idle, and wakes layout-break waiters.
pub(super) fn ungrab(f: &FolioRef<'_>, refs: i32, pin: bool) {
    let folio = f.folio();
    let word = folio.head_page().counts_word();
    let memory_type = f.pgmap().memory_type();
    let large = folio.is_large();
    if memory_type.driver_allocated() {
        // Unallocatable from the last put until `folio_free` has returned.
        if refcount::ungrab_driver(word, large, refs, pin) {
            folio_idle(f);
            refcount::freed(word);
        }
    } else if refcount::ungrab(word, large, refs, pin, memory_type.idle_refcount()) {
        folio_idle(f);
    }
    wake_layout_waiters(f.pgmap());
}

/// The free path, run by whoever made the cursor's folio idle. The releaser's sync token
/// covers only what it held (a mapping syncs its head, a pin its pages), so the split syncs
/// the whole folio itself.
pub(super) fn folio_idle(f: &FolioRef<'_>) {
    let pgmap = f.pgmap();
    let folio = f.folio();
    match pgmap.memory_type() {
        MemoryType::FsDax => {
            // The shape is read from the head again rather than taken from `folio`: a grab
            // that raced a reshape gives its references back with the shape it looked up,
            // which need not be the head's shape now.
            let head = folio.head_page();
            if head.flags().contains(PageFlags::HEAD) {
                let _formation = pgmap.fsdax_lock().lock();
                // Re-check under the lock: a new mapping may have taken the folio again.
                if head.refcount() == 0
                    && head.flags().contains(PageFlags::HEAD)
                    && let Some(order) = head.order()
                {
                    // The split rewrites every page of the folio, so it needs a token for all
                    // of them (free once init is idle). A failure here means the pgmap is torn
                    // down, and then there is nothing left to split.
                    if let Ok((_, whole)) = pgmap.synced_span(folio.pfn(), order.nr_pages()) {
                        let _ = super::shape::split(pgmap, f.memmap(), &whole, folio.pfn(), order);
                    }
                }
            }
            wake_layout_waiters_now(pgmap);
        }
        // Device-dax: the kernel resets the count to 1 and calls no driver; here the count
        // already rests at 1, so there is nothing to do.
        MemoryType::Generic => {}
        MemoryType::Private | MemoryType::Coherent | MemoryType::P2pDma => {
            if let Some(cb) = &pgmap.ops().folio_free {
                cb(&folio);
            }
        }
    }
}

/// Wakes `break_layouts` waiters of an fsdax pgmap after a put, if there are any.
pub(super) fn wake_layout_waiters(pgmap: &Pgmap) {
    // Only fsdax has layout breaks to wake.
    if pgmap.memory_type() != MemoryType::FsDax {
        return;
    }
    // SeqCst fence: pairs with the one in `break_layouts` so that either the waiter sees this
    // put's count, or this load sees the waiter (Dekker); a Relaxed load alone could miss a
    // waiter that checked the count just before the put.
    fence(Ordering::SeqCst);
    if pgmap.layout_waiters().load(Ordering::Relaxed) > 0 {
        wake_layout_waiters_now(pgmap);
    }
}

fn wake_layout_waiters_now(pgmap: &Pgmap) {
    let (lock, cv) = pgmap.layout_wait();
    let _g = lock.lock();
    cv.notify_all();
}
