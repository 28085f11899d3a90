//! The anonymous reservation: a private `MAP_NORESERVE` mapping that holds descriptor arrays,
//! directories and metadata-only emulated device memory. It costs address space only; pages
//! become resident on first write, which is how every layout's accounted `metadata_bytes` is
//! checked against memory actually held: the process's RSS in `devmap enable`, and each
//! mapping's own pages ([`Reservation::resident_bytes`]) in the tests.

use std::ptr::NonNull;

use super::BackingError;
use crate::addr::PAGE_SIZE;

/// The kernel's per-page map of this process: one 64-bit entry per virtual page.
pub(super) const PAGEMAP: &str = "/proc/self/pagemap";
/// Pagemap entry bits: a page is in RAM (63), swapped out (62), mapped by this process alone
/// (56). A read of untouched anonymous memory maps the shared zero page, which is present but
/// not exclusive and, like the process's RSS, must not count.
const PAGEMAP_PRESENT: u64 = 1 << 63;
const PAGEMAP_SWAPPED: u64 = 1 << 62;
const PAGEMAP_EXCLUSIVE: u64 = 1 << 56;

/// How a reservation should be backed once touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageHint {
    /// Ask for transparent huge pages (`MADV_HUGEPAGE`): fewer first-touch faults for dense
    /// arrays that are written from start to end.
    #[default]
    Huge,
    /// Leave the kernel's default (base pages under `madvise` THP mode): for sparse structures
    /// where a huge page would make RSS larger than what is used.
    Base,
    /// Refuse huge pages (`MADV_NOHUGEPAGE`) even under THP `always`: for arrays first touched
    /// at random places by latency-sensitive threads, where zeroing a whole 2 MiB page on one
    /// touch costs more than the touch itself.
    Small,
}

/// A private anonymous `MAP_NORESERVE` mapping, zero-filled, unmapped on drop.
#[derive(Debug)]
pub struct Reservation {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the reservation owns its mapping exclusively; the raw pointer is only an address.
// Shared access hands out `&[u8]`/atomics only through `memmap::array`, which upholds the
// aliasing rules itself.
unsafe impl Send for Reservation {}
// SAFETY: `&Reservation` only gives out the base pointer and length; no interior mutation
// happens through the reservation itself.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Reserves `len` bytes (rounded up to whole pages) of zeroed anonymous memory.
    pub fn new(len: u64, hint: PageHint) -> Result<Self, BackingError> {
        if len == 0 {
            return Err(BackingError::Empty);
        }
        let rounded = len
            .checked_next_multiple_of(PAGE_SIZE)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(BackingError::TooLarge { len })?;
        // SAFETY: a fresh anonymous private mapping with a null hint cannot alias any existing
        // Rust object; the kernel picks the address.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                rounded,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::NORESERVE,
            )
        }
        .map_err(|e| BackingError::Map {
            len: rounded,
            source: e.into(),
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(BackingError::Map {
            len: rounded,
            source: std::io::Error::other("mmap returned null"),
        })?;
        let r = Self { ptr, len: rounded };
        let advice = match hint {
            PageHint::Huge => Some(rustix::mm::Advice::LinuxHugepage),
            PageHint::Small => Some(rustix::mm::Advice::LinuxNoHugepage),
            PageHint::Base => None,
        };
        if let Some(advice) = advice {
            // SAFETY: the range is exactly the mapping we own. (NO)HUGEPAGE advice only changes
            // how future faults are served, never the contents; failure (no THP) is harmless.
            let _ = unsafe { rustix::mm::madvise(r.ptr.as_ptr().cast(), r.len, advice) };
        }
        Ok(r)
    }

    /// Length in bytes (a multiple of the page size).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty reservations are refused at construction.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The base address. Valid for `len()` bytes while `self` lives.
    #[inline]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Bytes of the mapping that have been written and are held by this process (in RAM or in
    /// swap), counted page by page from `/proc/self/pagemap`: what the mapping adds to the
    /// process's RSS, but exact for one mapping whatever other threads allocate meanwhile. A
    /// huge page counts as the 4 KiB pages it holds; pages only read (the zero page) do not
    /// count.
    pub fn resident_bytes(&self) -> Result<u64, BackingError> {
        resident_in(self.ptr.as_ptr(), self.len, Sharing::Private)
    }

    /// The whole mapping as a mutable byte slice (exclusive access through `&mut self`).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` readable, writable bytes owned by `self`; `&mut self`
        // guarantees no other reference into it exists for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `new`, and every
        // reference into it borrows `self`, so none outlives this call.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// What a page of a range must be to count as held by [`resident_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Private anonymous memory: present and mapped by this process alone, or swapped (the
    /// shared zero page a read maps does not count).
    Private,
    /// A shared file mapping: present in this process's page tables.
    Shared,
}

