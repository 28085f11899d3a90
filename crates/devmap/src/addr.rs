//! Typed numbers: page frame numbers, folio orders, pfn ranges and byte sizes.
//!
//! Every quantity with a unit that crosses a module boundary is one of these newtypes, never a
//! bare `u64`. Constructors that can fail are checked and return [`AddrError`]; the few
//! `_unchecked` twins exist for hot loops whose inputs were validated once up front. This module
//! also owns the power-of-two range arithmetic the kernel does with `order_base_2` and
//! `foreach_order_pgoff` (seed 003, patch 05): splitting a range into the largest naturally
//! aligned power-of-two pieces.

use std::fmt;

/// log2 of the base page size.
pub const PAGE_SHIFT: u32 = 12;
/// The base page size: every pfn names 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Bits of physical address a device space has (`MAX_PHYSMEM_BITS` of x86-64 with 5-level
/// paging): pfns below [`Pfn::END`].
pub const MAX_PHYSMEM_BITS: u32 = 52;

/// Errors from constructing or combining typed numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// An order above [`Order::MAX`].
    #[error("order {order} is above the largest supported order {max}")]
    OrderTooLarge {
        /// The order asked for.
        order: u32,
        /// The largest order supported.
        max: u32,
    },
    /// A byte count that is not a whole number of 4 KiB pages.
    #[error("{bytes} bytes is not a multiple of the 4 KiB page size")]
    NotPageAligned {
        /// The byte count.
        bytes: u64,
    },
    /// A range whose end is before its start, or whose end overflows.
    #[error("invalid pfn range: start {start:#x}, {len} pages")]
    BadRange {
        /// First pfn.
        start: u64,
        /// Length in pages.
        len: u64,
    },
    /// A size that is not a power of two where one is required.
    #[error("{bytes} bytes is not a power of two")]
    NotPowerOfTwo {
        /// The byte count.
        bytes: u64,
    },
}

/// A page frame number in a [`DeviceSpace`](crate::pgmap::DeviceSpace): byte address / 4 KiB.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(u64);

impl Pfn {
    /// One past the highest pfn a memmap describes: the end of a [`MAX_PHYSMEM_BITS`] physical
    /// address space (4 PiB). Memmaps refuse ranges beyond it, so every descriptor word that
    /// encodes a pfn, and every byte count derived from a range, has room to spare.
    pub const END: Pfn = Pfn(1 << (MAX_PHYSMEM_BITS - PAGE_SHIFT));

    /// Wraps a raw pfn.
    #[inline]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw number.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The pfn that holds byte address `addr` (rounding down).
    #[inline]
    pub const fn containing(addr: u64) -> Self {
        Self(addr >> PAGE_SHIFT)
    }

    /// The byte address of the first byte of this page.
    #[inline]
    pub const fn addr(self) -> u64 {
        self.0 << PAGE_SHIFT
    }

