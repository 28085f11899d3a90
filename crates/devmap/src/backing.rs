//! Memory sources: anonymous `MAP_NORESERVE` reservations that hold descriptor arrays,
//! directories and emulated device memory.
//!
//! This is one of the two places that hold `unsafe` (the other is `memmap::array`): the only
//! `mmap`/`munmap`/`madvise` calls in the crate are here, wrapped in [`Reservation`], a safe owner
//! of one private anonymous mapping. A reservation costs address space only; pages become
//! resident on first touch, which is how every layout's `metadata_bytes()` is checked against
//! measured RSS. File, memfd and device-dax backings join this module with the namespace work.

use std::ptr::NonNull;

use crate::addr::PAGE_SIZE;

/// Errors from reserving memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackingError {
    /// `mmap` refused the reservation.
    #[error("cannot reserve {len} bytes of anonymous memory")]
    Map {
        /// Bytes asked for.
        len: usize,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A zero-length reservation.
    #[error("a reservation must not be empty")]
    Empty,
    /// A length that does not fit the address space.
    #[error("{len} bytes does not fit in the address space")]
    TooLarge {
        /// Bytes asked for.
        len: u64,
    },
}

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
    fn empty_and_huge_reservations_fail_cleanly() {
        assert!(matches!(
            Reservation::new(0, PageHint::Base),
            Err(BackingError::Empty)
        ));
        assert!(Reservation::new(u64::MAX, PageHint::Base).is_err());
    }
}
