//! Every layout answers `compound_head`, `folio` and `order` identically for the same geometry,
//! including pgmaps with several ranges or with an altmap, and as a simple model predicts; and
//! every layout holds exactly the host memory it accounts for.

use devmap::memmap::LookupError;
use devmap::{DeviceSpace, InitMode, Layout, Order, Pfn, PfnRange, PgmapConfig, PgmapError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Shape {
    shift: u32,
    /// Compounds per range; ranges are laid out with a one-compound hole between them.
    compounds: Vec<u64>,
    altmap_reserve: Option<u64>,
    init_threads: usize,
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        prop::sample::select(vec![0u32, 2, 6, 8, 9]),
        prop::collection::vec(1u64..6, 1..4),
        prop::option::of(0u64..4),
        1usize..4,
    )
        .prop_map(|(shift, mut compounds, altmap_reserve, init_threads)| {
            if altmap_reserve.is_some() {
                // An altmap needs a pgmap of one range (as in the kernel), with room for data
                // after the on-device memmap.
                compounds.truncate(1);
                compounds[0] += 2;
            }
            Shape {
                shift,
                compounds,
                altmap_reserve,
                init_threads,
            }
        })
}

fn ranges(s: &Shape) -> Vec<PfnRange> {
    let c = 1u64 << s.shift.max(6);
    let mut next = 1u64 << 30;
    s.compounds
        .iter()
        .map(|&k| {
            let pages = k * c;
            let r = PfnRange::new(Pfn::new(next), pages).expect("range");
            next += pages + c;
            r
        })
        .collect()
}

fn config(s: &Shape, layout: Layout) -> PgmapConfig {
    let rs = ranges(s);
    let mut cfg = PgmapConfig::devdax(rs[0], Order::new(s.shift).expect("order"));
    cfg.ranges = rs;
    cfg.layout = layout;
    cfg.altmap_reserve = s.altmap_reserve;
    cfg.init = match std::num::NonZeroUsize::new(s.init_threads) {
        Some(threads) if s.init_threads > 1 => InitMode::Parallel { threads },
        _ => InitMode::Sync,
    };
    cfg
}

type Answer = Result<(Pfn, Pfn, Order), String>;

fn answer(p: &devmap::Pgmap, pfn: Pfn) -> Answer {
    let f = p.folio(pfn).map_err(|e| short(&e))?;
    let head = p.compound_head(pfn).map_err(|e| short(&e))?;
    let order = p.order(pfn).map_err(|e| short(&e))?;
    Ok((head, f.pfn(), order))
}

fn short(e: &PgmapError) -> String {
    match e {
        PgmapError::Lookup(LookupError::AltmapPfn { .. }) => "altmap".into(),
        PgmapError::Sync(devmap::SyncError::OutOfRange { .. }) => "not found".into(),
        other => other.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn layouts_agree_with_each_other_and_the_model(s in shapes(), probes in prop::collection::vec(any::<u64>(), 64)) {
        let maps: Vec<_> = Layout::ALL
            .iter()
            .map(|&l| DeviceSpace::new().memremap_pages(config(&s, l)).expect("pgmap"))
            .collect();
        let rs = ranges(&s);
        let span_end = rs.last().expect("one range").end().raw() + (1 << s.shift.max(6));
        let span_start = rs[0].start().raw();
        // Each layout sizes its own altmap (Folio's is smallest), so the model is per pgmap.
        let altmap_end = |p: &devmap::Pgmap| p.altmap().map_or(rs[0].start(), |a| rs[0].start().add(a.offset()));
        // Probe every range edge and random pfns across (and just outside) the span.
        let mut pfns: Vec<Pfn> = rs.iter().flat_map(|r| [r.start(), Pfn::new(r.end().raw() - 1), r.end()]).collect();
        pfns.extend(probes.iter().map(|x| Pfn::new(span_start - 1 + x % (span_end - span_start + 1))));
        let order = Order::new(s.shift).expect("order");
        for pfn in pfns {
            for p in &maps {
                let model: Answer = if !rs.iter().any(|r| r.contains(pfn)) {
                    Err("not found".into())
                } else if pfn >= rs[0].start() && pfn < altmap_end(p) {
                    Err("altmap".into())
                } else {
                    let h = pfn.align_down(order);
                    Ok((h, h, order))
                };
                prop_assert_eq!(answer(p, pfn), model, "{:?} at {}", p.layout(), pfn);
            }
        }
        let stats: Vec<u64> = maps.iter().map(|p| p.init_stats().descriptors).collect();
        for (p, n) in maps.iter().zip(stats) {
            prop_assert_eq!(n, p.cost().descriptors_initialized);
            // What the accounting charges to host memory is what the stores hold.
            let held = p.resident().expect("resident");
            prop_assert_eq!(held.dram_bytes, p.cost().metadata_bytes, "{:?}", p.layout());
        }
    }
}
