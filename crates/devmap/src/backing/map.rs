//! `MAP_SHARED` windows of a backing at an aligned address (or one placed like the window's
//! file offset): the reserve-then-place `mmap` sequence and [`Mmap`], the one `(ptr, len)`
//! owner of such a window, with bounds-checked byte access and the advice on how it is
//! faulted in. Every user mapping (a device-dax mapping, a memmap room) is built on one.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::mm::{MapFlags, ProtFlags};

use super::anon::private_pages;
use super::{Backing, BackingError, BackingKind, PageHint, memfd};
use crate::addr::{Order, PAGE_SIZE};

/// A window of a [`Backing`] mapped `MAP_SHARED` and read-write at an aligned address,
/// unmapped on drop. Every mapping of the same backing, in this process or another, sees the
/// same bytes.
///
/// [`read`](Mmap::read) and [`write`](Mmap::write) copy byte by byte with
/// relaxed atomic accesses, since another mapping may write the same bytes at the same time;
/// code that uses [`as_ptr`](Mmap::as_ptr) takes that on itself.
#[derive(Debug)]
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
    offset: u64,
    page: Order,
    /// Mapped `MAP_PRIVATE` ([`Backing::map_copy_on_write`]): writes stay in this process
    /// until [`Mmap::write_back`].
    cow: bool,
}

