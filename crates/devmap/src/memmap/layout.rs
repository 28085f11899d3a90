//! The memmap layouts by name, and the sizes every layout's arithmetic is built from: a
//! descriptor's size, the descriptors of one vmemmap block, the dedup threshold. The bottom of
//! `memmap`: geometry, cost and the stores build on it.

use crate::addr::{Order, PAGE_SIZE};
use crate::desc::Page;

/// Size of a descriptor in bytes.
pub const DESC_SIZE: u64 = std::mem::size_of::<Page>() as u64;
/// Descriptors per 4 KiB block (one vmemmap page).
pub const DESCS_PER_BLOCK: u64 = PAGE_SIZE / DESC_SIZE;
/// Unique vmemmap blocks kept per deduplicated compound (`VMEMMAP_RESERVE_NR`).
pub const VMEMMAP_RESERVE_NR: u64 = 2;
/// Bytes of one page-table entry (PMD or PTE) of the Vmemmap layout.
pub const DIR_ENTRY_SIZE: u64 = 8;
/// The smallest compound order at which tail blocks are deduplicated: a compound must span more
/// than [`VMEMMAP_RESERVE_NR`] blocks (`vmemmap_can_optimize`).
pub const DEDUP_MIN_ORDER: Order = Order::new_unchecked(8);

/// Which descriptor store backs a memmap. The default is `Heads`, the smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// One descriptor per pfn.
    Flat,
    /// Software vmemmap with tail-block dedup.
    Vmemmap,
    /// One descriptor per compound.
    #[default]
    Heads,
}

impl Layout {
    /// Every layout, in report order.
    pub const ALL: [Layout; 3] = [Layout::Flat, Layout::Vmemmap, Layout::Heads];

    /// The lower-case name used on the command line and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Flat => "flat",
            Layout::Vmemmap => "vmemmap",
            Layout::Heads => "heads",
        }
    }

    /// Bytes of memmap a store of this layout keeps for a range of `pages` pfns in compounds of
    /// order `shift`: what an altmap must hold.
    pub fn memmap_bytes(self, pages: u64, shift: Order) -> u64 {
        match self {
            Layout::Flat | Layout::Vmemmap => pages * DESC_SIZE,
            Layout::Heads => (pages >> shift.get()) * DESC_SIZE,
        }
    }
}

crate::units::named_values!(Layout, "layout", ["flat", "vmemmap", "heads"]);

/// `bytes` rounded up to whole 4 KiB pages.
pub(crate) fn page_round(bytes: u64) -> u64 {
    bytes.next_multiple_of(PAGE_SIZE)
}
