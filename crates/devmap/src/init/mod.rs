//! Memmap initialisation: `memmap_init_zone_device` and the engines that run it.
//!
//! `init_compound_part` writes one compound (or, for asynchronous init, one 64-descriptor piece
//! of it) in the kernel's order — head, first tail, `prep_compound_head`, then the remaining
//! unique tails — and is the only code that lays out a freshly populated compound. The engines
//! decide who calls it for which compounds: [`InitMode::Sync`] walks the data range on the
//! caller's thread; [`InitMode::Parallel`] splits it into compound-aligned chunks that a few
//! scoped threads (the caller among them) pull from a shared cursor, padata-style;
//! [`InitMode::Async`] returns at once and lets background workers do it while every lookup
//! first syncs the span it needs (`set`, `claim`, `boost`). A memmap adopted from a room is
//! not initialised but checked, unit by unit, on first sync (`verify`).

mod boost;
mod claim;
mod parallel;
mod set;
mod verify;

pub(crate) use self::boost::{enter_idle_class, enter_normal_class};
pub(crate) use self::set::MemmapSet;
pub use self::set::{InitState, NR_MEMMAP_RANGE, SUB_RANGE_DESCRIPTORS, SyncError};

use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::addr::{Pfn, PfnRange};
use crate::backing::PageHint;
use crate::desc::PgmapId;
use crate::memmap::{DESCS_PER_BLOCK, Memmap};

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
    /// In the background on `workers` threads; the pgmap is usable at once and every lookup
    /// first initialises (or waits for) the sub-ranges it needs.
    Async {
        /// Background threads.
        workers: NonZeroUsize,
    },
}

impl InitMode {
    /// Parallel with one thread per available core.
    pub fn parallel_default() -> Self {
        InitMode::Parallel { threads: cores() }
    }

    /// Async with one worker per available core.
    pub fn async_default() -> Self {
        InitMode::Async { workers: cores() }
    }

    /// Threads that work in this mode.
    pub fn threads(self) -> usize {
        match self {
            InitMode::Sync => 1,
            InitMode::Parallel { threads } => threads.get(),
            InitMode::Async { workers } => workers.get(),
        }
    }

    /// How the dense descriptor arrays should be mapped for this mode: huge pages when init
    /// writes them front to back before anyone looks; small pages for `Async`, whose first
    /// touches land at random places and must not each pay for zeroing a 2 MiB page.
    pub fn page_hint(self) -> PageHint {
        match self {
            InitMode::Sync | InitMode::Parallel { .. } => PageHint::Huge,
            InitMode::Async { .. } => PageHint::Small,
        }
    }

    /// The command-line name: `sync`, `parallel` or `async`.
    pub fn name(self) -> &'static str {
        match self {
            InitMode::Sync => "sync",
            InitMode::Parallel { .. } => "parallel",
            InitMode::Async { .. } => "async",
        }
    }
}

impl InitMode {
    /// Every mode's name: `sync`, `parallel`, `async`.
    pub const NAMES: &'static [&'static str] = &["sync", "parallel", "async"];
}

/// A mode by name, with its default threads (one per core) for `parallel` and `async`.
impl std::str::FromStr for InitMode {
    type Err = crate::units::UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let modes = [
            InitMode::Sync,
            InitMode::parallel_default(),
            InitMode::async_default(),
        ];
        crate::units::by_name("init", s, InitMode::NAMES, &modes)
    }
}

/// `Parallel` on every core: what a device gets unless told otherwise, in every front end.
impl Default for InitMode {
    fn default() -> Self {
        InitMode::parallel_default()
    }
}

impl std::fmt::Display for InitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn cores() -> NonZeroUsize {
    // Read once: `available_parallelism` reads the cgroup's CPU quota files on every call,
    // which costs more than a warm enable.
    static CORES: std::sync::OnceLock<NonZeroUsize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
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
    /// Asynchronous init: how often a sync had to wait because another thread was writing a
    /// piece of a sub-range it needed (at most one piece per other thread).
    pub waits: u64,
    /// Asynchronous init: how often such a wait raised the priority of the background worker
    /// writing the piece until it finished it, so the piece would not wait for the worker's
    /// turn at nice 19 (at most once per wait; never without `CAP_SYS_NICE` or an
    /// `RLIMIT_NICE` that allows it).
    pub boosts: u64,
}

impl std::ops::AddAssign for InitStats {
    fn add_assign(&mut self, o: Self) {
        self.descriptors += o.descriptors;
        self.elapsed += o.elapsed;
        self.threads = self.threads.max(o.threads);
        self.waits += o.waits;
        self.boosts += o.boosts;
    }
}

/// Descriptors an initialisation has written so far, for a caller to show while it runs (a
/// progress bar): counted a chunk at a time by the sync and parallel engines (every 128 MiB of
/// pfns), a sub-range at a time by the background workers. Share it through
/// [`PgmapConfig::progress`](crate::PgmapConfig::progress) or
/// [`DaxOptions::progress`](crate::dax::DaxOptions::progress) and read it from another
/// thread. Two handles are equal only if they are the same counter.
#[derive(Debug, Default)]
pub struct InitProgress(AtomicU64);

impl InitProgress {
    /// A counter at zero.
    pub fn new() -> std::sync::Arc<InitProgress> {
        std::sync::Arc::new(InitProgress::default())
    }

