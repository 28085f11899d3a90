//! The 64-byte page descriptor (`struct page`), its flag bits and word encodings.
//!
//! A [`Page`] is eight words of atomics, `#[repr(C, align(64))]`, so a descriptor never straddles
//! a cache line and 64 of them fill one 4 KiB block, exactly as in the kernel's vmemmap. Because
//! every field is atomic, `&Page` is freely shared between threads and all mutation goes through
//! `&self`; the stores that hold descriptors never need to hand out `&mut Page`.
//!
//! Word 1 is the kernel's `compound_head`/`pgmap` union: a head or order-0 page stores its
//! pgmap's id shifted left by one (bit 0 clear); a tail stores `(head_pfn << 1) | 1`. We encode
//! the head by pfn rather than by descriptor address so the encoding is the same in every layout
//! and decoding it never dereferences a pointer. Large-folio fields (order, entire mapcount,
//! pincount) live in the head itself: our descriptor has room for them, the kernel's does not.
//!
//! Word 2 packs the reference count (low 32 bits) and the pin count (high 32 bits) into one
//! `AtomicU64`, so pinning or unpinning a large folio — count and pincount together — is one
//! atomic operation where the kernel needs two (`folio::refcount` owns the arithmetic).

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use crate::addr::{Order, Pfn};

/// Pin references count this much on the refcount of a small folio (`mm/gup.c`).
pub const GUP_PIN_COUNTING_BIAS: i32 = 1024;

/// The `mapping` value of a tail page (the kernel's `TAIL_MAPPING` poison, without the pointer
/// delta): a tail has no mapping of its own.
pub const TAIL_MAPPING: u64 = 0x400;

/// Page flag bits stored in word 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFlags(u64);

impl PageFlags {
    /// No flags.
    pub const EMPTY: PageFlags = PageFlags(0);
    /// The page is locked (`PG_locked`).
    pub const LOCKED: PageFlags = PageFlags(1 << 0);
    /// The head of a compound page (`PG_head`).
    pub const HEAD: PageFlags = PageFlags(1 << 1);
    /// Never handed to the page allocator (`PG_reserved`); every ZONE_DEVICE page has it.
    pub const RESERVED: PageFlags = PageFlags(1 << 2);
    /// The folio's data must be written back (`PG_dirty`).
    pub const DIRTY: PageFlags = PageFlags(1 << 3);
    /// This page's memory is poisoned (`PG_hwpoison`).
    pub const HWPOISON: PageFlags = PageFlags(1 << 4);
    /// On a head: some page of the folio is poisoned (`PG_has_hwpoisoned`).
    pub const HAS_HWPOISONED: PageFlags = PageFlags(1 << 5);

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Flags from raw bits (unknown bits are kept, as the kernel keeps zone/section bits).
    #[inline]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: PageFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two flag sets.
    #[inline]
    pub const fn union(self, other: PageFlags) -> PageFlags {
        PageFlags(self.0 | other.0)
    }
}

/// The identity of a registered pgmap as stored in a head page's word 1; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgmapId(u64);

impl PgmapId {
    /// The largest id that fits the word-1 encoding.
    pub const MAX: u64 = u64::MAX >> 1;

    /// An id; `None` for zero (reserved for "no pgmap", like the kernel's `MEMORY_TYPE` 0) or
    /// above [`PgmapId::MAX`].
    pub const fn new(raw: u64) -> Option<Self> {
        if raw == 0 || raw > Self::MAX {
            None
        } else {
            Some(Self(raw))
        }
    }

    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Word 1 of a descriptor, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadWord {
    /// Never written: all zero, as a fresh anonymous mapping is.
    Unset,
    /// A head or order-0 page belonging to this pgmap.
    Pgmap(PgmapId),
    /// A tail page of the compound headed at this pfn.
    Tail(Pfn),
}

impl HeadWord {
    /// The raw word for this value.
    pub const fn encode(self) -> u64 {
        match self {
            HeadWord::Unset => 0,
            HeadWord::Pgmap(id) => id.0 << 1,
            HeadWord::Tail(head) => (head.raw() << 1) | 1,
        }
    }

    /// Decodes a raw word.
    pub const fn decode(word: u64) -> Self {
        if word & 1 == 1 {
            HeadWord::Tail(Pfn::new(word >> 1))
        } else if word == 0 {
            HeadWord::Unset
        } else {
            HeadWord::Pgmap(PgmapId(word >> 1))
        }
    }
}

/// One 64-byte page descriptor.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct Page {
    flags: AtomicU64,
    head: AtomicU64,
    /// Reference count (low half, `i32`) and pin count (high half, `i32`).
    counts: AtomicU64,
    /// Stored biased by −1 like the kernel's `_mapcount`; on a head of order > 0 it is the
    /// entire-folio mapcount.
    mapcount: AtomicI32,
    order: AtomicU32,
    mapping: AtomicU64,
    index: AtomicU64,
    zone_device_data: AtomicU64,
    private: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Page>() == 64);
