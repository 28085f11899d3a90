//! The errno of every library error, one function per error type, every variant named (the
//! compiler checks: inside the library the enums are exhaustive): what the C ABI returns,
//! negated, the `errno` of the Python bindings' exceptions, and the errno a service reply
//! carries for a [`WireError`] ([`WireError::errno`]), so that all say the same.
//!
//! The choices follow the kernel where it has an answer for the same condition: `EFAULT` for
//! an address outside every mapping or a `FOLL_NOFAULT` pin of a hole (gup's), `EHWPOISON` for
//! poison and for bytes lost to it, `EBUSY` for references still held, `ENXIO` for a device
//! being or already torn down (`dax_alive` failing in `dax_mmap` and `dax_direct_access`) and
//! for a pfn no device holds (`memory_failure_dev_pagemap`). Otherwise bad input is `EINVAL`,
//! and an error the system reported keeps the system's errno.

use std::io;

use crate::addr::AddrError;
use crate::backing::{BackingError, UffdError};
use crate::init::SyncError;
use crate::memmap::{LookupError, MemmapError};
use crate::memory_failure::MfError;
use crate::namespace::{BadblocksError, InfoBlockError, LabelError, RegionError};
use crate::wire::WireError;
use crate::{DaxError, FolioError, GupError, NamespaceError, PgmapError};
use libc::{
    E2BIG, EAGAIN, EBADF, EBADMSG, EBUSY, ECONNRESET, EEXIST, EFAULT, EHWPOISON, EINVAL, EIO,
    EISDIR, EMSGSIZE, ENODEV, ENOENT, ENOMEM, ENOSPC, ENXIO, EOPNOTSUPP, EOVERFLOW, EPROTO,
    EPROTONOSUPPORT, ERANGE, EROFS, ETOOMANYREFS, EUCLEAN,
};

/// What the system said, or `default` when it named no errno.
pub fn io(e: &io::Error, default: i32) -> i32 {
    e.raw_os_error().unwrap_or(default)
}

/// [`DaxError`]: creating, mapping, faulting, pinning by address, tearing down.
pub fn dax(e: &DaxError) -> i32 {
    match e {
        DaxError::Placement { .. }
        | DaxError::BackingUnaligned { .. }
        | DaxError::PageTooLarge { .. }
        | DaxError::NotShared
        | DaxError::Unaligned { .. }
        | DaxError::Empty
        | DaxError::OutOfRange { .. }
        | DaxError::FaultTooSmall { .. }
        | DaxError::LeafStraddles { .. }
        | DaxError::RangeSizes { .. }
        | DaxError::EmptyRange { .. }
        | DaxError::ClearUnaligned { .. }
        | DaxError::NoHandlers
        | DaxError::FaultAround { .. }
        | DaxError::ZeroAhead { .. }
        | DaxError::Threads { .. } => EINVAL,
        // An address in no mapping, a range running past the mapping's end, and a
        // FOLL_NOFAULT pin of a hole: gup's -EFAULT.
        DaxError::NotInMapping { .. }
        | DaxError::PastMappingEnd { .. }
        | DaxError::NotFaulted { .. } => EFAULT,
        DaxError::TornDown | DaxError::Unmapped { .. } => ENXIO,
        DaxError::ClientWindow { .. } => EINVAL,
        DaxError::Poisoned { .. } | DaxError::MemoryLost { .. } => EHWPOISON,
        DaxError::NoUserfaultfd { .. } => EOPNOTSUPP,
        DaxError::Handler { source } => io(source, EAGAIN),
        DaxError::Pgmap(e) => pgmap(e),
        DaxError::Backing(e) => backing(e),
        DaxError::Folio(e) => folio(e),
        DaxError::Uffd(e) => uffd(e),
        DaxError::Gup(e) => gup(e),
    }
}

