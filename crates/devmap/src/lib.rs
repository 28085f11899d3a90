//! devmap: the Linux kernel's ZONE_DEVICE page-metadata machinery in userspace.
//!
//! Programs that manage large device-memory pools (persistent memory, device-dax, CXL, or any
//! memory they map themselves) get a 64-byte descriptor per 4 KiB page, grouped into compound
//! folios, with three memmap layouts to choose the cost from: Flat (16 GiB per TiB, the kernel
//! before dedup), Vmemmap (the kernel's tail-block dedup: 4 GiB/TiB at 2 MiB, ~40 MiB/TiB at
//! 1 GiB) and Heads (one descriptor per compound: 32 MiB/TiB at 2 MiB).
//!
//! Layers, lowest first (see `DESIGN.md`): [`addr`] typed numbers; [`wire`] the service's
//! transport (frames, descriptors and peer credentials over a Unix socket); [`backing`]
//! memory sources; [`desc`] the descriptor; [`memmap`] the layouts; [`init`] memmap initialisation engines
//! (sync, parallel, asynchronous with on-demand sync); [`pgmap`] device pgmaps, their
//! liveness, and the device space that registers them; [`folio`] reference counts, mappings and
//! the free path; [`gup`] pinning for DMA, one atomic per folio; [`dax`] the device-dax front
//! end (devices over backings, shared mappings, the fault path, the rmap); [`namespace`] the kernel's
//! namespace geometry (info block, data offset, altmap) and the pgmap config it implies,
//! regions and namespaces on disk; [`errno`] the kernel-style errno of every error, for the C
//! ABI and the Python bindings.
//!
//! ```
//! use devmap::{DeviceSpace, Layout, Order, PgmapConfig};
//!
//! let space = DeviceSpace::new();
//! let range = space.reserve_range(64 << 20, 2 << 20)?;          // 64 MiB, 2 MiB aligned
//! let mut cfg = PgmapConfig::devdax(range, Order::PMD);        // 2 MiB folios
//! cfg.layout = Layout::Vmemmap;
//! let pgmap = space.memremap_pages(cfg)?;
//! let pfn = range.start().add(700);
//! let folio = pgmap.folio(pfn)?;
//! assert_eq!(folio.pfn(), range.start().add(512));
//! assert_eq!(folio.order(), Order::PMD);
//! assert_eq!(pgmap.cost().descriptors_initialized, 32 * 128);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod addr;
pub mod backing;
pub mod client;
pub mod dax;
pub mod desc;
pub mod errno;
pub mod folio;
pub mod gup;
pub mod init;
pub mod memmap;
pub mod memory_failure;
pub mod namespace;
pub mod pgmap;
mod primitive;
pub mod service;
#[cfg(test)]
mod stress;
#[cfg(all(test, not(loom)))]
mod test_support;
pub mod units;
pub mod wire;

pub use addr::{Order, PAGE_SIZE, Pfn, PfnRange};
pub use dax::{DaxDevice, DaxError, DaxMapping, Faulted, MappingId, PinStats, Populated};
pub use desc::{GUP_PIN_COUNTING_BIAS, Page, PageFlags};
pub use folio::{AllocatedFolio, FolioError, MappedFolio};
pub use gup::{
    ByAddress, ByPfn, Extent, ExtentLimits, Folios, GupError, GupFlags, Pages, Pinned, PinnedFolio,
};
pub use init::{InitMode, InitProgress, InitState, InitStats, SyncError};
pub use memmap::{Cost, Folio, Geometry, Layout, Resident};
pub use namespace::{MemmapLocation, Namespace, NamespaceError, NamespaceMode};
pub use pgmap::{DeviceSpace, MemoryType, Pgmap, PgmapConfig, PgmapError, PgmapOps, PgmapRef};