const _: () = assert!(std::mem::align_of::<Page>() == 64);

/// Packs a reference count and a pin count into word 2.
#[inline]
pub(crate) const fn pack_counts(refcount: i32, pincount: i32) -> u64 {
    ((pincount as u32 as u64) << 32) | refcount as u32 as u64
}

/// The reference count half of word 2.
#[inline]
pub(crate) const fn refcount_of(counts: u64) -> i32 {
    counts as u32 as i32
}

/// The pin count half of word 2.
#[inline]
pub(crate) const fn pincount_of(counts: u64) -> i32 {
    (counts >> 32) as u32 as i32
}

/// The contents of a descriptor at one instant, for comparison and display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageSnapshot {
    /// Word 0.
    pub flags: u64,
    /// Word 1, raw.
    pub head: u64,
    /// Reference count.
    pub refcount: i32,
    /// Raw (−1 biased) mapcount.
    pub mapcount: i32,
    /// Pin count (large folios).
    pub pincount: i32,
    /// Folio order (heads).
    pub order: u32,
    /// Owning address space, or [`TAIL_MAPPING`].
    pub mapping: u64,
    /// Page offset within `mapping`.
    pub index: u64,
    /// Driver-private data.
    pub zone_device_data: u64,
    /// Owner-private word.
    pub private: u64,
}

// Initialisation stores are `Relaxed`: a descriptor is written by exactly one initialising
// thread before it is published, and publication happens-before any reader through the
// initialisation engine (a thread join, or the Release store that marks a range done).
impl Page {
    /// `__init_zone_device_page` for a head or order-0 page: the whole descriptor is rewritten,
    /// reserved, owned by `pgmap`, with reference count `idle_ref`.
    pub(crate) fn init_zone_device(&self, pgmap: PgmapId, idle_ref: i32) {
        self.write(PageSnapshot {
            flags: PageFlags::RESERVED.bits(),
            head: HeadWord::Pgmap(pgmap).encode(),
            refcount: idle_ref,
            mapcount: -1,
            ..PageSnapshot::default()
        });
    }

    /// `__init_zone_device_page` + `prep_compound_tail`: a tail of the compound at `head`,
    /// reference count 0.
    pub(crate) fn init_tail(&self, head: Pfn) {
        self.write(PageSnapshot {
            flags: PageFlags::RESERVED.bits(),
            head: HeadWord::Tail(head).encode(),
            mapcount: -1,
            mapping: TAIL_MAPPING,
            ..PageSnapshot::default()
        });
    }

    /// `__SetPageHead`.
    pub(crate) fn set_head_flag(&self) {
        self.flags
            .fetch_or(PageFlags::HEAD.bits(), Ordering::Relaxed);
    }

    /// `prep_compound_head`: order, entire mapcount −1 (unmapped), pincount 0.
    pub(crate) fn prep_compound_head(&self, order: Order) {
        self.order.store(order.get(), Ordering::Relaxed);
        self.mapcount.store(-1, Ordering::Relaxed);
        // Keep the reference count, clear the pin count.
        self.counts
            .fetch_and(u64::from(u32::MAX), Ordering::Relaxed);
    }

    /// Overwrites every word (initialisation and tests; not a synchronisation point).
    pub(crate) fn write(&self, s: PageSnapshot) {
        self.flags.store(s.flags, Ordering::Relaxed);
        self.head.store(s.head, Ordering::Relaxed);
        self.counts
            .store(pack_counts(s.refcount, s.pincount), Ordering::Relaxed);
        self.mapcount.store(s.mapcount, Ordering::Relaxed);
        self.order.store(s.order, Ordering::Relaxed);
        self.mapping.store(s.mapping, Ordering::Relaxed);
        self.index.store(s.index, Ordering::Relaxed);
        self.zone_device_data
            .store(s.zone_device_data, Ordering::Relaxed);
        self.private.store(s.private, Ordering::Relaxed);
    }

    /// The descriptor's 64 bytes as eight little-endian words, in memory order (word 3 holds
    /// the mapcount in its low half and the order in its high half): what a memmap room
    /// stores, read one atomic at a time, for the room's checksums (`memmap::sums`).
    pub(crate) fn words(&self) -> [u64; 8] {
        let mapcount = self.mapcount.load(Ordering::Relaxed) as u32;
        let order = self.order.load(Ordering::Relaxed);
        [
            self.flags.load(Ordering::Relaxed),
            self.head.load(Ordering::Relaxed),
            self.counts.load(Ordering::Relaxed),
            (u64::from(order) << 32) | u64::from(mapcount),
            self.mapping.load(Ordering::Relaxed),
            self.index.load(Ordering::Relaxed),
            self.zone_device_data.load(Ordering::Relaxed),
            self.private.load(Ordering::Relaxed),
        ]
    }

