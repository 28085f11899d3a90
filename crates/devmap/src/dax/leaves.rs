//! Which leaves of one mapping are faulted in: one bit per leaf, read without a lock by the
//! pin-by-address path (the page-table walk of `pin_user_pages_fast`), set by the fault path
//! once the leaf's metadata and reference are in place.
//!
//! A mapping of a 1 TiB device at 4 KiB has 2^28 leaves; a flat bitmap would cost 32 MiB
//! before anything is touched. The bits live in chunks of 32 Ki leaves (4 KiB), allocated on
//! the first fault in a chunk, so a mapping costs 8 bytes per chunk until it is used.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Leaves per chunk: 512 words of 64 bits.
const CHUNK_WORDS: usize = 512;
const CHUNK_LEAVES: u64 = (CHUNK_WORDS * 64) as u64;

/// The faulted-leaf bits of one mapping.
#[derive(Debug)]
pub(super) struct LeafBits {
    nr_leaves: u64,
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl LeafBits {
    /// Bits for `nr_leaves` leaves, all clear.
    pub(super) fn new(nr_leaves: u64) -> LeafBits {
        let nr_chunks = usize::try_from(nr_leaves.div_ceil(CHUNK_LEAVES)).unwrap_or(usize::MAX);
        LeafBits {
            nr_leaves,
            chunks: (0..nr_chunks).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Chunk index, word index and bit of `leaf`.
    fn locate(leaf: u64) -> (usize, usize, u64) {
        let chunk = (leaf / CHUNK_LEAVES) as usize;
        let word = ((leaf % CHUNK_LEAVES) / 64) as usize;
        (chunk, word, 1 << (leaf % 64))
    }

    /// Whether `leaf` is faulted in.
    pub(super) fn test(&self, leaf: u64) -> bool {
        if leaf >= self.nr_leaves {
            return false;
        }
        let (chunk, word, bit) = Self::locate(leaf);
        // Acquire pairs with the Release in `set`: a leaf seen faulted has its metadata and
        // page-table entries visible too.
        self.chunks[chunk]
            .get()
            .is_some_and(|w| w[word].load(Ordering::Acquire) & bit != 0)
    }

    /// Marks `leaf` faulted in.
    pub(super) fn set(&self, leaf: u64) {
        if let Some((word, shift)) = self.word_of(leaf) {
            // Release pairs with the Acquire in `test` and `first_clear`: a reader that sees
            // the bit sees the leaf's metadata and reference, written before it.
            word.fetch_or(1 << shift, Ordering::Release);
        }
    }

    /// Marks `leaf` not faulted in (its fault failed after the bit was set).
    pub(super) fn clear(&self, leaf: u64) {
        if leaf >= self.nr_leaves {
            return;
        }
        let (chunk, word, bit) = Self::locate(leaf);
        if let Some(words) = self.chunks[chunk].get() {
            // Relaxed: clearing publishes nothing; the failed fault gives its reference back
            // only after this, and a pin that saw the bit holds references of its own.
            words[word].fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// The word holding bit `leaf` and the bit's place in it, the word's chunk allocated if it
    /// was not: for protocols that act on neighbouring bits with one RMW.
    pub(super) fn word_of(&self, leaf: u64) -> Option<(&AtomicU64, u32)> {
        if leaf >= self.nr_leaves {
            return None;
        }
        let (chunk, word, _) = Self::locate(leaf);
        let words = self.chunks[chunk].get_or_init(|| {
            (0..CHUNK_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        Some((&words[word], (leaf % 64) as u32))
    }

    /// Every leaf marked, in order, a word at a time (chunks never touched are skipped).
    pub(super) fn marked(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(c, words)| words.get().map(|w| (c as u64 * CHUNK_LEAVES, w)))
            .flat_map(|(base, words)| {
                words.iter().enumerate().flat_map(move |(i, word)| {
                    // Acquire pairs with the Release in `set`.
                    let mut bits = word.load(Ordering::Acquire);
                    std::iter::from_fn(move || {
                        (bits != 0).then(|| {
                            let b = u64::from(bits.trailing_zeros());
                            bits &= bits - 1;
                            base + i as u64 * 64 + b
                        })
                    })
                })
            })
    }

    /// The first leaf of `[first, end)` that is not faulted in, a word at a time.
    pub(super) fn first_clear(&self, first: u64, end: u64) -> Option<u64> {
        let end = end.min(self.nr_leaves);
        let mut leaf = first;
        while leaf < end {
            let (chunk, word, _) = Self::locate(leaf);
            let Some(words) = self.chunks[chunk].get() else {
                return Some(leaf);
            };
            let shift = leaf % 64;
            // Acquire pairs with the Release in `set`.
            let clear = !words[word].load(Ordering::Acquire) >> shift;
            if clear != 0 {
                let at = leaf + u64::from(clear.trailing_zeros());
                return (at < end).then_some(at);
            }
            leaf += 64 - shift;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_set_test_clear_and_find_the_first_hole() {
        let bits = LeafBits::new(3 * CHUNK_LEAVES + 5);
        assert_eq!(bits.first_clear(0, 10), Some(0));
        for leaf in 0..(CHUNK_LEAVES + 70) {
            bits.set(leaf);
        }
        assert!(bits.test(CHUNK_LEAVES + 69));
        assert!(!bits.test(CHUNK_LEAVES + 70));
        assert_eq!(bits.first_clear(0, CHUNK_LEAVES + 70), None);
        assert_eq!(
            bits.first_clear(3, CHUNK_LEAVES + 100),
            Some(CHUNK_LEAVES + 70)
        );
        let sparse = LeafBits::new(200);
        (64..200).for_each(|l| sparse.set(l));
        sparse.clear(77);
        assert!(!sparse.test(77));
        assert_eq!(sparse.first_clear(64, 200), Some(77));
        assert_eq!(sparse.first_clear(78, 200), None);
        // The last, partial chunk and the end of the mapping.
        let last = 3 * CHUNK_LEAVES + 4;
        bits.set(last);
        assert!(bits.test(last));
        assert!(!bits.test(last + 1));
        bits.set(last + 1);
        assert_eq!(bits.first_clear(last, last + 1), None);
        assert_eq!(bits.first_clear(last - 1, last + 1), Some(last - 1));
    }
}
