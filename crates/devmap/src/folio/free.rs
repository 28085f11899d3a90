//! The free path (`free_zone_device_folio`), run by whoever brings a folio's count back to its
//! idle value: fsdax splits a dynamic folio back to order 0 and wakes layout-break waiters;
//! device-dax has nothing to do (its count already rests at 1); driver memory (private,
//! coherent, P2P) calls the pgmap's `folio_free` callback. Every put goes through [`ungrab`],
//! on the folio's cursor.

use crate::desc::PageFlags;
use crate::memmap::{Folio, Memmap};
use crate::pgmap::{MemoryType, Pgmap};
use crate::primitive::{Ordering, fence};

use super::refcount;

/// Releases `refs` pins (`pin`) or plain references from `folio` (of `pgmap`, found in
/// `memmap`), runs the free path if that made it idle, and wakes layout-break waiters.
/// `FolioRef::ungrab` is the way in; it passes the cursor's parts rather than the cursor, so
/// that a walk releasing folio after folio (an unpin) keeps them in registers.
#[inline]
pub(super) fn ungrab(pgmap: &Pgmap, memmap: &Memmap, folio: &Folio<'_>, refs: i32, pin: bool) {
    let word = folio.head_page().counts_word();
    let memory_type = pgmap.memory_type();
    let large = folio.is_large();
    if memory_type.driver_allocated() {
        // Unallocatable from the last put until `folio_free` has returned.
        if refcount::ungrab_driver(word, large, refs, pin) {
            folio_idle(pgmap, memmap, folio);
            refcount::freed(word);
        }
    } else if refcount::ungrab(word, large, refs, pin, memory_type.idle_refcount()) {
        folio_idle(pgmap, memmap, folio);
    }
    wake_layout_waiters(pgmap);
}

/// The free path, run by whoever made `folio` idle. The releaser's sync token covers only
/// what it held (a mapping syncs its head, a pin its pages), so the split syncs the whole
/// folio itself. Off the unpin loop's hot path: device-dax folios stay above their idle count
/// while mapped.
#[cold]
pub(super) fn folio_idle(pgmap: &Pgmap, memmap: &Memmap, folio: &Folio<'_>) {
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
                        let _ = super::shape::split(pgmap, memmap, &whole, folio.pfn(), order);
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
                cb(folio);
            }
        }
    }
}

/// Wakes `break_layouts` waiters of an fsdax pgmap after a put, if there are any.
#[inline]
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
