//! The device-dax front end (`drivers/dax/device.c`): a [`DaxDevice`] is a generic pgmap over
//! the bytes of a [`Backing`](crate::backing::Backing), with compound folios of the device's
//! `align` (4 KiB, 2 MiB or 1 GiB: the pgmap's `vmemmap_shift`), static (one pfn range) or
//! dynamic (several). [`DaxDevice::mmap`] applies the kernel's `check_vma` rules and maps a
//! window of the backing shared; the resulting [`DaxMapping`] is the VMA. Its fault path
//! follows `__dev_dax_{pte,pmd,pud}_fault`: it syncs the leaf's descriptors, sets the folio's
//! mapping and index (`dax_set_mapping`), takes the mapping's reference and mapcount, and then
//! maps the leaf. The device keeps a registry of its mappings and their faulted leaves, which
//! answers the reverse map ([`DaxDevice::rmap`]). A pin by user address exports the
//! contiguous extents a caller registers with an IOMMU or an RDMA NIC
//! ([`Pinned::extents`](crate::gup::Pinned)), and the device tells what is pinned on it
//! ([`DaxDevice::pin_stats`]).
//!
//! Who drives faults depends on the backing. Where it supports userfaultfd (memfd: MISSING and
//! MINOR; hugetlb: MINOR), every mapping is registered with the device's userfaultfd and a
//! handler thread per device runs each first touch through the fault path, mapping the whole
//! leaf with one `UFFDIO_CONTINUE`; a touch once teardown has begun gets SIGBUS. Where it does
//! not (regular files, `/dev/dax`, or [`Faults::Explicit`]), the kernel maps the bytes on the
//! first touch by itself, and [`DaxDevice::mmap`] runs the fault path for every leaf of the
//! new mapping, metadata only ([`DaxOptions::populate_on_map`], the default), so that the
//! reverse map and `memory_failure` know every leaf a touch can reach. With that turned off
//! the fault path runs only from [`DaxMapping::populate`], [`DaxMapping::fault`] and the pin
//! path ([`DaxMapping::pin_user_pages`]), and a leaf touched without them has bytes but no
//! metadata.
//!
//! ```
//! use devmap::backing::Backing;
//! use devmap::dax::{DaxDevice, DaxOptions};
//! use devmap::{DeviceSpace, GupFlags, Order};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let space = DeviceSpace::new();
//! let dev = DaxDevice::with_options(&space, Backing::memfd(1 << 30)?, DaxOptions::new(Order::PMD))?;
//! let m = dev.mmap(0, 1 << 30, true)?; // MAP_SHARED, 2 MiB aligned, registered
//! m.bytes().write(4096, b"hello")?; // caught: the whole 2 MiB leaf is faulted in
//! let pins = m.pin_user_folios(m.addr(), 1024, GupFlags::WRITE)?; // faults the second leaf
//! let got: Vec<(usize, u64)> = pins.with_addresses().map(|(a, f)| (a, f.range().len())).collect();
//! assert_eq!(got, [(m.addr(), 512), (m.addr() + (2 << 20), 512)]);
//! assert_eq!(dev.fault_stats().leaves_mapped, 2);
//! # drop(pins);
//! # drop(m);
//! # Ok(())
//! # }
//! ```

mod client;
#[cfg(all(test, not(loom)))]
mod client_tests;
mod device;
mod device_core;
#[cfg(all(test, not(loom)))]
mod device_tests;
mod entries;
mod fault_around;
#[cfg(all(test, not(loom)))]
mod fault_around_tests;
mod gate;
mod latency;
mod leaves;
mod mapping;
mod options;
pub(crate) mod pin_view;
mod pinstats;
mod poison;
mod ranges;
mod registry;
mod revoke;
mod spread;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod uffd_tests;
mod vma;
pub(crate) mod zero_ahead;
#[cfg(all(test, not(loom)))]
mod zero_ahead_tests;

pub use self::client::{ClientFaults, ClientMapping, ClientWindow, HandlerShare};
pub use self::device::DaxDevice;
pub(crate) use self::device::Placement;
pub use self::device_core::{FaultStats, Faulted};
pub use self::mapping::DaxMapping;
pub use self::options::{DaxOptions, Faults};
pub use self::pin_view::{FastPins, PinLedger, PinView};
pub use self::pinstats::PinStats;
pub use self::poison::{Granularity, OwnerFn, PoisonNotice};
pub use self::ranges::{is_devmap_address, overflowed as address_table_overflowed};
#[cfg(test)]
pub(crate) use self::registry::hold_registry;
pub(crate) use self::registry::locate;
pub(crate) use self::revoke::{Recipients, Revocation, revoke};
pub use self::vma::Populated;

use std::fmt;

use crate::addr::{Order, PAGE_SIZE, Pfn};
use crate::backing::{BackingError, Bytes, UffdError};
use crate::folio::FolioError;
use crate::gup::GupError;
use crate::pgmap::PgmapError;

