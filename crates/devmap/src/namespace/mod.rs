//! Namespaces: the geometry the kernel gives a persistent-memory namespace when it claims it for
//! device-dax or fsdax (`nd_pfn_init` in `drivers/nvdimm/pfn_devs.c`), and the pgmap config that
//! describes it.
//!
//! A namespace starts with an 8 KiB info block, and its data starts at the offset the kernel
//! writes into that block (`dataoff`). The offset depends on the size, the align and where the
//! memmap lives, never on the mode or on which memmap layout devmap builds afterwards:
//!
//! * [`MemmapLocation::Dev`] (ndctl `--map dev`, the kernel's `PFN_MODE_PMEM`):
//!   `ALIGN(SZ_8K + 64 * npfns, align)` with `npfns = PHYS_PFN(size - SZ_8K)`. The room for a
//!   64-byte `struct page` per pfn (`MAX_STRUCT_PAGE_SIZE`) between the info block and the data
//!   is the altmap. The pgmap's altmap reserves the info block's pfns and sets the rest of the
//!   offset aside for the memmap (`vmem_altmap.free = PHYS_PFN(offset - SZ_8K)`), whatever part
//!   of it the layout actually uses.
//! * [`MemmapLocation::Mem`] (`--map mem`, `PFN_MODE_RAM`): `ALIGN(SZ_8K, align)`, the info
//!   block alone. The memmap lives in host memory and the pgmap covers the whole namespace, info
//!   block included, as the kernel's does; the data starts at the offset.
//!
//! Both modes (device-dax and fsdax) follow the same rule: an fsdax pgmap has no
//! `vmemmap_shift`, but its data still starts on the namespace's align.
//!
//! Where this differs from the kernel, and why:
//!
//! * The kernel computes `ALIGN(start + x, align) - start`. Ranges handed out by
//!   [`DeviceSpace::reserve_range`](crate::DeviceSpace::reserve_range) start on the namespace's
//!   align, so the offset here is `ALIGN(x, align)`, and [`Namespace::pgmap_config`] refuses a
//!   range that does not start aligned.
//! * The kernel aligns the offset to `max(align, memremap_compat_align())` (2 MiB on x86-64) and
//!   truncates the namespace's end to that (`end_trunc`). Here the align is the namespace's own,
//!   and the size must be a multiple of it: a 4 KiB-aligned namespace's data starts on a 4 KiB
//!   boundary.
//!
//! This is the top layer of the library: it uses [`crate::pgmap`], [`crate::memmap`] and
//! [`crate::addr`], and nothing below it imports it.

mod badblocks;
mod enable;
#[cfg(all(test, not(loom)))]
mod fuzz_tests;
mod infoblock;
mod label;
mod lock;
mod ondisk;
mod region;
mod signals;

pub use self::badblocks::{
    BADBLOCKS_LEN, BADBLOCKS_OFFSET, BADBLOCKS_SIGNATURE, Badblocks, BadblocksError, MAX_BAD_RANGES,
};
pub use self::enable::{EnablePath, EnabledNamespace};
pub use self::infoblock::{
    INFO_BLOCK_LEN, INFO_BLOCK_OFFSET, INFO_SIGNATURE, INFO_VERSION, InfoBlock, InfoBlockError,
    InfoFlags, MemmapRecord, NAME_LEN,
};
pub use self::label::LABEL_AREA_BYTES;
pub use self::label::{
    LABEL_INDEX_LEN, LABEL_SIGNATURE, LABEL_VERSION, Label, LabelError, LabelIndex, MAX_NAMESPACES,
};
pub use self::ondisk::fletcher64;
pub use self::region::{Access, MIN_REGION_BYTES, Region, RegionError};
pub use self::signals::{StopSignal, StopSignals};

use crate::addr::{AddrError, Order, PAGE_SIZE, PfnRange};
use crate::memmap::{AltmapGeometry, Layout};
use crate::pgmap::{MemoryType, PgmapConfig};

