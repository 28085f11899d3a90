//! Layout tests: the kernel's published costs, accounting against resident memory, lookups,
//! dedup aliasing and un-sharing.

use super::Synced;
use super::*;
use crate::addr::PAGE_SIZE;
use crate::backing::PageHint;
use crate::desc::PgmapId;
use crate::init::{InitMode, InitTarget, MemmapSet, init_memmap};

const TIB_PAGES: u64 = (1 << 40) / PAGE_SIZE;

fn geo(pages: u64, shift: u32) -> Geometry {
    let range = PfnRange::new(Pfn::new(1 << 20), pages).expect("range");
    Geometry::new(range, Order::new(shift).expect("order")).expect("geometry")
}

fn target() -> InitTarget {
    InitTarget {
        pgmap: PgmapId::new(1).expect("id"),
        idle_ref: 1,
    }
}

fn built(layout: Layout, g: Geometry) -> MemmapSet {
    let m = Memmap::new(layout, g, PageHint::Huge).expect("memmap");
    MemmapSet::new(vec![m], target(), InitMode::Sync, None)
}

/// The memmap of a one-range set and a sync token for all of it.
fn whole(set: &MemmapSet) -> (&Memmap, Synced) {
    let r = set.maps()[0].geometry().range();
    set.sync(r).expect("sync")
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// 1 TiB with an altmap as ndctl's `--map dev` lays it out (an 8 KiB info block first).
fn tib_on_device(shift: u32) -> Geometry {
    let range = PfnRange::new(Pfn::new(0), TIB_PAGES).expect("range");
    let order = Order::new(shift).expect("order");
    Geometry::with_altmap(range, order, Layout::Vmemmap, 2).expect("geometry")
}

#[test]
fn one_tib_costs_match_the_kernel() {
    for shift in [0, 9, 18] {
        assert_eq!(
            Layout::Flat.cost(&geo(TIB_PAGES, shift)).metadata_bytes,
            17_179_869_184,
            "flat is 16 GiB per TiB at any align"
        );
    }
    assert!(Layout::Heads.cost(&geo(TIB_PAGES, 9)).metadata_bytes <= 32 * MIB + (1 << 19));
    assert!(Layout::Heads.cost(&geo(TIB_PAGES, 18)).metadata_bytes <= 68 * KIB);
}

/// The kernel's sparse vmemmap for 1 TiB, level by level: 8192 sections, so 8192 PMD entries
/// in 16 PMD tables and 8192 `mem_section_usage` records of 96 bytes; PTE tables only where
/// tail blocks are shared.
#[test]
fn vmemmap_pays_each_level_the_kernel_pays() {
    let pmd = 64 * KIB;
    let usage = 768 * KIB;
    let want = |descriptor: u64, pte_table: u64| Cost::dram(descriptor, pte_table, pmd, usage);
    let v = |shift| {
        let c = Layout::Vmemmap.cost(&geo(TIB_PAGES, shift));
        Cost {
            descriptors_initialized: 0,
            ..c
        }
    };
    // 4K: 2 MiB PMD leaves, no PTE table.
    assert_eq!(v(0), want(16 * GIB, 0));
    // 2M: 2 unique 4 KiB pages per compound, one PTE table per section.
    assert_eq!(v(9), want(4 * GIB, 32 * MIB));
    // 1G: 2 pages per compound, and its 16 MiB of vmemmap take 8 PTE tables.
    assert_eq!(v(18), want(8 * MIB, 32 * MIB));

    let within = |got: u64, want: f64, tol: f64| (got as f64 / want - 1.0).abs() < tol;
    let kernel_1g = 40.5 * MIB as f64;
    assert!(within(v(18).metadata_bytes, kernel_1g, 0.01), "{:?}", v(18));
    assert!(
        within(v(0).metadata_bytes, (16 * GIB) as f64, 0.001),
        "{:?}",
        v(0)
    );
    assert!(within(
        v(9).metadata_bytes,
        (4 * GIB + 32 * MIB) as f64,
        0.001
    ));
    let sum = |c: Cost| {
        c.descriptor_bytes + c.pte_table_bytes + c.pmd_table_bytes + c.section_usage_bytes
    };
    for shift in [0, 9, 18] {
        assert_eq!(v(shift).metadata_bytes, sum(v(shift)));
    }

    // On the device the 2 MiB leaves come from the altmap: host memory keeps the PMD tables
    // and the section usage, as the kernel's does.
    for shift in [0, 9, 18] {
        let c = Layout::Vmemmap.cost(&tib_on_device(shift));
        assert_eq!(
            (c.metadata_bytes, c.descriptor_bytes, c.pte_table_bytes),
            (pmd + usage, 0, 0),
            "order {shift}"
        );
        assert!(c.metadata_bytes < MIB);
        assert!(
            c.device_bytes >= 16 * GIB,
            "the altmap holds the whole memmap"
        );
    }
}

#[test]
fn descriptors_initialised_per_2m_compound() {
    let g = geo(512, 9);
    let per: Vec<u64> = Layout::ALL
        .iter()
        .map(|l| l.cost(&g).descriptors_initialized)
        .collect();
    assert_eq!(per, vec![512, 128, 1]);
    for layout in Layout::ALL {
        let m = Memmap::new(layout, geo(512 * 4, 9), PageHint::Huge).expect("memmap");
        let stats = init_memmap(&m, target(), InitMode::Sync, None);
        assert_eq!(
            stats.descriptors,
            m.cost().descriptors_initialized,
            "{layout:?}"
        );
    }
}

#[test]
fn below_order_8_vmemmap_does_not_dedup() {
    let g = geo(1 << 12, 7);
    assert!(!g.dedups());
    let flat = Layout::Flat.cost(&g);
    let v = Layout::Vmemmap.cost(&g);
    assert_eq!(v.descriptors_initialized, flat.descriptors_initialized);
    assert_eq!(v.descriptor_bytes, flat.metadata_bytes);
    // Less than a section: base pages through one PTE table, one PMD entry, one usage record.
    assert_eq!(
        (v.pte_table_bytes, v.pmd_table_bytes, v.section_usage_bytes),
        (PAGE_SIZE, PAGE_SIZE, PAGE_SIZE)
    );
    // Whole sections are leaves: no PTE table.
    let whole = Layout::Vmemmap.cost(&geo(3 * DESCS_PER_PMD, 7));
    assert_eq!(whole.pte_table_bytes, 0);
    assert_eq!(whole.descriptor_bytes, 3 * DESCS_PER_PMD * DESC_SIZE);
}

/// Geometries whose accounting is checked against what the stores hold, for each layout: 4K,
/// 2M and 1G compounds (and the orders either side of dedup), whole and partial sections,
/// with and without an altmap (which each layout sizes for itself).
fn checked_geometries() -> Vec<(Layout, Geometry)> {
    let shapes = [
        (0, 3 * DESCS_PER_PMD + 1000),
        (0, 700),
        (7, 2 * DESCS_PER_PMD + 128 * 5),
        (8, DESCS_PER_PMD + 256 * 3),
        (9, 5 * DESCS_PER_PMD + 512 * 7),
        (9, 512 * 3),
        (18, 2 << 18),
    ];
    let mut out = Vec::new();
    for (shift, pages) in shapes {
        let range = PfnRange::new(Pfn::new(1 << 20), pages).expect("range");
        let order = Order::new(shift).expect("order");
        for layout in Layout::ALL {
            out.push((layout, Geometry::new(range, order).expect("geometry")));
            if let Ok(g) = Geometry::with_altmap(range, order, layout, 2) {
                out.push((layout, g));
            }
        }
    }
    out
}

/// The accounting is the memory the store holds, item by item: after initialisation the host
/// memory resident in a store's mappings is exactly `metadata_bytes`, in every layout and
/// geometry, and stays so when a per-tail write un-shares a block.
#[test]
fn accounted_host_memory_is_what_the_store_holds() {
    for (layout, g) in checked_geometries() {
        let altmap = g.altmap().is_some();
        let ctx = format!(
            "{layout:?} order {} pages {} altmap {altmap}",
            g.shift(),
            g.range().len()
        );
        let m = Memmap::new(layout, g, PageHint::Huge).expect("memmap");
        assert_eq!(m.cost(), layout.cost(&g), "{ctx}: live and estimated agree");
        let set = MemmapSet::new(vec![m], target(), InitMode::Sync, None);
        let (m, s) = whole(&set);
        let held = m.resident().expect("resident");
        let cost = m.cost();
        assert_eq!(held.dram_bytes, cost.metadata_bytes, "{ctx}: {cost:?}");
        if !altmap {
            assert_eq!(held.device_bytes, 0, "{ctx}");
        }
        if layout == Layout::Vmemmap && g.dedups() {
            let tail = g.range().start().add(g.shift().nr_pages() - 1);
            m.mark_subpage_hwpoison(&s, tail).expect("poison");
            let cost = m.cost();
            let copied = layout.cost(&g).descriptor_bytes + PAGE_SIZE;
            assert_eq!(cost.descriptor_bytes, copied, "{ctx}");
            let held = m.resident().expect("resident");
            assert_eq!(
                held.dram_bytes, cost.metadata_bytes,
                "{ctx}: after un-sharing"
            );
        }
    }
}

#[test]
fn every_layout_finds_the_same_heads_and_orders() {
    for shift in [0, 3, 6, 8, 9] {
        let g = geo(4 << shift.max(6), shift);
        let sets: Vec<MemmapSet> = Layout::ALL.iter().map(|&l| built(l, g)).collect();
        for off in 0..g.range().len() {
            let pfn = g.range().start().add(off);
            let want = pfn.align_down(g.shift());
            for set in &sets {
                let (m, s) = whole(set);
                let f = m.folio(&s, pfn).expect("folio");
                assert_eq!(
                    m.compound_head(&s, pfn),
                    Ok(want),
                    "{:?} shift {shift}",
                    m.layout()
                );
                assert_eq!((f.pfn(), f.order()), (want, g.shift()));
                assert_eq!(f.head_page().refcount(), 1);
            }
        }
    }
}

#[test]
fn vmemmap_tails_alias_the_shared_block() {
    let set = built(Layout::Vmemmap, geo(1024, 9));
    let (m, s) = whole(&set);
    let start = m.geometry().range().start();
    let d = |off| {
        m.descriptor(&s, start.add(off))
            .expect("lookup")
            .expect("stored")
    };
    // Same slot of blocks 1, 2 and 7 of compound 0: one descriptor.
    assert!(std::ptr::eq(d(64 + 5), d(128 + 5)));
    assert!(std::ptr::eq(d(64 + 5), d(448 + 5)));
    // Block 0 is unique; compound 1 has its own shared block.
    assert!(!std::ptr::eq(d(5), d(64 + 5)));
    assert!(!std::ptr::eq(d(64 + 5), d(512 + 64 + 5)));
}

#[test]
fn a_per_tail_write_unshares_only_its_block() {
    let set = built(Layout::Vmemmap, geo(1024, 9));
    let (m, s) = whole(&set);
    let start = m.geometry().range().start();
    let before = m.cost().metadata_bytes;
    let victim = start.add(300);
    m.mark_subpage_hwpoison(&s, victim).expect("poison");
    assert_eq!(
        m.cost().metadata_bytes,
        before + PAGE_SIZE,
        "one block copied"
    );
    assert_eq!(m.subpage_hwpoison(&s, victim), Ok(true));
    for other in [301, 300 - 64, 300 + 64, 512 + 300] {
        assert_eq!(
            m.subpage_hwpoison(&s, start.add(other)),
            Ok(false),
            "pfn +{other}"
        );
    }
    // The copy still describes a tail of the same compound.
    assert_eq!(m.compound_head(&s, victim), Ok(start));
    let head = m.folio(&s, victim).expect("folio").head_page();
    assert!(head.flags().contains(PageFlags::HAS_HWPOISONED));
    // A second write to the same block copies nothing more.
    m.mark_subpage_hwpoison(&s, start.add(301)).expect("poison");
    assert_eq!(m.cost().metadata_bytes, before + PAGE_SIZE);
}

#[test]
fn folio_layout_keeps_subpage_poison_aside() {
    let set = built(Layout::Heads, geo(1024, 9));
    let (m, s) = whole(&set);
    let start = m.geometry().range().start();
    assert!(
        matches!(m.descriptor(&s, start.add(3)), Ok(None)),
        "tails are not stored"
    );
    m.mark_subpage_hwpoison(&s, start.add(3)).expect("poison");
    assert_eq!(m.subpage_hwpoison(&s, start.add(3)), Ok(true));
    assert_eq!(m.subpage_hwpoison(&s, start.add(4)), Ok(false));
}

#[test]
fn altmap_pfns_have_no_descriptors_and_data_starts_aligned() {
    let range = PfnRange::new(Pfn::new(1 << 20), 1 << 15).expect("range");
    let g = Geometry::with_altmap(range, Order::PMD, Layout::Flat, 2).expect("geometry");
    // 32768 pages * 64 B = 512 pages of memmap + 2 reserved, padded to 1024.
    assert_eq!(g.altmap_pfns(), 1024);
    assert!(g.data_range().start().is_aligned(Order::PMD));
    let set = built(Layout::Flat, g);
    let (m, s) = whole(&set);
    assert_eq!(
        m.folio(&s, range.start()).map(|f| f.pfn()),
        Err(LookupError::AltmapPfn { pfn: range.start() })
    );
    assert_eq!(
        m.compound_head(&s, range.start().add(1024 + 7)),
        Ok(range.start().add(1024))
    );
    let c = m.cost();
    assert_eq!((c.metadata_bytes, c.device_bytes), (0, 1024 * PAGE_SIZE));
    assert_eq!(c.descriptors_initialized, (1 << 15) - 1024);
}

#[test]
fn altmap_that_eats_the_range_is_refused() {
    let range = PfnRange::new(Pfn::new(0), 512).expect("range");
    assert!(matches!(
        Geometry::with_altmap(range, Order::PMD, Layout::Flat, 0),
        Err(MemmapError::AltmapTooLarge { .. })
    ));
}

#[test]
fn an_altmap_sized_by_the_caller_must_hold_the_memmap_and_end_on_a_compound() {
    let range = PfnRange::new(Pfn::new(1 << 20), 1 << 15).expect("range");
    let sized = |layout, reserve, free| {
        Geometry::with_altmap_sized(range, Order::PMD, layout, AltmapGeometry { reserve, free })
    };
    // More room than the memmap needs: the data starts where the caller said.
    let g = sized(Layout::Heads, 2, 1534).expect("geometry");
    assert_eq!(g.altmap_pfns(), 1536);
    assert_eq!(g.data_range().start(), range.start().add(1536));
    let c = Layout::Heads.cost(&g);
    assert_eq!((c.metadata_bytes, c.device_bytes), (0, 1536 * PAGE_SIZE));
    assert!(matches!(
        sized(Layout::Flat, 2, 510),
        Err(MemmapError::AltmapTooSmall {
            layout: Layout::Flat,
            memmap_pfns: 512,
            free: 510
        })
    ));
    assert!(matches!(
        sized(Layout::Flat, 2, 600),
        Err(MemmapError::AltmapMisaligned {
            altmap_pfns: 602,
            ..
        })
    ));
    assert!(matches!(
        sized(Layout::Flat, 2, (1 << 15) - 2),
        Err(MemmapError::AltmapTooLarge { .. })
    ));
    assert!(matches!(
        sized(Layout::Flat, u64::MAX, 2),
        Err(MemmapError::AltmapTooLarge { .. })
    ));
}

#[test]
fn misaligned_geometry_is_refused() {
    let r = PfnRange::new(Pfn::new(256), 512).expect("range");
    assert!(matches!(
        Geometry::new(r, Order::PMD),
        Err(MemmapError::Misaligned { .. })
    ));
    let empty = PfnRange::new(Pfn::new(0), 0).expect("range");
    assert!(matches!(
        Geometry::new(empty, Order::BASE),
        Err(MemmapError::EmptyRange { .. })
    ));
}

#[test]
fn out_of_range_lookups_are_errors() {
    let set = built(Layout::Flat, geo(512, 9));
    let (m, s) = whole(&set);
    let end = m.geometry().range().end();
    assert!(matches!(
        m.folio(&s, end),
        Err(LookupError::OutOfRange { .. })
    ));
}

#[test]
fn parallel_init_writes_what_sync_init_writes() {
    for layout in Layout::ALL {
        let g = geo(1 << 17, 9);
        let set_a = built(layout, g);
        let (a, sa) = whole(&set_a);
        let threads = std::num::NonZeroUsize::new(3).expect("non-zero");
        let set_b = MemmapSet::new(
            vec![Memmap::new(layout, g, PageHint::Huge).expect("memmap")],
            target(),
            InitMode::Parallel { threads },
            None,
        );
        let (b, sb) = whole(&set_b);
        let stats = set_b.stats();
        assert_eq!(stats.threads, 3);
        assert_eq!(stats.descriptors, a.cost().descriptors_initialized);
        for off in 0..g.range().len() {
            let pfn = g.range().start().add(off);
            let (x, y) = (a.descriptor(&sa, pfn), b.descriptor(&sb, pfn));
            assert_eq!(
                x.map(|p| p.map(Page::snapshot)),
                y.map(|p| p.map(Page::snapshot)),
                "{layout:?} +{off}"
            );
        }
    }
}

/// The batched walk that pins and unpins use must find exactly the folios (heads, orders and
/// descriptors) that looking every pfn up one at a time finds, on every layout, at every order,
/// with and without an altmap, for ranges that start and end inside folios.
#[test]
fn static_walk_finds_what_per_pfn_lookups_find() {
    let range = PfnRange::new(Pfn::new(1 << 20), 1 << 13).expect("range");
    for layout in Layout::ALL {
        for shift in [0, 3, 9] {
            let order = Order::new(shift).expect("order");
            for altmap in [false, true] {
                let g = if altmap {
                    Geometry::with_altmap(range, order, layout, 2).expect("geometry")
                } else {
                    Geometry::new(range, order).expect("geometry")
                };
                let data = g.data_range();
                let set = built(layout, g);
                let (m, s) = whole(&set);
                let ctx = format!("{layout:?} order {shift} altmap {altmap}");
                let n = order.nr_pages();
                let spans = [
                    (0, data.len()),
                    (1, 1),
                    (n / 2, 3 * n + 1),
                    (data.len() - n - 1, n + 1),
                ];
                for (off, len) in spans {
                    let r = PfnRange::new(data.start().add(off), len).expect("span");
                    let walked: Vec<_> = m
                        .static_folios(&s, r)
                        .expect("walk")
                        .map(|f| f.map(|f| (f.pfn(), f.order(), f.head_page() as *const _)))
                        .collect::<Result<_, _>>()
                        .expect("every folio found");
                    let mut looked = Vec::new();
                    let mut pfn = r.start();
                    while pfn < r.end() {
                        let f = m.folio(&s, pfn).expect("lookup");
                        looked.push((f.pfn(), f.order(), f.head_page() as *const _));
                        pfn = f.range().end();
                    }
                    assert_eq!(walked, looked, "{ctx}: {r:?}");
                }
                if altmap {
                    let r = PfnRange::new(Pfn::new(data.start().raw() - 1), 2).expect("span");
                    assert!(
                        matches!(m.static_folios(&s, r), Err(LookupError::AltmapPfn { .. })),
                        "{ctx}: a range reaching into the altmap is refused"
                    );
                }
                let empty = PfnRange::new(data.start(), 0).expect("empty");
                assert_eq!(m.static_folios(&s, empty).expect("empty").count(), 0);
            }
        }
    }
    // A token covers only what was synced: a walk past it is refused, not read.
    let set = built(Layout::Heads, geo(1 << 12, 9));
    let start = set.maps()[0].geometry().range().start();
    let (m, s) = set
        .sync(PfnRange::new(start, 512).expect("span"))
        .expect("sync");
    let r = PfnRange::new(start, 1024).expect("span");
    assert!(matches!(
        m.static_folios(&s, r),
        Err(LookupError::NotSynced { .. })
    ));
}

/// A lookup reads the pfn's head word and then the head: caught between the two halves of a
/// form (tails written, head not yet a compound head), it must report the tear, not a folio
/// that does not hold the pfn.
#[test]
fn a_lookup_torn_by_a_reshape_is_reported() {
    for layout in Layout::ALL {
        let set = built(layout, geo(1024, 0));
        let (m, s) = whole(&set);
        let h = m.geometry().range().start().add(512);
        // The first step of forming an order-3 folio at h: a tail already names h.
        m.descriptor(&s, h.add(5))
            .expect("in range")
            .expect("stored")
            .init_tail(h);
        assert_eq!(
            m.folio(&s, h.add(5)).map(|f| f.pfn()),
            Err(LookupError::Reshaping { pfn: h.add(5) }),
            "{layout:?}"
        );
        assert_eq!(m.folio(&s, h).map(|f| f.order()), Ok(Order::BASE));
    }
}