/// Bytes of `[ptr, ptr + len)` (page aligned) held in memory, read from this process's page
/// map one entry per page.
pub(crate) fn resident_in(
    ptr: *const u8,
    len: usize,
    sharing: Sharing,
) -> Result<u64, BackingError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |source| BackingError::Pagemap { source };
    let mut map = std::fs::File::open(PAGEMAP).map_err(io)?;
    let first_page = ptr as u64 / PAGE_SIZE;
    map.seek(SeekFrom::Start(first_page * 8)).map_err(io)?;
    let mut left = len as u64 / PAGE_SIZE;
    let mut buf = vec![0u8; 8 * 4096];
    let mut held = 0;
    let counts = |e: u64| match sharing {
        Sharing::Private => {
            e & PAGEMAP_SWAPPED != 0
                || e & (PAGEMAP_PRESENT | PAGEMAP_EXCLUSIVE) == PAGEMAP_PRESENT | PAGEMAP_EXCLUSIVE
        }
        Sharing::Shared => e & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED) != 0,
    };
    while left > 0 {
        let n = left.min(4096) as usize;
        map.read_exact(&mut buf[..n * 8]).map_err(io)?;
        held += buf[..n * 8]
            .chunks_exact(8)
            .map(|e| u64::from_ne_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]))
            .filter(|&e| counts(e))
            .count() as u64;
        left -= n as u64;
    }
    Ok(held * PAGE_SIZE)
}

/// The pages of `[ptr, ptr + len)` (page aligned) that a copy-on-write file mapping has
/// copied: present or swapped, and not file pages (`PM_FILE`, bit 61, clear). Runs of
/// `(first page, pages)`, in order.
pub(crate) fn private_pages(ptr: *const u8, len: usize) -> Result<Vec<(u64, u64)>, BackingError> {
    use std::io::{Read, Seek, SeekFrom};
    const PAGEMAP_FILE: u64 = 1 << 61;
    let io = |source| BackingError::Pagemap { source };
    let mut map = std::fs::File::open(PAGEMAP).map_err(io)?;
    map.seek(SeekFrom::Start(ptr as u64 / PAGE_SIZE * 8))
        .map_err(io)?;
    let pages = len as u64 / PAGE_SIZE;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; 8 * 4096];
    let mut page = 0;
    while page < pages {
        let n = (pages - page).min(4096) as usize;
        map.read_exact(&mut buf[..n * 8]).map_err(io)?;
        for e in buf[..n * 8].chunks_exact(8) {
            let e = u64::from_ne_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            if e & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED) != 0 && e & PAGEMAP_FILE == 0 {
                match runs.last_mut() {
                    Some((first, k)) if *first + *k == page => *k += 1,
                    _ => runs.push((page, 1)),
                }
            }
            page += 1;
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_is_zeroed_and_writable() {
        let mut r = Reservation::new(10_000, PageHint::Base).expect("reserve");
        assert_eq!(r.len(), 12_288, "rounded up to whole pages");
        let s = r.as_mut_slice();
        assert!(s.iter().all(|&b| b == 0));
        s.fill(0xa5);
        assert!(s.iter().all(|&b| b == 0xa5));
    }

    #[test]
    fn resident_bytes_counts_the_pages_touched() {
        let mut r = Reservation::new(64 * PAGE_SIZE, PageHint::Base).expect("reserve");
        assert_eq!(r.resident_bytes().expect("pagemap"), 0);
        std::hint::black_box(r.as_mut_slice()[40 * PAGE_SIZE as usize]);
        assert_eq!(
            r.resident_bytes().expect("pagemap"),
            0,
            "a read maps the zero page"
        );
        let s = r.as_mut_slice();
        for page in [0, 1, 17, 63] {
            s[page * PAGE_SIZE as usize + 5] = 1;
        }
        assert_eq!(r.resident_bytes().expect("pagemap"), 4 * PAGE_SIZE);
    }

    #[test]
    fn empty_and_huge_reservations_fail_cleanly() {
        assert!(matches!(
            Reservation::new(0, PageHint::Base),
            Err(BackingError::Empty)
        ));
        assert!(Reservation::new(u64::MAX, PageHint::Base).is_err());
    }
}
