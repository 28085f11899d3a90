//! Fast pins of a client mapping (DESIGN §9.5): what a client may pin without asking the
//! service, and the count of what it has pinned so.
//!
//! A pin's promise is that the pfns under the pinned range stay the namespace's bytes at that
//! offset until the unpin. For a client mapping, the service already keeps that promise for
//! the mapping's whole life: a namespace with attached mappings is not disabled (a forced
//! disable revokes the mappings, and their pins with them), and the pfn of every offset is
//! fixed while the namespace is enabled. What a pin adds is the check that each leaf is
//! faulted in this mapping with its metadata in place and no poisoned page, and the count the
//! service shows and names when it refuses a disable. So the service publishes the check in a
//! [`PinView`] (one bit per leaf, set by the fault path once the leaf's metadata is in place,
//! cleared when a page of it is poisoned), which the client maps read-only, and the client
//! counts its pins in a [`PinLedger`] of its own, which the service reads and marks revoked
//! when the mapping goes: a pin is two atomic adds, a load per 64 leaves and a translation the
//! client does itself, with no system call. Anything the view does not vouch for (a leaf not yet
//! faulted, a poisoned page, a mapping being revoked) takes the slow path, a request.
//!
//! The memmap stays private to the service: a client that writes garbage into its ledger
//! changes only the numbers `devmap status` shows for it; it cannot write the view (sealed
//! against writes) nor resize either file.
//!
//! The protocol between a pin and a revocation is [`take`] and [`revoke`], both
//! read-modify-writes of one word, the ledger's pin count, whose top bit is the revocation:
//! in that word's single modification order a pin either comes first and is counted by the
//! revocation, or comes after, sees the bit and backs out (the loom model in
//! `stress/loom_fast_pin.rs`). The bit lives in a word the client writes; a client that clears
//! it fools only itself, since nothing the service does depends on the ledger.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backing::{BackingError, SharedWords, Writer};

/// The view's leaf bits start at word 0.
const FIRST_BITS: usize = 0;
/// The ledger's words: pins taken and not yet given back (with [`REVOKED`]), and the pages
/// they cover.
const PINS: usize = 0;
const PAGES: usize = 1;
const LEDGER_WORDS: usize = 2;
/// The pin count's top bit: set once the mapping is revoked.
const REVOKED: u64 = 1 << 63;

/// One 64-bit word the pin protocol acts on: a std atomic in shared memory, or loom's in the
/// model.
pub(crate) trait Word {
    fn fetch_add(&self, v: u64) -> u64;
    fn fetch_sub(&self, v: u64) -> u64;
    fn fetch_or(&self, v: u64) -> u64;
    fn get(&self) -> u64;
}

impl Word for AtomicU64 {
    fn fetch_add(&self, v: u64) -> u64 {
        self.fetch_add(v, Ordering::AcqRel)
    }
    fn fetch_sub(&self, v: u64) -> u64 {
        self.fetch_sub(v, Ordering::AcqRel)
    }
    fn fetch_or(&self, v: u64) -> u64 {
        self.fetch_or(v, Ordering::AcqRel)
    }
    fn get(&self) -> u64 {
        self.load(Ordering::Acquire)
    }
}

/// The client's side of a fast pin of `nr_pages` pages: counts it in the ledger unless the
/// mapping is revoked, then checks `ready` (every leaf of the range pinnable). On `false` the
/// count is taken back and the caller asks the service instead.
pub(crate) fn take<W: Word>(
    pins: &W,
    pages: &W,
    nr_pages: u64,
    ready: impl FnOnce() -> bool,
) -> bool {
    // One RMW of the word `revoke` sets the bit in: whichever comes first in its modification
    // order, the other sees it.
    if pins.fetch_add(1) & REVOKED != 0 {
        pins.fetch_sub(1);
        return false;
    }
    pages.fetch_add(nr_pages);
    if ready() {
        return true;
    }
    pins.fetch_sub(1);
    pages.fetch_sub(nr_pages);
    false
}

/// Gives back a pin of `nr_pages` pages.
pub(crate) fn give_back<W: Word>(pins: &W, pages: &W, nr_pages: u64) {
    pins.fetch_sub(1);
    pages.fetch_sub(nr_pages);
}

/// The service's side of a revocation: sets the bit and returns the pins counted then (every
/// pin that will ever succeed in this mapping).
pub(crate) fn revoke<W: Word>(pins: &W) -> u64 {
    pins.fetch_or(REVOKED) & !REVOKED
}

/// The service-written half: one bit per leaf.
#[derive(Debug)]
pub struct PinView {
    words: SharedWords,
    nr_leaves: u64,
}

/// Words of a view of `nr_leaves` leaves.
fn view_words(nr_leaves: u64) -> Result<usize, BackingError> {
    usize::try_from(nr_leaves.div_ceil(64))
        .ok()
        .and_then(|w| w.checked_add(FIRST_BITS))
        .ok_or(BackingError::TooLarge { len: nr_leaves })
}

impl PinView {
    /// A view of `nr_leaves` leaves, none pinnable, in a file only this process writes.
    pub(crate) fn create(nr_leaves: u64) -> Result<PinView, BackingError> {
        Ok(PinView {
            words: SharedWords::create("devmap-pin-view", view_words(nr_leaves)?, Writer::Creator)?,
            nr_leaves,
        })
    }

    /// Maps a view the service passed, read-only.
    pub fn open(fd: OwnedFd, nr_leaves: u64) -> Result<PinView, BackingError> {
        Ok(PinView {
            words: SharedWords::open(fd, view_words(nr_leaves)?, false)?,
            nr_leaves,
        })
    }

