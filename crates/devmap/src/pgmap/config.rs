//! What `memremap_pages` is given: the memory type and its driver callbacks, the ranges, the
//! compound order, the layout, the init mode and the altmap ([`PgmapConfig`]), with the
//! kernel's rules on its shape and the cost of the memmap it would build, computed without
//! building it.

use std::fmt;
use std::sync::Arc;

use crate::addr::{Order, Pfn, PfnRange};
use crate::init::InitMode;
use crate::memmap::{AltmapGeometry, Cost, Folio, Geometry, Layout};

use super::error::PgmapError;
use super::memory_type::MemoryType;
#[cfg(doc)]
use super::{DeviceSpace, Pgmap};

/// Called when a folio's reference count drops to idle (`dev_pagemap_ops::folio_free`).
pub type FolioFreeFn = dyn Fn(&Folio<'_>) + Send + Sync;
/// Called on a memory error in `nr_pages` pages from `pfn` (always 1, as the kernel's
/// `memory_failure_dev_pagemap` calls it) with the caller's `MF_*` flag bits
/// (`dev_pagemap_ops::memory_failure`, which returns an int): `Ok(())` when it handled the
/// error; `Err(errno)` with a positive errno (`libc::EIO`, ...) otherwise. `Err(EOPNOTSUPP)`
/// says the driver does not handle it, and only then does the generic handler run; every
/// other result is what `memory_failure` returns (`MfError::Callback` keeps the errno).
pub type MemoryFailureFn = dyn Fn(Pfn, u64, u32) -> Result<(), i32> + Send + Sync;

/// Driver callbacks (`struct dev_pagemap_ops`).
#[derive(Clone, Default)]
pub struct PgmapOps {
    /// Free path callback.
    pub folio_free: Option<Arc<FolioFreeFn>>,
    /// Memory-failure callback.
    pub memory_failure: Option<Arc<MemoryFailureFn>>,
}

impl fmt::Debug for PgmapOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgmapOps")
            .field("folio_free", &self.folio_free.is_some())
            .field("memory_failure", &self.memory_failure.is_some())
            .finish()
    }
}

/// The on-device memmap of range 0 (`struct vmem_altmap`), in pfns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Altmap {
    /// First pfn of the device.
    pub base_pfn: Pfn,
    /// Pfns reserved before the memmap (info block).
    pub reserve: u64,
    /// Pfns set aside for the memmap.
    pub free: u64,
    /// Of `free`, the pfns the memmap does not use: padding up to the first data pfn.
    pub align: u64,
    /// Of `free`, pfns the memmap actually uses.
    pub alloc: u64,
}

impl Altmap {
    /// `vmem_altmap_offset`: pfns before the first data pfn.
    pub fn offset(&self) -> u64 {
        self.reserve + self.free
    }
}

/// Everything `memremap_pages` needs to register a device.
#[derive(Debug, Clone)]
pub struct PgmapConfig {
    /// Memory type.
    pub memory_type: MemoryType,
    /// The device's pfn ranges (one for static devices, several for dynamic dax).
    pub ranges: Vec<PfnRange>,
    /// Compound order of every folio (9 = 2 MiB, 18 = 1 GiB).
    pub vmemmap_shift: Order,
    /// `Some(reserve)` places the memmap of range 0 on the device after `reserve` pfns.
    pub altmap_reserve: Option<u64>,
    /// With an altmap, the pfns after the reserve set aside for the memmap (`vmem_altmap.free`),
    /// as a driver computes them from its info block ([`crate::namespace`]); the data starts
    /// `reserve + free` pfns into range 0. `None` sizes them to the layout's memmap, padded to a
    /// compound. Set without `altmap_reserve`, it places an altmap with no reserve.
    pub altmap_free: Option<u64>,
    /// Descriptor layout.
    pub layout: Layout,
    /// How to initialise the memmap.
    pub init: InitMode,
    /// Owner cookie (`pgmap->owner`); required for private and coherent memory.
    pub owner: Option<u64>,
    /// Driver callbacks.
    pub ops: PgmapOps,
    /// A counter the initialisation adds the descriptors it writes to, for a caller showing
    /// progress from another thread; `None` counts nothing.
    pub progress: Option<std::sync::Arc<crate::init::InitProgress>>,
}

