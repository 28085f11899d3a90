//! The device space: the "physical" pfn space pgmaps live in. It hands out aligned,
//! non-overlapping ranges, registers pgmaps (`memremap_pages`), finds the pgmap of a pfn
//! (`get_dev_pagemap`, counted), and tears pgmaps down (`memunmap_pages`), waiting for their
//! liveness references to drain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use super::live::{Dying, Liveness};
use super::{Altmap, MemoryType, Pgmap, PgmapConfig, PgmapError, PgmapRef};
use crate::addr::{PAGE_SIZE, Pfn, PfnRange};
use crate::desc::PgmapId;
use crate::init::{InitTarget, MemmapSet};
use crate::memmap::{Memmap, MemmapRoom, RoomSums};

/// Lowest pfn the device space hands out (4 GiB), leaving room below like a physical map.
const SPACE_BASE: Pfn = Pfn::new(1 << 20);
/// One past the highest pfn: the whole physical address space a memmap can describe.
const SPACE_END: Pfn = Pfn::END;

#[derive(Debug, Default)]
struct SpaceInner {
    /// Ranges handed out by `reserve_range`, by start pfn.
    reserved: BTreeMap<Pfn, PfnRange>,
    /// Registered pgmaps, one entry per range, by start pfn.
    pgmaps: BTreeMap<Pfn, (PfnRange, Arc<Pgmap>)>,
    last_id: u64,
}

/// A device "physical" address space: hands out pfn ranges and registers pgmaps on them.
///
/// A cheap-clone handle: every clone names the same space, as every `Arc` names one value.
/// Devices and enabled namespaces keep a clone of the space they were built in, so none of
/// them borrows it and each lives as long as its owner wants (a C handle, a Python object, a
/// service's table).
#[derive(Debug, Default, Clone)]
pub struct DeviceSpace {
    inner: Arc<RwLock<SpaceInner>>,
}

/// Where [`DeviceSpace::memremap_pages_in`] puts a pgmap's memmap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemmapPlace<'r> {
    /// The device's memmap room (range 0's store), or host memory.
    pub(crate) room: Option<&'r MemmapRoom>,
    /// Take the room's descriptors as an earlier enable wrote and left them clean, instead of
    /// initialising them, each unit checked against these checksums on first use.
    pub(crate) adopt: Option<&'r RoomSums>,
    /// The id to register the pgmap under instead of the next free one: the id its room's
    /// head descriptors name. Refused if a pgmap of the space has it.
    pub(crate) id: Option<PgmapId>,
}

impl MemmapPlace<'_> {
    /// Host memory, initialised.
    pub(crate) const HOST: MemmapPlace<'static> = MemmapPlace {
        room: None,
        adopt: None,
        id: None,
    };
}

impl DeviceSpace {
    /// An empty space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `self` and `other` are handles to one space.
    pub fn same_space(&self, other: &DeviceSpace) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Hands out `bytes` of pfns aligned to `align` bytes, overlapping no other reservation.
    pub fn reserve_range(&self, bytes: u64, align: u64) -> Result<PfnRange, PgmapError> {
        let bad = |why| PgmapError::BadRequest { bytes, align, why };
        if bytes == 0 || !bytes.is_multiple_of(PAGE_SIZE) {
            return Err(bad("size must be a non-zero multiple of 4 KiB"));
        }
        if !align.is_power_of_two() || align < PAGE_SIZE {
            return Err(bad("alignment must be a power of two of at least 4 KiB"));
        }
        let pages = bytes / PAGE_SIZE;
        let align_pages = align / PAGE_SIZE;
        let mut inner = self.inner.write();
        let mut cursor = SPACE_BASE;
        let mut gaps: Vec<(Pfn, Pfn)> = Vec::new();
        for r in inner.reserved.values() {
            gaps.push((cursor, r.start()));
            cursor = cursor.max(r.end());
        }
        gaps.push((cursor, SPACE_END));
        for (lo, hi) in gaps {
            let Some(start) = lo.raw().checked_next_multiple_of(align_pages) else {
                continue;
            };
            if start.checked_add(pages).is_some_and(|end| end <= hi.raw()) {
                let range = PfnRange::new_unchecked(Pfn::new(start), Pfn::new(start + pages));
                inner.reserved.insert(range.start(), range);
                return Ok(range);
            }
        }
        Err(PgmapError::SpaceExhausted { bytes, align })
    }

