//! [`DaxDevice`]: a generic pgmap over a backing, static (one pfn range) or dynamic (several),
//! its mappings (`dax_mmap` with `check_vma` and `dax_get_unmapped_area`), the reverse map,
//! the userfaultfd handler threads that catch first touches, and teardown.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::device_core::{Counters, DaxRange, DeviceCore, FaultStats, MappingCore, Window};
use super::gate::{Close, Gate};
use super::leaves::LeafBits;
use super::options::{DaxOptions, Faults};
use super::pinstats::PinStats;
use super::poison::{BadblocksFn, Granularity, OwnerSlot, PoisonLock, merge};
use super::zero_ahead::ZeroAhead;
use super::{DaxError, DaxMapping, MappingId};
use crate::addr::{Order, PAGE_SIZE, Pfn, PfnRange};
use crate::backing::{Backing, BackingError, UffdEvent, UffdFeatures, Userfaultfd};
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::pgmap::{DeviceSpace, MemmapPlace, PgmapConfig, PgmapError};

/// Where a device's pfns and memmap go ([`DaxDevice::placed`]): by default wherever the
/// space has room, with the memmap in host memory, initialised.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement<'r> {
    /// The first pfn of the device's one range, if it must be that one.
    pub(crate) base: Option<Pfn>,
    /// Where the memmap lives and whether it is adopted.
    pub(crate) memmap: MemmapPlace<'r>,
}

impl Default for Placement<'_> {
    fn default() -> Self {
        Placement {
            base: None,
            memmap: MemmapPlace::HOST,
        }
    }
}

/// The handler threads of a device whose touches are caught, and the eventfd that stops
/// them: each sleeps in `poll` on the device's userfaultfd and the eventfd, so an idle
/// handler never wakes, and a stop wakes every one at once.
#[derive(Debug)]
struct Handler {
    stop: Arc<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
    /// The device, whose zero-ahead pool (if any) has a thread among `threads`.
    dev: Arc<DeviceCore>,
}