/// Bytes of the info block at the start of every namespace (`SZ_8K`, `nd_info_block_reserve`).
pub const INFO_BLOCK_BYTES: u64 = 8 << 10;
/// Pfns of the info block: the altmap's `reserve`.
pub const INFO_BLOCK_PFNS: u64 = INFO_BLOCK_BYTES / PAGE_SIZE;
/// Bytes of memmap the kernel sets aside per pfn for `--map dev` (`MAX_STRUCT_PAGE_SIZE`): the
/// size of a production `struct page`, whatever the descriptor store.
pub const MAX_STRUCT_PAGE_SIZE: u64 = 64;

/// What the namespace serves (ndctl's `--mode`); the default is `Devdax`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NamespaceMode {
    /// Device-dax: folios of `align` bytes (`vmemmap_shift` from the align), idle refcount 1.
    #[default]
    Devdax,
    /// Filesystem DAX: order-0 memmap (folios form when mapped), idle refcount 0.
    Fsdax,
}

impl NamespaceMode {
    /// Every mode.
    pub const ALL: [NamespaceMode; 2] = [NamespaceMode::Devdax, NamespaceMode::Fsdax];

    /// The lower-case name ndctl uses, on the command line and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            NamespaceMode::Devdax => "devdax",
            NamespaceMode::Fsdax => "fsdax",
        }
    }

    /// The pgmap memory type of the mode.
    pub const fn memory_type(self) -> MemoryType {
        match self {
            NamespaceMode::Devdax => MemoryType::Generic,
            NamespaceMode::Fsdax => MemoryType::FsDax,
        }
    }
}

/// Where the memmap lives (ndctl's `--map`); the default is `Dev`, as ndctl's for a devdax or
/// fsdax namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemmapLocation {
    /// In host memory (`PFN_MODE_RAM`).
    Mem,
    /// On the device, between the info block and the data (`PFN_MODE_PMEM`, an altmap).
    #[default]
    Dev,
}

impl MemmapLocation {
    /// Every location.
    pub const ALL: [MemmapLocation; 2] = [MemmapLocation::Mem, MemmapLocation::Dev];

    /// The lower-case name ndctl uses, on the command line and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            MemmapLocation::Mem => "mem",
            MemmapLocation::Dev => "dev",
        }
    }
}

crate::units::named_values!(NamespaceMode, "mode", ["devdax", "fsdax"]);
crate::units::named_values!(MemmapLocation, "map", ["mem", "dev"]);

/// Errors from laying out a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// An align that is not a power of two of at least 4 KiB and at most the largest order.
    #[error("align {align} bytes is not a power of two from 4 KiB to the largest folio")]
    BadAlign {
        /// The align asked for.
        align: u64,
        /// Why it is not an order.
        #[source]
        source: AddrError,
    },
    /// A power-of-two align the kernel does not offer for a namespace.
    #[error(
        "align {} is not supported: use 4 KiB, 2 MiB or 1 GiB (the kernel's \
         nd_pfn_supported_alignments on x86-64)",
        crate::units::Bytes(*align)
    )]
    UnsupportedAlign {
        /// The align asked for.
        align: u64,
    },
    /// A size (or data size) that is not a whole number of aligns.
    #[error("{size} bytes is not a multiple of the align, {align} bytes")]
    SizeNotAligned {
        /// The size asked for.
        size: u64,
        /// The align.
        align: u64,
    },
    /// The info block (and for `--map dev` the memmap's room) takes the whole namespace: the
    /// kernel's "unable to satisfy requested alignment".
    #[error(
        "the data of a {size}-byte namespace at align {align} bytes (map {}) would start at \
         byte {data_offset}, leaving none for data",
        map.name()
    )]
    NoRoomForData {
        /// Namespace bytes.
        size: u64,
        /// The align.
        align: u64,
        /// Where the memmap lives.
        map: MemmapLocation,
        /// Where the data would start.
        data_offset: u64,
        /// The smallest namespace of this align and map with one align of data, if it fits in
        /// 64 bits.
        smallest: Option<u64>,
    },
    /// A namespace holding this many bytes of data would end beyond 64 bits.
    #[error("{bytes} bytes of data at align {align} bytes need a namespace beyond 64 bits")]
    TooLarge {
        /// The data bytes asked for.
        bytes: u64,
        /// The align.
        align: u64,
    },
    /// A pfn range that cannot hold this namespace: another length, or a start off the align.
    #[error(
        "range {range:?} cannot hold a {size}-byte namespace: it must be exactly that long and \
         start on the align, {align} bytes"
    )]
    RangeMismatch {
        /// The range given.
        range: PfnRange,
        /// Namespace bytes.
        size: u64,
        /// The align.
        align: u64,
    },
}

