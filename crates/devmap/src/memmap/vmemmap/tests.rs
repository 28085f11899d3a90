//! The Vmemmap store's levels: which PMD entries are leaves and which point at PTE tables,
//! how a 1 GiB compound's tables alias one block, and the section usage records.

use super::*;
use crate::addr::{Order, PfnRange};
use crate::desc::PgmapId;
use crate::init::{InitMode, InitTarget, init_memmap};
use crate::memmap::{Layout, Memmap};

fn built(g: Geometry) -> Memmap {
    let m = Memmap::new(Layout::Vmemmap, g, PageHint::Huge).expect("memmap");
    let target = InitTarget {
        pgmap: PgmapId::new(1).expect("id"),
        idle_ref: 1,
    };
    init_memmap(&m, target, InitMode::Sync, None);
    m
}

fn store(m: &Memmap) -> &VmemmapStore {
    match m {
        Memmap::Vmemmap(v) => v,
        _ => panic!("not a vmemmap"),
    }
}

fn kinds(v: &VmemmapStore) -> Vec<u64> {
    v.pmd
        .as_slice()
        .iter()
        .map(|e| e.load(Ordering::Relaxed) & KIND_MASK)
        .collect()
}

fn range(pages: u64) -> PfnRange {
    PfnRange::new(Pfn::new(1 << 20), pages).expect("range")
}

#[test]
fn dedup_maps_every_section_through_a_pte_table() {
    let g = Geometry::new(range(5 * DESCS_PER_PMD + 512 * 7), Order::PMD).expect("geometry");
    let m = built(g);
    let v = store(&m);
    assert_eq!(kinds(v), vec![TABLE; 6]);
    // PTE `b` of section `s` is entry `b` of the table array: head block 2c, then 2c + 1.
    let pte: Vec<u64> = v.pte.as_slice()[512..528]
        .iter()
        .map(|e| e.load(Ordering::Relaxed))
        .collect();
    let c = 64; // the first compound of section 1
    let want: Vec<u64> = (0..16)
        .map(|b| match b % 8 {
            0 => 2 * (c + b / 8) + 1,
            _ => 2 * (c + b / 8) + 2,
        })
        .collect();
    assert_eq!(pte, want);
}

/// A 1 GiB compound's 16 MiB of vmemmap crosses eight PMD entries; every PTE past the head
/// block, in all eight tables, names the one shared block (the kernel's
/// `reuse_compound_section`).
#[test]
fn a_1g_compound_shares_one_block_across_its_tables() {
    let g = Geometry::new(range(2 << 18), Order::new(18).expect("order")).expect("geometry");
    let m = built(g);
    let v = store(&m);
    assert_eq!(kinds(v), vec![TABLE; 16]);
    for (c, tables) in [(0u64, 0..4096), (1, 4096..8192)] {
        let ptes = &v.pte.as_slice()[tables];
        assert_eq!(ptes[0].load(Ordering::Relaxed), 2 * c + 1);
        assert!(
            ptes[1..]
                .iter()
                .all(|e| e.load(Ordering::Relaxed) == 2 * c + 2)
        );
    }
}

/// Without dedup whole sections are 2 MiB leaves and only a partial last section has a PTE
/// table; with an altmap the leaves are the device's, and the altmap's own pfns are mapped too.
#[test]
fn without_dedup_whole_sections_are_leaves() {
    let pages = 3 * DESCS_PER_PMD + 1000;
    let m = built(Geometry::new(range(pages), Order::BASE).expect("geometry"));
    let v = store(&m);
    assert_eq!(kinds(v), vec![LEAF, LEAF, LEAF, TABLE]);
    assert_eq!(v.plan.pte_tables, 1);
    let start = range(pages).start();
    for off in [0, 5, DESCS_PER_PMD + 7, 3 * DESCS_PER_PMD + 999] {
        let d = v.page(start.add(off)).expect("mapped");
        assert_eq!(
            d.head_word(),
            crate::desc::HeadWord::Pgmap(PgmapId::new(1).expect("id"))
        );
    }

    let g = Geometry::with_altmap(range(4 * DESCS_PER_PMD), Order::PMD, Layout::Vmemmap, 2)
        .expect("geometry");
    let m = built(g);
    let v = store(&m);
    assert!(!v.plan.dedup, "an altmap turns dedup off");
    assert_eq!(kinds(v), vec![LEAF; 4]);
    assert_eq!(v.plan.pte_tables, 0);
}

#[test]
fn section_usage_marks_the_subsections_of_the_range() {
    for g in [
        Geometry::new(range(2 * DESCS_PER_PMD + 512 * 5), Order::PMD).expect("geometry"),
        Geometry::with_altmap(
            range(DESCS_PER_PMD + 512 * 3),
            Order::PMD,
            Layout::Vmemmap,
            2,
        )
        .expect("geometry"),
        Geometry::new(range(2 << 18), Order::new(18).expect("order")).expect("geometry"),
    ] {
        let m = built(g);
        let v = store(&m);
        let start = g.range().start();
        let pages = g.range().len();
        for off in (0..pages).step_by(512) {
            assert!(v.subsection_active(start.add(off)), "+{off}");
        }
        // The rest of a partial last section stays inactive.
        let end = pages.next_multiple_of(DESCS_PER_PMD);
        for off in (pages..end).step_by(512) {
            assert!(!v.usage.subsection_active(off), "+{off}");
        }
    }
}