/// Errors from creating, mapping, faulting and tearing down device-dax devices.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaxError {
    /// A device cannot be placed as asked.
    #[error("cannot place the device: {why}")]
    Placement {
        /// What is wrong.
        why: &'static str,
    },
    /// The backing cannot be cut into leaves of the device align.
    #[error(
        "the backing's length {} is not a multiple of the device align {}: use a backing of {}",
        Bytes(*len), Bytes(align.bytes()), suggest(*len, align.bytes())
    )]
    BackingUnaligned {
        /// The backing's length in bytes.
        len: u64,
        /// The device align.
        align: Order,
    },
    /// The backing's pages are larger than a leaf: it cannot serve faults of the align.
    #[error(
        "the backing's pages are {}, larger than the device align {}: use an align of at least {}",
        Bytes(page.bytes()), Bytes(align.bytes()), Bytes(page.bytes())
    )]
    PageTooLarge {
        /// The backing's page size.
        page: Order,
        /// The device align asked for.
        align: Order,
    },
    /// `check_vma`: a private mapping of device-dax memory (`-EINVAL` in the kernel).
    #[error("device-dax mappings must be shared (MAP_SHARED)")]
    NotShared,
    /// `check_vma`: an offset or length that is not a multiple of the device align.
    #[error(
        "{what} {} is not a multiple of the device align {}: use {}",
        Bytes(*value), Bytes(align.bytes()), suggest(*value, align.bytes())
    )]
    Unaligned {
        /// `offset` or `length`.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The device align.
        align: Order,
    },
    /// A mapping of no bytes.
    #[error("a device-dax mapping must not be empty: map at least the device align")]
    Empty,
    /// A mapping or fault outside the device.
    #[error(
        "{} at offset {} runs past the end of the device ({})",
        Bytes(*len), Bytes(*offset), Bytes(*size)
    )]
    OutOfRange {
        /// Offset into the device.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// The device's size.
        size: u64,
    },
    /// A fault smaller than the device align: the kernel answers `VM_FAULT_SIGBUS`.
    #[error(
        "a {} fault is smaller than the device align {} (SIGBUS)",
        Bytes(*size), Bytes(align.bytes())
    )]
    FaultTooSmall {
        /// The fault size.
        size: u64,
        /// The device align.
        align: Order,
    },
    /// An address outside the mapping it was given to.
    #[error("address {addr:#x} is not inside this mapping ({base:#x}, {})", Bytes(*len))]
    NotInMapping {
        /// The address.
        addr: usize,
        /// The mapping's first address.
        base: usize,
        /// The mapping's length.
        len: u64,
    },
    /// A range that starts inside the mapping it was given to and runs past its end.
    #[error(
        "{} from address {addr:#x} runs past the end of this mapping ({base:#x}, {}) at {:#x}: \
         at most {} ({} pages) fit from there",
        Bytes(*len), Bytes(*map_len), *base as u64 + map_len,
        Bytes(fits(*addr, *base, *map_len)), fits(*addr, *base, *map_len) / PAGE_SIZE
    )]
    PastMappingEnd {
        /// The range's first address (inside the mapping).
        addr: usize,
        /// The range's length in bytes (saturated at `u64::MAX` where it overflows).
        len: u64,
        /// The mapping's first address.
        base: usize,
        /// The mapping's length.
        map_len: u64,
    },
    /// A range of no bytes (or no pages) where at least one is needed.
    #[error("a {what} of 0 {unit}s does nothing: ask for at least 1 {unit}")]
    EmptyRange {
        /// The operation: "pin", "populate", "poison clear", "read".
        what: &'static str,
        /// What the length counts: "page" or "byte".
        unit: &'static str,
    },
    /// A poison clear whose offset or length is not a multiple of 4 KiB.
    #[error(
        "offset {} and length {} are not multiples of 4 KiB (poison is cleared in whole \
         pages): use offset {} and length {}, the pages holding those bytes",
        Bytes(*offset), Bytes(*len), Bytes(page_span(*offset, *len).0),
        Bytes(page_span(*offset, *len).1)
    )]
    ClearUnaligned {
        /// The offset given.
        offset: u64,
        /// The length given.
        len: u64,
    },
    /// `DaxOptions::handlers` of 0.
    #[error("handlers = 0: a device needs at least 1 handler thread (the default is one per core)")]
    NoHandlers,
    /// A leaf that does not lie inside one range of the device's range table.
    #[error("the leaf at device offset {} does not lie inside one range of the device", Bytes(*offset))]
    LeafStraddles {
        /// The leaf's offset in the device.
        offset: u64,
    },
    /// A client window whose end is past the end of the address space.
    #[error(
        "a client window of {} at {base:#x} runs past the end of the address space",
        Bytes(*len)
    )]
    ClientWindow {
        /// The client's base address.
        base: usize,
        /// The window's length.
        len: u64,
    },
    /// The device is being or has been torn down.
    #[error("the device-dax device is being torn down")]
    TornDown,
    /// A fault of a leaf holding a poisoned page, on a device of `Leaf` granularity (or a pin
    /// of it): the kernel's SIGBUS for an access to lost memory.
    #[error("pfn {pfn} is poisoned: its leaf cannot be mapped")]
    Poisoned {
        /// The poisoned page.
        pfn: Pfn,
    },
    /// Bytes lost to a memory error (`DaxMapping::read_mc` refused to read them).
    #[error("{len} bytes at {addr:#x} are lost to a memory error")]
    MemoryLost {
        /// The first lost byte's address.
        addr: usize,
        /// How many bytes are lost there: a page, or a whole leaf at `Leaf` granularity.
        len: u64,
    },
    /// A fault in a mapping that is being unmapped.
    #[error("{id} is being unmapped")]
    Unmapped {
        /// The mapping.
        id: MappingId,
    },
    /// A pin that may not fault found a leaf not faulted in (the kernel's `FOLL_NOFAULT`
    /// pins fewer pages; here the call fails and pins nothing).
    #[error("address {addr:#x} is not faulted in and the pin may not fault (GupFlags::NOFAULT)")]
    NotFaulted {
        /// The first byte of the leaf.
        addr: usize,
    },
    /// Userfaultfd was asked for on a backing that does not support it.
    #[error(
        "{backing} does not support userfaultfd: use Faults::Explicit or Faults::Auto, and \
         fault leaves with DaxMapping::populate"
    )]
    NoUserfaultfd {
        /// The backing, as shown to people.
        backing: String,
    },
    /// The sizes of a dynamic device's ranges.
    #[error("bad range sizes for a dynamic device: {why}")]
    RangeSizes {
        /// What is wrong and what would work.
        why: String,
    },
    /// `DaxOptions::fault_around` that is not a power of two from 1 to
    /// [`DaxOptions::MAX_FAULT_AROUND`](DaxOptions::MAX_FAULT_AROUND).
    #[error(
        "fault_around = {asked} is not a usable window: use a power of two from 1 (off) to {max} \
         leaves, e.g. {}",
        suggest_pow2(*asked, *max)
    )]
    FaultAround {
        /// The window asked for, in leaves.
        asked: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A zero-ahead pool the device cannot have.
    #[error("{why}")]
    ZeroAhead {
        /// What is wrong and what would work.
        why: String,
    },
    /// A thread count outside what a device starts.
    #[error("{what} {asked} is not a usable count of {why}: use 1 to {max}")]
    Threads {
        /// Which option: `handlers` or `init threads`.
        what: &'static str,
        /// The count asked for.
        asked: usize,
        /// The most allowed.
        max: usize,
        /// What the threads are.
        why: &'static str,
    },
    /// The handler thread could not be started.
    #[error("cannot start the device's fault handler thread: {source}")]
    Handler {
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The pgmap refused (reservation, registration, sync, teardown timeout: `Busy`).
    #[error(transparent)]
    Pgmap(#[from] PgmapError),
    /// The backing refused (mapping the window).
    #[error(transparent)]
    Backing(#[from] BackingError),
    /// The folio layer refused (setting the mapping, taking the reference).
    #[error(transparent)]
    Folio(#[from] FolioError),
    /// The userfaultfd refused (creating it, registering a mapping, mapping a leaf).
    #[error(transparent)]
    Uffd(#[from] UffdError),
    /// The pin layer refused.
    #[error(transparent)]
    Gup(#[from] GupError),
}

/// "X or Y": the multiples of `align` around `value` (only the one above when the one below
/// would be zero).
fn suggest(value: u64, align: u64) -> String {
    let down = value - value % align.max(1);
    let up = down.saturating_add(align);
    if down == 0 {
        format!("{}", Bytes(up))
    } else {
        format!("{} or {}", Bytes(down), Bytes(up))
    }
}

/// The power of two nearest below `asked` within `1..=max` ("16", or "16 or 32").
fn suggest_pow2(asked: usize, max: usize) -> String {
    let down = match asked.checked_ilog2() {
        Some(log) => (1usize << log).min(max),
        None => 1,
    };
    match down.checked_mul(2) {
        Some(up) if up <= max && asked > down => format!("{down} or {up}"),
        _ => down.to_string(),
    }
}

/// The bytes from `addr` to the end of the mapping `(base, map_len)`.
fn fits(addr: usize, base: usize, map_len: u64) -> u64 {
    map_len.saturating_sub(addr.saturating_sub(base) as u64)
}

/// The whole 4 KiB pages holding `[offset, offset + len)`: their first byte and length.
fn page_span(offset: u64, len: u64) -> (u64, u64) {
    let page = PAGE_SIZE;
    let start = offset - offset % page;
    let end = offset.saturating_add(len).saturating_add(page - 1) / page * page;
    (start, end - start)
}

/// One mapping of a device, as the device's registry knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappingId(u64);

impl MappingId {
    /// The raw number (unique within its device, never reused).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MappingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mapping {}", self.0)
    }
}
