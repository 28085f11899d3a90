//! The device-dax front end (`drivers/dax/device.c`): a [`DaxDevice`] is a generic pgmap over
//! the bytes of a [`Backing`], with compound folios of the device's `align` (4 KiB, 2 MiB or
//! 1 GiB: the pgmap's `vmemmap_shift`). [`DaxDevice::mmap`] applies the kernel's `check_vma`
//! rules and maps a window of the backing shared; the resulting [`DaxMapping`] is the VMA.
//! Its fault path (`DaxMapping::fault`, `DaxMapping::populate`) follows
//! `__dev_dax_{pte,pmd,pud}_fault`: it syncs the leaf's descriptors, sets the folio's mapping
//! and index (`dax_set_mapping`) and then takes the mapping's reference and mapcount. The device
//! keeps a registry of its mappings and their faulted leaves, which answers the reverse map
//! ([`DaxDevice::rmap`]).
//!
//! Faults are driven explicitly here: nothing catches a first touch of a mapping yet, so a
//! caller populates the leaves it will use. Touching an unpopulated leaf still reads and writes
//! the backing's bytes (the kernel maps them); only the metadata is missing.

mod mapping;
#[cfg(test)]
mod tests;

pub use self::mapping::{DaxMapping, Faulted, Populated};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::addr::{Order, PAGE_SIZE, Pfn, PfnRange};
use crate::backing::{Backing, BackingError, Bytes};
use crate::folio::{FolioError, FolioMapping};
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::pgmap::{DeviceSpace, Pgmap, PgmapConfig, PgmapError};