/// A namespace's geometry: size, align, mode, memmap location, and where its data starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    size: u64,
    align: u64,
    order: Order,
    mode: NamespaceMode,
    map: MemmapLocation,
    data_offset: u64,
}

/// The kernel's data offset (`nd_pfn_init`) for a namespace starting on its align, or `None`
/// if it does not fit in 64 bits.
fn data_offset(size: u64, align: u64, map: MemmapLocation) -> Option<u64> {
    let memmap = match map {
        MemmapLocation::Mem => 0,
        MemmapLocation::Dev => {
            // PHYS_PFN(size - SZ_8K): a namespace smaller than its info block has no pfns
            // (and is refused, the offset being at least the info block).
            let npfns = size.saturating_sub(INFO_BLOCK_BYTES) / PAGE_SIZE;
            npfns.checked_mul(MAX_STRUCT_PAGE_SIZE)?
        }
    };
    INFO_BLOCK_BYTES
        .checked_add(memmap)?
        .checked_next_multiple_of(align)
}

/// The order of `align`: a power of two from one page to [`Order::MAX`].
fn align_order(align: u64) -> Result<Order, NamespaceError> {
    let order =
        Order::from_bytes(align).map_err(|source| NamespaceError::BadAlign { align, source })?;
    if !Namespace::SUPPORTED_ALIGNS.contains(&align) {
        return Err(NamespaceError::UnsupportedAlign { align });
    }
    Ok(order)
}

impl Namespace {
    /// The aligns a namespace may have (`nd_pfn_supported_alignments` on x86-64): 4 KiB,
    /// 2 MiB and 1 GiB.
    pub const SUPPORTED_ALIGNS: [u64; 3] = [PAGE_SIZE, 2 << 20, 1 << 30];
    /// The align a namespace gets unless told otherwise (ndctl's default for devdax).
    pub const DEFAULT_ALIGN: u64 = 2 << 20;

    /// Lays out a namespace of `size` bytes (a multiple of `align`) the way `nd_pfn_init` does,
    /// refusing one whose info block and memmap room leave nothing for data.
    pub fn new(
        size: u64,
        align: u64,
        mode: NamespaceMode,
        map: MemmapLocation,
    ) -> Result<Self, NamespaceError> {
        let order = align_order(align)?;
        if !size.is_multiple_of(align) {
            return Err(NamespaceError::SizeNotAligned { size, align });
        }
        let data_offset =
            data_offset(size, align, map).ok_or(NamespaceError::TooLarge { bytes: size, align })?;
        if data_offset >= size {
            return Err(NamespaceError::NoRoomForData {
                size,
                align,
                map,
                data_offset,
                smallest: Self::for_data(align, align, mode, map)
                    .ok()
                    .map(|ns| ns.size),
            });
        }
        Ok(Self {
            size,
            align,
            order,
            mode,
            map,
            data_offset,
        })
    }

