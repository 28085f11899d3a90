//! Fixtures shared by the crate's unit tests: a registered pgmap that counts its `folio_free`
//! callbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::addr::{Order, PfnRange};
use crate::init::InitMode;
use crate::memmap::{Folio, Layout};
use crate::pgmap::{DeviceSpace, MemoryType, Pgmap, PgmapConfig};

/// A registered pgmap plus how many times its `folio_free` callback ran.
pub(crate) struct Fixture {
    pub(crate) space: DeviceSpace,
    pub(crate) p: Arc<Pgmap>,
    pub(crate) r: PfnRange,
    pub(crate) frees: Arc<AtomicUsize>,
}

/// `bytes` of `ty` memory aligned to `align`, synchronously initialised, with an owner and a
/// counting `folio_free` (so every type validates).
pub(crate) fn fixture(
    bytes: u64,
    align: u64,
    layout: Layout,
    order: Order,
    ty: MemoryType,
) -> Fixture {
    let space = DeviceSpace::new();
    let r = space.reserve_range(bytes, align).expect("range");
    let mut cfg = PgmapConfig::devdax(r, order);
    cfg.layout = layout;
    cfg.memory_type = ty;
    cfg.init = InitMode::Sync;
    cfg.owner = Some(0xd0d0);
    let frees = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&frees);
    cfg.ops.folio_free = Some(Arc::new(move |_f: &Folio<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
    }));
    let p = space.memremap_pages(cfg).expect("pgmap");
    Fixture { space, p, r, frees }
}

/// xorshift64*: small, deterministic per seed, good enough to pick ranges and timings in the
/// stress tests (which replay the same way for a seed, scheduling aside).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Busy-waits a random while, up to a few microseconds and often much less: moves the
    /// next step across another thread's, whose windows are short.
    pub(crate) fn spin(&mut self) {
        let max = [1, 16, 128, 1024][self.below(4) as usize];
        for _ in 0..self.below(max) {
            std::hint::spin_loop();
        }
    }
}

/// Every pfn of `span` is its own idle order-0 folio.
pub(crate) fn assert_split(p: &Pgmap, span: PfnRange, what: &str) {
    for i in 0..span.len() {
        let pfn = span.start().add(i);
        let f = p.folio(pfn).expect("folio");
        assert_eq!(
            (f.pfn(), f.order(), f.refcount(), f.mapcount(), f.pincount()),
            (pfn, Order::BASE, 0, 0, 0),
            "{what}: pfn +{i}"
        );
        assert_eq!(p.compound_head(pfn).expect("head"), pfn, "{what}: +{i}");
        assert!(!f.is_dirty(), "{what}: +{i}");
    }
}
