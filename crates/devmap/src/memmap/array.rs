//! Typed, zero-initialised arrays of atomics over a [`Reservation`]: the descriptor arrays and
//! directories every layout is built from.
//!
//! This is the only `unsafe` in the memmap layer: turning a zero-filled anonymous mapping into a
//! `&[T]`. It is sound because every element type is made of atomics (so shared references
//! permit mutation through `&T`) and all-zero bytes are a valid value of each. Everything above
//! indexes ordinary slices, so bounds checks come for free.

use std::sync::atomic::AtomicU64;

use crate::backing::{BackingError, PageHint, Reservation};
use crate::desc::Page;

mod sealed {
    pub trait Sealed {}
}

/// Element types that may live in a [`ZeroedArray`].
///
/// # Safety
///
/// Implementers must be valid when every byte is zero and must only be mutated through
/// interior mutability that is sound to use from `&T` on any thread (atomics).
pub unsafe trait ZeroValid: sealed::Sealed + Sync + Send {}

impl sealed::Sealed for Page {}
// SAFETY: `Page` is a `repr(C)` struct of integer atomics; zero is a valid value of each and
// they are mutated only through atomic operations on `&self`.
unsafe impl ZeroValid for Page {}

impl sealed::Sealed for AtomicU64 {}
// SAFETY: an all-zero `AtomicU64` is the value 0; it is mutated only atomically.
unsafe impl ZeroValid for AtomicU64 {}

/// `len` elements of `T`, all zero at creation, backed by an anonymous reservation.
#[derive(Debug)]
pub(crate) struct ZeroedArray<T: ZeroValid> {
    mem: Reservation,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: ZeroValid> ZeroedArray<T> {
    /// Reserves room for `len` elements; nothing is resident until touched.
    pub(crate) fn new(len: u64, hint: PageHint) -> Result<Self, BackingError> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>() as u64)
            .ok_or(BackingError::TooLarge { len })?;
        let len = usize::try_from(len).map_err(|_| BackingError::TooLarge { len })?;
        let mem = Reservation::new(bytes.max(1), hint)?;
        Ok(Self {
            mem,
            len,
            _t: std::marker::PhantomData,
        })
    }

    /// The elements.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        // 1. The reservation is page aligned, so aligned for `T` (alignment ≤ 64), and holds at
        //    least `len * size_of::<T>()` bytes (checked in `new`).
        // 2. It was zero-filled by the kernel and `T: ZeroValid`, so every element is valid.
        // 3. Elements are only ever mutated through atomics on `&T`, never through `&mut`, so
        //    handing out shared slices for the lifetime of `&self` breaks no aliasing rule.
        // SAFETY: 1-3 above.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr().as_ptr().cast::<T>(), self.len) }
    }

    /// Bytes of the array written so far and held in memory
    /// ([`Reservation::resident_bytes`]).
    pub(crate) fn resident_bytes(&self) -> Result<u64, BackingError> {
        self.mem.resident_bytes()
    }

    /// Bytes of address space reserved.
    pub(crate) fn reserved_bytes(&self) -> usize {
        self.mem.len()
    }
}
