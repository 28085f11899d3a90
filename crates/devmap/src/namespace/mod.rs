//! Namespaces: the geometry the kernel gives a persistent-memory namespace when it claims it for
//! device-dax or fsdax (`nd_pfn_init` in `drivers/nvdimm/pfn_devs.c`), and the pgmap config that
//! describes it.
//!
//! A namespace starts with an 8 KiB info block, and its data starts at the offset the kernel
//! writes into that block (`dataoff`). `nd_pfn_init` works at the *data align*,
//! `max(align, memremap_compat_align())`, with `memremap_compat_align()` = 2 MiB on x86-64
//! ([`COMPAT_ALIGN`]): a 4 KiB-aligned namespace is laid out at 2 MiB like a 2 MiB one. The
//! namespace must start on 2 MiB (the kernel refuses a misaligned start with `-EINVAL`); devmap
//! starts each namespace on its [`start_align`](Namespace::start_align), the data align, in the
//! region file and in the device space, so that the kernel's `ALIGN(start + x, a) - start` is
//! `ALIGN(x, a)`. Then:
//!
//! * `end_trunc`: the bytes past the last whole data align, which hold no data
//!   (`start + size - ALIGN_DOWN(start + size, a)`). Sizes are multiples of the align, so only
//!   a 4 KiB-aligned namespace whose size is not a multiple of 2 MiB has any.
//! * [`MemmapLocation::Dev`] (ndctl `--map dev`, the kernel's `PFN_MODE_PMEM`): the data offset
//!   is `ALIGN(SZ_8K + 64 * npfns, a)` with `npfns = PHYS_PFN(size - SZ_8K)` of the raw size.
//!   The room for a 64-byte `struct page` per pfn (`MAX_STRUCT_PAGE_SIZE`) between the info
//!   block and the data is the altmap. The pgmap's altmap reserves the info block's pfns and
//!   sets the rest of the offset aside for the memmap (`vmem_altmap.free =
//!   PHYS_PFN(offset - SZ_8K)`), whatever part of it the layout actually uses.
//! * [`MemmapLocation::Mem`] (`--map mem`, `PFN_MODE_RAM`): the data offset is `ALIGN(SZ_8K, a)`,
//!   the info block alone padded to the data align. The memmap lives in host memory and the
//!   pgmap covers the namespace but its truncated end, info block included, as the kernel's
//!   does; the data starts at the offset.
//! * A namespace whose data offset is at or past `size - end_trunc` is refused, as the kernel's
//!   "unable to satisfy requested alignment" (`-ENXIO`); the data holds
//!   `npfns = PHYS_PFN(size - offset - end_trunc)` pfns.
//!
//! Both modes (device-dax and fsdax) follow the same rule: an fsdax pgmap has no
//! `vmemmap_shift`, but its data still starts on the data align.
//!
//! Namespaces that a devmap from before this rule created were laid out at their own align
//! ([`GeometryRule::OwnAlign`]: a 4 KiB-aligned namespace's data started on the first 4 KiB
//! after its info block and memmap room, nothing truncated). Their labels say so, and they keep that layout: an existing
//! namespace is never reinterpreted; only new ones get the kernel's.
//!
//! Where this still differs from the kernel: a namespace's size must be a multiple of its align
//! (the kernel's own sizes are multiples of the region's align, 16 MiB by default), so a 2 MiB
//! or 1 GiB namespace never has an `end_trunc`.
//!
//! This is the top layer of the library: it uses [`crate::pgmap`], [`crate::memmap`] and
//! [`crate::addr`], and nothing below it imports it.

mod badblocks;
mod carve;
mod enable;
#[cfg(all(test, not(loom)))]
mod fuzz_tests;
mod infoblock;
mod label;
mod lock;
mod media;
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
    Owner,
};
pub use self::media::ClearedErrors;
pub use self::ondisk::fletcher64;
pub use self::region::{Access, MIN_REGION_BYTES, Region, RegionError};
pub use self::signals::{StopSignal, StopSignals};

use crate::addr::{AddrError, Order, PAGE_SIZE, Pfn, PfnRange};
use crate::memmap::{AltmapGeometry, Layout};
use crate::pgmap::{MemoryType, PgmapConfig};

/// Bytes of the info block at the start of every namespace (`SZ_8K`, `nd_info_block_reserve`).
pub const INFO_BLOCK_BYTES: u64 = 8 << 10;
/// Pfns of the info block: the altmap's `reserve`.
pub const INFO_BLOCK_PFNS: u64 = INFO_BLOCK_BYTES / PAGE_SIZE;
/// Bytes of memmap the kernel sets aside per pfn for `--map dev` (`MAX_STRUCT_PAGE_SIZE`): the
/// size of a production `struct page`, whatever the descriptor store.
pub const MAX_STRUCT_PAGE_SIZE: u64 = 64;
/// `memremap_compat_align()` on x86-64 (`SUBSECTION_SIZE`): the least alignment of a
/// namespace's start and of its data offset, whatever its own align (`nd_pfn_init`).
pub const COMPAT_ALIGN: u64 = 2 << 20;