    /// Descriptors written so far.
    pub fn descriptors(&self) -> u64 {
        // Relaxed: a tally for display; nothing is published through it.
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: u64) {
        // Relaxed: as above.
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

impl PartialEq for InitProgress {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for InitProgress {}

/// Who the descriptors belong to and their idle reference count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitTarget {
    pub(crate) pgmap: PgmapId,
    pub(crate) idle_ref: i32,
}

/// Initialises the compound headed at `head` and returns the descriptors written.
pub(crate) fn init_compound(memmap: &Memmap, head: Pfn, t: InitTarget) -> u64 {
    init_compound_part(memmap, head, 0..usize::MAX, t)
}

/// Initialises descriptors `part` (indices into the compound's stored descriptors, clamped to
/// them) of the compound headed at `head` and returns how many it wrote.
///
/// The part starting at 0 populates the compound (Vmemmap directory entries) and writes the
/// head, first tail and `prep_compound_head` in the kernel's order; any other part writes only
/// tails, which depend on nothing but the head pfn. Parts of one compound may therefore be
/// written by different threads in any order; the compound is initialised once all are, and
/// whoever publishes that must order every part's writes before it (`claim`).
pub(crate) fn init_compound_part(
    memmap: &Memmap,
    head: Pfn,
    part: Range<usize>,
    t: InitTarget,
) -> u64 {
    let order = memmap.geometry().shift();
    let slots = if part.start == 0 {
        memmap.populate_compound(head)
    } else {
        memmap.compound_slots(head)
    };
    let slots = &slots[part.start.min(slots.len())..part.end.min(slots.len())];
    if part.start != 0 {
        for p in slots {
            p.init_tail(head);
        }
        return slots.len() as u64;
    }
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
        // Heads layout: tails are not stored.
        None => head_page.prep_compound_head(order),
    }
    slots.len() as u64
}

/// Descriptors one piece of asynchronous work writes: one 4 KiB page of them, so a piece
/// takes at most one first-touch fault of the (small-page) descriptor array.
pub(crate) const PIECE_DESCRIPTORS: u64 = DESCS_PER_BLOCK;

/// Descriptors stored per compound of `memmap`: a power of two (1 for Heads, 128 for deduped
/// Vmemmap, the compound's pages otherwise).
fn stored_per_compound(memmap: &Memmap) -> u64 {
    let per = memmap.layout().descriptors_per_compound(memmap.geometry());
    debug_assert!(per.is_power_of_two());
    per
}

/// The descriptors initialising the compound-aligned data span `range` writes.
pub(crate) fn nr_descriptors(memmap: &Memmap, range: PfnRange) -> u64 {
    (range.len() >> memmap.geometry().shift().get()) * stored_per_compound(memmap)
}

/// How many pieces the compound-aligned data span `range` splits into: its stored descriptors
/// in runs of [`PIECE_DESCRIPTORS`], never less than one.
pub(crate) fn nr_pieces(memmap: &Memmap, range: PfnRange) -> u64 {
    nr_descriptors(memmap, range)
        .div_ceil(PIECE_DESCRIPTORS)
        .max(1)
}

/// Initialises piece `piece` of the compound-aligned data span `range` and returns the
/// descriptors written. A piece is either whole compounds (when a compound stores at most
/// [`PIECE_DESCRIPTORS`]) or one run of [`PIECE_DESCRIPTORS`] inside one compound: both sizes
/// are powers of two, so no piece straddles a compound boundary.
pub(crate) fn init_piece(memmap: &Memmap, range: PfnRange, piece: u64, t: InitTarget) -> u64 {
    let per = stored_per_compound(memmap);
    let compound = memmap.geometry().shift().nr_pages();
    if per <= PIECE_DESCRIPTORS {
        let span = (PIECE_DESCRIPTORS / per) * compound;
        let start = range.start().add(piece * span);
        let end = start.add(span).min(range.end());
        if start >= end {
            return 0;
        }
        init_span(memmap, PfnRange::new_unchecked(start, end), t)
    } else {
        let parts = per / PIECE_DESCRIPTORS;
        let head = range.start().add(piece / parts * compound);
        let first = ((piece % parts) * PIECE_DESCRIPTORS) as usize;
        init_compound_part(memmap, head, first..first + PIECE_DESCRIPTORS as usize, t)
    }
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

/// Initialises the whole data range of `memmap` before returning (`Async` is treated as
/// `Parallel` on as many threads: the caller asked for everything now).
pub(crate) fn init_memmap(
    memmap: &Memmap,
    t: InitTarget,
    mode: InitMode,
    progress: Option<&InitProgress>,
) -> InitStats {
    let start = Instant::now();
    let range = memmap.geometry().data_range();
    let (descriptors, threads) = match mode {
        InitMode::Sync => match progress {
            None => (init_span(memmap, range, t), 1),
            Some(p) => (parallel::counted(memmap, range, t, p), 1),
        },
        InitMode::Parallel { threads } | InitMode::Async { workers: threads } => {
            parallel::run(memmap, range, t, threads.get(), progress)
        }
    };
    InitStats {
        descriptors,
        elapsed: start.elapsed(),
        threads,
        ..InitStats::default()
    }
}
