//! Sources of bytes: the anonymous reservation that holds metadata ([`Reservation`]), and the
//! backings that hold device memory ([`Backing`]): a memfd (shmem), a hugetlb memfd (2 MiB or
//! 1 GiB pages), a regular or DAX-filesystem file, and a device-dax character device. Each
//! backing says its length, its natural page size and the userfaultfd modes the kernel supports
//! on it, and maps windows of itself `MAP_SHARED` at an aligned address ([`Mmap`]).
//!
//! This module is one of the two places that hold `unsafe` (the other is `memmap::array`): the
//! crate's only `mmap`/`munmap`/`madvise`/`mremap` calls are in `anon.rs`, `map.rs` and
//! `detach.rs` (a range's entries taken out at once, torn down later: `Detached`), and its
//! only userfaultfd syscall and ioctls in `uffd.rs` ([`Userfaultfd`]).
//!
//! [`Backing`] is one struct over an open file descriptor with a closed [`BackingKind`], not a
//! trait. Once open, every source is the same thing to the layers above: a descriptor to map at
//! an offset, a length, a page size and a set of userfaultfd modes. What differs is how it is
//! opened (one file each: `memfd.rs`, `file.rs`, `devdax.rs`) and what the device-dax front end
//! does about faults, which it decides from [`Backing::uffd_modes`]. A trait would make the
//! device generic or boxed for no behaviour that varies after opening, and the set of sources
//! is fixed by what the kernel offers.

mod anon;
mod detach;
mod devdax;
pub(crate) mod file;
mod map;
mod memfd;
mod shared_words;
mod smaps;
#[cfg(test)]
pub(crate) mod test_child;
mod uffd;
mod uffd_types;

pub(crate) use crate::units::Bytes;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

pub use anon::{PageHint, Reservation};
pub(crate) use anon::{Sharing, resident_in};
pub(crate) use detach::{Detached, drain as drain_detached, start as start_reaper};
pub use file::DaxMount;
pub use map::Mmap;
#[cfg(test)]
pub(crate) use memfd::reserve::HugePages;
pub use memfd::{HugePageCounts, HugePageSize, huge_pages};
pub use shared_words::{SharedWords, Writer};
pub use smaps::{Smaps, smaps_at};
pub use uffd::{EventWaiter, Userfaultfd};
pub use uffd_types::{RangeIoctls, Resolved, UffdError, UffdEvent, UffdFeatures};

use crate::addr::Order;