/// [`BackingError`]: reserving, opening, sizing and mapping backings.
pub fn backing(e: &BackingError) -> i32 {
    match e {
        BackingError::Map { source, .. }
        | BackingError::Create { source, .. }
        | BackingError::MapShared { source, .. } => io(source, ENOMEM),
        BackingError::Allocate { source, .. } => io(source, ENOSPC),
        // A device's memmap room cannot hold the next array of the layout's store.
        BackingError::RoomFull { .. } => ENOSPC,
        BackingError::Open { source, .. }
        | BackingError::Stat { source, .. }
        | BackingError::Sysfs { source, .. }
        | BackingError::Pagemap { source } => io(source, EIO),
        BackingError::Empty
        | BackingError::TooSmall { .. }
        | BackingError::Unaligned { .. }
        | BackingError::BadAlign { .. }
        | BackingError::OutOfRange { .. } => EINVAL,
        // mmap(2) of more than the address space.
        BackingError::TooLarge { .. } => ENOMEM,
        // mmap(2) of a file that cannot back a mapping.
        BackingError::WrongFileType { .. } => ENODEV,
        BackingError::SharedWords { .. } => EBADF,
    }
}

/// [`UffdError`]: the device's userfaultfd.
pub fn uffd(e: &UffdError) -> i32 {
    match e {
        UffdError::Create { source } | UffdError::Read { source } => io(source, EIO),
        UffdError::Api { source, .. } => io(source, EOPNOTSUPP),
        UffdError::FeatureNotGranted { .. } => EOPNOTSUPP,
        UffdError::Empty { .. } | UffdError::Unaligned { .. } | UffdError::NotRegistered { .. } => {
            EINVAL
        }
        UffdError::Ioctl { source, .. } => io(source, EIO),
        UffdError::NotUserfaultfd { .. } => EBADF,
    }
}

/// [`FolioError`]: reference counts and mappings of folios.
pub fn folio(e: &FolioError) -> i32 {
    match e {
        FolioError::TornDown { .. } => ENXIO,
        FolioError::Busy { .. } | FolioError::StillBusy { .. } => EBUSY,
        FolioError::Pgmap(e) => pgmap(e),
        FolioError::NotAddressable { .. }
        | FolioError::NotDriverAllocated { .. }
        | FolioError::NotFsdax { .. } => EOPNOTSUPP,
        FolioError::BadOrder { .. } | FolioError::Free { .. } => EINVAL,
        FolioError::Overflow { .. } => EOVERFLOW,
    }
}

/// [`GupError`]: pins by pfn (under every pin by address).
pub fn gup(e: &GupError) -> i32 {
    match e {
        GupError::Empty => EINVAL,
        // No pgmap holds the pfn: get_dev_pagemap fails, gup answers -EFAULT.
        GupError::NoPgmap { .. } | GupError::NotMapped { .. } => EFAULT,
        GupError::TornDown { .. } => ENXIO,
        GupError::TooManyEntries { .. } => ENOMEM,
        GupError::Poisoned { .. } => EHWPOISON,
        // The kernel's check_vma_flags / folio_is_longterm_pinnable refusals.
        GupError::LongtermNotPinnable { .. }
        | GupError::NotAddressable { .. }
        | GupError::P2pdmaNotRequested => EOPNOTSUPP,
        GupError::Overflow { .. } => EOVERFLOW,
        // A byte cap below one folio's pinned part: extents are never cut inside a folio.
        GupError::ExtentCap { .. } => EINVAL,
        // More extents needed than `max_extents` allows. Not -ENOSPC, which says the caller's
        // array is too small (retry with a larger one); this one needs other limits.
        GupError::ExtentCount { .. } => E2BIG,
    }
}

/// [`PgmapError`]: registering, looking up and tearing down pgmaps.
pub fn pgmap(e: &PgmapError) -> i32 {
    match e {
        PgmapError::NoRanges
        | PgmapError::AltmapWithRanges { .. }
        | PgmapError::FsdaxCompound { .. }
        | PgmapError::MissingOps { .. }
        | PgmapError::BadRequest { .. } => EINVAL,
        PgmapError::Overlap { .. } | PgmapError::IdTaken { .. } => EEXIST,
        PgmapError::Memmap { source, .. } => memmap(source),
        PgmapError::Sync(e) => sync(e),
        PgmapError::Lookup(e) => lookup(e),
        PgmapError::SpaceExhausted { .. } | PgmapError::IdsExhausted => ENOSPC,
        PgmapError::Busy { .. } => EBUSY,
        PgmapError::NotRegistered => ENXIO,
    }
}

