//! Memmap initialisation: `memmap_init_zone_device` and the engines that run it.
//!
//! `init_compound` writes one compound in the kernel's order — head, first tail,
//! `prep_compound_head`, then the remaining unique tails — and is the only code that lays out a
//! freshly populated compound. The engines decide who calls it for which compounds:
//! [`InitMode::Sync`] walks the data range on the caller's thread; [`InitMode::Parallel`] splits
//! it into compound-aligned chunks that a few scoped threads (the caller among them) pull from a
//! shared cursor, padata-style. Both finish before the pgmap is published, so no reader can see
//! a descriptor that is not initialised. The asynchronous engine (background workers with
//! on-demand `sync`) plugs in here as a third mode.

mod parallel;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crate::addr::{Pfn, PfnRange};
use crate::desc::PgmapId;
use crate::memmap::Memmap;

/// How a pgmap's memmap is initialised at enable time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// On the calling thread, like mainline's `memmap_init_zone_device`.
    Sync,
    /// On `threads` threads including the caller, chunks aligned to the compound size.
    Parallel {
        /// Threads working, the caller included.
        threads: NonZeroUsize,
    },
}

impl InitMode {
    /// Parallel with one thread per available core.
    pub fn parallel_default() -> Self {
        InitMode::Parallel {
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// Threads that work in this mode.
    pub fn threads(self) -> usize {
        match self {
            InitMode::Sync => 1,
            InitMode::Parallel { threads } => threads.get(),
        }
    }

    /// The command-line name: `sync` or `parallel`.
    pub fn name(self) -> &'static str {
        match self {
            InitMode::Sync => "sync",
            InitMode::Parallel { .. } => "parallel",
        }
    }
}

/// What one initialisation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitStats {
    /// Descriptors written.
    pub descriptors: u64,
    /// Wall time from start to the last descriptor.
    pub elapsed: Duration,
    /// Threads that worked.
    pub threads: usize,
}

impl std::ops::AddAssign for InitStats {
    fn add_assign(&mut self, o: Self) {
        self.descriptors += o.descriptors;
        self.elapsed += o.elapsed;
        self.threads = self.threads.max(o.threads);
    }
}

/// Who the descriptors belong to and their idle reference count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitTarget {
    pub(crate) pgmap: PgmapId,
    pub(crate) idle_ref: i32,
}

/// Initialises the compound headed at `head` and returns the descriptors written.
pub(crate) fn init_compound(memmap: &Memmap, head: Pfn, t: InitTarget) -> u64 {
    let order = memmap.geometry().shift();
    let slots = memmap.populate_compound(head);
    let Some((head_page, tails)) = slots.split_first() else {
        return 0;
    };
    head_page.init_zone_device(t.pgmap, t.idle_ref);
    if order.get() == 0 {
        return 1;
    }
    head_page.set_head_flag();
    match tails.split_first() {
        Some((first, rest)) => {
            first.init_tail(head);
            // After the first tail, as in the kernel, where page[1] holds the order.
            head_page.prep_compound_head(order);
            for p in rest {
                p.init_tail(head);
            }
        }
        // Folio layout: tails are not stored.
        None => head_page.prep_compound_head(order),
    }
    slots.len() as u64
}

/// Initialises every compound of `range` (compound aligned, inside the data range).
pub(crate) fn init_span(memmap: &Memmap, range: PfnRange, t: InitTarget) -> u64 {
    let step = memmap.geometry().shift().nr_pages();
    let mut written = 0;
    let mut head = range.start();
    while head < range.end() {
        written += init_compound(memmap, head, t);
        head = head.add(step);
    }
    written
}

/// Initialises the whole data range of `memmap` with `mode`.
pub(crate) fn init_memmap(memmap: &Memmap, t: InitTarget, mode: InitMode) -> InitStats {
    let start = Instant::now();
    let range = memmap.geometry().data_range();
    let (descriptors, threads) = match mode {
        InitMode::Sync => (init_span(memmap, range, t), 1),
        InitMode::Parallel { threads } => parallel::run(memmap, range, t, threads.get()),
    };
    InitStats {
        descriptors,
        elapsed: start.elapsed(),
        threads,
    }
}
