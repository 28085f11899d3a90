//! The values the userfaultfd wrapper ([`Userfaultfd`](super::Userfaultfd)) takes and returns:
//! feature bits, the ioctls a registered range allows, decoded events, what a resolving call
//! did, and its errors. No `unsafe` here; the calls that produce these are in `uffd.rs`.

use std::fmt;
use std::os::fd::OwnedFd;

use linux_raw_sys::general as uapi;

use super::Bytes;
use crate::addr::Order;

/// `UFFD_FEATURE_*` bits: asked for in [`Userfaultfd::new`](super::Userfaultfd::new), reported
/// by the kernel.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct UffdFeatures(pub(super) u64);

impl UffdFeatures {
    /// No feature.
    pub const NONE: UffdFeatures = UffdFeatures(0);
    /// MISSING mode on shmem (memfd) mappings.
    pub const MISSING_SHMEM: UffdFeatures = UffdFeatures(uapi::UFFD_FEATURE_MISSING_SHMEM as u64);
    /// MISSING mode on hugetlb mappings.
    pub const MISSING_HUGETLBFS: UffdFeatures =
        UffdFeatures(uapi::UFFD_FEATURE_MISSING_HUGETLBFS as u64);
    /// MINOR mode (and `UFFDIO_CONTINUE`) on shmem mappings.
    pub const MINOR_SHMEM: UffdFeatures = UffdFeatures(uapi::UFFD_FEATURE_MINOR_SHMEM as u64);
    /// MINOR mode (and `UFFDIO_CONTINUE`) on hugetlb mappings.
    pub const MINOR_HUGETLBFS: UffdFeatures =
        UffdFeatures(uapi::UFFD_FEATURE_MINOR_HUGETLBFS as u64);
    /// `UFFDIO_POISON` (Linux 6.6); `1 << 14`, absent from older uapi headers.
    pub const POISON: UffdFeatures = UffdFeatures(uapi::UFFD_FEATURE_POISON as u64);
    /// [`UffdEvent::Remove`] for `madvise(MADV_REMOVE/DONTNEED)` of a registered range.
    pub const EVENT_REMOVE: UffdFeatures = UffdFeatures(uapi::UFFD_FEATURE_EVENT_REMOVE as u64);
    /// [`UffdEvent::Unmap`] for `munmap` of a registered range.
    pub const EVENT_UNMAP: UffdFeatures = UffdFeatures(uapi::UFFD_FEATURE_EVENT_UNMAP as u64);
    /// [`UffdEvent::Remap`] for `mremap` of a registered range.
    pub const EVENT_REMAP: UffdFeatures = UffdFeatures(uapi::UFFD_FEATURE_EVENT_REMAP as u64);
    /// What a device front end asks for: MISSING and MINOR on shmem and hugetlb, poison.
    pub const DEVICE: UffdFeatures = UffdFeatures(
        Self::MISSING_SHMEM.0
            | Self::MINOR_SHMEM.0
            | Self::MISSING_HUGETLBFS.0
            | Self::MINOR_HUGETLBFS.0
            | Self::POISON.0,
    );

    /// The raw `UFFD_FEATURE_*` bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Features from raw bits, including ones this type has no name for.
    pub const fn from_bits(bits: u64) -> UffdFeatures {
        UffdFeatures(bits)
    }

    /// Whether every feature of `other` is in `self`.
    pub const fn contains(self, other: UffdFeatures) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for UffdFeatures {
    type Output = UffdFeatures;

    fn bitor(self, rhs: UffdFeatures) -> UffdFeatures {
        UffdFeatures(self.0 | rhs.0)
    }
}

impl fmt::Debug for UffdFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UffdFeatures({:#x})", self.0)
    }
}

/// The resolving ioctls the kernel allows on a registered range (`uffdio_register.ioctls`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RangeIoctls(pub(super) u64);

impl RangeIoctls {
    fn has(self, nr: u32) -> bool {
        self.0 & (1 << nr) != 0
    }

    /// `UFFDIO_COPY`.
    pub fn copy(self) -> bool {
        self.has(uapi::_UFFDIO_COPY)
    }

    /// `UFFDIO_ZEROPAGE`.
    pub fn zeropage(self) -> bool {
        self.has(uapi::_UFFDIO_ZEROPAGE)
    }

    /// `UFFDIO_CONTINUE`.
    pub fn continue_(self) -> bool {
        self.has(uapi::_UFFDIO_CONTINUE)
    }

    /// `UFFDIO_POISON`.
    pub fn poison(self) -> bool {
        self.has(uapi::_UFFDIO_POISON)
    }