/// [`SyncError`]: handing out descriptors.
pub fn sync(e: &SyncError) -> i32 {
    match e {
        SyncError::TornDown => ENXIO,
        SyncError::OutOfRange { .. } => EINVAL,
    }
}

/// [`LookupError`]: pfn to descriptor.
pub fn lookup(e: &LookupError) -> i32 {
    match e {
        LookupError::OutOfRange { .. } | LookupError::AltmapPfn { .. } => ENXIO,
        LookupError::Uninitialized { .. } | LookupError::NotSynced { .. } => EIO,
        // A folio split or formed under the lookup: try again.
        LookupError::Reshaping { .. } => EAGAIN,
    }
}

/// [`MemmapError`]: building a memmap.
pub fn memmap(e: &MemmapError) -> i32 {
    match e {
        MemmapError::EmptyRange { .. }
        | MemmapError::Misaligned { .. }
        | MemmapError::AltmapTooLarge { .. }
        | MemmapError::AltmapTooSmall { .. }
        | MemmapError::AltmapMisaligned { .. } => EINVAL,
        // A layout that cannot live in a device's memmap room.
        MemmapError::NotInRoom { .. } => EOPNOTSUPP,
        MemmapError::BeyondPhysicalSpace { .. } => ERANGE,
        MemmapError::Backing { source, .. } => backing(source),
    }
}

/// [`AddrError`]: typed numbers (orders, ranges).
pub fn addr(e: &AddrError) -> i32 {
    match e {
        AddrError::OrderTooLarge { .. }
        | AddrError::NotPageAligned { .. }
        | AddrError::BadRange { .. }
        | AddrError::NotPowerOfTwo { .. } => EINVAL,
    }
}

/// [`MfError`]: `memory_failure`.
pub fn mf(e: &MfError) -> i32 {
    match e {
        // memory_failure_dev_pagemap: no live pgmap, or a pfn of the altmap, is -ENXIO;
        // mf_generic_kill_procs: private and coherent memory is -ENXIO, a folio
        // dax_lock_folio cannot lock (no mapping) -EBUSY; the callback's errno as it is.
        MfError::NoDevice { .. } | MfError::NotData { .. } | MfError::NotHandled { .. } => ENXIO,
        MfError::NotMapped { .. } => EFAULT,
        MfError::NeverMapped { .. } => EBUSY,
        MfError::Callback { errno, .. } => *errno,
        MfError::Pgmap(e) => pgmap(e),
    }
}

/// [`NamespaceError`]: namespace geometry.
pub fn namespace(e: &NamespaceError) -> i32 {
    match e {
        // nd_pfn_init refuses a misaligned start with -EINVAL. A namespace left with no data
        // ("unable to satisfy requested alignment") is -ENXIO from the kernel's probe; here it
        // is refused as an argument, before anything is written, and ENXIO would name a
        // torn-down device to the C and Python callers.
        NamespaceError::BadAlign { .. }
        | NamespaceError::UnsupportedAlign { .. }
        | NamespaceError::SizeNotAligned { .. }
        | NamespaceError::DataNotAligned { .. }
        | NamespaceError::NoRoomForData { .. }
        | NamespaceError::RangeMismatch { .. } => EINVAL,
        NamespaceError::TooLarge { .. } => EOVERFLOW,
    }
}