    /// `self + n`, or `None` on overflow.
    #[inline]
    pub const fn checked_add(self, n: u64) -> Option<Self> {
        match self.0.checked_add(n) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// `self + n`; the caller knows it cannot overflow (pfns inside a validated range).
    #[inline]
    pub const fn add(self, n: u64) -> Self {
        Self(self.0 + n)
    }

    /// Number of pages from `base` up to `self`; `self` must not be below `base`.
    #[inline]
    pub const fn offset_from(self, base: Pfn) -> u64 {
        self.0 - base.0
    }

    /// Rounds down to a multiple of `2^order` pages.
    #[inline]
    pub const fn align_down(self, order: Order) -> Self {
        Self(self.0 & !(order.nr_pages() - 1))
    }

    /// Whether this pfn is a multiple of `2^order` pages.
    #[inline]
    pub const fn is_aligned(self, order: Order) -> bool {
        self.0 & (order.nr_pages() - 1) == 0
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The log2 of a number of base pages: a folio of order `o` spans `2^o` pfns.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Order(u8);

impl Order {
    /// The largest order supported: 30 (4 TiB compounds), well above the kernel's PUD order 18.
    pub const MAX: Order = Order(30);
    /// Order 0: one base page.
    pub const BASE: Order = Order(0);
    /// Order 9: a 2 MiB PMD leaf.
    pub const PMD: Order = Order(9);
    /// Order 18: a 1 GiB PUD leaf.
    pub const PUD: Order = Order(18);

    /// A checked order.
    #[inline]
    pub const fn new(order: u32) -> Result<Self, AddrError> {
        if order > Self::MAX.0 as u32 {
            Err(AddrError::OrderTooLarge {
                order,
                max: Self::MAX.0 as u32,
            })
        } else {
            Ok(Self(order as u8))
        }
    }

    /// An order the caller has already checked against [`Order::MAX`].
    #[inline]
    pub const fn new_unchecked(order: u8) -> Self {
        debug_assert!(order <= Self::MAX.0);
        Self(order)
    }

    /// The order of a power-of-two byte size of at least one page, e.g. 2 MiB → 9.
    pub const fn from_bytes(bytes: u64) -> Result<Self, AddrError> {
        if !bytes.is_power_of_two() {
            return Err(AddrError::NotPowerOfTwo { bytes });
        }
        if bytes < PAGE_SIZE {
            return Err(AddrError::NotPageAligned { bytes });
        }
        Self::new(bytes.trailing_zeros() - PAGE_SHIFT)
    }

    /// The raw order.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0 as u32
    }

    /// Pages in a folio of this order.
    #[inline]
    pub const fn nr_pages(self) -> u64 {
        1 << self.0
    }

    /// Bytes in a folio of this order.
    #[inline]
    pub const fn bytes(self) -> u64 {
        PAGE_SIZE << self.0
    }
}

impl fmt::Debug for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Order({})", self.0)
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A half-open range of pfns `[start, end)`, never empty-with-overflow.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PfnRange {
    start: Pfn,
    end: Pfn,
}

impl PfnRange {
    /// `[start, start + len)`; fails if the end overflows.
    pub const fn new(start: Pfn, len: u64) -> Result<Self, AddrError> {
        match start.checked_add(len) {
            Some(end) => Ok(Self { start, end }),
            None => Err(AddrError::BadRange {
                start: start.raw(),
                len,
            }),
        }
    }

    /// `[start, end)`; fails if `end < start`.
    pub const fn from_bounds(start: Pfn, end: Pfn) -> Result<Self, AddrError> {
        if end.raw() < start.raw() {
            return Err(AddrError::BadRange {
                start: start.raw(),
                len: 0,
            });
        }
        Ok(Self { start, end })
    }

    /// `[start, end)` for bounds the caller has already validated (`start <= end`).
    #[inline]
    pub const fn new_unchecked(start: Pfn, end: Pfn) -> Self {
        debug_assert!(start.raw() <= end.raw());
        Self { start, end }
    }

    /// First pfn.
    #[inline]
    pub const fn start(self) -> Pfn {
        self.start
    }

    /// One past the last pfn.
    #[inline]
    pub const fn end(self) -> Pfn {
        self.end
    }

    /// Number of pages.
    #[inline]
    pub const fn len(self) -> u64 {
        self.end.raw() - self.start.raw()
    }

    /// Whether the range has no pages.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        self.len() << PAGE_SHIFT
    }

    /// Whether `pfn` lies in the range.
    #[inline]
    pub const fn contains(self, pfn: Pfn) -> bool {
        pfn.raw() >= self.start.raw() && pfn.raw() < self.end.raw()
    }

    /// Whether `other` lies wholly inside this range.
    #[inline]
    pub const fn contains_range(self, other: PfnRange) -> bool {
        other.start.raw() >= self.start.raw() && other.end.raw() <= self.end.raw()
    }

    /// Whether the two ranges share at least one pfn (an empty range overlaps nothing).
    #[inline]
    pub const fn overlaps(self, other: PfnRange) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.start.raw() < other.end.raw()
            && other.start.raw() < self.end.raw()
    }

    /// The largest naturally aligned power-of-two pieces that tile this range, in order
    /// (the kernel's `foreach_order_pgoff`).
    pub fn order_pieces(self) -> OrderPieces {
        OrderPieces {
            next: self.start.raw(),
            end: self.end.raw(),
        }
    }
}

impl fmt::Debug for PfnRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PfnRange[{:#x}..{:#x})",
            self.start.raw(),
            self.end.raw()
        )
    }
}

