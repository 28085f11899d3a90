//! A lock-free table of the address ranges of every live device-dax mapping in the process,
//! for code that may not take locks or allocate: the memory-error signal handler asks it
//! whether a faulting address is devmap's. Mappings register when made and leave before they
//! are unmapped. The table has a fixed number of slots; a mapping made while all are taken is
//! simply not in it (the handler then treats its addresses as not devmap's), and
//! [`overflowed`] counts them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots: live mappings the table can hold.
const SLOTS: usize = 256;

/// Each slot: the mapping's first address (0 = free) and its length.
static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static OVERFLOWED: AtomicU64 = AtomicU64::new(0);

/// A registered range; leaves the table when dropped.
#[derive(Debug)]
pub(super) struct Registered {
    slot: Option<usize>,
}

/// Puts `[start, start + len)` in the table.
pub(super) fn register(start: usize, len: usize) -> Registered {
    for slot in 0..SLOTS {
        // The length first, then the start claims the slot: a reader that sees the start
        // (Acquire) sees the length (Release below orders it).
        if START[slot].load(Ordering::Relaxed) != 0 {
            continue;
        }
        LEN[slot].store(len, Ordering::Relaxed);
        if START[slot]
            .compare_exchange(0, start, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return Registered { slot: Some(slot) };
        }
    }
    OVERFLOWED.fetch_add(1, Ordering::Relaxed);
    Registered { slot: None }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            // Release: pairs with nothing in particular; a reader racing this sees the range
            // or not, and the mapping is still mapped until after this returns.
            START[slot].store(0, Ordering::Release);
        }
    }
}

/// Whether `addr` lies in a registered mapping. Async-signal-safe: atomic loads only.
pub fn is_devmap_address(addr: usize) -> bool {
    (0..SLOTS).any(|slot| {
        // Acquire pairs with the Release of the claiming compare_exchange in `register`.
        let start = START[slot].load(Ordering::Acquire);
        start != 0 && addr.wrapping_sub(start) < LEN[slot].load(Ordering::Relaxed)
    })
}

/// Mappings made while the table was full (their addresses are not found).
pub fn overflowed() -> u64 {
    OVERFLOWED.load(Ordering::Relaxed)
}