    /// The smallest namespace whose data holds `data_bytes` (a non-zero multiple of `align`):
    /// what to create for a given usable size.
    pub fn for_data(
        data_bytes: u64,
        align: u64,
        mode: NamespaceMode,
        map: MemmapLocation,
    ) -> Result<Self, NamespaceError> {
        align_order(align)?;
        if !data_bytes.is_multiple_of(align) {
            return Err(NamespaceError::SizeNotAligned {
                size: data_bytes,
                align,
            });
        }
        let too_large = NamespaceError::TooLarge {
            bytes: data_bytes,
            align,
        };
        // The least size with `size == data_bytes + data_offset(size)`. The offset never shrinks
        // as the size grows, so starting from `data_bytes` every step grows the size and stays
        // below any size that holds the data: the first fixed point is the smallest. A step of
        // one align moves the unrounded offset by align / 64, which crosses an align boundary at
        // most once in a row, so it takes a handful of steps.
        let mut size = data_bytes;
        loop {
            let next = data_offset(size, align, map)
                .and_then(|offset| data_bytes.checked_add(offset))
                .ok_or_else(|| too_large.clone())?;
            if next == size {
                return Self::new(size, align, mode, map);
            }
            size = next;
        }
    }

    /// Namespace bytes, info block included.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The align: folio size for device-dax, and the alignment of the data for both modes.
    pub fn align(&self) -> u64 {
        self.align
    }

    /// The mode.
    pub fn mode(&self) -> NamespaceMode {
        self.mode
    }

    /// Where the memmap lives.
    pub fn map(&self) -> MemmapLocation {
        self.map
    }

    /// Bytes from the start of the namespace to its first data byte (the info block's
    /// `dataoff`): a multiple of the align, below the size.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Bytes of data.
    pub fn data_bytes(&self) -> u64 {
        self.size - self.data_offset
    }

    /// Pfns in the namespace.
    pub fn pages(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    /// The compound order of the pgmap: the align's for device-dax, 0 for fsdax, whose folios
    /// are formed when mapped.
    pub fn vmemmap_shift(&self) -> Order {
        match self.mode {
            NamespaceMode::Devdax => self.order,
            NamespaceMode::Fsdax => Order::BASE,
        }
    }

    /// The altmap of a `--map dev` namespace: the info block's pfns reserved, the rest of the
    /// data offset set aside for the memmap (`__nvdimm_setup_pfn`).
    pub fn altmap(&self) -> Option<AltmapGeometry> {
        (self.map == MemmapLocation::Dev).then(|| AltmapGeometry {
            reserve: INFO_BLOCK_PFNS,
            free: self.data_offset / PAGE_SIZE - INFO_BLOCK_PFNS,
        })
    }

    fn check_range(&self, range: PfnRange) -> Result<(), NamespaceError> {
        if range.len() == self.pages() && range.start().is_aligned(self.order) {
            Ok(())
        } else {
            Err(NamespaceError::RangeMismatch {
                range,
                size: self.size,
                align: self.align,
            })
        }
    }

    /// The pgmap of this namespace at `range` with the memmap in `layout`: one range, the
    /// mode's memory type and `vmemmap_shift`, and for `--map dev` the altmap sized by the data
    /// offset. Init is left at [`PgmapConfig::devdax`]'s default for the caller to choose.
    /// [`PgmapConfig::estimate_cost`] prices it; building it fails if the layout's memmap does
    /// not fit the altmap (`MemmapError::AltmapTooSmall`), as the kernel's vmemmap population
    /// does.
    pub fn pgmap_config(
        &self,
        range: PfnRange,
        layout: Layout,
    ) -> Result<PgmapConfig, NamespaceError> {
        self.check_range(range)?;
        let mut cfg = PgmapConfig::devdax(range, self.vmemmap_shift());
        cfg.memory_type = self.mode.memory_type();
        cfg.layout = layout;
        if let Some(a) = self.altmap() {
            cfg.altmap_reserve = Some(a.reserve);
            cfg.altmap_free = Some(a.free);
        }
        Ok(cfg)
    }

    /// The data pfns of this namespace at `range`: from the data offset to the end. For
    /// `--map dev` these are the pgmap's [`data_ranges`](crate::Pgmap::data_ranges); for
    /// `--map mem` the pgmap also covers the info block, which holds no data.
    pub fn data_range(&self, range: PfnRange) -> Result<PfnRange, NamespaceError> {
        self.check_range(range)?;
        let start = range.start().add(self.data_offset / PAGE_SIZE);
        Ok(PfnRange::new_unchecked(start, range.end()))
    }
}

#[cfg(test)]
mod tests;
