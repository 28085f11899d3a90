//! Fixtures shared by the crate's unit tests: a registered pgmap that counts its `folio_free`
//! callbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::addr::{Order, PfnRange};
use crate::init::InitMode;
use crate::memmap::{Folio, Layout};
use crate::pgmap::{DevPagemap, DeviceSpace, MemoryType, PagemapConfig};

/// A registered pgmap plus how many times its `folio_free` callback ran.
pub(crate) struct Fixture {
    pub(crate) space: DeviceSpace,
    pub(crate) p: Arc<DevPagemap>,
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
    let mut cfg = PagemapConfig::devdax(r, order);
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