/// The rule that placed a namespace's data. Only a 4 KiB-aligned namespace can tell them
/// apart: at 2 MiB and 1 GiB both give the same layout, which counts as [`GeometryRule::Kernel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeometryRule {
    /// `nd_pfn_init` with `memremap_compat_align()`: the start and the data offset on the data
    /// align, `max(align, 2 MiB)`, and the end truncated to it. Every namespace created now.
    Kernel,
    /// The rule of devmap's 1.0 labels: the data offset on the namespace's own align, nothing
    /// truncated, the start on the align. Read from the labels of 4 KiB-aligned namespaces an
    /// older devmap created, so that they keep the layout their info block records; never
    /// given to a new namespace.
    OwnAlign,
}

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
    /// Data asked of [`Namespace::for_data`] that no namespace holds exactly: the kernel's
    /// data is a whole number of data aligns.
    #[error(
        "no namespace at align {} holds exactly {bytes} bytes of data: nd_pfn_init gives a \
         namespace its data in whole {data_align}-byte units (the larger of its align and \
         memremap_compat_align()), so ask for {}",
        crate::units::Bytes(*align),
        nearest_multiples(*bytes, *data_align)
    )]
    DataNotAligned {
        /// The data bytes asked for.
        bytes: u64,
        /// The align.
        align: u64,
        /// The data align: `max(align, COMPAT_ALIGN)`.
        data_align: u64,
    },
    /// The info block (and for `--map dev` the memmap's room) takes the whole namespace but its
    /// truncated end: the kernel's "unable to satisfy requested alignment" (`-ENXIO` from its
    /// probe; a refused argument, `EINVAL`, here).
    #[error(
        "the data of a {size}-byte namespace at align {align} bytes (map {}) would start at \
         byte {data_offset}, at or past byte {}, where its data must end (its size rounded \
         down to {data_align} bytes), leaving none for data (nd_pfn_init: unable to satisfy \
         requested alignment){}",
        map.name(),
        size - end_trunc,
        smallest.map_or_else(String::new, |s| format!(": the smallest such namespace is {s} bytes"))
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
        /// The align the start, the data offset and the end are rounded to.
        data_align: u64,
        /// The bytes past the last whole data align (`end_trunc`), which hold no data.
        end_trunc: u64,
        /// The smallest namespace of this align and map with one data align of data, if it
        /// fits in 64 bits.
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
    /// A pfn range that cannot hold this namespace: another length, or a start off its start
    /// align (for the kernel, a start off `memremap_compat_align()` is `-EINVAL`).
    #[error(
        "range {range:?} cannot hold a {size}-byte namespace: it must be exactly that long and \
         start on a multiple of {start_align} bytes (the namespace's start align: its align, \
         and at least memremap_compat_align(), 2 MiB, unless an older devmap laid it out)"
    )]
    RangeMismatch {
        /// The range given.
        range: PfnRange,
        /// Namespace bytes.
        size: u64,
        /// The namespace's [`start_align`](Namespace::start_align).
        start_align: u64,
    },
}

/// A namespace's geometry: size, align, mode, memmap location, where its data starts and how
/// much of its end is truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    size: u64,
    align: u64,
    order: Order,
    mode: NamespaceMode,
    map: MemmapLocation,
    data_offset: u64,
    end_trunc: u64,
    rule: GeometryRule,
}

/// The multiples of `unit` either side of `bytes`, as a suggestion: "N or M bytes", or "M
/// bytes" when the one below is 0.
fn nearest_multiples(bytes: u64, unit: u64) -> String {
    let down = bytes / unit * unit;
    let up = down.saturating_add(unit);
    if down == 0 {
        format!("{up} bytes")
    } else {
        format!("{down} or {up} bytes")
    }
}

/// The data align of a namespace at `align`: `max(align, memremap_compat_align())`, which its
/// start, its data offset and its end are rounded to (`nd_pfn_init`).
pub const fn data_align(align: u64) -> u64 {
    if align > COMPAT_ALIGN {
        align
    } else {
        COMPAT_ALIGN
    }
}

