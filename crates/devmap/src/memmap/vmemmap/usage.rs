//! Per-section usage records: the kernel's `struct mem_section_usage`, one per 128 MiB section.
//!
//! The kernel allocates one (`kzalloc` in `section_activate`) for every section a ZONE_DEVICE
//! range touches and sets the bits of the 2 MiB subsections the range fills. devmap has no use
//! for the pageblock flags, and its `pfn_valid` is a range check, so nothing on a lookup path
//! reads the records: they are kept so that the Vmemmap store holds what the kernel holds and
//! its accounting can be checked against resident memory like every other level. Each record
//! is [`SECTION_USAGE_BYTES`], laid out as the kernel's: an `rcu_head` (words 0 and 1), the
//! subsection bitmap (word 2), the pageblock flags and the allocator's rounding (words 3–11).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backing::{BackingError, PageHint};
use crate::memmap::array::ZeroedArray;

use super::plan::{PMD_SHIFT, SECTION_USAGE_BYTES, SUBSECTION_SHIFT, USAGE_WORDS};

/// Word of a record holding the subsection bitmap.
const SUBSECTION_MAP: usize = 2;

/// One usage record per section of a range.
#[derive(Debug)]
pub(super) struct SectionUsage {
    words: ZeroedArray<AtomicU64>,
}

impl SectionUsage {
    pub(super) fn new(sections: u64, hint: PageHint) -> Result<Self, BackingError> {
        Ok(Self {
            words: ZeroedArray::new(sections * USAGE_WORDS, hint, None)?,
        })
    }

    fn record(&self, section: u64) -> &[AtomicU64] {
        let start = (section * USAGE_WORDS) as usize;
        &self.words.as_slice()[start..start + USAGE_WORDS as usize]
    }

    /// Marks the subsections of the `nr` pfns at offset `off` of the range active, as
    /// `section_activate` does when they are added. The span that holds a section's first pfn
    /// also "allocates" its record: it writes the whole record, as `kzalloc` zeroes it, so
    /// that every page of the records is held as the kernel's objects are. Spans of one
    /// section may be activated concurrently (parallel init): each only ORs its own bits into
    /// the bitmap, and the allocating span writes zeros to the other words, which no span
    /// sets.
    pub(super) fn activate(&self, off: u64, nr: u64) {
        let end = off + nr;
        for section in off >> PMD_SHIFT..=(end - 1) >> PMD_SHIFT {
            let base = section << PMD_SHIFT;
            let record = self.record(section);
            if off <= base {
                for (i, w) in record.iter().enumerate() {
                    if i != SUBSECTION_MAP {
                        // Relaxed: the zeros are written for their footprint only, and readers
                        // (tests) come after init, which publishes everything it wrote.
                        w.store(0, Ordering::Relaxed);
                    }
                }
            }
            let first = (off.max(base) - base) >> SUBSECTION_SHIFT;
            let last = (end.min(base + (1 << PMD_SHIFT)) - 1 - base) >> SUBSECTION_SHIFT;
            let bits = (u64::MAX >> (63 - (last - first))) << first;
            // Relaxed: no reader acts on the bitmap before init has published it.
            record[SUBSECTION_MAP].fetch_or(bits, Ordering::Relaxed);
        }
    }

    /// Whether the subsection holding offset `off` of the range is active.
    #[cfg(test)]
    pub(super) fn subsection_active(&self, off: u64) -> bool {
        let map = self.record(off >> PMD_SHIFT)[SUBSECTION_MAP].load(Ordering::Relaxed);
        map & (1 << ((off >> SUBSECTION_SHIFT) & 63)) != 0
    }

    pub(super) fn resident_bytes(&self) -> Result<u64, BackingError> {
        self.words.resident_bytes()
    }

    pub(super) fn reserved_bytes(&self) -> usize {
        self.words.reserved_bytes()
    }
}

const _: () = assert!(SECTION_USAGE_BYTES.is_multiple_of(8));