    /// `UFFDIO_WAKE`.
    pub fn wake(self) -> bool {
        self.has(uapi::_UFFDIO_WAKE)
    }
}

impl fmt::Debug for RangeIoctls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RangeIoctls({:#x})", self.0)
    }
}

/// One event read from a userfaultfd.
#[derive(Debug)]
#[non_exhaustive]
pub enum UffdEvent {
    /// A thread touched a registered page and waits for it to be resolved.
    PageFault {
        /// The faulting address, rounded down to its base page by the kernel.
        addr: u64,
        /// Whether the access was a write.
        write: bool,
        /// Whether it was a MINOR fault (page in the page cache, not mapped) rather than a
        /// MISSING one.
        minor: bool,
    },
    /// `[start, end)` was dropped with `madvise` (needs [`UffdFeatures::EVENT_REMOVE`]).
    Remove {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// `[start, end)` was unmapped (needs [`UffdFeatures::EVENT_UNMAP`]).
    Unmap {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The process forked with registered ranges; the child's userfaultfd comes with it.
    Fork {
        /// The child's userfaultfd, owned by the event.
        child: OwnedFd,
    },
    /// A registered range moved with `mremap` (needs [`UffdFeatures::EVENT_REMAP`]).
    Remap {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Length.
        len: u64,
    },
    /// An event this wrapper does not decode: its `UFFD_EVENT_*` number.
    Unknown(u8),
}

/// What a resolving call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Bytes this call filled (mapped, continued or poisoned).
    pub bytes: u64,
    /// Whether part of the range was already there (another resolver filled it, or for
    /// `zeropage` the page cache holds it). `copy`, `continue_` and `poison` then woke the
    /// whole range anyway; `zeropage` woke only the `bytes` it filled, and its caller maps
    /// the rest.
    pub raced: bool,
}

/// Errors from userfaultfd calls, naming the call, the range and what the kernel said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UffdError {
    /// The `userfaultfd` syscall failed (`ENOSYS`: not built in; `EPERM`: not allowed).
    #[error("cannot create a userfaultfd")]
    Create {
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// `UFFDIO_API` refused the features asked for.
    #[error("UFFDIO_API refused features {requested:?} (this kernel offers {available:?})")]
    Api {
        /// Features asked for.
        requested: UffdFeatures,
        /// What the kernel reported, if it got that far.
        available: Option<UffdFeatures>,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A call that needs a feature this descriptor was not opened with.
    #[error("{what} needs {needed:?}, not granted to this userfaultfd ({granted:?})")]
    FeatureNotGranted {
        /// The call, e.g. "UFFDIO_POISON".
        what: &'static str,
        /// The feature it needs.
        needed: UffdFeatures,
        /// What was granted.
        granted: UffdFeatures,
    },
    /// An empty range.
    #[error("{ioctl}: the range at {start:#x} is empty")]
    Empty {
        /// The ioctl.
        ioctl: &'static str,
        /// Its start.
        start: u64,
    },
    /// A range start or length that is not a multiple of the mapping's page size.
    #[error(
        "{ioctl}: {what} {value:#x} is not a multiple of the {} page size: use {:#x}",
        Bytes(page.bytes()), value - value % page.bytes()
    )]
    Unaligned {
        /// The ioctl.
        ioctl: &'static str,
        /// "start" or "length".
        what: &'static str,
        /// The value asked for.
        value: u64,
        /// The page size it must be a multiple of.
        page: Order,
    },
    /// `ENOENT`: the range is not inside one mapping registered with this userfaultfd.
    #[error(
        "{ioctl}: [{start:#x}, +{}) is not inside one mapping registered with this userfaultfd",
        Bytes(*len)
    )]
    NotRegistered {
        /// The ioctl.
        ioctl: &'static str,
        /// Range start.
        start: u64,
        /// Range length.
        len: u64,
    },
    /// Any other refusal of an ioctl.
    #[error("{ioctl} of [{start:#x}, +{}) failed", Bytes(*len))]
    Ioctl {
        /// The ioctl.
        ioctl: &'static str,
        /// Range start.
        start: u64,
        /// Range length.
        len: u64,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A descriptor passed as a userfaultfd is something else.
    #[error("the descriptor passed as a userfaultfd is {found}, not a userfaultfd")]
    NotUserfaultfd {
        /// What it is, as `/proc/self/fd` names it.
        found: String,
    },
    /// Reading or polling the descriptor failed, or it returned a short message.
    #[error("cannot read a userfaultfd event")]
    Read {
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}
