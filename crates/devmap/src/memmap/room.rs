//! [`MemmapRoom`]: the bytes of a device set aside for its own memmap (`--map dev`, the
//! kernel's altmap), mapped shared, from which a store's arrays are carved in order. A memmap
//! placed there outlives the process: it is what a warm enable adopts.
//!
//! The room is a bump allocator over one [`Mmap`]: each array takes the next
//! page-aligned piece, so the same layout and geometry always put the same array at the same
//! offset, which is what lets a later process find its descriptors again.
//!
//! A room being initialised is mapped shared: init writes straight to the backing, each array
//! into a piece zeroed with its blocks allocated as the array is carved, and the rest of the
//! room is given back once the store is built ([`MemmapRoom::release_rest`]). A room
//! being adopted is mapped copy-on-write: the descriptors this process changes are its own
//! copies until [`MemmapRoom::write_back`], so a crash, even a power loss, leaves the backing
//! holding the memmap exactly as the last clean disable wrote it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::addr::{Order, PAGE_SIZE};
use crate::backing::{Backing, BackingError, Mmap, PageHint};

/// A shared mapping of a device's memmap room, handing out page-aligned pieces in order.
#[derive(Debug)]
pub(crate) struct MemmapRoom {
    backing: Backing,
    map: Arc<Mmap>,
    /// Mapped shared, to be initialised (not adopted).
    fill: bool,
    /// Bytes handed out so far (a multiple of the page size).
    next: AtomicUsize,
}

impl MemmapRoom {
    /// A room over all of `backing`, mapped shared (to be initialised) or copy-on-write (to
    /// be adopted).
    pub(crate) fn new(backing: Backing, copy_on_write: bool) -> Result<MemmapRoom, BackingError> {
        let len = backing.len();
        let map = if copy_on_write {
            backing.map_copy_on_write(0, len)?
        } else {
            // The room starts 8 KiB past a namespace's start, off 2 MiB in the file: placed
            // like its file offset, the huge folios of the page cache can be mapped whole.
            backing.map_shared_like_offset(0, len, Order::PMD)?
        };
        Ok(MemmapRoom {
            backing,
            map: Arc::new(map),
            fill: !copy_on_write,
            next: AtomicUsize::new(0),
        })
    }

    /// Stores what this process wrote in the room in its backing and waits for it
    /// ([`Mmap::write_back`]); returns the bytes copied back from a copy-on-write
    /// room.
    pub(crate) fn write_back(&self) -> Result<u64, BackingError> {
        self.map.write_back(&self.backing)
    }

    /// Punches the hole of what no array took of a room being initialised (nothing for an
    /// adopted room), once its store is built: the rest reads zero, as the arrays' pieces do
    /// before init writes them, and holds no storage. For a Heads memmap that is most of the
    /// room.
    pub(crate) fn release_rest(&self) -> Result<(), BackingError> {
        // Relaxed: the caller built the store, and took every piece, itself.
        let at = self.next.load(Ordering::Relaxed) as u64;
        let len = self.map.len() as u64;
        if !self.fill || at >= len {
            return Ok(());
        }
        self.backing.punch_hole(at, len - at)
    }

    /// The next `bytes` of the room, rounded up to whole pages: the mapping (kept alive by the
    /// caller's clone) and the piece's offset in it. In a room being initialised the piece is
    /// made to read zero with its storage allocated ([`Backing::zero`]) and advised as `hint`
    /// asks ([`Mmap::advise`]), so that init faults it in a huge folio at a time (or a page at
    /// a time for random first touches) without allocating a block at each fault.
    pub(crate) fn take(
        &self,
        bytes: u64,
        hint: PageHint,
    ) -> Result<(Arc<Mmap>, usize), BackingError> {
        let full = BackingError::TooLarge { len: bytes };
        let rounded = bytes
            .max(1)
            .checked_next_multiple_of(PAGE_SIZE)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(full)?;
        // Relaxed: the counter only partitions the room; nothing else is published by it.
        let at = self.next.fetch_add(rounded, Ordering::Relaxed);
        match at.checked_add(rounded) {
            Some(end) if end <= self.map.len() => {
                if self.fill {
                    // A room to initialise: the piece reads zero, with its blocks allocated
                    // before init writes it, and is faulted in as its array is written. On
                    // an error the piece stays taken: the store, and the enable, fail.
                    self.backing.zero(at as u64, rounded as u64)?;
                    self.map.advise(at as u64, rounded as u64, hint)?;
                }
                Ok((Arc::clone(&self.map), at))
            }
            _ => {
                self.next.fetch_sub(rounded, Ordering::Relaxed);
                Err(BackingError::RoomFull {
                    need: rounded as u64,
                    left: self.map.len().saturating_sub(at) as u64,
                    room: self.map.len() as u64,
                })
            }
        }
    }
}
