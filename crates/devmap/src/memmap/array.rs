//! Typed arrays of atomics over a [`Reservation`] (host memory, zero-filled) or a piece of a
//! [`MemmapRoom`] (the device's own bytes, holding whatever was last written there): the
//! descriptor arrays and directories every layout is built from.
//!
//! This is the only `unsafe` in the memmap layer: turning a mapping into a `&[T]`. It is sound
//! because every element type is made of integer atomics (so shared references permit mutation
//! through `&T`, and every bit pattern is a valid value). Everything above indexes ordinary
//! slices, so bounds checks come for free.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::room::MemmapRoom;
use crate::backing::{BackingError, Mmap, PageHint, Reservation, Sharing, resident_in};
use crate::desc::Page;

mod sealed {
    pub trait Sealed {}
}

/// Element types that may live in a [`ZeroedArray`].
///
/// # Safety
///
/// Implementers must be valid for every bit pattern (a room holds whatever a previous process
/// wrote, or garbage after a crash) and must only be mutated through interior mutability that
/// is sound to use from `&T` on any thread (atomics).
pub unsafe trait ZeroValid: sealed::Sealed + Sync + Send {}

impl sealed::Sealed for Page {}
// SAFETY: `Page` is a `repr(C)` struct of integer atomics with no padding; every bit pattern
// is a valid value of each and they are mutated only through atomic operations on `&self`.
unsafe impl ZeroValid for Page {}

impl sealed::Sealed for AtomicU64 {}
// SAFETY: every bit pattern is a valid `AtomicU64`; it is mutated only atomically.
unsafe impl ZeroValid for AtomicU64 {}

/// Where an array's bytes live.
#[derive(Debug)]
enum Mem {
    /// Host memory, zero-filled at creation.
    Host(Reservation),
    /// `len` bytes at `offset` of a device's memmap room (the mapping kept alive here).
    Room {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
}

impl Mem {
    fn ptr(&self) -> NonNull<u8> {
        match self {
            Mem::Host(r) => r.as_ptr(),
            // In bounds: `MemmapRoom::take` checked `offset + len` against the mapping.
            Mem::Room { map, offset, .. } => {
                // SAFETY: `offset` lies inside the mapping (checked by `MemmapRoom::take`), so
                // the sum stays inside one allocation and is non-null.
                unsafe { NonNull::new_unchecked(map.as_ptr().as_ptr().add(*offset)) }
            }
        }
    }
}

/// `len` elements of `T`: all zero at creation in host memory; in a room, whatever the room
/// holds (zero where nothing was written since its hole was punched).
#[derive(Debug)]
pub(crate) struct ZeroedArray<T: ZeroValid> {
    mem: Mem,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: ZeroValid> ZeroedArray<T> {
    /// Reserves room for `len` elements, in host memory mapped with `hint`, or in `room`'s
    /// next piece; nothing is resident until touched.
    pub(crate) fn new(
        len: u64,
        hint: PageHint,
        room: Option<&MemmapRoom>,
    ) -> Result<Self, BackingError> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>() as u64)
            .ok_or(BackingError::TooLarge { len })?;
        let len = usize::try_from(len).map_err(|_| BackingError::TooLarge { len })?;
        let mem = match room {
            None => Mem::Host(Reservation::new(bytes.max(1), hint)?),
            Some(room) => {
                let (map, offset) = room.take(bytes, hint)?;
                Mem::Room {
                    map,
                    offset,
                    // Page rounded as `take` rounded it; fits `usize`, as `take` checked.
                    len: bytes.max(1).next_multiple_of(crate::addr::PAGE_SIZE) as usize,
                }
            }
        };
        Ok(Self {
            mem,
            len,
            _t: std::marker::PhantomData,
        })
    }

    /// The elements.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        // 1. The reservation, or the room piece, is page aligned, so aligned for `T`
        //    (alignment ≤ 64), and holds at least `len * size_of::<T>()` bytes (checked in
        //    `new`), mapped for as long as `self` holds it.
        // 2. `T: ZeroValid` is valid for any bytes, so every element is valid.
        // 3. Elements are only ever mutated through atomics on `&T`, never through `&mut`, so
        //    handing out shared slices for the lifetime of `&self` breaks no aliasing rule.
        //    Another process mapping the same room bytes writes them only atomically too.
        // SAFETY: 1-3 above.
        unsafe { std::slice::from_raw_parts(self.mem.ptr().as_ptr().cast::<T>(), self.len) }
    }

    /// Bytes of the array written so far and held in memory
    /// ([`Reservation::resident_bytes`]); in a room, the pages this process has mapped.
    pub(crate) fn resident_bytes(&self) -> Result<u64, BackingError> {
        match &self.mem {
            Mem::Host(r) => r.resident_bytes(),
            Mem::Room { len, .. } => resident_in(self.mem.ptr().as_ptr(), *len, Sharing::Shared),
        }
    }

    /// Bytes of address space reserved.
    pub(crate) fn reserved_bytes(&self) -> usize {
        match &self.mem {
            Mem::Host(r) => r.len(),
            Mem::Room { len, .. } => *len,
        }
    }

    /// Whether the array lives in a device's memmap room.
    pub(crate) fn on_device(&self) -> bool {
        matches!(self.mem, Mem::Room { .. })
    }
}