    /// Reserves the `bytes` of pfns from `start` exactly, which must be aligned to `align`
    /// bytes and overlap no other reservation: how a device whose memmap outlives the process
    /// gets back the pfns its descriptors name.
    pub fn reserve_range_at(
        &self,
        start: Pfn,
        bytes: u64,
        align: u64,
    ) -> Result<PfnRange, PgmapError> {
        let bad = |why| PgmapError::BadRequest { bytes, align, why };
        if bytes == 0 || !bytes.is_multiple_of(PAGE_SIZE) {
            return Err(bad("size must be a non-zero multiple of 4 KiB"));
        }
        if !align.is_power_of_two() || align < PAGE_SIZE {
            return Err(bad("alignment must be a power of two of at least 4 KiB"));
        }
        if !start.raw().is_multiple_of(align / PAGE_SIZE) {
            return Err(bad("the start pfn is not aligned to the alignment"));
        }
        let range = start
            .raw()
            .checked_add(bytes / PAGE_SIZE)
            .filter(|&end| start >= SPACE_BASE && end <= SPACE_END.raw())
            .map(|end| PfnRange::new_unchecked(start, Pfn::new(end)))
            .ok_or(bad("the range lies outside the device space"))?;
        let mut inner = self.inner.write();
        if let Some(other) = inner.reserved.values().find(|r| r.overlaps(range)) {
            return Err(PgmapError::Overlap {
                range,
                other: *other,
            });
        }
        inner.reserved.insert(range.start(), range);
        Ok(range)
    }

    /// Returns a range from [`DeviceSpace::reserve_range`]; false if it was not reserved.
    pub fn release_range(&self, range: PfnRange) -> bool {
        let mut inner = self.inner.write();
        if inner.reserved.get(&range.start()) == Some(&range) {
            inner.reserved.remove(&range.start());
            true
        } else {
            false
        }
    }

    /// Builds, initialises and registers a pgmap (`memremap_pages`). The returned pgmap's
    /// every descriptor is initialised.
    pub fn memremap_pages(&self, cfg: PgmapConfig) -> Result<Arc<Pgmap>, PgmapError> {
        self.memremap_pages_in(cfg, MemmapPlace::HOST)
    }

    /// As [`memremap_pages`](Self::memremap_pages), with the memmap placed as `place` says:
    /// in host memory, or in a device's memmap room, initialised or (a warm enable) adopted
    /// as the room holds it.
    pub(crate) fn memremap_pages_in(
        &self,
        cfg: PgmapConfig,
        place: MemmapPlace<'_>,
    ) -> Result<Arc<Pgmap>, PgmapError> {
        validate_ops(&cfg)?;
        cfg.check_shape()?;
        for (i, a) in cfg.ranges.iter().enumerate() {
            if let Some(b) = cfg.ranges[..i].iter().find(|b| b.overlaps(*a)) {
                return Err(PgmapError::Overlap {
                    range: *a,
                    other: *b,
                });
            }
        }
        let id = {
            let mut inner = self.inner.write();
            for r in &cfg.ranges {
                if let Some(other) = overlapping_pgmap(&inner, *r) {
                    return Err(PgmapError::Overlap { range: *r, other });
                }
            }
            match place.id {
                Some(id) => {
                    if inner.pgmaps.values().any(|(_, p)| p.id() == id) {
                        return Err(PgmapError::IdTaken { id: id.get() });
                    }
                    id
                }
                None => loop {
                    inner.last_id += 1;
                    let id = PgmapId::new(inner.last_id).ok_or(PgmapError::IdsExhausted)?;
                    // Skips ids taken by pgmaps registered under an id of their own.
                    if !inner.pgmaps.values().any(|(_, p)| p.id() == id) {
                        break id;
                    }
                },
            }
        };

        let mut altmap = None;
        let mut maps = Vec::with_capacity(cfg.ranges.len());
        for (index, &range) in cfg.ranges.iter().enumerate() {
            let geo = cfg.geometry(index, range)?;
            if let Some(a) = geo.altmap() {
                let alloc = cfg
                    .layout
                    .memmap_bytes(range.len(), cfg.vmemmap_shift)
                    .div_ceil(PAGE_SIZE);
                altmap = Some(Altmap {
                    base_pfn: range.start(),
                    reserve: a.reserve,
                    free: a.free,
                    align: a.free - alloc,
                    alloc,
                });
            }
            maps.push(
                Memmap::new_in(cfg.layout, geo, cfg.init.page_hint(), place.room)
                    .map_err(|source| PgmapError::Memmap { index, source })?,
            );
        }

        let target = InitTarget {
            pgmap: id,
            idle_ref: cfg.memory_type.idle_refcount(),
        };
        let set = Arc::new(if let Some(sums) = place.adopt {
            MemmapSet::adopt(maps, target, sums)
        } else {
            MemmapSet::new(maps, target, cfg.init, cfg.progress.clone())
        });
        let pgmap = Arc::new(Pgmap {
            id,
            memory_type: cfg.memory_type,
            vmemmap_shift: cfg.vmemmap_shift,
            layout: cfg.layout,
            altmap,
            owner: cfg.owner,
            ops: cfg.ops,
            ranges: cfg.ranges,
            workers: Mutex::new(set.start_workers()),
            set,
            live: Liveness::new(),
            fsdax_lock: Mutex::new(()),
            teardown: Mutex::new(()),
            layout_waiters: AtomicUsize::new(0),
            layout_wait: (Mutex::new(()), Condvar::new()),
        });
        let mut inner = self.inner.write();
        // Re-check: another thread may have registered an overlapping pgmap, or one with the
        // id asked for, while we built.
        if inner.pgmaps.values().any(|(_, p)| p.id() == pgmap.id()) {
            return Err(PgmapError::IdTaken {
                id: pgmap.id().get(),
            });
        }
        for r in pgmap.ranges() {
            if let Some(other) = overlapping_pgmap(&inner, r) {
                return Err(PgmapError::Overlap { range: r, other });
            }
        }
        for r in pgmap.ranges() {
            inner.pgmaps.insert(r.start(), (r, Arc::clone(&pgmap)));
        }
        tracing::info!(
            pgmap = ?pgmap.id(),
            ranges = ?pgmap.ranges().collect::<Vec<_>>(),
            "memremap_pages: registered"
        );
        Ok(pgmap)
    }