/// [`RegionError`]: regions and namespaces on disk.
pub fn region(e: &RegionError) -> i32 {
    match e {
        RegionError::Io { source, .. } => io(source, EIO),
        // Another manager of the region; another device serving the namespace.
        RegionError::Busy { .. } | RegionError::NamespaceBusy { .. } => EBUSY,
        RegionError::IsDirectory { .. } => EISDIR,
        RegionError::OwnerMode { .. } | RegionError::ClearRange { .. } => EINVAL,
        RegionError::TooSmall { .. }
        | RegionError::BadName { .. }
        | RegionError::BadAlign { .. } => EINVAL,
        // Neither label copy usable, or labels that disagree with the file: not a region.
        RegionError::Labels { .. } | RegionError::SizeMismatch { .. } => EPROTO,
        RegionError::ReadOnly | RegionError::Shared { .. } => EROFS,
        // Left in use (as the Python binding says it), or an info block that cannot be read:
        // "structure needs cleaning".
        RegionError::NotClean { unreadable, .. } => match unreadable {
            None => EBUSY,
            Some(_) => EUCLEAN,
        },
        RegionError::NameTaken { .. } => EEXIST,
        RegionError::NotFound { .. } => ENOENT,
        RegionError::NoSpace { .. } | RegionError::Full => ENOSPC,
        RegionError::Namespace(e) => namespace(e),
        RegionError::Label(e) => label(e),
        RegionError::NotDevdax { .. } => EOPNOTSUPP,
        RegionError::Enable { .. } => EIO,
        RegionError::Badblocks { source, .. } => badblocks(source),
        RegionError::InfoBlock { source, .. } => info_block(source),
    }
}

/// [`LabelError`]: a copy of a region's label index.
pub fn label(e: &LabelError) -> i32 {
    match e {
        LabelError::Truncated { .. } | LabelError::Foreign | LabelError::Checksum { .. } => EPROTO,
        LabelError::NewerVersion { .. } => EOPNOTSUPP,
        LabelError::Invalid { .. } => EINVAL,
    }
}

/// [`InfoBlockError`]: a namespace's info block.
pub fn info_block(e: &InfoBlockError) -> i32 {
    match e {
        InfoBlockError::Truncated { .. }
        | InfoBlockError::Foreign { .. }
        | InfoBlockError::Checksum { .. }
        | InfoBlockError::BadField { .. }
        | InfoBlockError::Geometry { .. } => EPROTO,
        InfoBlockError::NewerVersion { .. } => EOPNOTSUPP,
    }
}

/// [`BadblocksError`]: a namespace's badblocks list.
pub fn badblocks(e: &BadblocksError) -> i32 {
    match e {
        BadblocksError::Truncated { .. }
        | BadblocksError::Foreign
        | BadblocksError::Checksum { .. }
        | BadblocksError::Invalid { .. } => EPROTO,
        BadblocksError::NewerVersion { .. } => EOPNOTSUPP,
    }
}

/// [`WireError`]: frames, payloads and descriptors on a service connection; what a reply to
/// the failed request carries.
pub fn wire(e: &WireError) -> i32 {
    match e {
        // A stream that is not this protocol, or lost its frame boundaries.
        WireError::BadMagic { .. }
        | WireError::Truncated { .. }
        | WireError::FdsMidFrame { .. }
        | WireError::WrongKind { .. } => EPROTO,
        WireError::VersionMismatch { .. } => EPROTONOSUPPORT,
        // sendmsg(2)'s answer for a message too long to send atomically; a field past its
        // bound is the same refusal one level down.
        WireError::PayloadTooLarge { .. } | WireError::TooLong { .. } => EMSGSIZE,
        // A frame read whole whose payload does not hold its message.
        WireError::Short { .. } | WireError::TrailingBytes { .. } => EBADMSG,
        WireError::BadUtf8 { .. } | WireError::BadValue { .. } => EINVAL,
        WireError::UnknownKind { .. } => EOPNOTSUPP,
        // A descriptor argument missing or extra: the kernel's answer to a bad descriptor.
        WireError::WrongFdCount { .. } => EBADF,
        // The kernel's answer to more SCM_RIGHTS descriptors than it lets a message carry.
        WireError::TooManyFds { .. } | WireError::FdsTruncated { .. } => ETOOMANYREFS,
        WireError::PeerClosed => ECONNRESET,
        WireError::WouldBlock { .. } => EAGAIN,
        WireError::Io { source, .. } => io(source, EIO),
    }
}

impl WireError {
    /// The kernel-style errno a reply to the failed request carries ([`wire`]).
    pub fn errno(&self) -> i32 {
        wire(self)
    }
}
