//! How to build a [`DaxDevice`](super::DaxDevice): [`DaxOptions`] (align, layout, init, ranges,
//! how touches are caught, handler threads, fault-around, leaves zeroed ahead, metadata faulted
//! in at mapping time, granularity)
//! and its checks, which every front end (CLI, C, Python) gets by going through
//! [`DaxDevice::with_options`](super::DaxDevice::with_options).

use super::DaxError;
use super::poison::Granularity;
use crate::addr::Order;
use crate::init::InitMode;
use crate::memmap::Layout;

/// How first touches of a device's mappings reach its fault path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Faults {
    /// Through the device's userfaultfd where the backing supports it (memfd, hugetlb), else
    /// explicitly.
    #[default]
    Auto,
    /// Through the userfaultfd; refused for a backing without userfaultfd support.
    Userfaultfd,
    /// Never through the userfaultfd: the kernel maps the backing's bytes at a touch on its
    /// own, and the metadata is set up when a mapping is made
    /// ([`DaxOptions::populate_on_map`]), or else only through [`DaxMapping::populate`](super::DaxMapping::populate),
    /// [`DaxMapping::fault`](super::DaxMapping::fault) and the pin path.
    Explicit,
}

impl Faults {
    /// Every mode.
    pub const ALL: [Faults; 3] = [Faults::Auto, Faults::Userfaultfd, Faults::Explicit];

    /// The lower-case name the front ends use.
    pub const fn name(self) -> &'static str {
        match self {
            Faults::Auto => "auto",
            Faults::Userfaultfd => "userfaultfd",
            Faults::Explicit => "explicit",
        }
    }
}

crate::units::named_values!(Faults, "faults", ["auto", "userfaultfd", "explicit"]);

/// How to build a [`DaxDevice`](super::DaxDevice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaxOptions {
    /// Size of every folio and every fault: 4 KiB, 2 MiB or 1 GiB.
    pub align: Order,
    /// Descriptor layout.
    pub layout: Layout,
    /// Memmap initialisation.
    pub init: InitMode,
    /// `None` for a static device (one pfn range); for a dynamic device, the byte size of each
    /// of its pfn ranges, in device order, each a multiple of the align, summing to the
    /// backing's length. Each range is reserved on its own, wherever the space has room.
    pub ranges: Option<Vec<u64>>,
    /// How touches are caught.
    pub faults: Faults,
    /// Handler threads reading the device's userfaultfd: 1 to [`DaxOptions::MAX_HANDLERS`].
    /// One serves faults one at a time; threads that touch new leaves at the same time queue
    /// behind each other, where the kernel would fault them in parallel. More handlers let
    /// that many leaves fill at once. An idle handler sleeps until an event or the device's
    /// teardown wakes it.
    pub handlers: usize,
    /// The most leaves a caught touch of a 4 KiB leaf faults in at once: the touched leaf and
    /// its neighbours in the same mapping, mapped with one ioctl (fault-around, as the
    /// kernel's `do_fault_around` for file pages; the kernel's device-dax does not do it). The
    /// window adapts: one leaf for a touch with no faulted leaf beside it, growing to this on
    /// sequential touches. A power of two from 1 (off) to
    /// [`DaxOptions::MAX_FAULT_AROUND`];
    /// [`DEFAULT_FAULT_AROUND`](Self::DEFAULT_FAULT_AROUND) (128) by default. Ignored for
    /// larger aligns, whose leaves are faulted one per touch, and where touches are not
    /// caught.
    pub fault_around: usize,
    /// Leaves allocated and zeroed ahead of their first touch, at most (0, the default: none).
    /// A background thread in the `SCHED_IDLE` class follows sequential touchers (a new
    /// mapping from its start, and each run of touches of consecutive leaves) and allocates,
    /// zeroed, the leaves they are about to reach, at most this many waiting at once; a caught
    /// touch that finds its leaf ready is mapped with one `UFFDIO_CONTINUE`, without
    /// allocating or clearing anything while the toucher waits, and the ready leaves after it
    /// are mapped with it (at most this many), so the toucher's next touches are no faults.
    /// Leaves already faulted are never touched; a leaf prepared and never reached stays
    /// allocated in the backing (so at most twice this many leaves of memory are spent ahead
    /// of a toucher: mapped ahead by its last fault, and ready beyond). Needs touches caught by userfaultfd and leaves of
    /// 2 MiB or more (at 4 KiB, fault-around serves sequential touchers). At most
    /// [`DaxOptions::max_zero_ahead`] of the align: 1 GiB of leaves. For programs that work
    /// between first touches: where the touchers already fill every core, the pool cannot
    /// keep up, and at hugetlb it adds an occasional tail of a few touches of several
    /// milliseconds (BENCHMARKS.md).
    pub zero_ahead: usize,
    /// Where the device does not catch touches (a backing without userfaultfd, or
    /// [`Faults::Explicit`]): whether [`DaxDevice::mmap`](super::DaxDevice::mmap) faults in the metadata of every
    /// leaf of the new mapping (folio mapping and index, reference, mapcount; not the bytes),
    /// as `MAP_POPULATE` would. True by default, so that the reverse map and `memory_failure`
    /// know every leaf a touch can reach, as the kernel knows from its own faults. False
    /// leaves it to [`DaxMapping::populate`](super::DaxMapping::populate), [`DaxMapping::fault`](super::DaxMapping::fault) and the pin path, and a
    /// leaf touched without them has bytes but no metadata: for callers that time or choose
    /// the leaves they fault. Ignored where touches are caught.
    pub populate_on_map: bool,
    /// What a 4 KiB memory error takes from the mappings: `Page` (the default) where the
    /// device catches touches on a backing of 4 KiB pages, `Leaf` elsewhere whatever is asked.
    pub granularity: Granularity,
    /// A counter the memmap initialisation adds the descriptors it writes to
    /// ([`PgmapConfig::progress`](crate::pgmap::PgmapConfig::progress)).
    pub progress: Option<std::sync::Arc<crate::init::InitProgress>>,
}