/// The order of the largest naturally aligned power-of-two block that starts at `pfn` and fits
/// in `nr_pages` pages (the order of `foreach_order_pgoff`'s next step), capped at [`Order::MAX`].
///
/// Returns `None` when `nr_pages` is zero.
pub fn order_at(pfn: Pfn, nr_pages: u64) -> Option<Order> {
    if nr_pages == 0 {
        return None;
    }
    let align = if pfn.raw() == 0 {
        u32::MAX
    } else {
        pfn.raw().trailing_zeros()
    };
    let fit = 63 - nr_pages.leading_zeros();
    let order = align.min(fit).min(Order::MAX.get());
    Some(Order::new_unchecked(order as u8))
}

/// Iterator over `(pfn, order)` pieces produced by [`PfnRange::order_pieces`].
#[derive(Debug, Clone)]
pub struct OrderPieces {
    next: u64,
    end: u64,
}

impl Iterator for OrderPieces {
    type Item = (Pfn, Order);

    fn next(&mut self) -> Option<Self::Item> {
        let pfn = Pfn::new(self.next);
        let order = order_at(pfn, self.end - self.next)?;
        self.next += order.nr_pages();
        Some((pfn, order))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn order_from_bytes() {
        assert_eq!(Order::from_bytes(4096), Ok(Order::BASE));
        assert_eq!(Order::from_bytes(2 << 20), Ok(Order::PMD));
        assert_eq!(Order::from_bytes(1 << 30), Ok(Order::PUD));
        assert_eq!(
            Order::from_bytes(3 << 20),
            Err(AddrError::NotPowerOfTwo { bytes: 3 << 20 })
        );
        assert_eq!(
            Order::from_bytes(2048),
            Err(AddrError::NotPageAligned { bytes: 2048 })
        );
        assert!(Order::new(31).is_err());
        assert_eq!(Order::new(18).map(Order::nr_pages), Ok(262_144));
    }

    #[test]
    fn pieces_of_an_unaligned_range() {
        // [3, 21): 3 (o0), 4..8 (o2), 8..16 (o3), 16..20 (o2), 20 (o0)
        let r = PfnRange::new(Pfn::new(3), 18).expect("range");
        let got: Vec<(u64, u32)> = r.order_pieces().map(|(p, o)| (p.raw(), o.get())).collect();
        assert_eq!(got, vec![(3, 0), (4, 2), (8, 3), (16, 2), (20, 0)]);
    }

    #[test]
    fn range_overflow_is_an_error() {
        assert!(PfnRange::new(Pfn::new(u64::MAX), 2).is_err());
        assert!(PfnRange::from_bounds(Pfn::new(5), Pfn::new(4)).is_err());
    }

    proptest! {
        #[test]
        fn pieces_tile_the_range_with_maximal_aligned_blocks(start in 0u64..1 << 40, len in 0u64..1 << 22) {
            let r = PfnRange::new(Pfn::new(start), len).expect("no overflow");
            let mut next = start;
            for (pfn, order) in r.order_pieces() {
                prop_assert_eq!(pfn.raw(), next, "pieces are contiguous");
                prop_assert!(pfn.is_aligned(order), "piece is naturally aligned");
                let n = order.nr_pages();
                prop_assert!(next + n <= start + len, "piece stays inside");
                // maximal: the next order up is either misaligned or would overrun
                let up = order.get() + 1;
                if up <= Order::MAX.get() {
                    let bigger = Order::new(up).expect("order");
                    prop_assert!(!pfn.is_aligned(bigger) || next + bigger.nr_pages() > start + len);
                }
                next += n;
            }
            prop_assert_eq!(next, start + len, "pieces cover the range");
        }

        #[test]
        fn align_down_is_the_largest_aligned_pfn_below(pfn in any::<u64>(), o in 0u32..=30) {
            let order = Order::new(o).expect("order");
            let a = Pfn::new(pfn).align_down(order);
            prop_assert!(a.is_aligned(order));
            prop_assert!(a.raw() <= pfn);
            prop_assert!(pfn - a.raw() < order.nr_pages());
        }

        #[test]
        fn overlap_is_symmetric_and_matches_membership(a in 0u64..64, al in 0u64..16, b in 0u64..64, bl in 0u64..16) {
            let x = PfnRange::new(Pfn::new(a), al).expect("range");
            let y = PfnRange::new(Pfn::new(b), bl).expect("range");
            let brute = (a..a + al).any(|p| y.contains(Pfn::new(p)));
            prop_assert_eq!(x.overlaps(y), brute);
            prop_assert_eq!(y.overlaps(x), brute);
        }
    }
}
