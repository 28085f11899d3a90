//! Registration export: turns a pin by user address ([`Pinned`]`<_, `[`ByAddress`]`>`) into the
//! fewest contiguous [`Extent`]s a caller hands to `VFIO_IOMMU_MAP_DMA` or `ibv_reg_mr`, under
//! the caller's [`ExtentLimits`] (a largest mapping, a most mappings). This module owns the
//! merge rule (user address, device offset and pfn must all run on), the cut rule (only at
//! folio boundaries, greedily up to the byte cap, which gives the fewest extents) and the two
//! errors a limit can give ([`GupError::ExtentCap`], [`GupError::ExtentCount`]).
//!
//! A pin already knows its folios, so the export is one pass over them: no descriptor is read
//! and no lock is taken. For a pin of [`Pages`], a folio is the run of consecutive entries with
//! the same head, found from the pgmap's geometry (every device-dax folio has the pgmap's
//! order, its `vmemmap_shift`), not by looking each page up.

use crate::addr::{Order, PAGE_SIZE, Pfn};

use super::flags::GupError;
use super::pinned::{ByAddress, Folios, Pages, Pinned};

/// One contiguous piece of a pinned range, ready for `VFIO_IOMMU_MAP_DMA` / `ibv_reg_mr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// The user address of the first byte.
    pub addr: usize,
    /// The device byte offset of the first byte: the byte offset in the device's backing
    /// (for a backing that is a window of a file, from the window's start, not the file's).
    pub offset: u64,
    /// The first pfn.
    pub pfn: Pfn,
    /// Length in bytes (a multiple of 4 KiB).
    pub len: u64,
}

impl Extent {
    /// Whether `next` starts where this extent ends in user address, device offset and pfn.
    fn runs_into(&self, next: &Extent) -> bool {
        self.addr.checked_add(self.len as usize) == Some(next.addr)
            && self.offset.checked_add(self.len) == Some(next.offset)
            && self.pfn.raw().checked_add(self.len / PAGE_SIZE) == Some(next.pfn.raw())
    }
}

/// What the consumer of the extents accepts; `None` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtentLimits {
    /// The most extents (an IOMMU's free DMA mappings, an RDMA device's `max_mr`).
    pub max_extents: Option<usize>,
    /// The longest extent in bytes (a NIC's `max_mr_size`). Extents are cut only between
    /// folios, so a cap below the pinned part of a folio is refused.
    pub max_bytes: Option<u64>,
}

impl ExtentLimits {
    /// Limits as the front ends take them, plain numbers where 0 means no limit: the C ABI's
    /// `devmap_pins_extents` and Python's `Pins.extents` both build theirs here, so a 0 means
    /// the same in both (no limit, never a cap of 0 bytes or 0 extents).
    pub fn new(max_extents: usize, max_bytes: u64) -> ExtentLimits {
        ExtentLimits {
            max_extents: (max_extents != 0).then_some(max_extents),
            max_bytes: (max_bytes != 0).then_some(max_bytes),
        }
    }
}

impl Pinned<Folios, ByAddress> {
    /// The fewest extents covering exactly the pinned bytes, in address order: neighbouring
    /// folios merge when user address, device offset and pfn all run on, up to
    /// `limits.max_bytes` each, cut only at folio boundaries (greedily, which is minimal).
    ///
    /// Fails with [`GupError::ExtentCap`] if the pinned part of one folio is longer than
    /// `max_bytes`, and with [`GupError::ExtentCount`] if more than `max_extents` are needed.
    /// Costs one pass over the folios; reads no descriptor.
    ///
    /// ```
    /// use devmap::backing::Backing;
    /// use devmap::dax::{DaxDevice, DaxOptions, Faults};
    /// use devmap::{DeviceSpace, ExtentLimits, GupFlags, Order};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let space = DeviceSpace::new();
    /// let mut opts = DaxOptions::new(Order::PMD);
    /// opts.faults = Faults::Explicit;
    /// let dev = DaxDevice::with_options(&space, Backing::memfd(1 << 30)?, opts)?;
    /// let m = dev.mmap(0, 1 << 30, true)?;
    /// let pins = m.pin_user_folios(m.addr(), (1 << 30) / 4096, GupFlags::WRITE)?;
    /// assert_eq!(pins.extents(ExtentLimits::default())?.len(), 1);
    /// let capped = ExtentLimits { max_bytes: Some(64 << 20), ..Default::default() };
    /// assert_eq!(pins.extents(capped)?.len(), 16);
    /// assert_eq!(dev.pin_stats().pinned_bytes, 1 << 30);
    /// # drop(pins);
    /// # drop(m);
    /// # Ok(())
    /// # }
    /// ```
    pub fn extents(&self, limits: ExtentLimits) -> Result<Vec<Extent>, GupError> {
        let base = self.addr();
        let offset = self.offset();
        let pieces = self.with_addresses().map(|(addr, f)| Extent {
            addr,
            offset: offset + (addr - base) as u64,
            pfn: f.range().start(),
            len: f.range().len() * PAGE_SIZE,
        });
        merge(pieces, limits)
    }
}

impl Pinned<Pages, ByAddress> {
    /// As for folios. A folio here is a run of consecutive entries whose pfns share a head,
    /// found from the pgmap's geometry (device-dax folios all have its order).
    pub fn extents(&self, limits: ExtentLimits) -> Result<Vec<Extent>, GupError> {
        let base = self.addr();
        let offset = self.offset();
        let order = self.pgmap().vmemmap_shift();
        let mut pieces: Vec<Extent> = Vec::new();
        for (at, pfn) in self.with_addresses() {
            let page = Extent {
                addr: at,
                offset: offset + (at - base) as u64,
                pfn,
                len: PAGE_SIZE,
            };
            match pieces.last_mut() {
                Some(last) if same_folio(last.pfn, pfn, order) && last.runs_into(&page) => {
                    last.len += PAGE_SIZE;
                }
                _ => pieces.push(page),
            }
        }
        merge(pieces, limits)
    }
}

/// Whether two pfns lie in one folio of `order`.
fn same_folio(a: Pfn, b: Pfn, order: Order) -> bool {
    a.align_down(order) == b.align_down(order)
}

/// Merges the folio pieces (each a folio's pinned part, in address order) into the fewest
/// extents under `limits`.
///
/// Pieces that all run on form a group no extent can leave; within a group, packing pieces in
/// order into extents of at most `max_bytes` greedily (each as full as it can be) needs the
/// fewest: by induction, after `k` extents the greedy one has covered at least as many
/// pieces as any other packing.
fn merge(
    pieces: impl IntoIterator<Item = Extent>,
    limits: ExtentLimits,
) -> Result<Vec<Extent>, GupError> {
    let cap = limits.max_bytes.unwrap_or(u64::MAX);
    let mut out: Vec<Extent> = Vec::new();
    // The longest folio piece, once one is over the cap: the error names the cap that works.
    let mut too_long: Option<u64> = None;
    for piece in pieces {
        if piece.len > cap || too_long.is_some() {
            too_long = too_long.max(Some(piece.len));
            continue;
        }
        match out.last_mut() {
            Some(last) if last.runs_into(&piece) && cap - last.len >= piece.len => {
                last.len += piece.len;
            }
            _ => out.push(piece),
        }
    }
    if let Some(folio_bytes) = too_long {
        return Err(GupError::ExtentCap {
            folio_bytes,
            max_bytes: cap,
        });
    }
    if let Some(max) = limits.max_extents
        && out.len() > max
    {
        return Err(GupError::ExtentCount {
            needed: out.len(),
            max,
        });
    }
    Ok(out)
}
