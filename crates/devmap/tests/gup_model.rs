//! Random sequences of pins, gets and unpins on one device-dax pgmap, checked after every step
//! against a model that knows only the accounting rules: a pin of `n` pages of a large folio
//! adds `n` to its refcount and pincount, of a small folio `n × GUP_PIN_COUNTING_BIAS` to its
//! refcount; a get adds `n` to the refcount; a dirty unpin marks every folio it touches dirty;
//! the free path runs each time a folio's refcount comes back to its idle value (1).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use devmap::{
    DeviceSpace, Folio, Folios, GUP_PIN_COUNTING_BIAS, GupFlags, InitMode, Layout, Order, Pages,
    PfnRange, Pgmap, PgmapConfig, Pinned,
};
use proptest::prelude::*;

/// 16 MiB of device memory.
const PAGES: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Pages,
    Folios,
}

#[derive(Debug, Clone)]
enum Op {
    /// Pin `len` pages from page `start`; `dirty`: pinned with `GupFlags::WRITE` (the caller
    /// means to dirty them; the unpin decides whether they are marked).
    PinPages {
        start: u64,
        len: u64,
        api: Api,
        dirty: bool,
    },
    /// Plain references on `len` pages from page `start`.
    GetPages { start: u64, len: u64 },
    /// Release the held result `index` (modulo the number held) with `variant`, dirtying if
    /// the variant takes a flag and `dirty`.
    Unpin {
        index: prop::sample::Index,
        dirty: bool,
        variant: u8,
    },
}

fn span() -> impl Strategy<Value = (u64, u64)> {
    (0..PAGES, 1u64..1300).prop_map(|(start, len)| (start, len.min(PAGES - start)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (span(), prop::bool::ANY, prop::bool::ANY).prop_map(|((start, len), folios, dirty)| {
            Op::PinPages {
                start,
                len,
                api: if folios { Api::Folios } else { Api::Pages },
                dirty,
            }
        }),
        1 => span().prop_map(|(start, len)| Op::GetPages { start, len }),
        3 => (any::<prop::sample::Index>(), prop::bool::ANY, 0u8..4)
            .prop_map(|(index, dirty, variant)| Op::Unpin { index, dirty, variant }),
    ]
}

#[derive(Debug)]
enum Handle {
    Pages(Pinned<Pages>),
    Folios(Pinned<Folios>),
}

#[derive(Debug)]
struct Held {
    handle: Handle,
    /// Page offsets from the pgmap's start.
    start: u64,
    len: u64,
    pin: bool,
}

/// Per folio: (refcount, pincount, dirty). Device-dax folios go back to idle without a
/// `folio_free` call (`free_zone_device_folio` only resets the count), so none is expected.
struct Model {
    shift: u32,
    folios: Vec<(i32, i32, bool)>,
}

impl Model {
    fn new(order: Order) -> Self {
        let shift = order.get();
        Self {
            shift,
            folios: vec![(1, 0, false); (PAGES >> shift) as usize],
        }
    }

    /// (folio index, pages of it covered) for every folio `start..start + len` touches.
    fn pieces(&self, start: u64, len: u64) -> Vec<(usize, i32)> {
        let size = 1u64 << self.shift;
        let mut out = Vec::new();
        let mut pfn = start;
        while pfn < start + len {
            let end = ((pfn / size + 1) * size).min(start + len);
            out.push(((pfn / size) as usize, (end - pfn) as i32));
            pfn = end;
        }
        out
    }

    fn delta(&self, n: i32, pin: bool) -> (i32, i32) {
        match (pin, self.shift > 0) {
            (true, true) => (n, n),
            (true, false) => (n * GUP_PIN_COUNTING_BIAS, 0),
            (false, _) => (n, 0),
        }
    }

    fn take(&mut self, start: u64, len: u64, pin: bool) {
        for (f, n) in self.pieces(start, len) {
            let (dr, dp) = self.delta(n, pin);
            self.folios[f].0 += dr;
            self.folios[f].1 += dp;
        }
    }

    fn release(&mut self, start: u64, len: u64, pin: bool, dirty: bool) {
        for (f, n) in self.pieces(start, len) {
            let (dr, dp) = self.delta(n, pin);
            let folio = &mut self.folios[f];
            folio.0 -= dr;
            folio.1 -= dp;
            folio.2 |= dirty;
        }
    }
}

fn pgmap(layout: Layout, order: Order) -> (DeviceSpace, Arc<Pgmap>, Arc<AtomicUsize>) {
    let space = DeviceSpace::new();
    let range = space.reserve_range(PAGES * 4096, 2 << 20).expect("range");
    let mut cfg = PgmapConfig::devdax(range, order);
    cfg.layout = layout;
    cfg.init = InitMode::Sync;
    let frees = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&frees);
    cfg.ops.folio_free = Some(Arc::new(move |_f: &Folio<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
    }));
    let p = space.memremap_pages(cfg).expect("pgmap");
    (space, p, frees)
}

