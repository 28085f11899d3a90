//! Errors from registering pgmaps and looking pfns up.

use crate::addr::{Order, PfnRange};
use crate::init::SyncError;
use crate::memmap::{LookupError, MemmapError};

use super::memory_type::MemoryType;

/// Errors from registering pgmaps and looking pfns up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgmapError {
    /// A config with no ranges.
    #[error("a pgmap needs at least one range")]
    NoRanges,
    /// Two ranges of one config, or a range and a registered pgmap, overlap.
    #[error("range {range:?} overlaps {other:?}, which is already in use")]
    Overlap {
        /// The new range.
        range: PfnRange,
        /// What it collides with.
        other: PfnRange,
    },
    /// An altmap was asked for on a pgmap of several ranges (`pagemap_range` refuses it: the
    /// on-device memmap describes range 0 only).
    #[error(
        "an on-device memmap (altmap) needs a pgmap of one range, not {ranges}: register \
         the ranges as separate pgmaps, or keep the memmap in host memory"
    )]
    AltmapWithRanges {
        /// Ranges in the config.
        ranges: usize,
    },
    /// An fsdax pgmap with compound folios: fsdax folios form at fault time from order-0
    /// pages, so its `vmemmap_shift` must be 0.
    #[error("an fsdax pgmap has order-0 pages (folios form when mapped), not order {shift}")]
    FsdaxCompound {
        /// The shift asked for.
        shift: Order,
    },
    /// A type's required callbacks or owner are missing (`memremap_pages` validation).
    #[error("{memory_type:?} memory needs {missing}")]
    MissingOps {
        /// The type.
        memory_type: MemoryType,
        /// What is missing.
        missing: &'static str,
    },
    /// A range could not get a memmap.
    #[error("range {index} could not get a memmap")]
    Memmap {
        /// Which range.
        index: usize,
        /// Why.
        #[source]
        source: MemmapError,
    },
    /// The descriptors could not be synced: torn down, or not this pgmap's pfns.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The pfn has no usable descriptor.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The device space has no aligned gap that large.
    #[error("no free {bytes}-byte range aligned to {align} bytes in the device space")]
    SpaceExhausted {
        /// Bytes asked for.
        bytes: u64,
        /// Alignment asked for.
        align: u64,
    },
    /// A size or alignment the device space cannot hand out.
    #[error("cannot reserve {bytes} bytes at alignment {align}: {why}")]
    BadRequest {
        /// Bytes asked for.
        bytes: u64,
        /// Alignment asked for.
        align: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A pgmap asked for an id another pgmap of the space has.
    #[error("pgmap id {id} is taken by another pgmap of the device space")]
    IdTaken {
        /// The id asked for.
        id: u64,
    },
    /// The id space of the device space is used up.
    #[error("the device space has no pgmap ids left")]
    IdsExhausted,
    /// Teardown timed out with references still held; the pgmap is left as it was.
    #[error("the pgmap is busy: {refs} references (handles, pins, mappings) still held")]
    Busy {
        /// References held when the wait gave up.
        refs: u64,
    },
    /// The pgmap is not registered in this device space.
    #[error("the pgmap is not registered here (already torn down?)")]
    NotRegistered,
}
