//! What a memmap costs ([`Cost`], computed by [`Layout::cost`](super::Layout::cost)) and what
//! a live one holds ([`Resident`], measured), kept side by side so that the one can be checked
//! against the other.

use crate::addr::PAGE_SIZE;

use super::Geometry;

/// The memory a memmap takes and the descriptors initialisation writes.
///
/// Host memory is itemised the way the kernel's sparse vmemmap spends it
/// (`mm/sparse-vmemmap.c`, `mm/sparse.c`); `metadata_bytes` is the sum of the four items. Flat
/// and Heads have descriptor pages only. Every item is memory the live store holds in its own
/// mappings, so the sum can be checked against what is resident ([`Resident`]); the one
/// exception is the Heads layout's poison side table, which lives on the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Bytes of host memory (DRAM) in all: `descriptor_bytes + pte_table_bytes +
    /// pmd_table_bytes + section_usage_bytes`.
    pub metadata_bytes: u64,
    /// DRAM pages holding descriptors: the vmemmap pages (Vmemmap: two per compound with
    /// dedup plus any un-shared since, else every block; Flat: every descriptor; Heads: one per
    /// compound plus its poison side table). Zero when the memmap is on the device, but for a
    /// Vmemmap range that ends in part of a section: those base pages are host memory, as the
    /// kernel's are.
    pub descriptor_bytes: u64,
    /// PTE tables: one 4 KiB table of 512 entries for each 2 MiB of descriptors that is mapped
    /// block by block (Vmemmap with dedup, and a last section the range fills only in part).
    pub pte_table_bytes: u64,
    /// PMD tables: one 8-byte entry per 2 MiB of descriptors (a 128 MiB section), i.e. one
    /// 4 KiB table per 1 GiB of vmemmap (Vmemmap only).
    pub pmd_table_bytes: u64,
    /// Per-section usage records, `struct mem_section_usage` (Vmemmap only): 96 bytes per
    /// 128 MiB section, rounded up to whole pages.
    pub section_usage_bytes: u64,
    /// Bytes of the device given over to the memmap (altmap, `--map dev`), else 0.
    pub device_bytes: u64,
    /// Descriptors that initialisation writes.
    pub descriptors_initialized: u64,
}

impl Cost {
    /// The cost of host memory made of these four items; `metadata_bytes` is their sum.
    pub(crate) fn dram(
        descriptor: u64,
        pte_table: u64,
        pmd_table: u64,
        section_usage: u64,
    ) -> Self {
        Cost {
            metadata_bytes: descriptor + pte_table + pmd_table + section_usage,
            descriptor_bytes: descriptor,
            pte_table_bytes: pte_table,
            pmd_table_bytes: pmd_table,
            section_usage_bytes: section_usage,
            ..Cost::default()
        }
    }

    /// A store that is one array of `bytes` of descriptors: in DRAM, or on the device
    /// (which then gives the memmap its whole altmap).
    pub(super) fn descriptors_only(geo: &Geometry, bytes: u64) -> Self {
        match geo.altmap() {
            Some(_) => Cost {
                device_bytes: geo.altmap_pfns() * PAGE_SIZE,
                ..Cost::default()
            },
            None => Cost::dram(bytes, 0, 0, 0),
        }
    }

    /// Adds `bytes` of descriptor pages that a live store allocated after population.
    pub(crate) fn add_descriptor_bytes(&mut self, bytes: u64) {
        self.descriptor_bytes += bytes;
        self.metadata_bytes += bytes;
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Self) {
        self.metadata_bytes += o.metadata_bytes;
        self.descriptor_bytes += o.descriptor_bytes;
        self.pte_table_bytes += o.pte_table_bytes;
        self.pmd_table_bytes += o.pmd_table_bytes;
        self.section_usage_bytes += o.section_usage_bytes;
        self.device_bytes += o.device_bytes;
        self.descriptors_initialized += o.descriptors_initialized;
    }
}

/// Memory a live memmap holds, measured page by page
/// ([`Reservation::resident_bytes`](crate::backing::Reservation::resident_bytes)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resident {
    /// Host memory: what [`Cost::metadata_bytes`] accounts for.
    pub dram_bytes: u64,
    /// Emulated device memory: the written part of a memmap that lives on the device
    /// (altmap), held in host memory by this emulation. Not comparable to
    /// [`Cost::device_bytes`], which is the altmap's whole reservation.
    pub device_bytes: u64,
}

impl Resident {
    /// `host` bytes of host memory plus `descriptors` bytes of descriptor pages, which live in
    /// the emulated device when the memmap has an altmap and in host memory otherwise.
    pub(crate) fn split(host: u64, descriptors: u64, on_device: bool) -> Self {
        if on_device {
            Self {
                dram_bytes: host,
                device_bytes: descriptors,
            }
        } else {
            Self {
                dram_bytes: host + descriptors,
                device_bytes: 0,
            }
        }
    }
}

impl std::ops::AddAssign for Resident {
    fn add_assign(&mut self, o: Self) {
        self.dram_bytes += o.dram_bytes;
        self.device_bytes += o.device_bytes;
    }
}