    /// Reads every word (each word atomically; the set as a whole is not a single snapshot
    /// while other threads write).
    pub fn snapshot(&self) -> PageSnapshot {
        let counts = self.counts.load(Ordering::Relaxed);
        PageSnapshot {
            flags: self.flags.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            refcount: refcount_of(counts),
            mapcount: self.mapcount.load(Ordering::Relaxed),
            pincount: pincount_of(counts),
            order: self.order.load(Ordering::Relaxed),
            mapping: self.mapping.load(Ordering::Relaxed),
            index: self.index.load(Ordering::Relaxed),
            zone_device_data: self.zone_device_data.load(Ordering::Relaxed),
            private: self.private.load(Ordering::Relaxed),
        }
    }

    /// Word 1, decoded.
    #[inline]
    pub fn head_word(&self) -> HeadWord {
        HeadWord::decode(self.head.load(Ordering::Relaxed))
    }

    /// The flags.
    #[inline]
    pub fn flags(&self) -> PageFlags {
        PageFlags::from_bits(self.flags.load(Ordering::Relaxed))
    }

    /// Sets `f` (atomic OR).
    #[inline]
    pub(crate) fn set_flags(&self, f: PageFlags) {
        self.flags.fetch_or(f.bits(), Ordering::Relaxed);
    }

    /// The stored order (meaningful on heads); `None` if the word holds no valid order, which
    /// only a corrupt descriptor can (every write comes from an [`Order`]).
    #[inline]
    pub fn order(&self) -> Option<Order> {
        Order::new(self.order.load(Ordering::Relaxed)).ok()
    }

    /// The reference count.
    #[inline]
    pub fn refcount(&self) -> i32 {
        refcount_of(self.counts.load(Ordering::Acquire))
    }

    /// Number of mappings (the stored value is biased by −1).
    #[inline]
    pub fn mapcount(&self) -> i32 {
        self.mapcount.load(Ordering::Relaxed) + 1
    }

    /// The pin count.
    #[inline]
    pub fn pincount(&self) -> i32 {
        pincount_of(self.counts.load(Ordering::Acquire))
    }

    /// The packed reference/pin count word, for the folio layer's refcount protocol.
    #[inline]
    pub(crate) fn counts_word(&self) -> &AtomicU64 {
        &self.counts
    }

    /// The (−1 biased) mapcount word.
    #[inline]
    pub(crate) fn mapcount_word(&self) -> &AtomicI32 {
        &self.mapcount
    }

    /// `dax_set_mapping` on a head: records the owning address space and the page offset in
    /// it, unless a mapping is already recorded. Returns whether it wrote. Faults racing on one
    /// folio write the same pair (the device's address space, the folio's offset in it).
    pub(crate) fn set_mapping_once(&self, mapping: u64, index: u64) -> bool {
        if self.mapping.load(Ordering::Relaxed) != 0 {
            return false;
        }
        self.index.store(index, Ordering::Relaxed);
        self.mapping.store(mapping, Ordering::Relaxed);
        true
    }

    /// Forgets `mapping`, `index` and the dirty bit (a device that used the folio going away
    /// cleanly).
    pub(crate) fn clear_mapping(&self) {
        self.mapping.store(0, Ordering::Relaxed);
        self.index.store(0, Ordering::Relaxed);
        self.clear_flags(PageFlags::DIRTY);
    }

    /// Clears `f` (atomic AND-NOT).
    #[inline]
    pub(crate) fn clear_flags(&self, f: PageFlags) {
        self.flags.fetch_and(!f.bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_word_round_trips() {
        let id = PgmapId::new(7).expect("id");
        for w in [
            HeadWord::Unset,
            HeadWord::Pgmap(id),
            HeadWord::Tail(Pfn::new(0x4_0000)),
            HeadWord::Tail(Pfn::new(0)),
        ] {
            assert_eq!(HeadWord::decode(w.encode()), w);
        }
        assert_eq!(
            HeadWord::Tail(Pfn::new(0x200)).encode() & 1,
            1,
            "tails have bit 0 set"
        );
        assert_eq!(
            HeadWord::Pgmap(id).encode() & 1,
            0,
            "heads have bit 0 clear"
        );
        assert!(PgmapId::new(0).is_none());
    }

    #[test]
    fn init_writes_the_kernel_state() {
        let id = PgmapId::new(3).expect("id");
        let head = Page::default();
        let tail = Page::default();
        head.init_zone_device(id, 1);
        head.set_head_flag();
        tail.init_tail(Pfn::new(0x200));
        head.prep_compound_head(Order::PMD);
        assert!(
            head.flags()
                .contains(PageFlags::HEAD.union(PageFlags::RESERVED))
        );
        assert_eq!(head.head_word(), HeadWord::Pgmap(id));
        assert_eq!(
            (head.refcount(), head.mapcount(), head.order()),
            (1, 0, Some(Order::PMD))
        );
        assert_eq!(tail.head_word(), HeadWord::Tail(Pfn::new(0x200)));
        assert_eq!(tail.snapshot().mapping, TAIL_MAPPING);
        assert_eq!(tail.refcount(), 0);
        assert!(!tail.flags().contains(PageFlags::HEAD));
    }
}