impl Handler {
    fn start(dev: &Arc<DeviceCore>, n: usize) -> Result<Handler, DaxError> {
        let stop = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| DaxError::Handler { source: e.into() })?;
        let mut h = Handler {
            stop: Arc::new(stop),
            threads: Vec::with_capacity(n + 1),
            dev: Arc::clone(dev),
        };
        if dev.zero_ahead.is_some() {
            let pool_dev = Arc::clone(dev);
            let spawned = std::thread::Builder::new()
                .name("devmap-dax-zero".into())
                .spawn(move || {
                    if let Some(pool) = &pool_dev.zero_ahead {
                        pool.run(
                            |offset, len| pool_dev.prepare_ahead(offset, len),
                            pool_dev.prepare_holds_fault_mutex(),
                        );
                    }
                });
            match spawned {
                Ok(t) => h.threads.push(t),
                Err(e) => return Err(DaxError::Handler { source: e }),
            }
        }
        for i in 0..n.max(1) {
            let dev = Arc::clone(dev);
            let stop = Arc::clone(&h.stop);
            let spawned = std::thread::Builder::new()
                .name(format!("devmap-dax-fault-{i}"))
                .spawn(move || handler_loop(&dev, stop.as_fd()));
            match spawned {
                Ok(t) => h.threads.push(t),
                Err(e) => {
                    h.stop();
                    return Err(DaxError::Handler { source: e });
                }
            }
        }
        Ok(h)
    }

    fn stop(&mut self) {
        if let Some(pool) = &self.dev.zero_ahead {
            pool.stop();
        }
        // The eventfd stays readable (nobody reads it), so every handler sees it, whether it
        // is asleep in `poll` now or gets there later. Writing 1 to a fresh eventfd cannot
        // fail: its counter cannot overflow.
        if let Err(e) = rustix::io::write(&*self.stop, &1u64.to_ne_bytes()) {
            tracing::error!(error = %e, "dax: cannot wake the fault handlers to stop them");
            return;
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One device's handler: sleeps until a fault event or the stop, and runs each fault through
/// the fault path. A read error ends it (the descriptor is unusable).
fn handler_loop(dev: &DeviceCore, stop: BorrowedFd<'_>) {
    let Some(uffd) = dev.uffd.as_ref() else {
        return;
    };
    let waiter = uffd.waiter(stop);
    loop {
        match waiter.wait() {
            Ok(Some(UffdEvent::PageFault { addr, .. })) => dev.user_fault(uffd, addr),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// A device-dax device: pfn ranges of a [`DeviceSpace`] over the whole backing, its pgmap,
/// the registry of its mappings and, where touches are caught, the handler thread.
///
/// Teardown is [`DaxDevice::close`] (optionally timed) or the drop, which waits without a
/// limit for every mapping and pin to go: drop the device's [`DaxMapping`]s before the device,
/// or the drop waits for them forever.
#[derive(Debug)]
pub struct DaxDevice {
    /// The space the device's pfns are reserved in (a handle of it, not a borrow).
    space: DeviceSpace,
    pub(super) dev: Arc<DeviceCore>,
    /// The device's entries in the registry memory failure finds it by; they go with it.
    _listed: super::registry::Listed,
    handler: Mutex<Option<Handler>>,
}

impl DaxDevice {
    /// A static device: [`DaxDevice::with_options`] with `align`, `layout`, `init` and
    /// touches caught where the backing supports it.
    pub fn new(
        space: &DeviceSpace,
        backing: Backing,
        align: Order,
        layout: Layout,
        init: InitMode,
    ) -> Result<Self, DaxError> {
        let mut opts = DaxOptions::new(align);
        opts.layout = layout;
        opts.init = init;
        Self::with_options(space, backing, opts)
    }

    /// Reserves the device's pfn ranges in `space` and registers a generic pgmap over them
    /// with folios of `opts.align` (`vmemmap_shift`). Page offset `n` of the device is the
    /// backing's byte `n × 4 KiB`; the range table maps it to a pfn.
    ///
    /// Refuses a backing whose pages are larger than the align (a 2 MiB hugetlb backing cannot
    /// serve 4 KiB faults) or whose length is not a multiple of it, and dynamic range sizes
    /// that are not multiples of the align or do not add up to the backing
    /// (`dev_dax_validate_align`).
    pub fn with_options(
        space: &DeviceSpace,
        backing: Backing,
        opts: DaxOptions,
    ) -> Result<Self, DaxError> {
        Self::placed(space, backing, opts, Placement::default())
    }

    /// As [`with_options`](Self::with_options), with the pfns and the memmap placed as
    /// `place` says (a static device only).
    pub(crate) fn placed(
        space: &DeviceSpace,
        backing: Backing,
        opts: DaxOptions,
        place: Placement<'_>,
    ) -> Result<Self, DaxError> {
        opts.validate()?;
        let size = backing.len();
        let align = opts.align;
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
        if opts.ranges.is_some() && (place.base.is_some() || place.memmap.room.is_some()) {
            return Err(DaxError::Placement {
                why: "a dynamic device (with ranges) cannot be placed at a pfn or keep its \
                      memmap on the device",
            });
        }
        let sizes = opts.ranges.clone().unwrap_or_else(|| vec![size]);
        check_range_sizes(&sizes, size, align)?;
        let catch = match opts.faults {
            Faults::Explicit => false,
            Faults::Auto => !backing.uffd_modes().is_empty(),
            Faults::Userfaultfd if backing.uffd_modes().is_empty() => {
                return Err(DaxError::NoUserfaultfd {
                    backing: backing.kind().to_string(),
                });
            }
            Faults::Userfaultfd => true,
        };
        let uffd = if catch {
            Some(Arc::new(Userfaultfd::new(UffdFeatures::DEVICE)?))
        } else {
            None
        };
        if opts.zero_ahead > 0 && !catch {
            return Err(DaxError::ZeroAhead {
                why: format!(
                    "zero-ahead needs touches caught by userfaultfd, and the device over the {} \
                     does not catch them (faults {}): use zero-ahead 0, or a memfd or hugetlb \
                     backing",
                    backing.kind(),
                    opts.faults.name()
                ),
            });
        }
        // The side window: where a caught hugetlb leaf's bytes are allocated, and where the
        // zero-ahead pool allocates its leaves.
        let side = if catch && (page > Order::BASE || opts.zero_ahead > 0) {
            Some(backing.map_unreserved(0, size, align)?)
        } else {
            None
        };
        let zero_ahead = (opts.zero_ahead > 0)
            .then(|| ZeroAhead::new(opts.zero_ahead as u64, size / align.bytes(), align.bytes()));
        if catch && align > backing.page_size() {
            // Memory failure at `Leaf` granularity will hand this device's leaves of many
            // entries to the reaper: start it now rather than in the first error's path.
            crate::backing::start_reaper();
        }

        let mut ranges: Vec<DaxRange> = Vec::with_capacity(sizes.len());
        let release = |ranges: &[DaxRange]| {
            for r in ranges {
                space.release_range(r.pfns);
            }
        };
        let mut pgoff = 0;
        for &bytes in &sizes {
            let reserved = match place.base {
                Some(base) => space.reserve_range_at(base, bytes, align.bytes()),
                None => space.reserve_range(bytes, align.bytes()),
            };
            match reserved {
                Ok(pfns) => ranges.push(DaxRange { pfns, pgoff }),
                Err(e) => {
                    release(&ranges);
                    return Err(e.into());
                }
            }
            pgoff += bytes / PAGE_SIZE;
        }
        let mut cfg = PgmapConfig::devdax(ranges[0].pfns, align);
        cfg.ranges = ranges.iter().map(|r| r.pfns).collect();
        cfg.layout = opts.layout;
        cfg.init = opts.init;
        cfg.progress = opts.progress.clone();
        let pgmap = match space.memremap_pages_in(cfg, place.memmap) {
            Ok(p) => p,
            Err(e) => {
                release(&ranges);
                return Err(e.into());
            }
        };
        let dev = Arc::new(DeviceCore {
            pgmap,
            backing,
            align,
            address_space: NEXT_ADDRESS_SPACE.fetch_add(1, Ordering::Relaxed),
            ranges,
            size,
            next_mapping: AtomicU64::new(1),
            mappings: Mutex::new(BTreeMap::new()),
            gate: Gate::new(),
            uffd,
            counters: Counters::default(),
            granularity: opts.granularity,
            populate_on_map: opts.populate_on_map,
            badblocks: Mutex::new(BTreeSet::new()),
            poison_lock: PoisonLock::default(),
            named: LeafBits::new(size / align.bytes()),
            badblocks_sink: Default::default(),
            // Only 4 KiB leaves fault around: a larger leaf is mapped whole by its own fault.
            fault_around: if align == Order::BASE {
                opts.fault_around as u64
            } else {
                1
            },
            side,
            zero_ahead,
        });
        let listed = super::registry::list_device(&dev);
        let handler = if catch {
            match Handler::start(&dev, opts.handlers) {
                Ok(h) => Some(h),
                Err(e) => {
                    let _ = space.memunmap_pages(&dev.pgmap, None);
                    release(&dev.ranges);
                    return Err(e);
                }
            }
        } else {
            None
        };
        tracing::info!(
            backing = %dev.backing.kind(),
            size = dev.size,
            align = dev.align.bytes(),
            ranges = dev.ranges.len(),
            catches_touches = dev.uffd.is_some(),
            "dax: device created"
        );
        Ok(Self {
            space: space.clone(),
            dev,
            _listed: listed,
            handler: Mutex::new(handler),
        })
    }

    /// Clears `folio->mapping` (and the dirty bit a pin by address may have set) of every
    /// folio this device named (the first fault of each leaf names it), so that the memmap is
    /// left as init wrote it: the last step before a clean teardown of a device whose memmap
    /// outlives it. Returns the folios cleared.
    /// Call it with no mapping left.
    pub(crate) fn forget_folio_mappings(&self) -> Result<u64, DaxError> {
        let dev = &self.dev;
        let nr_pages = dev.align.nr_pages();
        let mut n = 0;
        for leaf in dev.named.marked() {
            if let Some(pfn) = dev.pgoff_to_pfn(leaf * nr_pages, nr_pages) {
                crate::folio::FolioRef::at(&dev.pgmap, pfn)?.clear_mapping();
                n += 1;
            }
        }
        Ok(n)
    }

    /// The space the device's pfns are reserved in: where `memory_failure` looks them up.
    pub fn space(&self) -> &DeviceSpace {
        &self.space
    }

    /// The device's pgmap.
    pub fn pgmap(&self) -> &Arc<crate::pgmap::Pgmap> {
        &self.dev.pgmap
    }

    /// The backing that holds the device's bytes.
    pub fn backing(&self) -> &Backing {
        &self.dev.backing
    }

    /// The device align: the size of every folio and of every fault.
    pub fn align(&self) -> Order {
        self.dev.align
    }

    /// The device's size in bytes.
    pub fn size(&self) -> u64 {
        self.dev.size
    }

    /// The device's pfn ranges, in device order (one for a static device).
    pub fn ranges(&self) -> Vec<PfnRange> {
        self.dev.ranges.iter().map(|r| r.pfns).collect()
    }

    /// Whether first touches are caught by the device's userfaultfd.
    pub fn catches_touches(&self) -> bool {
        self.dev.uffd.is_some()
    }

    /// Whether the device is live: no teardown has begun, or the last one gave up. False
    /// while any teardown is in progress, a timed one included.
    pub fn is_live(&self) -> bool {
        self.dev.gate.is_live()
    }

    /// What faults have done on this device so far.
    pub fn fault_stats(&self) -> FaultStats {
        self.dev.counters.snapshot(self.dev.zero_ahead.as_ref())
    }

    /// The id this device writes into the `mapping` word of the folios it faults.
    pub fn address_space(&self) -> u64 {
        self.dev.address_space
    }

    /// `dax_pgoff_to_phys`: the pfn holding byte `offset` of the device.
    pub fn pfn_at(&self, offset: u64) -> Option<Pfn> {
        if offset >= self.dev.size {
            return None;
        }
        self.dev.pgoff_to_pfn(offset / PAGE_SIZE, 1)
    }

    /// `check_vma` and `dax_get_unmapped_area`: maps `len` bytes of the device from `offset`,
    /// shared, at an address aligned to the device align. Both must be multiples of the align
    /// and inside the device; private mappings are refused. Mappings of one device see the same
    /// bytes. Where the device catches touches, the window is registered with its
    /// userfaultfd: registration is per mapping, not per page, so a 1 TiB mapping costs the
    /// same as a small one. Where it does not, the metadata of every leaf of the mapping is
    /// faulted in now ([`DaxOptions::populate_on_map`], the default), leaving out only leaves
    /// lost to a memory error. The mapping holds a liveness reference on the pgmap until it
    /// drops, as an open VMA keeps its device.
    pub fn mmap(&self, offset: u64, len: u64, shared: bool) -> Result<DaxMapping, DaxError> {
        if !shared {
            return Err(DaxError::NotShared);
        }
        self.dev.check_window(offset, len)?;
        let align = self.dev.align;
        // Inside the gate, so that a mapping made while a timed teardown is undecided waits
        // for its outcome, as a fault does.
        let inside = self.dev.gate.enter().ok_or(DaxError::TornDown)?;
        let live = self.dev.pgmap.tryget().ok_or(DaxError::TornDown)?;
        drop(inside);
        let window = Arc::new(self.dev.backing.map_shared(offset, len, align)?);
        if let Some(uffd) = &self.dev.uffd {
            uffd.register(&window, self.dev.backing.uffd_modes())?;
        }
        let id = MappingId(self.dev.next_mapping.fetch_add(1, Ordering::Relaxed));
        let core = Arc::new(MappingCore {
            id,
            offset,
            base: window.as_ptr().as_ptr() as usize,
            len,
            live: RwLock::new(true),
            leaves: Mutex::new(BTreeMap::new()),
            bits: LeafBits::new(len / align.bytes()),
            uffd: self.dev.uffd.clone(),
            owner: OwnerSlot::default(),
            _listed: Some(super::ranges::register(
                window.as_ptr().as_ptr() as usize,
                len as usize,
            )),
            window: Window::Local(Arc::clone(&window)),
            _live: live,
            fast: None,
        });
        self.dev.add_mapping(&core);
        let listed = super::registry::list_mapping(&self.dev, id, core.base, len, offset);
        let mapping = DaxMapping::new(Arc::clone(&self.dev), core, window, listed);
        if self.dev.uffd.is_none() && self.dev.populate_on_map {
            // On failure the mapping's drop gives back what was faulted.
            mapping.vma().populate_all()?;
        }
        Ok(mapping)
    }

    /// The reverse map (`i_mmap` of the device's address space): every live mapping that has
    /// the folio holding `pfn` faulted in, with the user address of `pfn` in it, in mapping
    /// order. Empty for a pfn the device does not hold or no mapping has faulted.
    pub fn rmap(&self, pfn: Pfn) -> Vec<(MappingId, usize)> {
        let Some(pgoff) = self.dev.pfn_to_pgoff(pfn) else {
            return Vec::new();
        };
        let leaf = pgoff - pgoff % self.dev.align.nr_pages();
        let byte = pgoff * PAGE_SIZE;
        let mappings: Vec<Arc<MappingCore>> = self.dev.mappings.lock().values().cloned().collect();
        mappings
            .iter()
            .filter(|m| m.leaves.lock().contains_key(&leaf))
            .filter_map(|m| {
                let rel = usize::try_from(byte.checked_sub(m.offset)?).ok()?;
                Some((m.id, m.base.checked_add(rel)?))
            })
            .collect()
    }

    /// The device's pins now, counted by walking its folios and reading each head's counts
    /// (Relaxed loads, no lock, nothing written): O(folios), so about 512 reads for 1 GiB at
    /// 2 MiB and 262 144 at 4 KiB. The answer is a snapshot: pins taken or dropped during the
    /// walk may or may not be counted.
    ///
    /// A small (4 KiB) folio's pins are read as its count over the pin bias, as
    /// `folio_maybe_dma_pinned` does: exact while it holds fewer than 1024 plain references.
    /// During background init the walk syncs the descriptors it reads (a folio never
    /// initialised holds no pin); once the device is torn down every count reads zero.
    pub fn pin_stats(&self) -> PinStats {
        super::pinstats::pin_stats(&self.dev)
    }

    /// Number of live mappings of the device.
    pub fn nr_mappings(&self) -> usize {
        self.dev.mappings.lock().len()
    }

    /// `kill_dev_dax` and `memunmap_pages`: closes the device to new faults and waits for the
    /// faults in flight (from then on a caught touch gets SIGBUS and a pin or populate gets
    /// [`DaxError::TornDown`]), waits for every mapping and pin to go (up to `timeout`), then
    /// unregisters the pgmap, gives its pfn ranges back, stops the handler threads and waits
    /// for the entries memory failure detached from its mappings to be torn down. With a
    /// timeout that expires, returns [`PgmapError::Busy`] and leaves the device live; faults
    /// that arrived meanwhile waited and then proceed.
    ///
    /// Teardown happens once. A call while another is in progress waits for that one's
    /// outcome (up to its own `timeout`, else [`PgmapError::Busy`], the device staying in the
    /// other's hands): it returns `Ok` once the other completed, and tears down itself if the
    /// other gave up. A call after success does nothing.
    pub fn close(&self, timeout: Option<Duration>) -> Result<(), DaxError> {
        // A timeout too long to express as a deadline is no timeout, as in `memunmap_pages`.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        match self.dev.gate.close(deadline) {
            Close::Mine => {}
            Close::Dead => return Ok(()),
            Close::Busy => {
                return Err(PgmapError::Busy {
                    refs: self.dev.pgmap.refs(),
                }
                .into());
            }
        }
        // From here until `finish` this call alone tears the device down.
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match self.space.memunmap_pages(&self.dev.pgmap, left) {
            // Unregistered by someone else: the pfn ranges are still this device's.
            Ok(()) | Err(PgmapError::NotRegistered) => {}
            Err(e) => {
                self.dev.gate.finish(false);
                return Err(e.into());
            }
        }
        for r in &self.dev.ranges {
            self.space.release_range(r.pfns);
        }
        if let Some(mut h) = self.handler.lock().take() {
            h.stop();
        }
        // Leaves memory failure took out of the (now gone) mappings may still wait for the
        // reaper: once close returns, none of the device's bytes is mapped anywhere.
        crate::backing::drain_detached();
        // Last: a teardown waiting for this one returns only once everything above is done.
        self.dev.gate.finish(true);
        Ok(())
    }

    /// The device's bad pages as (byte offset, length) ranges, merged, in order (a badblocks
    /// list): every page memory failure reported and `clear_poison` has not cleared.
    pub fn badblocks(&self) -> Vec<(u64, u64)> {
        merge(&self.dev.badblocks.lock())
    }

    /// The granularity memory errors on this device are handled at.
    pub fn granularity(&self) -> Granularity {
        self.dev.effective_granularity()
    }

    /// Clears the poison of `[offset, offset + len)` once its owner has rewritten or discarded
    /// the bytes (`ndctl clear-errors`): the pages' hwpoison flags, their entries in the
    /// badblocks list, and every mapping's entries for the leaves holding them (poison markers
    /// included), so the next touch maps them again. `offset` and `len` must be multiples of
    /// 4 KiB inside the device. Returns how many pages were poisoned.
    pub fn clear_poison(&self, offset: u64, len: u64) -> Result<u64, DaxError> {
        self.dev.clear_poison(offset, len)
    }

    /// Has `sink` told the device's whole badblocks list each time it changes (a page
    /// reported, pages cleared), after the change and outside the poison lock.
    pub(crate) fn set_badblocks_sink(&self, sink: Arc<BadblocksFn>) {
        self.dev.badblocks_sink.set(sink);
    }
}

impl Drop for DaxDevice {
    fn drop(&mut self) {
        // Untimed: it can only fail if the pgmap is gone already, and then there is nothing
        // left to do but stop the handler.
        let _ = self.close(None);
        if let Some(mut h) = self.handler.lock().take() {
            h.stop();
        }
    }
}

/// Address-space ids, unique in the process so that folios of two devices never claim one.
static NEXT_ADDRESS_SPACE: AtomicU64 = AtomicU64::new(1);

/// `dev_dax_validate_align` for the range sizes of a device of `size` bytes.
fn check_range_sizes(sizes: &[u64], size: u64, align: Order) -> Result<(), DaxError> {
    if sizes.is_empty() {
        return Err(DaxError::RangeSizes {
            why: "a dynamic device needs at least one range".into(),
        });
    }
    let mut total: u64 = 0;
    for (i, &s) in sizes.iter().enumerate() {
        if s == 0 || !s.is_multiple_of(align.bytes()) {
            return Err(DaxError::RangeSizes {
                why: format!(
                    "range {i} is {}, not a non-zero multiple of the align {}: use {}",
                    super::Bytes(s),
                    super::Bytes(align.bytes()),
                    super::suggest(s, align.bytes())
                ),
            });
        }
        total = total.saturating_add(s);
    }
    if total != size {
        return Err(DaxError::RangeSizes {
            why: format!(
                "the ranges add up to {}, the backing holds {}",
                super::Bytes(total),
                super::Bytes(size)
            ),
        });
    }
    Ok(())
}