/// Errors from reserving memory and from opening, sizing and mapping backings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackingError {
    /// A shared-words file another process passed cannot be used.
    #[error("shared words: {why}")]
    SharedWords {
        /// What was wrong with it.
        why: String,
    },
    /// `mmap` refused the reservation.
    #[error("cannot reserve {len} bytes of anonymous memory")]
    Map {
        /// Bytes asked for.
        len: usize,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A zero-length reservation, backing or mapping.
    #[error("a reservation, backing or mapping must not be empty")]
    Empty,
    /// A file too short to map one page of.
    #[error("the {backing} holds {}, less than one {} page: extend it to at least that", Bytes(*len), Bytes(page.bytes()))]
    TooSmall {
        /// Which backing.
        backing: String,
        /// Its length.
        len: u64,
        /// Its page size.
        page: Order,
    },
    /// A length that does not fit the address space.
    #[error("{len} bytes does not fit in the address space")]
    TooLarge {
        /// Bytes asked for.
        len: u64,
    },
    /// The kernel's page map of this process could not be read.
    #[error("cannot read {} to count resident pages", anon::PAGEMAP)]
    Pagemap {
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Creating a memfd, or giving it or a new file its length, failed.
    #[error("cannot create a {} {backing}", Bytes(*len))]
    Create {
        /// Which backing, e.g. "2 MiB hugetlb memfd".
        backing: String,
        /// Bytes asked for.
        len: u64,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Opening or inspecting a path failed.
    #[error("cannot open {backing} {}", path.display())]
    Open {
        /// Which backing, e.g. "device-dax".
        backing: &'static str,
        /// The path asked for.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The path is not the kind of file this backing needs.
    #[error("{} is {found}, not {wanted}", path.display())]
    WrongFileType {
        /// The path asked for.
        path: PathBuf,
        /// What it is, e.g. "a directory".
        found: &'static str,
        /// What the backing needs, e.g. "a regular file".
        wanted: &'static str,
    },
    /// `fstat` of an open backing failed.
    #[error("cannot stat the {backing}")]
    Stat {
        /// Which backing.
        backing: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs attribute could not be read or parsed.
    #[error("cannot read {}", path.display())]
    Sysfs {
        /// The attribute's path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A length, offset or alignment that is not a multiple of the backing's page size.
    #[error(
        "{what} {} is not a multiple of the {backing}'s {} page size: use {}",
        Bytes(*value), Bytes(page.bytes()), suggest(*value, *page)
    )]
    Unaligned {
        /// "length", "offset" or "alignment".
        what: &'static str,
        /// The value asked for.
        value: u64,
        /// The backing's page size.
        page: Order,
        /// Which backing.
        backing: String,
    },
    /// An alignment that is not a power of two of at least the backing's page size.
    #[error(
        "alignment {} must be a power of two of at least the {backing}'s {} page size: use {}",
        Bytes(*align), Bytes(page.bytes()), Bytes(page.bytes())
    )]
    BadAlign {
        /// The alignment asked for.
        align: u64,
        /// The backing's page size.
        page: Order,
        /// Which backing.
        backing: String,
    },
    /// A window or an access that runs past the end of what it is taken from.
    #[error(
        "{} at offset {} runs past the end at {}: at most {} fit there",
        Bytes(*len), Bytes(*offset), Bytes(*end), Bytes(end.saturating_sub(*offset))
    )]
    OutOfRange {
        /// Start of the window or access.
        offset: u64,
        /// Its length.
        len: u64,
        /// Length of the backing or mapping.
        end: u64,
    },
    /// `mmap` refused to map a backing.
    #[error("cannot map {} of the {backing} at offset {}{hint}", Bytes(*len), Bytes(*offset))]
    MapShared {
        /// Which backing.
        backing: String,
        /// Offset in the backing.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// What is known about why, e.g. the free huge pages; empty if nothing.
        hint: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A memmap room has no space for the next array of a store.
    #[error(
        "the memmap room of {} has {} left, an array needs {}: the layout's memmap does not \
         fit where the namespace keeps it",
        Bytes(*room), Bytes(*left), Bytes(*need)
    )]
    RoomFull {
        /// Bytes the array needs, page rounded.
        need: u64,
        /// Bytes left in the room.
        left: u64,
        /// Bytes of the whole room.
        room: u64,
    },
    /// `fallocate` of a range failed (out of memory or huge pages, or a filesystem without
    /// it).
    #[error("cannot allocate {} of {backing} at offset {}: {source}", Bytes(*len), Bytes(*offset))]
    Allocate {
        /// The backing, as shown to people.
        backing: String,
        /// First byte.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// The userfaultfd modes the kernel supports on a backing's shared mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UffdModes(u8);

impl UffdModes {
    /// No userfaultfd: faults are driven by the caller (populate, pin).
    pub const NONE: UffdModes = UffdModes(0);
    /// `UFFDIO_REGISTER_MODE_MISSING`: a touch of a page absent from the page cache is caught
    /// and resolved with `UFFDIO_COPY` or `UFFDIO_ZEROPAGE`.
    pub const MISSING: UffdModes = UffdModes(1 << 0);
    /// `UFFDIO_REGISTER_MODE_MINOR`: a touch of a page present in the page cache but not
    /// mapped is caught and resolved with `UFFDIO_CONTINUE`.
    pub const MINOR: UffdModes = UffdModes(1 << 1);

    /// Whether every mode of `other` is supported.
    pub const fn contains(self, other: UffdModes) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no mode is supported.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for UffdModes {
    type Output = UffdModes;

    fn bitor(self, rhs: UffdModes) -> UffdModes {
        UffdModes(self.0 | rhs.0)
    }
}

/// Which source of device bytes a [`Backing`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackingKind {
    /// A shmem memfd: 4 KiB pages (THP for shmem is off on the machines this runs on).
    Memfd,
    /// A hugetlb memfd of one huge page size.
    Hugetlb(HugePageSize),
    /// A regular file, on a filesystem mounted with or without DAX.
    File {
        /// The path it was opened at.
        path: PathBuf,
        /// What the mount says about DAX.
        dax: DaxMount,
    },
    /// A device-dax character device.
    DevDax {
        /// The device node, e.g. `/dev/dax0.0`.
        path: PathBuf,
    },
}

impl fmt::Display for BackingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackingKind::Memfd => write!(f, "memfd"),
            BackingKind::Hugetlb(size) => {
                write!(f, "{} hugetlb memfd", Bytes(size.order().bytes()))
            }
            BackingKind::File { path, .. } => write!(f, "file {}", path.display()),
            BackingKind::DevDax { path } => write!(f, "device-dax {}", path.display()),
        }
    }
}