/// `nd_pfn_init`'s data offset and `end_trunc` for a `size`-byte namespace that starts on
/// `data_align` (so `ALIGN(start + x, a) - start` is `ALIGN(x, a)` and `end_trunc` is
/// `size % a`), or `None` if the offset does not fit in 64 bits. Not checked: whether any data
/// is left.
fn nd_pfn_init(size: u64, data_align: u64, map: MemmapLocation) -> Option<(u64, u64)> {
    let end_trunc = size % data_align;
    let memmap = match map {
        MemmapLocation::Mem => 0,
        MemmapLocation::Dev => {
            // PHYS_PFN(size - SZ_8K) of the raw size, before the end is truncated: a namespace
            // smaller than its info block has no pfns (and is refused, the offset being at
            // least the info block).
            let npfns = size.saturating_sub(INFO_BLOCK_BYTES) / PAGE_SIZE;
            npfns.checked_mul(MAX_STRUCT_PAGE_SIZE)?
        }
    };
    let offset = INFO_BLOCK_BYTES
        .checked_add(memmap)?
        .checked_next_multiple_of(data_align)?;
    Some((offset, end_trunc))
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

impl GeometryRule {
    /// What the start, the data offset and the end of a namespace at `align` are rounded to.
    pub const fn data_align(self, align: u64) -> u64 {
        match self {
            GeometryRule::Kernel => data_align(align),
            GeometryRule::OwnAlign => align,
        }
    }
}

impl Namespace {
    /// The aligns a namespace may have (`nd_pfn_supported_alignments` on x86-64): 4 KiB,
    /// 2 MiB and 1 GiB.
    pub const SUPPORTED_ALIGNS: [u64; 3] = [PAGE_SIZE, 2 << 20, 1 << 30];
    /// The align a namespace gets unless told otherwise (ndctl's default for devdax).
    pub const DEFAULT_ALIGN: u64 = 2 << 20;

    /// Lays out a namespace of `size` bytes (a multiple of `align`) the way `nd_pfn_init` does
    /// ([`GeometryRule::Kernel`]), refusing one whose info block and memmap room leave nothing
    /// for data.
    pub fn new(
        size: u64,
        align: u64,
        mode: NamespaceMode,
        map: MemmapLocation,
    ) -> Result<Self, NamespaceError> {
        Self::with_rule(size, align, mode, map, GeometryRule::Kernel)
    }

    /// Lays out a namespace as the 1.0 labels of an older devmap describe it
    /// ([`GeometryRule::OwnAlign`]), so that it keeps the layout its info block records. At
    /// 2 MiB and 1 GiB that is the kernel's layout, and the result says so.
    pub(crate) fn own_align(
        size: u64,
        align: u64,
        mode: NamespaceMode,
        map: MemmapLocation,
    ) -> Result<Self, NamespaceError> {
        let rule = if align >= COMPAT_ALIGN {
            GeometryRule::Kernel
        } else {
            GeometryRule::OwnAlign
        };
        Self::with_rule(size, align, mode, map, rule)
    }

    fn with_rule(
        size: u64,
        align: u64,
        mode: NamespaceMode,
        map: MemmapLocation,
        rule: GeometryRule,
    ) -> Result<Self, NamespaceError> {
        let order = align_order(align)?;
        if !size.is_multiple_of(align) {
            return Err(NamespaceError::SizeNotAligned { size, align });
        }
        let data_align = rule.data_align(align);
        let (data_offset, end_trunc) = nd_pfn_init(size, data_align, map)
            .ok_or(NamespaceError::TooLarge { bytes: size, align })?;
        if data_offset >= size - end_trunc {
            return Err(NamespaceError::NoRoomForData {
                size,
                align,
                map,
                data_offset,
                data_align,
                end_trunc,
                smallest: Self::smallest_size(data_align, align, map, rule).ok(),
            });
        }
        Ok(Self {
            size,
            align,
            order,
            mode,
            map,
            data_offset,
            end_trunc,
            rule,
        })
    }

    /// The smallest namespace whose data holds `data_bytes` (a non-zero multiple of the data
    /// align, `max(align, 2 MiB)`): what to create for a given usable size.
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
        let data_align = data_align(align);
        if !data_bytes.is_multiple_of(data_align) {
            return Err(NamespaceError::DataNotAligned {
                bytes: data_bytes,
                align,
                data_align,
            });
        }
        let size = Self::smallest_size(data_bytes, align, map, GeometryRule::Kernel)?;
        Self::new(size, align, mode, map)
    }

    /// The least size whose data is `data_bytes` (a multiple of the rule's data align) under
    /// `rule`.
    fn smallest_size(
        data_bytes: u64,
        align: u64,
        map: MemmapLocation,
        rule: GeometryRule,
    ) -> Result<u64, NamespaceError> {
        let too_large = NamespaceError::TooLarge {
            bytes: data_bytes,
            align,
        };
        let data_align = rule.data_align(align);
        // The least size with `size == data_bytes + offset(size)`, a multiple of the data align
        // (a larger size only adds truncated bytes and memmap room). The offset never shrinks
        // as the size grows, so starting from `data_bytes` every step grows the size and stays
        // below any size that holds the data: the first fixed point is the smallest. A step of
        // one data align moves the unrounded offset by 1/64 of it, which crosses a boundary at
        // most once in a row, so it takes a handful of steps.
        let mut size = data_bytes;
        loop {
            let next = nd_pfn_init(size, data_align, map)
                .and_then(|(offset, _)| data_bytes.checked_add(offset))
                .ok_or_else(|| too_large.clone())?;
            if next == size {
                return Ok(size);
            }
            size = next;
        }
    }

    /// Namespace bytes (the raw size), info block and truncated end included.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The align: folio size for device-dax.
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

    /// The rule that placed the data: [`GeometryRule::Kernel`] for every namespace created
    /// now.
    pub fn rule(&self) -> GeometryRule {
        self.rule
    }

    /// What the namespace's start, data offset and end are rounded to: `max(align, 2 MiB)`,
    /// or the align for a namespace an older devmap laid out ([`GeometryRule::OwnAlign`]). A
    /// region places the namespace on it, and a pfn range for it starts on it.
    pub fn start_align(&self) -> u64 {
        self.rule.data_align(self.align)
    }

    /// Bytes from the start of the namespace to its first data byte (the info block's
    /// `dataoff`): a multiple of the start align, below the size.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Bytes at the end of the namespace past its last whole start align, which hold no data
    /// (`end_trunc`): non-zero only for a 4 KiB-aligned namespace whose size is not a multiple
    /// of 2 MiB.
    pub fn end_trunc(&self) -> u64 {
        self.end_trunc
    }

    /// Bytes of data: what the kernel's device offers (`size - dataoff - end_trunc`).
    pub fn data_bytes(&self) -> u64 {
        self.size - self.data_offset - self.end_trunc
    }

    /// Pfns in the namespace, its truncated end included: the length of the range it takes.
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

    /// The part of `range` (the whole namespace) the pgmap covers: all but the truncated end
    /// (`__nvdimm_setup_pfn`: `res.end - end_trunc`).
    fn pgmap_range(&self, range: PfnRange) -> Result<PfnRange, NamespaceError> {
        let start_align = self.start_align();
        if range.len() != self.pages()
            || !(range.start().raw() * PAGE_SIZE).is_multiple_of(start_align)
        {
            return Err(NamespaceError::RangeMismatch {
                range,
                size: self.size,
                start_align,
            });
        }
        let end = Pfn::new(range.end().raw() - self.end_trunc / PAGE_SIZE);
        Ok(PfnRange::new_unchecked(range.start(), end))
    }

    /// The pgmap of this namespace at `range` (all its pfns, starting on its
    /// [`start_align`](Self::start_align)) with the memmap in `layout`: one range, the
    /// namespace without its truncated end; the mode's memory type and `vmemmap_shift`; and
    /// for `--map dev` the altmap sized by the data offset. Init is left at
    /// [`PgmapConfig::devdax`]'s default for the caller to choose.
    /// [`PgmapConfig::estimate_cost`] prices it; building it fails if the layout's memmap does
    /// not fit the altmap (`MemmapError::AltmapTooSmall`), as the kernel's vmemmap population
    /// does.
    pub fn pgmap_config(
        &self,
        range: PfnRange,
        layout: Layout,
    ) -> Result<PgmapConfig, NamespaceError> {
        let mut cfg = PgmapConfig::devdax(self.pgmap_range(range)?, self.vmemmap_shift());
        cfg.memory_type = self.mode.memory_type();
        cfg.layout = layout;
        if let Some(a) = self.altmap() {
            cfg.altmap_reserve = Some(a.reserve);
            cfg.altmap_free = Some(a.free);
        }
        Ok(cfg)
    }

    /// The data pfns of this namespace at `range`: from the data offset to the truncated end.
    /// For `--map dev` these are the pgmap's [`data_ranges`](crate::Pgmap::data_ranges); for
    /// `--map mem` the pgmap also covers the info block, which holds no data.
    pub fn data_range(&self, range: PfnRange) -> Result<PfnRange, NamespaceError> {
        let covered = self.pgmap_range(range)?;
        let start = covered.start().add(self.data_offset / PAGE_SIZE);
        Ok(PfnRange::new_unchecked(start, covered.end()))
    }
}

#[cfg(test)]
mod tests;