fn check(
    p: &Pgmap,
    model: &Model,
    frees: &AtomicUsize,
    held: usize,
    step: usize,
) -> Result<(), TestCaseError> {
    let base = p.ranges().next().expect("range").start();
    for (i, want) in model.folios.iter().enumerate() {
        let pfn = base.add((i as u64) << model.shift);
        let f = p.folio(pfn).expect("folio");
        prop_assert_eq!(f.pfn(), pfn);
        prop_assert_eq!(
            (f.refcount(), f.pincount(), f.is_dirty()),
            *want,
            "step {}: folio {}",
            step,
            i
        );
        let dma = if model.shift > 0 {
            want.1 > 0
        } else {
            want.0 >= GUP_PIN_COUNTING_BIAS
        };
        prop_assert_eq!(f.maybe_dma_pinned(), dma, "step {}: folio {}", step, i);
    }
    prop_assert_eq!(
        frees.load(Ordering::Relaxed),
        0,
        "step {}: folio_free called",
        step
    );
    prop_assert_eq!(p.refs(), held as u64, "step {}: liveness references", step);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pins_gets_and_unpins_follow_the_model(
        layout in prop::sample::select(Layout::ALL.to_vec()),
        order in prop::sample::select(vec![Order::BASE, Order::PMD]),
        ops in prop::collection::vec(op(), 1..24),
    ) {
        let (space, p, frees) = pgmap(layout, order);
        let base = p.ranges().next().expect("range").start();
        let mut model = Model::new(order);
        let mut held: Vec<Held> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::PinPages { start, len, api, dirty } => {
                    let r = PfnRange::new(base.add(start), len).expect("range");
                    let flags = if dirty { GupFlags::WRITE } else { GupFlags::NONE };
                    let handle = match api {
                        Api::Pages => {
                            let pages = p.pin_pages(r, flags).expect("pin_pages");
                            prop_assert_eq!(pages.len() as u64, len);
                            prop_assert_eq!(pages.entries().first().copied(), Some(r.start()));
                            prop_assert_eq!(pages.flags(), flags);
                            Handle::Pages(pages)
                        }
                        Api::Folios => {
                            let folios = p.pin_folios(r, flags).expect("pin_folios");
                            let pieces = model.pieces(start, len);
                            prop_assert_eq!(folios.len(), pieces.len());
                            let mut next = r.start();
                            for (f, (idx, n)) in folios.entries().iter().zip(pieces) {
                                prop_assert_eq!(f.head(), base.add((idx as u64) << model.shift));
                                prop_assert_eq!(f.order(), order);
                                prop_assert_eq!(f.range().start(), next);
                                prop_assert_eq!(f.range().len(), n as u64);
                                next = f.range().end();
                            }
                            prop_assert_eq!(next, r.end());
                            Handle::Folios(folios)
                        }
                    };
                    model.take(start, len, true);
                    held.push(Held { handle, start, len, pin: true });
                }
                Op::GetPages { start, len } => {
                    let r = PfnRange::new(base.add(start), len).expect("range");
                    let pages = p.get_pages(r, GupFlags::NONE).expect("get_pages");
                    prop_assert_eq!(pages.len() as u64, len);
                    model.take(start, len, false);
                    held.push(Held { handle: Handle::Pages(pages), start, len, pin: false });
                }
                Op::Unpin { index, dirty, variant } => {
                    if held.is_empty() {
                        continue;
                    }
                    let h = held.swap_remove(index.index(held.len()));
                    let marked = match (h.handle, variant) {
                        (Handle::Pages(pg), 0) => { pg.unpin(false); false }
                        (Handle::Pages(pg), 1) => { pg.unpin(dirty); dirty }
                        (Handle::Pages(pg), 2) => { pg.unpin_as_range(dirty); dirty }
                        (Handle::Pages(pg), _) => { drop(pg); false }
                        (Handle::Folios(f), 0) => { f.unpin(false); false }
                        (Handle::Folios(f), 1 | 2) => { f.unpin(dirty); dirty }
                        (Handle::Folios(f), _) => { drop(f); false }
                    };
                    model.release(h.start, h.len, h.pin, marked);
                }
            }
            check(&p, &model, &frees, held.len(), step)?;
        }
        for h in held.drain(..) {
            model.release(h.start, h.len, h.pin, false);
        }
        check(&p, &model, &frees, 0, usize::MAX)?;
        prop_assert!(model.folios.iter().all(|f| (f.0, f.1) == (1, 0)));
        space.memunmap_pages(&p, None).expect("teardown once idle");
    }
}