// SAFETY: the mapping is owned by this value alone; the pointer is only an address, and every
// access through the safe API is atomic, so moving or sharing the owner between threads
// cannot introduce a data race.
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` reads and writes only through relaxed atomics.
unsafe impl Sync for Mmap {}

/// An empty memfd, made once: the file a fenced range maps, so that touching it raises SIGBUS.
fn empty_file() -> Result<std::os::fd::BorrowedFd<'static>, rustix::io::Errno> {
    static EMPTY: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = EMPTY.get() {
        return Ok(std::os::fd::AsFd::as_fd(fd));
    }
    let fd = rustix::fs::memfd_create("devmap-fence", rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(std::os::fd::AsFd::as_fd(EMPTY.get_or_init(|| fd)))
}

/// How a window maps its backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Share {
    /// `MAP_SHARED`: hugetlb pages are reserved for the window when it is mapped.
    Shared,
    /// `MAP_SHARED | MAP_NORESERVE`: reserves nothing; a fault takes a page another mapping
    /// reserved for the same bytes, else one from the free pool, and fails without one.
    Unreserved,
    /// `MAP_PRIVATE`: writes stay in this process (copy-on-write).
    CopyOnWrite,
}

/// Where a mapping's first byte goes, relative to `align`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// On a multiple of `align`: for windows whose file offset is one too.
    Aligned,
    /// At an address congruent to the window's file offset modulo `align`, so that the pieces
    /// of the file that lie on multiples of `align` (where the page cache keeps its huge
    /// folios) lie on multiples of `align` in memory too, and a huge leaf can map each.
    LikeOffset,
}

/// Maps a window already checked by `Backing::check_window`: `offset` and `len` are multiples
/// of the page size, inside the backing, and `align` is at least the page size.
pub(super) fn map_shared(
    backing: &Backing,
    offset: u64,
    len: u64,
    align: Order,
    place: Place,
    share: Share,
) -> Result<Mmap, BackingError> {
    let too_large = BackingError::TooLarge { len };
    let len_us = usize::try_from(len).map_err(|_| too_large)?;
    let align_us = usize::try_from(align.bytes())
        .map_err(|_| BackingError::TooLarge { len: align.bytes() })?;
    let reserve_len = len_us
        .checked_add(align_us)
        .ok_or(BackingError::TooLarge { len })?;
    let fail = |source: std::io::Error| BackingError::MapShared {
        backing: backing.kind.to_string(),
        offset,
        len,
        hint: match backing.kind {
            BackingKind::Hugetlb(size) => memfd::pool_hint(size, len),
            _ => String::new(),
        },
        source,
    };

    // SAFETY: a fresh inaccessible anonymous mapping at an address the kernel picks cannot
    // alias any Rust object; it only holds the address range until the backing is placed.
    let base = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            reserve_len,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }
    .map_err(|e| fail(e.into()))?;
    let base_addr = base as usize;
    // The start's remainder modulo `align_us` (a power of two).
    let phase = match place {
        Place::Aligned => 0,
        // Below `align_us`, so it fits `usize`.
        Place::LikeOffset => ((backing.base + offset) % align.bytes()) as usize,
    };
    // The reservation is `align_us` longer than the window and the start lies less than
    // `align_us` past its beginning, so the start and the window both fit inside it.
    let start = base_addr + (phase + align_us - base_addr % align_us) % align_us;
    let head = start - base_addr;
    let tail = reserve_len - head - len_us;

    // SAFETY: `[start, start + len)` lies inside the reservation made above, which this
    // function owns and nothing references; `MAP_FIXED` replaces exactly that part of it.
    let placed = unsafe {
        rustix::mm::mmap(
            start as *mut std::ffi::c_void,
            len_us,
            ProtFlags::READ | ProtFlags::WRITE,
            match share {
                Share::Shared => MapFlags::SHARED | MapFlags::FIXED,
                Share::Unreserved => MapFlags::SHARED | MapFlags::FIXED | MapFlags::NORESERVE,
                Share::CopyOnWrite => MapFlags::PRIVATE | MapFlags::FIXED,
            },
            backing.fd(),
            backing.base + offset,
        )
    };
    if let Err(e) = placed {
        // SAFETY: the whole reservation is still ours and unreferenced.
        let _ = unsafe { rustix::mm::munmap(base, reserve_len) };
        return Err(fail(e.into()));
    }
    if head > 0 {
        // SAFETY: `[base, start)` is the unused head of our reservation.
        let _ = unsafe { rustix::mm::munmap(base, head) };
    }
    if tail > 0 {
        // SAFETY: `[start + len, base + reserve_len)` is the unused tail of our reservation.
        let _ = unsafe { rustix::mm::munmap((start + len_us) as *mut std::ffi::c_void, tail) };
    }
    let ptr = NonNull::new(start as *mut u8)
        .ok_or_else(|| fail(std::io::Error::other("mmap returned null")))?;
    Ok(Mmap {
        ptr,
        len: len_us,
        offset,
        page: backing.page,
        cow: share == Share::CopyOnWrite,
    })
}

impl Mmap {
    /// The first mapped byte: aligned as asked, valid for [`len`](Mmap::len) bytes
    /// while `self` lives.
    #[inline]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Mapped bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty windows are refused.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The backing offset the mapping starts at.
    #[inline]
    pub fn backing_offset(&self) -> u64 {
        self.offset
    }

    /// The backing's page size: the kernel maps this window with leaves of this size, and
    /// userfaultfd ranges in it must be multiples of it.
    #[inline]
    pub fn page_size(&self) -> Order {
        self.page
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        let bytes = self.bytes(offset, buf.len())?;
        for (dst, src) in buf.iter_mut().zip(bytes) {
            *dst = src.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `buf` to `offset`.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        let bytes = self.bytes(offset, buf.len())?;
        for (dst, &src) in bytes.iter().zip(buf) {
            dst.store(src, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Zaps the page-table entries of `[offset, offset + len)` (`MADV_DONTNEED`): the bytes
    /// stay in the backing, and the next touch faults them in again (through userfaultfd,
    /// where the mapping is registered). Poison markers placed by `UFFDIO_POISON` go too.
    /// Both must be multiples of the page size and lie inside the mapping.
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), BackingError> {
        let (start, n) = self.sub_range(offset, len)?;
        // SAFETY: `[start, start + n)` lies inside this shared mapping, which `self` owns.
        // `MADV_DONTNEED` on a shared file mapping only drops page-table entries: no Rust
        // reference sees different bytes afterwards (a later access reads the backing's same
        // bytes, or faults), and every access through this type is atomic.
        unsafe {
            rustix::mm::madvise(
                self.ptr.as_ptr().add(start).cast(),
                n,
                rustix::mm::Advice::LinuxDontNeed,
            )
        }
        .map_err(|e| self.fail(offset, len, "MADV_DONTNEED", e.into()))
    }

    /// Faults `[offset, offset + len)` in for writing (`MADV_POPULATE_WRITE`): a page missing
    /// from the backing is allocated there zeroed, as a write fault would allocate it, and a
    /// page that exists keeps its bytes. Fails (`EFAULT`, `ENOMEM`) where a fault would raise
    /// SIGBUS or run out of memory, e.g. with no huge page left for an unreserved hugetlb
    /// window. Both must be multiples of the page size inside the mapping.
    pub fn populate_write(&self, offset: u64, len: u64) -> Result<(), BackingError> {
        let (start, n) = self.sub_range(offset, len)?;
        // SAFETY: `[start, start + n)` lies inside this shared mapping, which `self` owns.
        // Populating changes no byte anyone can see: it allocates missing pages zero-filled
        // (what a read of the hole returns) and maps existing pages as they are.
        unsafe {
            rustix::mm::madvise(
                self.ptr.as_ptr().add(start).cast(),
                n,
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        }
        .map_err(|e| self.fail(offset, len, "MADV_POPULATE_WRITE", e.into()))
    }

    /// Tells the kernel how the pages of `[offset, offset + len)` of a shared file mapping,
    /// about to be written for the first time, should be brought in (both multiples of the
    /// page size, inside the mapping):
    ///
    /// * [`PageHint::Huge`] (`MADV_HUGEPAGE`): a fault reads the file ahead in 2 MiB folios
    ///   and maps each with one huge leaf where the mapping lies like the file
    ///   ([`Backing::map_shared_like_offset`]): one fault, one `page_mkwrite` and one dirtying
    ///   per 2 MiB, for arrays written front to back.
    /// * [`PageHint::Small`] (`MADV_NOHUGEPAGE`, `MADV_RANDOM`): no read-ahead, so a fault
    ///   brings in one 4 KiB folio. A file system that caches large folios would otherwise
    ///   map a large folio one 4 KiB leaf at a time, and run `page_mkwrite` and the dirtying
    ///   over every block of the whole folio at each of those faults.
    /// * [`PageHint::Base`]: the kernel's default.
    ///
    /// Advice only changes how later faults are served, never the bytes; a kernel without
    /// THP refuses `MADV_HUGEPAGE`, which is harmless and ignored.
    pub fn advise(&self, offset: u64, len: u64, hint: PageHint) -> Result<(), BackingError> {
        use rustix::mm::Advice;
        let (start, n) = self.sub_range(offset, len)?;
        let advice: &[Advice] = match hint {
            PageHint::Huge => &[Advice::LinuxHugepage],
            PageHint::Small => &[Advice::LinuxNoHugepage, Advice::Random],
            PageHint::Base => &[],
        };
        for &a in advice {
            // SAFETY: `[start, start + n)` lies inside this mapping, which `self` owns. Huge
            // page and read-ahead advice change how later faults are served, not the bytes any
            // reference sees.
            let r = unsafe { rustix::mm::madvise(self.ptr.as_ptr().add(start).cast(), n, a) };
            match r {
                Ok(()) => {}
                Err(rustix::io::Errno::INVAL) if a == Advice::LinuxHugepage => {}
                Err(e) => return Err(self.fail(offset, len, "madvise", e.into())),
            }
        }
        Ok(())
    }

    /// Writes the mapping's modified pages back to `backing` (the one it maps) and waits for
    /// them to be stored: what a file's storage must hold before a caller records that the
    /// bytes are complete. A shared mapping is `msync`ed; a copy-on-write one has each page it
    /// copied (found in this process's page map) written to the backing with `pwrite`, then
    /// the backing's data synced. Returns the bytes written by `pwrite` (0 when shared).
    pub fn write_back(&self, backing: &Backing) -> Result<u64, BackingError> {
        if !self.cow {
            self.flush()?;
            return Ok(0);
        }
        let io = |what, e: std::io::Error| self.fail(0, self.len as u64, what, e);
        let copied = private_pages(self.ptr.as_ptr(), self.len)?;
        let mut buf = Vec::new();
        let mut written = 0;
        for (first, n) in copied {
            let (off, len) = (first * PAGE_SIZE, n * PAGE_SIZE);
            buf.resize(len as usize, 0);
            self.read(off, &mut buf)?;
            rustix::io::pwrite(backing.fd(), &buf, backing.base + self.offset + off)
                .map_err(|e| io("pwrite", e.into()))
                .and_then(|w| {
                    if w as u64 == len {
                        Ok(())
                    } else {
                        Err(io("pwrite", std::io::Error::other("short write")))
                    }
                })?;
            written += len;
        }
        rustix::fs::fdatasync(backing.fd()).map_err(|e| io("fdatasync", e.into()))?;
        Ok(written)
    }

    /// Writes a shared mapping's modified pages back to the backing and waits for them
    /// (`msync` with `MS_SYNC`).
    pub fn flush(&self) -> Result<(), BackingError> {
        // SAFETY: `[ptr, ptr + len)` is exactly this mapping, which `self` owns; `msync` reads
        // the page tables and writes pages back, changing no byte any reference can see.
        unsafe {
            rustix::mm::msync(
                self.ptr.as_ptr().cast(),
                self.len,
                rustix::mm::MsyncFlags::SYNC,
            )
        }
        .map_err(|e| self.fail(0, self.len as u64, "msync", e.into()))
    }

    /// Fences `[offset, offset + len)` off: replaces it, in place, with a shared mapping of an
    /// empty file, so that every access there raises SIGBUS (the bytes lie beyond that file's
    /// end) while the backing keeps its bytes. This is how a memory error is made felt where
    /// userfaultfd cannot catch touches (files, `/dev/dax`). [`unfence`](Self::unfence) maps
    /// the backing back. Both must be multiples of the page size inside the mapping.
    pub fn fence(&self, offset: u64, len: u64) -> Result<(), BackingError> {
        let (start, n) = self.sub_range(offset, len)?;
        let empty = empty_file().map_err(|e| self.fail(offset, len, "empty memfd", e.into()))?;
        // SAFETY: `[start, start + n)` lies inside this mapping, which `self` owns; MAP_FIXED
        // replaces exactly that part of it. No Rust reference holds its bytes across this call
        // (every access through this type is a bounds-checked atomic copy), and the new
        // mapping is never read as Rust data: an access there raises SIGBUS.
        unsafe {
            rustix::mm::mmap(
                self.ptr.as_ptr().add(start).cast(),
                n,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                empty,
                0,
            )
        }
        .map(|_| ())
        .map_err(|e| self.fail(offset, len, "MAP_FIXED of an empty file", e.into()))
    }

    /// Maps `backing`'s bytes back over `[offset, offset + len)` of the mapping (the window's
    /// own bytes, at its backing offset), ending a [`fence`](Self::fence). `backing` must be
    /// the one this mapping was made from.
    pub fn unfence(&self, backing: &Backing, offset: u64, len: u64) -> Result<(), BackingError> {
        let (start, n) = self.sub_range(offset, len)?;
        // SAFETY: as in `fence`: MAP_FIXED over part of our own mapping, with the bytes that
        // were there before the fence (the same backing at the same offset).
        unsafe {
            rustix::mm::mmap(
                self.ptr.as_ptr().add(start).cast(),
                n,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                backing.fd(),
                backing.base + self.offset + offset,
            )
        }
        .map(|_| ())
        .map_err(|e| self.fail(offset, len, "MAP_FIXED of the backing", e.into()))
    }

    /// `[offset, offset + len)` as (start, length) in bytes, if it is page-aligned and inside.
    pub(super) fn sub_range(&self, offset: u64, len: u64) -> Result<(usize, usize), BackingError> {
        let out = || BackingError::OutOfRange {
            offset,
            len,
            end: self.len as u64,
        };
        let page = self.page.bytes();
        if !offset.is_multiple_of(page) || !len.is_multiple_of(page) || len == 0 {
            return Err(out());
        }
        let start = usize::try_from(offset).map_err(|_| out())?;
        let n = usize::try_from(len).map_err(|_| out())?;
        match start.checked_add(n) {
            Some(end) if end <= self.len => Ok((start, n)),
            _ => Err(out()),
        }
    }

    pub(super) fn fail(
        &self,
        offset: u64,
        len: u64,
        what: &str,
        e: std::io::Error,
    ) -> BackingError {
        BackingError::MapShared {
            backing: "mapping".into(),
            offset,
            len,
            hint: format!(" ({what})"),
            source: e,
        }
    }

    /// `[offset, offset + n)` of the mapping as atomics, if it lies inside.
    fn bytes(&self, offset: u64, n: usize) -> Result<&[AtomicU8], BackingError> {
        let out = || BackingError::OutOfRange {
            offset,
            len: n as u64,
            end: self.len as u64,
        };
        let start = usize::try_from(offset).map_err(|_| out())?;
        match start.checked_add(n) {
            Some(end) if end <= self.len => {}
            _ => return Err(out()),
        }
        // SAFETY: `[start, start + n)` is inside the mapping, which is readable, writable and
        // lives as long as `&self`. `AtomicU8` has the layout of `u8` and no alignment need;
        // every access through this type is atomic, so viewing the bytes as atomics cannot
        // race with a non-atomic access made through the safe API.
        Ok(unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(start).cast::<AtomicU8>(), n)
        })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the window placed by `map_shared`, and every
        // reference into it borrows `self`, so none outlives this call.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