    /// A counted reference to the live pgmap whose ranges hold `pfn` (`get_dev_pagemap`);
    /// `None` if no pgmap covers it or it is being torn down.
    pub fn get_dev_pagemap(&self, pfn: Pfn) -> Option<PgmapRef> {
        self.find_live(pfn).ok()
    }

    /// As [`get_dev_pagemap`](Self::get_dev_pagemap), saying why it found nothing.
    pub(crate) fn find_live(&self, pfn: Pfn) -> Result<PgmapRef, Missing> {
        let inner = self.inner.read();
        match inner.pgmaps.range(..=pfn).next_back() {
            Some((_, (range, pgmap))) if range.contains(pfn) => {
                pgmap.live_ref().map_err(Missing::Dying)
            }
            _ => Err(Missing::Unregistered),
        }
    }

    /// Tears `pgmap` down (`memunmap_pages`): kills its liveness reference so
    /// `get_dev_pagemap` and new pins and mappings fail, waits until every handle, pin and
    /// mapping is gone, then unregisters it, stops and joins background init, and refuses every
    /// later lookup. The memmap is freed when the last `Arc` drops.
    ///
    /// With a `timeout`, gives up with [`PgmapError::Busy`] if references remain, and leaves the
    /// pgmap registered and live exactly as it was. Teardowns of one pgmap run one at a time; a
    /// timed one that cannot get its turn within the timeout also returns `Busy`.
    pub fn memunmap_pages(
        &self,
        pgmap: &Arc<Pgmap>,
        timeout: Option<Duration>,
    ) -> Result<(), PgmapError> {
        let registered = |inner: &SpaceInner| {
            pgmap.ranges().any(|r| {
                inner
                    .pgmaps
                    .get(&r.start())
                    .is_some_and(|(_, p)| Arc::ptr_eq(p, pgmap))
            })
        };
        // A timeout too long to express as a deadline is no timeout.
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        let _one_at_a_time = match timeout {
            None => pgmap.teardown.lock(),
            Some(t) => pgmap.teardown.try_lock_for(t).ok_or(PgmapError::Busy {
                refs: pgmap.live.count(),
            })?,
        };
        if !registered(&self.inner.read()) {
            return Err(PgmapError::NotRegistered);
        }
        pgmap.live.kill(deadline.is_some());
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if !pgmap.live.wait_drained(left) {
            let refs = pgmap.live.count();
            pgmap.live.revive();
            tracing::info!(pgmap = ?pgmap.id(), refs, "memunmap_pages: timed out, pgmap revived");
            return Err(PgmapError::Busy { refs });
        }
        pgmap.live.finalize();
        {
            let mut inner = self.inner.write();
            for r in pgmap.ranges() {
                inner.pgmaps.remove(&r.start());
            }
        }
        pgmap.shut_down();
        tracing::info!(pgmap = ?pgmap.id(), "memunmap_pages: torn down");
        Ok(())
    }

    /// Number of registered pgmaps.
    pub fn nr_pgmaps(&self) -> usize {
        let inner = self.inner.read();
        let mut ids: Vec<PgmapId> = inner.pgmaps.values().map(|(_, p)| p.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

/// Why no live pgmap was found for a pfn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// No registered pgmap holds the pfn.
    Unregistered,
    /// The pgmap holding it is being torn down.
    Dying(Dying),
}

fn overlapping_pgmap(inner: &SpaceInner, r: PfnRange) -> Option<PfnRange> {
    // Only the last registered range starting before `r.end()` can overlap: ranges are disjoint.
    let (_, (other, _)) = inner.pgmaps.range(..r.end()).next_back()?;
    other.overlaps(r).then_some(*other)
}

fn validate_ops(cfg: &PgmapConfig) -> Result<(), PgmapError> {
    let missing = |missing| PgmapError::MissingOps {
        memory_type: cfg.memory_type,
        missing,
    };
    match cfg.memory_type {
        MemoryType::Private | MemoryType::Coherent => {
            if cfg.ops.folio_free.is_none() {
                return Err(missing("a folio_free callback"));
            }
            if cfg.owner.is_none() {
                return Err(missing("an owner"));
            }
        }
        MemoryType::FsDax | MemoryType::Generic | MemoryType::P2pDma => {}
    }
    Ok(())
}