    /// The file to pass to the client.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.words.fd()
    }

    fn bit(&self, leaf: u64) -> Option<(&AtomicU64, u64)> {
        (leaf < self.nr_leaves).then(|| {
            (
                &self.words.words()[FIRST_BITS + (leaf / 64) as usize],
                1 << (leaf % 64),
            )
        })
    }

    /// Marks `leaf` pinnable: its metadata is in place and none of its pages is poisoned.
    pub(crate) fn set(&self, leaf: u64) {
        if let Some((w, bit)) = self.bit(leaf) {
            // Release pairs with the Acquire in `all_set`.
            w.fetch_or(bit, Ordering::Release);
        }
    }

    /// Takes `leaf` out of the fast path (a page of it was poisoned, or it was revoked).
    pub(crate) fn clear(&self, leaf: u64) {
        if let Some((w, bit)) = self.bit(leaf) {
            w.fetch_and(!bit, Ordering::Release);
        }
    }

    /// Whether every leaf of `first..end` is pinnable.
    pub fn all_set(&self, first: u64, end: u64) -> bool {
        if first >= end || end > self.nr_leaves {
            return false;
        }
        let words = self.words.words();
        let (w0, w1) = (first / 64, (end - 1) / 64);
        (w0..=w1).all(|w| {
            let lo = if w == w0 { first % 64 } else { 0 };
            let hi = if w == w1 { (end - 1) % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
            // Acquire pairs with the Release in `set`.
            words[FIRST_BITS + w as usize].load(Ordering::Acquire) & mask == mask
        })
    }

    /// Takes a fast pin of the `nr_pages` pages of leaves `first..end` in `ledger`, if the
    /// view vouches for them (the protocol is `take` in this module).
    pub fn take(&self, ledger: &PinLedger, first: u64, end: u64, nr_pages: u64) -> bool {
        let l = ledger.words.words();
        take(&l[PINS], &l[PAGES], nr_pages, || self.all_set(first, end))
    }
}

/// The client-written half: the fast pins a client holds in one mapping.
#[derive(Debug)]
pub struct PinLedger {
    words: SharedWords,
}

/// What a ledger counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FastPins {
    /// Pins taken and not given back.
    pub pins: u64,
    /// Pages they cover.
    pub pages: u64,
}

impl PinLedger {
    /// An empty ledger, in a file both processes write.
    pub(crate) fn create() -> Result<PinLedger, BackingError> {
        Ok(PinLedger {
            words: SharedWords::create("devmap-pin-ledger", LEDGER_WORDS, Writer::Both)?,
        })
    }

    /// Maps a ledger the service passed, read-write.
    pub fn open(fd: OwnedFd) -> Result<PinLedger, BackingError> {
        Ok(PinLedger {
            words: SharedWords::open(fd, LEDGER_WORDS, true)?,
        })
    }

    /// The file to pass to the client.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.words.fd()
    }

    /// Gives back a fast pin of `nr_pages` pages.
    pub fn give_back(&self, nr_pages: u64) {
        let l = self.words.words();
        give_back(&l[PINS], &l[PAGES], nr_pages);
    }

    /// Revokes the mapping's fast pins: every later one fails. Returns the pins counted then.
    pub fn revoke(&self) -> u64 {
        revoke(&self.words.words()[PINS])
    }

    /// What the ledger counts now. The client writes it: a count above what could be is its
    /// own garbage, shown as it is (it changes nothing but its own lines in `devmap status`).
    pub fn read(&self) -> FastPins {
        let l = self.words.words();
        FastPins {
            pins: l[PINS].get() & !REVOKED,
            pages: l[PAGES].get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_side(v: &PinView, l: &PinLedger) -> (PinView, PinLedger) {
        let dup =
            |fd: Option<BorrowedFd<'_>>| fd.expect("creator").try_clone_to_owned().expect("dup");
        (
            PinView::open(dup(v.fd()), v.nr_leaves).expect("view"),
            PinLedger::open(dup(l.fd())).expect("ledger"),
        )
    }

    #[test]
    fn a_fast_pin_needs_every_leaf_of_its_range_pinnable() {
        let (view, ledger) = (
            PinView::create(200).expect("view"),
            PinLedger::create().expect("ledger"),
        );
        let (cv, cl) = client_side(&view, &ledger);
        for leaf in 60..130 {
            view.set(leaf);
        }
        assert!(
            cv.take(&cl, 60, 130, 70),
            "every leaf set, across three words"
        );
        assert!(!cv.take(&cl, 59, 61, 2), "leaf 59 was never faulted");
        assert!(!cv.take(&cl, 129, 131, 2), "leaf 130 was never faulted");
        assert!(!cv.take(&cl, 199, 201, 2), "past the mapping's end");
        view.clear(100);
        assert!(!cv.take(&cl, 99, 101, 2), "a poisoned leaf is refused");
        assert_eq!(
            ledger.read(),
            FastPins { pins: 1, pages: 70 },
            "refusals took nothing"
        );
        cl.give_back(70);
        assert_eq!(ledger.read(), FastPins::default());
    }

    #[test]
    fn a_revoked_view_refuses_every_fast_pin_and_counts_those_it_missed() {
        let (view, ledger) = (
            PinView::create(8).expect("view"),
            PinLedger::create().expect("ledger"),
        );
        let (cv, cl) = client_side(&view, &ledger);
        (0..8).for_each(|l| view.set(l));
        assert!(cv.take(&cl, 0, 1, 512));
        assert_eq!(ledger.revoke(), 1, "the pin taken before is counted");
        assert!(!cv.take(&cl, 1, 2, 512), "nothing after the revocation");
        assert_eq!(ledger.read().pins, 1);
    }
}