impl DaxOptions {
    /// A static device of `align` with every other option at its default, the one every
    /// front end uses: Heads layout, parallel init, touches caught where possible, one
    /// handler per core ([`DaxOptions::default_handlers`]), metadata populated at mapping time
    /// where touches are not caught, `Page` granularity.
    pub fn new(align: Order) -> DaxOptions {
        DaxOptions {
            align,
            layout: Layout::default(),
            init: InitMode::default(),
            ranges: None,
            faults: Faults::default(),
            handlers: Self::default_handlers(),
            fault_around: Self::DEFAULT_FAULT_AROUND,
            zero_ahead: 0,
            populate_on_map: true,
            granularity: Granularity::default(),
            progress: None,
        }
    }

    /// The default handler count: one per core this process may run on (at most
    /// [`MAX_HANDLERS`](Self::MAX_HANDLERS)), so that as many threads as there are cores can
    /// touch new leaves at once without queueing behind each other. An idle handler sleeps in
    /// `poll`. Measured on 2 cores: two threads touching 2 MiB leaves, p50 0.59–0.62× the
    /// kernel's with two handlers against 0.98–1.01× with one (BENCHMARKS.md).
    pub fn default_handlers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(Self::MAX_HANDLERS))
    }

    /// The most handler threads a device starts. Each handler serves one leaf at a time, so
    /// handlers beyond the threads that touch new leaves at once buy nothing but idle threads
    /// (a fault wakes one waiting handler: `Userfaultfd::waiter`). 256 still allows
    /// one handler per touching thread on a two-socket server of 128 cores, and stops a typo
    /// (100000) from starving the machine of threads.
    pub const MAX_HANDLERS: usize = 256;

    /// The default fault-around window, in leaves: 128 leaves of 4 KiB (512 KiB), the smallest
    /// power of two at which fewer than 1 touch in 100 of a sequential toucher faults (the
    /// window reaches it after 8 faults of growth). Each fault is a userfaultfd round trip,
    /// and the touch that faults waits while its whole window is allocated and zeroed (1.45 µs
    /// a shmem page), so every window between 2 and 64 leaves put a fault inside the p99:
    /// measured p99 4.5–8.9× the kernel's at 4 and 16 leaves, 0.03–0.05× at 128 with the
    /// wall time 0.7× the kernel's against 1.5–2.1× at 4. The cost is the touch that faults:
    /// 0.2–0.8 ms where the kernel's faults each take a few µs (BENCHMARKS.md). The kernel's
    /// `fault_around_bytes` is 64 KiB, but it maps only pages already in the page cache, and
    /// readahead, the kernel's closer analogue, likewise grows a stream's window and makes the
    /// read that misses wait for it. A caller that wants every touch short sets 1 to 4.
    pub const DEFAULT_FAULT_AROUND: usize = 128;

    /// The largest fault-around window, in leaves: one page table of 4 KiB entries, the
    /// kernel's bound on `fault_around_bytes` (`PTRS_PER_PTE`).
    pub const MAX_FAULT_AROUND: usize = 512;

    /// The most bytes the zero-ahead pool keeps ready: 1 GiB, so 512 leaves of 2 MiB or one
    /// of 1 GiB ([`max_zero_ahead`](Self::max_zero_ahead)). Beyond what the touchers reach
    /// before the pool's thread catches up, more only holds memory.
    pub const MAX_ZERO_AHEAD_BYTES: u64 = 1 << 30;

    /// The most leaves of `align` the zero-ahead pool may keep ready: 1 GiB of them, at
    /// least one.
    pub fn max_zero_ahead(align: Order) -> usize {
        usize::try_from((Self::MAX_ZERO_AHEAD_BYTES / align.bytes()).max(1)).unwrap_or(1)
    }

    /// The most memmap initialisation threads asked for in `init` without a check against
    /// the machine: more than the cores only queue behind each other. A machine with more
    /// cores than this may use one per core.
    pub const MAX_INIT_THREADS: usize = 1024;

    /// Refuses option values no device can use, whether or not it will catch touches, so that
    /// every front end accepts and refuses the same: no handler ([`DaxError::NoHandlers`]),
    /// more than [`MAX_HANDLERS`](Self::MAX_HANDLERS), a fault-around window that is not a
    /// power of two up to [`MAX_FAULT_AROUND`](Self::MAX_FAULT_AROUND)
    /// ([`DaxError::FaultAround`]), and more init threads than
    /// [`MAX_INIT_THREADS`](Self::MAX_INIT_THREADS) or the machine's cores, whichever is
    /// larger. [`DaxDevice::with_options`](super::DaxDevice::with_options) calls it before it starts anything.
    pub fn validate(&self) -> Result<(), DaxError> {
        if self.handlers == 0 {
            return Err(DaxError::NoHandlers);
        }
        if self.handlers > Self::MAX_HANDLERS {
            return Err(DaxError::Threads {
                what: "handlers",
                asked: self.handlers,
                max: Self::MAX_HANDLERS,
                why: "the fault handler threads of a device that catches touches",
            });
        }
        if !self.fault_around.is_power_of_two() || self.fault_around > Self::MAX_FAULT_AROUND {
            return Err(DaxError::FaultAround {
                asked: self.fault_around,
                max: Self::MAX_FAULT_AROUND,
            });
        }
        if self.zero_ahead > 0 && self.align == Order::BASE {
            return Err(DaxError::ZeroAhead {
                why: "zero-ahead prepares whole leaves of 2M or 1G; at align 4K each touch \
                      already maps a window of leaves (fault-around): use zero-ahead 0, or \
                      align 2M"
                    .into(),
            });
        }
        let max = Self::max_zero_ahead(self.align);
        if self.zero_ahead > max {
            return Err(DaxError::ZeroAhead {
                why: format!(
                    "zero-ahead {} is more leaves than the pool keeps ready (1 GiB of them): \
                     use 0 (off) to {max} at align {}",
                    self.zero_ahead,
                    super::Bytes(self.align.bytes())
                ),
            });
        }
        let init = self.init.threads();
        if init > Self::MAX_INIT_THREADS {
            let max = std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .max(Self::MAX_INIT_THREADS);
            if init > max {
                return Err(DaxError::Threads {
                    what: "init threads",
                    asked: init,
                    max,
                    why: "the threads that initialise the memmap; more than the cores only \
                          queue",
                });
            }
        }
        Ok(())
    }
}
