//! What a pin asks for and how it fails: the `FOLL_*` flags ([`GupFlags`]), the errors
//! ([`GupError`]) and whether a grab counts a pin or a plain reference. Below the rest of
//! `gup`, which all of it uses.

use crate::addr::Pfn;
use crate::pgmap::MemoryType;
use crate::units::Bytes;

/// `FOLL_*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GupFlags(u32);

impl GupFlags {
    /// No flags.
    pub const NONE: GupFlags = GupFlags(0);
    /// The caller will write to the pages (`FOLL_WRITE`).
    pub const WRITE: GupFlags = GupFlags(1 << 0);
    /// The pin may last indefinitely (`FOLL_LONGTERM`): refused for fsdax and coherent memory.
    pub const LONGTERM: GupFlags = GupFlags(1 << 1);
    /// The caller can handle PCI peer-to-peer memory (`FOLL_PCI_P2PDMA`).
    pub const PCI_P2PDMA: GupFlags = GupFlags(1 << 2);
    /// Do not fault anything in (`FOLL_NOFAULT`): a pin by user address fails on a leaf that
    /// is not faulted in. Pins by pfn ignore it.
    pub const NOFAULT: GupFlags = GupFlags(1 << 3);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: GupFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for GupFlags {
    type Output = GupFlags;

    fn bitor(self, rhs: GupFlags) -> GupFlags {
        GupFlags(self.0 | rhs.0)
    }
}

/// Why a pin failed. Nothing is left pinned after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GupError {
    /// An empty range.
    #[error("nothing to pin: the range is empty")]
    Empty,
    /// No live pgmap covers the pfn (or it holds the on-device memmap).
    #[error("pfn {pfn} is not device memory of a live pgmap")]
    NoPgmap {
        /// The first pfn not covered.
        pfn: Pfn,
    },
    /// The pgmap holding the pfn is being torn down. `may_revive` says whether retrying can
    /// help: a teardown with a timeout that has not drained may give up and leave the pgmap
    /// live; an untimed or drained teardown is final.
    #[error("the pgmap of pfn {pfn} is being torn down{}", if *may_revive {
        " (its teardown may still time out: a retry can succeed)"
    } else {
        " for good"
    })]
    TornDown {
        /// The first pfn of that pgmap asked for.
        pfn: Pfn,
        /// Whether the teardown can still give up.
        may_revive: bool,
    },
    /// The entry buffer for the range cannot be allocated.
    #[error(
        "cannot allocate {entries} result entries ({bytes} bytes): pin a smaller range, or \
         pin by folio for one entry per folio"
    )]
    TooManyEntries {
        /// Entries needed.
        entries: u64,
        /// Bytes they take.
        bytes: u64,
    },
    /// A folio in the range holds a poisoned page: the whole folio cannot be pinned.
    #[error("pfn {pfn} is poisoned, so folio {folio} cannot be pinned")]
    Poisoned {
        /// The folio's lowest poisoned page, which may lie outside the range asked for (the
        /// head if a poisoning racing the pin has flagged the folio but not yet the page).
        pfn: Pfn,
        /// The folio's head.
        folio: Pfn,
    },
    /// A long-term pin of memory that must stay migratable or truncatable.
    #[error("{memory_type:?} memory cannot be pinned long-term")]
    LongtermNotPinnable {
        /// The pgmap's type.
        memory_type: MemoryType,
    },
    /// Device-private memory has no CPU mapping to pin.
    #[error("{memory_type:?} memory is not addressable by the CPU")]
    NotAddressable {
        /// The pgmap's type.
        memory_type: MemoryType,
    },
    /// Peer-to-peer memory without `PCI_P2PDMA`.
    #[error("PCI peer-to-peer memory needs GupFlags::PCI_P2PDMA")]
    P2pdmaNotRequested,
    /// The folio is free (fsdax count 0): nothing maps it, so there is nothing to pin.
    #[error("pfn {pfn} is not mapped (its folio is free)")]
    NotMapped {
        /// The pfn.
        pfn: Pfn,
    },
    /// An extent cap shorter than the pinned part of a folio: extents are cut only between
    /// folios.
    #[error(
        "a pinned folio part of {} does not fit the extent cap of {}: extents are never cut \
         inside a folio, so use a cap of at least {} (or pin in smaller folios)",
        Bytes(*folio_bytes), Bytes(*max_bytes), Bytes(*folio_bytes)
    )]
    ExtentCap {
        /// The longest pinned part of one folio in the range.
        folio_bytes: u64,
        /// The cap asked for.
        max_bytes: u64,
    },
    /// More extents needed than allowed, even with the fewest the limits permit.
    #[error(
        "the pinned range needs {needed} extents, more than the {max} allowed: allow {needed}, \
         raise the byte cap, or register a smaller range"
    )]
    ExtentCount {
        /// The fewest extents the range needs under the byte cap.
        needed: usize,
        /// The most allowed.
        max: usize,
    },
    /// The folio's reference count would overflow.
    #[error("pfn {pfn}: reference count would overflow")]
    Overflow {
        /// The folio head.
        pfn: Pfn,
    },
}

/// How a grab counts: pins (with the bias) or plain references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Pin,
    Get,
}