/// An open source of device bytes: a descriptor with a length, a natural page size and the
/// userfaultfd modes it supports. Windows of it are mapped with [`Backing::map_shared`].
#[derive(Debug)]
pub struct Backing {
    fd: OwnedFd,
    /// Where the backing's byte 0 is in the descriptor's file: 0, or a window's start.
    base: u64,
    len: u64,
    page: Order,
    uffd: UffdModes,
    kind: BackingKind,
}

impl Backing {
    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: empty backings are refused when opened or created.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The natural page size: the size of the leaves the kernel maps it with, and the unit
    /// every mapped offset and length must be a multiple of.
    #[inline]
    pub fn page_size(&self) -> Order {
        self.page
    }

    /// The userfaultfd modes the kernel supports on shared mappings of this backing.
    #[inline]
    pub fn uffd_modes(&self) -> UffdModes {
        self.uffd
    }

    /// Which source this is.
    #[inline]
    pub fn kind(&self) -> &BackingKind {
        &self.kind
    }

    /// Bytes the backing holds in memory or on disk (`st_blocks`): what it costs, as opposed
    /// to its length.
    pub fn allocated_bytes(&self) -> Result<u64, BackingError> {
        let st = rustix::fs::fstat(&self.fd).map_err(|e| BackingError::Stat {
            backing: self.kind.to_string(),
            source: e.into(),
        })?;
        Ok(u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512))
    }

    /// Maps `len` bytes of the backing from `offset` `MAP_SHARED`, read-write, at an address
    /// that is a multiple of `align` (itself a multiple of the page size): the kernel uses huge
    /// leaves only where the virtual address is aligned like the backing's offset, and the
    /// userfaultfd resolving ioctls need a whole leaf inside one mapping. `offset` and `len`
    /// must be multiples of the page size and lie inside the backing.
    ///
    /// Hugetlb pages are reserved here: a shared hugetlb mapping fails now, naming the free
    /// pages, rather than with SIGBUS at the first touch.
    pub fn map_shared(&self, offset: u64, len: u64, align: Order) -> Result<Mmap, BackingError> {
        self.map_window(offset, len, align, map::Place::Aligned, map::Share::Shared)
    }

    /// [`map_shared`](Backing::map_shared) without reserving hugetlb pages
    /// (`MAP_NORESERVE`): a fault in it takes the page another mapping reserved for the same
    /// bytes, else a free one, and fails if there is none. For a window the device itself
    /// uses to allocate the bytes of leaves its mappings already reserved
    /// ([`Mmap::populate_write`]), so that it reserves nothing twice.
    pub fn map_unreserved(
        &self,
        offset: u64,
        len: u64,
        align: Order,
    ) -> Result<Mmap, BackingError> {
        self.map_window(
            offset,
            len,
            align,
            map::Place::Aligned,
            map::Share::Unreserved,
        )
    }

    /// As [`map_shared`](Backing::map_shared), at an address congruent to the window's
    /// offset in its file modulo `align` rather than a multiple of `align`: for a window that
    /// starts off `align` in a file whose page cache keeps huge folios (they lie on multiples
    /// of their size in the file), so that each can still be mapped by one huge leaf.
    pub fn map_shared_like_offset(
        &self,
        offset: u64,
        len: u64,
        align: Order,
    ) -> Result<Mmap, BackingError> {
        self.map_window(
            offset,
            len,
            align,
            map::Place::LikeOffset,
            map::Share::Shared,
        )
    }

    /// Maps `len` bytes of the backing from `offset` `MAP_PRIVATE`, read-write: reads see the
    /// backing's bytes until this mapping writes a page, which from then on is this process's
    /// own copy; nothing reaches the backing until [`Mmap::write_back`]. What a
    /// memmap adopted from a file uses, so that a crash cannot leave it half written there.
    /// `offset` and `len` must be multiples of the page size and lie inside the backing.
    pub fn map_copy_on_write(&self, offset: u64, len: u64) -> Result<Mmap, BackingError> {
        self.map_window(
            offset,
            len,
            self.page,
            map::Place::Aligned,
            map::Share::CopyOnWrite,
        )
    }

    /// A window of the backing checked against its page size and end, then mapped as asked.
    fn map_window(
        &self,
        offset: u64,
        len: u64,
        align: Order,
        place: map::Place,
        share: map::Share,
    ) -> Result<Mmap, BackingError> {
        self.check_window(offset, len, align)?;
        map::map_shared(self, offset, len, align, place, share)
    }

    /// Makes sure the bytes of `[offset, offset + len)` exist in the backing (`fallocate`
    /// with `FALLOC_FL_KEEP_SIZE`): pages not yet allocated are allocated zeroed, pages that
    /// exist keep their bytes. A userfaultfd MINOR resolution (`UFFDIO_CONTINUE`) can then map
    /// the whole range in one call. For hugetlb, this takes the huge pages from the pool.
    pub fn allocate(&self, offset: u64, len: u64) -> Result<(), BackingError> {
        self.fallocate(rustix::fs::FallocateFlags::KEEP_SIZE, offset, len)
    }

    /// Gives `[offset, offset + len)` back to the backing (`fallocate` with
    /// `FALLOC_FL_PUNCH_HOLE`): the range reads as zeros afterwards and holds no storage, in
    /// every mapping of it. Both must be multiples of the page size inside the backing.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<(), BackingError> {
        use rustix::fs::FallocateFlags;
        self.fallocate(
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
    }

    /// Makes `[offset, offset + len)` read as zeros, keeping storage for it, before it is
    /// written: `fallocate` with `FALLOC_FL_ZERO_RANGE`, which turns the range into allocated,
    /// unwritten blocks (a hole is allocated; blocks that held data are kept and only marked
    /// unwritten, so none is freed, which on a file system mounted with `discard` and no
    /// journal would discard each synchronously). Writing the range later then finds its
    /// blocks there: a shared mapping's faults reserve nothing, and a full disk is this call's
    /// error rather than SIGBUS at a fault. Where the file system has no zero range (tmpfs),
    /// the range's hole is punched instead. Both must be multiples of the page size inside
    /// the backing.
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), BackingError> {
        use rustix::fs::FallocateFlags;
        match self.fallocate(
            FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Err(BackingError::Allocate { source, .. })
                if source.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) =>
            {
                self.punch_hole(offset, len)
            }
            r => r,
        }
    }

    /// `fallocate(flags)` of a checked window of the backing.
    fn fallocate(
        &self,
        flags: rustix::fs::FallocateFlags,
        offset: u64,
        len: u64,
    ) -> Result<(), BackingError> {
        self.check_window(offset, len, self.page)?;
        rustix::fs::fallocate(&self.fd, flags, self.base + offset, len).map_err(|e| {
            BackingError::Allocate {
                backing: self.kind.to_string(),
                offset,
                len,
                source: e.into(),
            }
        })
    }

    /// Checks a window against the page size and the backing's end.
    fn check_window(&self, offset: u64, len: u64, align: Order) -> Result<(), BackingError> {
        if len == 0 {
            return Err(BackingError::Empty);
        }
        let page = self.page.bytes();
        let unaligned = |what, value| BackingError::Unaligned {
            what,
            value,
            page: self.page,
            backing: self.kind.to_string(),
        };
        if !offset.is_multiple_of(page) {
            return Err(unaligned("offset", offset));
        }
        if !len.is_multiple_of(page) {
            return Err(unaligned("length", len));
        }
        if align < self.page {
            return Err(BackingError::BadAlign {
                align: align.bytes(),
                page: self.page,
                backing: self.kind.to_string(),
            });
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(BackingError::OutOfRange {
                offset,
                len,
                end: self.len,
            }),
        }
    }

    /// The descriptor, for mapping.
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// What another process maps this backing with: the descriptor (to pass over a Unix
    /// socket) and the file offset of the backing's byte 0 (a window's start, else 0). Byte `n`
    /// of the backing is at file offset `base + n`.
    pub fn share(&self) -> (BorrowedFd<'_>, u64) {
        (self.fd.as_fd(), self.base)
    }
}

/// Values near `value` that are multiples of `page`: "0 or 2 MiB", "4 MiB or 6 MiB".
fn suggest(value: u64, page: Order) -> String {
    let page = page.bytes();
    let down = value - value % page;
    match down.checked_add(page) {
        Some(up) => format!("{} or {}", Bytes(down), Bytes(up)),
        None => format!("{}", Bytes(down)),
    }
}

/// Rounds `value` up to a multiple of `page`, saturating at the largest multiple.
fn round_up(value: u64, page: Order) -> u64 {
    let page = page.bytes();
    value
        .checked_next_multiple_of(page)
        .unwrap_or(u64::MAX - u64::MAX % page)
}

#[cfg(test)]
mod tests;
