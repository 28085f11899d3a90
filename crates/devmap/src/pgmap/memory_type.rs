//! What kind of memory a pgmap describes (`enum memory_type`) and the rules that follow from
//! it: a folio's idle count, whether a driver allocates the folios. The bottom of `pgmap`.

/// What kind of memory a pgmap describes (`enum memory_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryType {
    /// Device memory the CPU cannot address (HMM); needs `folio_free` and an owner.
    Private,
    /// CPU-coherent device memory that must stay evictable; needs `folio_free` and an owner.
    Coherent,
    /// Persistent memory under a DAX filesystem.
    FsDax,
    /// Device-dax and CXL/hmem memory.
    Generic,
    /// PCI peer-to-peer DMA memory.
    P2pDma,
}

impl MemoryType {
    /// The reference count of a folio nobody uses: 1 for device-dax (`folio_set_count(1)` in
    /// the free path), 0 for every other type (mainline ≥ 6.15).
    pub const fn idle_refcount(self) -> i32 {
        match self {
            MemoryType::Generic => 1,
            _ => 0,
        }
    }

    /// Whether a driver hands its folios out (`alloc_folio`, `zone_device_folio_init`) and is
    /// told when each comes back: private, coherent and P2P memory.
    pub const fn driver_allocated(self) -> bool {
        matches!(
            self,
            MemoryType::Private | MemoryType::Coherent | MemoryType::P2pDma
        )
    }
}