impl PgmapConfig {
    /// A device-dax style config: generic memory, one range, compounds of `align` bytes, Folio
    /// layout, parallel init on every core.
    pub fn devdax(range: PfnRange, align: Order) -> Self {
        Self {
            memory_type: MemoryType::Generic,
            ranges: vec![range],
            vmemmap_shift: align,
            altmap_reserve: None,
            altmap_free: None,
            layout: Layout::Heads,
            init: InitMode::parallel_default(),
            owner: None,
            ops: PgmapOps::default(),
            progress: None,
        }
    }

    /// What the memmap of this config costs, summed over its ranges, computed without
    /// allocating: what [`Pgmap::cost`] reports once [`DeviceSpace::memremap_pages`] has built
    /// it, before anything grows. Fails as `memremap_pages` would on a config with no ranges or a
    /// range that cannot get a memmap; overlaps and driver callbacks are not checked, as they do
    /// not change the cost.
    pub fn estimate_cost(&self) -> Result<Cost, PgmapError> {
        self.check_shape()?;
        let costs = self
            .ranges
            .iter()
            .enumerate()
            .map(|(index, &range)| Ok(self.layout.cost(&self.geometry(index, range)?)))
            .collect::<Result<Vec<_>, PgmapError>>()?;
        Ok(sum_costs(costs))
    }

    /// Whether the memmap of range 0 lives on the device.
    pub fn has_altmap(&self) -> bool {
        self.altmap_reserve.is_some() || self.altmap_free.is_some()
    }

    /// The rules on the config's shape that the kernel's `memremap_pages` enforces: at least
    /// one range; an altmap only on a pgmap of one range (`pagemap_range`: "altmap not
    /// supported for multiple ranges", -EINVAL); no `vmemmap_shift` for fsdax, whose folios
    /// form at fault time from order-0 pages (the kernel never builds one, and the fsdax free
    /// path here splits folios).
    pub(crate) fn check_shape(&self) -> Result<(), PgmapError> {
        if self.ranges.is_empty() {
            return Err(PgmapError::NoRanges);
        }
        if self.has_altmap() && self.ranges.len() > 1 {
            return Err(PgmapError::AltmapWithRanges {
                ranges: self.ranges.len(),
            });
        }
        if self.memory_type == MemoryType::FsDax && self.vmemmap_shift != Order::BASE {
            return Err(PgmapError::FsdaxCompound {
                shift: self.vmemmap_shift,
            });
        }
        Ok(())
    }

    /// The memmap geometry of range `index`: range 0 carries the altmap, if any.
    pub(crate) fn geometry(&self, index: usize, range: PfnRange) -> Result<Geometry, PgmapError> {
        let shift = self.vmemmap_shift;
        match (index, self.altmap_reserve, self.altmap_free) {
            (0, Some(reserve), None) => Geometry::with_altmap(range, shift, self.layout, reserve),
            (0, reserve, Some(free)) => Geometry::with_altmap_sized(
                range,
                shift,
                self.layout,
                AltmapGeometry {
                    reserve: reserve.unwrap_or(0),
                    free,
                },
            ),
            _ => Geometry::new(range, shift),
        }
        .map_err(|source| PgmapError::Memmap { index, source })
    }
}

/// The sum of per-range costs, field by field.
pub(super) fn sum_costs(costs: impl IntoIterator<Item = Cost>) -> Cost {
    costs.into_iter().fold(Cost::default(), |mut acc, c| {
        acc += c;
        acc
    })
}