/// Errors from creating, mapping, faulting and tearing down device-dax devices.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaxError {
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
    /// A leaf that does not lie inside one range of the device's range table.
    #[error("the leaf at device offset {} does not lie inside one range of the device", Bytes(*offset))]
    LeafStraddles {
        /// The leaf's offset in the device.
        offset: u64,
    },
    /// The device is being or has been torn down.
    #[error("the device-dax device is being torn down")]
    TornDown,
    /// The pgmap refused (reservation, registration, sync, teardown timeout: `Busy`).
    #[error(transparent)]
    Pgmap(#[from] PgmapError),
    /// The backing refused (mapping the window).
    #[error(transparent)]
    Backing(#[from] BackingError),
    /// The folio layer refused (setting the mapping, taking the reference).
    #[error(transparent)]
    Folio(#[from] FolioError),
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

/// One entry of the range table: `pfns` hold the device's bytes from page offset `pgoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DaxRange {
    pfns: PfnRange,
    pgoff: u64,
}

/// A registered mapping: where it is, and the leaves faulted into it, keyed by the leaf's page
/// offset in the device, each holding its reference and mapcount.
#[derive(Debug)]
struct Registered {
    offset: u64,
    base: usize,
    leaves: BTreeMap<u64, FolioMapping>,
}

/// What a device and its mappings share.
#[derive(Debug)]
struct Shared {
    pgmap: Arc<Pgmap>,
    backing: Backing,
    align: Order,
    /// The id written into `folio->mapping`: the device's address space.
    address_space: u64,
    ranges: Vec<DaxRange>,
    size: u64,
    next_mapping: AtomicU64,
    mappings: Mutex<BTreeMap<MappingId, Registered>>,
}

impl Shared {
    /// `dax_pgoff_to_phys`: the first pfn of `nr_pages` pages at device page offset `pgoff`, if
    /// they all lie in one range.
    fn pgoff_to_pfn(&self, pgoff: u64, nr_pages: u64) -> Option<Pfn> {
        self.ranges.iter().find_map(|r| {
            let rel = pgoff.checked_sub(r.pgoff)?;
            (rel.checked_add(nr_pages)? <= r.pfns.len()).then(|| r.pfns.start().add(rel))
        })
    }

    /// The device page offset of `pfn`, if the device holds it.
    fn pfn_to_pgoff(&self, pfn: Pfn) -> Option<u64> {
        self.ranges
            .iter()
            .find(|r| r.pfns.contains(pfn))
            .map(|r| r.pgoff + pfn.offset_from(r.pfns.start()))
    }
}

/// Address-space ids, unique in the process so that folios of two devices never claim one.
static NEXT_ADDRESS_SPACE: AtomicU64 = AtomicU64::new(1);

/// A static device-dax device: one pfn range of a [`DeviceSpace`] over the whole backing, its
/// pgmap, and the registry of its mappings.
///
/// Teardown is [`DaxDevice::shutdown`] (optionally timed) or the drop, which waits without a
/// limit for every mapping and pin to go: drop the device's [`DaxMapping`]s before the device,
/// or the drop waits for them forever.
#[derive(Debug)]
pub struct DaxDevice<'s> {
    space: &'s DeviceSpace,
    shared: Arc<Shared>,
    range: PfnRange,
    shut: AtomicBool,
}

impl<'s> DaxDevice<'s> {
    /// Reserves a pfn range of the backing's length in `space` and registers a generic pgmap
    /// over it with folios of `align` (`vmemmap_shift`), laid out as `layout` and initialised
    /// as `init`. Page offset `n` of the device is the backing's byte `n × 4 KiB`.
    ///
    /// Refuses a backing whose pages are larger than `align` (a 2 MiB hugetlb backing cannot
    /// serve 4 KiB faults) or whose length is not a multiple of `align`.
    pub fn new(
        space: &'s DeviceSpace,
        backing: Backing,
        align: Order,
        layout: Layout,
        init: InitMode,
    ) -> Result<Self, DaxError> {
        let size = backing.len();
        if size == 0 {
            return Err(BackingError::Empty.into());
        }
        let page = backing.page_size();
        if page > align {
            return Err(DaxError::PageTooLarge { page, align });
        }
        if !size.is_multiple_of(align.bytes()) {
            return Err(DaxError::BackingUnaligned { len: size, align });
        }
        let range = space.reserve_range(size, align.bytes())?;
        let mut cfg = PgmapConfig::devdax(range, align);
        cfg.layout = layout;
        cfg.init = init;
        let pgmap = match space.memremap_pages(cfg) {
            Ok(p) => p,
            Err(e) => {
                space.release_range(range);
                return Err(e.into());
            }
        };
        let shared = Arc::new(Shared {
            pgmap,
            backing,
            align,
            address_space: NEXT_ADDRESS_SPACE.fetch_add(1, Ordering::Relaxed),
            ranges: vec![DaxRange {
                pfns: range,
                pgoff: 0,
            }],
            size,
            next_mapping: AtomicU64::new(1),
            mappings: Mutex::new(BTreeMap::new()),
        });
        Ok(Self {
            space,
            shared,
            range,
            shut: AtomicBool::new(false),
        })
    }

    /// The device's pgmap.
    pub fn pgmap(&self) -> &Arc<Pgmap> {
        &self.shared.pgmap
    }

    /// The backing that holds the device's bytes.
    pub fn backing(&self) -> &Backing {
        &self.shared.backing
    }

    /// The device align: the size of every folio and of every fault.
    pub fn align(&self) -> Order {
        self.shared.align
    }

    /// The device's size in bytes.
    pub fn size(&self) -> u64 {
        self.shared.size
    }

    /// The device's pfns.
    pub fn range(&self) -> PfnRange {
        self.range
    }

    /// The id this device writes into the `mapping` word of the folios it faults.
    pub fn address_space(&self) -> u64 {
        self.shared.address_space
    }

    /// `dax_pgoff_to_phys`: the pfn holding byte `offset` of the device.
    pub fn pfn_at(&self, offset: u64) -> Option<Pfn> {
        if offset >= self.shared.size {
            return None;
        }
        self.shared.pgoff_to_pfn(offset / PAGE_SIZE, 1)
    }

    /// `check_vma` and `dax_get_unmapped_area`: maps `len` bytes of the device from `offset`,
    /// shared, at an address aligned to the device align. Both must be multiples of the align
    /// and inside the device; private mappings are refused. Mappings of one device see the same
    /// bytes. The mapping holds a liveness reference on the pgmap until it drops, as an open
    /// VMA keeps its device.
    pub fn mmap(&self, offset: u64, len: u64, shared: bool) -> Result<DaxMapping, DaxError> {
        let align = self.shared.align;
        if !shared {
            return Err(DaxError::NotShared);
        }
        if len == 0 {
            return Err(DaxError::Empty);
        }
        for (what, value) in [("offset", offset), ("length", len)] {
            if !value.is_multiple_of(align.bytes()) {
                return Err(DaxError::Unaligned { what, value, align });
            }
        }
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.shared.size)
        {
            return Err(DaxError::OutOfRange {
                offset,
                len,
                size: self.shared.size,
            });
        }
        let live = self.shared.pgmap.tryget().ok_or(DaxError::TornDown)?;
        let window = self.shared.backing.map_shared(offset, len, align)?;
        let id = MappingId(self.shared.next_mapping.fetch_add(1, Ordering::Relaxed));
        let base = window.as_ptr().as_ptr() as usize;
        self.shared.mappings.lock().insert(
            id,
            Registered {
                offset,
                base,
                leaves: BTreeMap::new(),
            },
        );
        Ok(DaxMapping::new(
            Arc::clone(&self.shared),
            id,
            offset,
            window,
            live,
        ))
    }

    /// The reverse map (`i_mmap` of the device's address space): every live mapping that has
    /// the folio holding `pfn` faulted in, with the user address of `pfn` in it, in mapping
    /// order. Empty for a pfn the device does not hold or no mapping has faulted.
    pub fn rmap(&self, pfn: Pfn) -> Vec<(MappingId, usize)> {
        let Some(pgoff) = self.shared.pfn_to_pgoff(pfn) else {
            return Vec::new();
        };
        let leaf = pgoff - pgoff % self.shared.align.nr_pages();
        let byte = pgoff * PAGE_SIZE;
        let mappings = self.shared.mappings.lock();
        mappings
            .iter()
            .filter(|(_, r)| r.leaves.contains_key(&leaf))
            .filter_map(|(id, r)| {
                let rel = usize::try_from(byte.checked_sub(r.offset)?).ok()?;
                Some((*id, r.base.checked_add(rel)?))
            })
            .collect()
    }

    /// Number of live mappings of the device.
    pub fn nr_mappings(&self) -> usize {
        self.shared.mappings.lock().len()
    }

    /// `memunmap_pages`: refuses new mappings and faults, waits for every mapping and pin to
    /// go (up to `timeout`), then unregisters the pgmap and gives its pfn range back. With a
    /// timeout that expires, returns [`PgmapError::Busy`] and leaves the device as it was.
    /// A second call after success does nothing.
    pub fn shutdown(&self, timeout: Option<Duration>) -> Result<(), DaxError> {
        if self.shut.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.space.memunmap_pages(&self.shared.pgmap, timeout) {
            Ok(()) | Err(PgmapError::NotRegistered) => {}
            Err(e) => return Err(e.into()),
        }
        self.space.release_range(self.range);
        self.shut.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for DaxDevice<'_> {
    fn drop(&mut self) {
        // Untimed: it can only fail if the pgmap is gone already, and then there is nothing
        // left to do.
        let _ = self.shutdown(None);
    }
}
