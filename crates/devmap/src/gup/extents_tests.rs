//! Registration export: extents of pins by address (merge, byte cap, count limit, ranges of a
//! dynamic device, page-array pins) and per-device pin accounting, over sparse memfd devices
//! with explicit faults (no userfaultfd, no bytes touched).

use proptest::prelude::*;

use super::*;
use crate::addr::{Order, PAGE_SIZE, Pfn};
use crate::backing::Backing;
use crate::dax::{DaxDevice, DaxOptions, Faults, PinStats};
use crate::init::InitMode;
use crate::pgmap::DeviceSpace;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: usize = PAGE_SIZE as usize;

fn options(align: Order) -> DaxOptions {
    let mut opts = DaxOptions::new(align);
    opts.faults = Faults::Explicit;
    opts.init = InitMode::Sync;
    opts
}

fn device(space: &DeviceSpace, len: u64, align: Order) -> DaxDevice {
    let backing = Backing::memfd(len).expect("memfd");
    DaxDevice::with_options(space, backing, options(align)).expect("device")
}

/// A dynamic device of two ranges of `len / 2` whose pfns do not touch: a hole left in the
/// space takes the first range, a blocker keeps the second away from it.
fn split_device(space: &DeviceSpace, len: u64, align: Order) -> DaxDevice {
    let half = len / 2;
    let hole = space.reserve_range(half, align.bytes()).expect("hole");
    space.reserve_range(PAGE_SIZE, PAGE_SIZE).expect("blocker");
    assert!(space.release_range(hole));
    let mut opts = options(align);
    opts.ranges = Some(vec![half, half]);
    let dev = DaxDevice::with_options(space, Backing::memfd(len).expect("memfd"), opts)
        .expect("dynamic device");
    let r = dev.ranges();
    assert_ne!(r[0].end(), r[1].start(), "{r:?}");
    dev
}

fn cap(bytes: u64) -> ExtentLimits {
    ExtentLimits {
        max_bytes: Some(bytes),
        max_extents: None,
    }
}

#[test]
fn one_gib_pinned_at_2mib_is_one_extent_and_sixteen_under_a_64mib_cap() {
    let space = DeviceSpace::new();
    let dev = device(&space, GIB, Order::PMD);
    let m = dev.mmap(0, GIB, true).expect("mmap");
    let pins = m
        .pin_user_folios(m.addr(), GIB / PAGE_SIZE, GupFlags::WRITE)
        .expect("pin");
    assert_eq!(pins.len(), 512);
    let start = dev.ranges()[0].start();

    let one = pins.extents(ExtentLimits::default()).expect("extents");
    assert_eq!(
        one,
        [Extent {
            addr: m.addr(),
            offset: 0,
            pfn: start,
            len: GIB
        }]
    );

    let sixteen = pins.extents(cap(64 * MIB)).expect("capped");
    assert_eq!(sixteen.len(), 16);
    for (i, e) in sixteen.iter().enumerate() {
        let at = i as u64 * 64 * MIB;
        assert_eq!(e.addr, m.addr() + at as usize);
        assert_eq!(e.offset, at);
        assert_eq!(e.pfn, start.add(at / PAGE_SIZE));
        assert_eq!(e.len, 64 * MIB);
        assert!(e.pfn.is_aligned(Order::PMD), "{e:?} splits a folio");
    }
    // A cap that is not a multiple of the folio: 3 folios per extent, 171 of them.
    let odd = pins.extents(cap(7 * MIB)).expect("odd cap");
    assert_eq!(odd.len(), 171);
    assert!(
        odd.iter()
            .all(|e| e.len <= 7 * MIB && e.len % (2 * MIB) == 0)
    );
    assert_eq!(odd.iter().map(|e| e.len).sum::<u64>(), GIB);

    let limited = ExtentLimits {
        max_extents: Some(16),
        max_bytes: Some(64 * MIB),
    };
    assert_eq!(pins.extents(limited).expect("exactly enough").len(), 16);
    drop(pins);
}

#[test]
fn a_cap_below_a_folio_is_refused_naming_a_cap_that_works() {
    let space = DeviceSpace::new();
    let dev = device(&space, 8 * MIB, Order::PMD);
    let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
    // 1 MiB of folio 0, then all of folio 1: the longest part is 2 MiB.
    let pins = m
        .pin_user_folios(m.addr() + MIB as usize, 768, GupFlags::NONE)
        .expect("pin");
    let e = pins.extents(cap(MIB)).expect_err("1 MiB cap");
    assert!(
        matches!(
            e,
            GupError::ExtentCap {
                folio_bytes,
                max_bytes
            } if folio_bytes == 2 * MIB && max_bytes == MIB
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("use a cap of at least 2 MiB"), "{msg}");
    // A cap of the folio works; a part of a folio is its own extent.
    let ok = pins.extents(cap(2 * MIB)).expect("2 MiB cap");
    assert_eq!(ok.iter().map(|e| e.len).collect::<Vec<_>>(), [MIB, 2 * MIB]);
    assert!(pins.extents(cap(0)).is_err());
}

#[test]
fn too_few_extents_is_refused_with_the_count_needed() {
    let space = DeviceSpace::new();
    let dev = device(&space, GIB, Order::PMD);
    let m = dev.mmap(0, GIB, true).expect("mmap");
    let pins = m
        .pin_user_folios(m.addr(), GIB / PAGE_SIZE, GupFlags::NONE)
        .expect("pin");
    let limits = ExtentLimits {
        max_extents: Some(15),
        max_bytes: Some(64 * MIB),
    };
    let e = pins.extents(limits).expect_err("15 < 16");
    assert!(
        matches!(
            e,
            GupError::ExtentCount {
                needed: 16,
                max: 15
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("needs 16 extents"), "{e}");
    let none = ExtentLimits {
        max_extents: Some(0),
        max_bytes: None,
    };
    assert!(matches!(
        pins.extents(none),
        Err(GupError::ExtentCount { needed: 1, max: 0 })
    ));
}

#[test]
fn a_dynamic_device_breaks_extents_where_its_ranges_do_not_touch() {
    let space = DeviceSpace::new();
    let dev = split_device(&space, 8 * MIB, Order::PMD);
    let r = dev.ranges();
    let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
    let folios = m
        .pin_user_folios(m.addr(), 2048, GupFlags::NONE)
        .expect("pin");
    let pages = m
        .pin_user_pages(m.addr(), 2048, GupFlags::NONE)
        .expect("pin pages");
    let want = [
        Extent {
            addr: m.addr(),
            offset: 0,
            pfn: r[0].start(),
            len: 4 * MIB,
        },
        Extent {
            addr: m.addr() + (4 * MIB) as usize,
            offset: 4 * MIB,
            pfn: r[1].start(),
            len: 4 * MIB,
        },
    ];
    assert_eq!(
        folios.extents(ExtentLimits::default()).expect("folios"),
        want
    );
    assert_eq!(pages.extents(ExtentLimits::default()).expect("pages"), want);
    drop((folios, pages));

    // Ranges a fresh space lays end to end: the extent runs on across them.
    let space = DeviceSpace::new();
    let mut opts = options(Order::PMD);
    opts.ranges = Some(vec![4 * MIB, 4 * MIB]);
    let dev = DaxDevice::with_options(&space, Backing::memfd(8 * MIB).expect("memfd"), opts)
        .expect("dynamic device");
    let r = dev.ranges();
    assert_eq!(r[0].end(), r[1].start());
    let m = dev.mmap(2 * MIB, 6 * MIB, true).expect("mmap");
    let pins = m
        .pin_user_folios(m.addr(), 1536, GupFlags::NONE)
        .expect("pin");
    let got = pins.extents(ExtentLimits::default()).expect("extents");
    assert_eq!(
        got,
        [Extent {
            addr: m.addr(),
            offset: 2 * MIB,
            pfn: r[0].start().add(512),
            len: 6 * MIB
        }]
    );
}

#[test]
fn user_pages_of_a_4k_device_merge_and_split_at_every_page() {
    let space = DeviceSpace::new();
    let dev = device(&space, 4 * MIB, Order::BASE);
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    let pins = m
        .pin_user_pages(m.addr() + 3 * PAGE, 100, GupFlags::NONE)
        .expect("pin");
    let start = dev.ranges()[0].start();
    let all = pins.extents(ExtentLimits::default()).expect("extents");
    assert_eq!(
        all,
        [Extent {
            addr: m.addr() + 3 * PAGE,
            offset: 3 * PAGE_SIZE,
            pfn: start.add(3),
            len: 100 * PAGE_SIZE
        }]
    );
    let capped = pins.extents(cap(3 * PAGE_SIZE)).expect("capped");
    assert_eq!(capped.len(), 34);
    assert_eq!(capped[33].len, PAGE_SIZE);
    let per_page = pins.extents(cap(PAGE_SIZE)).expect("per page");
    assert_eq!(per_page.len(), 100);

    // On a 2 MiB device the pages group by folio: a 1 MiB part is never cut.
    let dev = device(&space, 8 * MIB, Order::PMD);
    let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
    let pins = m
        .pin_user_pages(m.addr() + MIB as usize, 768, GupFlags::NONE)
        .expect("pin");
    let got = pins.extents(cap(2 * MIB)).expect("extents");
    assert_eq!(
        got.iter().map(|e| e.len).collect::<Vec<_>>(),
        [MIB, 2 * MIB]
    );
    assert!(matches!(
        pins.extents(cap(MIB + PAGE_SIZE)),
        Err(GupError::ExtentCap { folio_bytes, .. }) if folio_bytes == 2 * MIB
    ));
}

#[test]
fn pin_stats_count_overlapping_pins_and_return_to_zero() {
    let space = DeviceSpace::new();
    let dev = device(&space, 8 * MIB, Order::PMD);
    assert_eq!(dev.pin_stats(), PinStats::default());
    let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
    // 1 MiB of folio 0 and all of folio 1, then all of folio 0 again.
    let a = m
        .pin_user_folios(m.addr() + MIB as usize, 768, GupFlags::NONE)
        .expect("pin a");
    let b = m
        .pin_user_pages(m.addr(), 512, GupFlags::NONE)
        .expect("pin b");
    assert_eq!(
        dev.pin_stats(),
        PinStats {
            pinned_bytes: 4 * MIB,
            pin_refs: 256 + 512 + 512,
            referenced_bytes: 5 * MIB,
        }
    );
    b.unpin(false);
    assert_eq!(dev.pin_stats().pin_refs, 768);
    drop(a);
    assert_eq!(dev.pin_stats(), PinStats::default());

    // Small folios count pins over the bias; a mapping's references do not count.
    let dev = device(&space, MIB, Order::BASE);
    let m = dev.mmap(0, MIB, true).expect("mmap");
    let a = m.pin_user_pages(m.addr(), 10, GupFlags::NONE).expect("a");
    let b = m
        .pin_user_folios(m.addr() + 5 * PAGE, 10, GupFlags::NONE)
        .expect("b");
    assert_eq!(
        dev.pin_stats(),
        PinStats {
            pinned_bytes: 15 * PAGE_SIZE,
            pin_refs: 20,
            referenced_bytes: 20 * PAGE_SIZE,
        }
    );
    drop((a, b));
    assert_eq!(dev.pin_stats(), PinStats::default());
}

/// The fewest extents for `pages` (per page: pfn), cut only where `cut_ok` allows, each at
/// most `cap` pages: a dynamic program over cut points, independent of the greedy merge.
fn fewest(pfns: &[Pfn], order: Order, cap: u64) -> Option<usize> {
    let n = pfns.len();
    let joined = |i: usize| pfns[i - 1].raw() + 1 == pfns[i].raw();
    let cut_ok = |i: usize| i == 0 || i == n || !joined(i) || pfns[i].is_aligned(order);
    let mut best: Vec<Option<usize>> = vec![None; n + 1];
    best[0] = Some(0);
    for j in 1..=n {
        if !cut_ok(j) {
            continue;
        }
        let mut i = j;
        while i > 0 && (j - i) < cap as usize {
            i -= 1;
            if cut_ok(i)
                && let Some(b) = best[i]
            {
                best[j] = Some(best[j].map_or(b + 1, |c: usize| c.min(b + 1)));
            }
            if i > 0 && !joined(i) {
                break;
            }
        }
    }
    best[n]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn extents_tile_the_pin_minimally_and_cut_only_between_folios(
        align in prop_oneof![Just(Order::BASE), Just(Order::PMD)],
        dynamic in any::<bool>(),
        first in 0u64..2048,
        len in 1u64..2048,
        max_bytes in proptest::option::of(prop_oneof![
            (1u64..6).prop_map(|n| n * 2 * MIB),
            (1u64..64).prop_map(|n| n * PAGE_SIZE),
            1u64..(10 * MIB),
        ]),
        max_extents in proptest::option::of(0usize..40),
    ) {
        let size = 8 * MIB;
        let space = DeviceSpace::new();
        let dev = if dynamic { split_device(&space, size, align) } else { device(&space, size, align) };
        let m = dev.mmap(0, size, true).expect("mmap");
        let len = len.min(2048 - first);
        let limits = ExtentLimits { max_extents, max_bytes };
        let addr = m.addr() + (first * PAGE_SIZE) as usize;
        let folios = m.pin_user_folios(addr, len, GupFlags::NONE).expect("pin");
        let pages = m.pin_user_pages(addr, len, GupFlags::NONE).expect("pin pages");
        let got = folios.extents(limits);
        prop_assert_eq!(format!("{got:?}"), format!("{:?}", pages.extents(limits)));

        let pfns: Vec<Pfn> = pages.entries().to_vec();
        let cap_pages = max_bytes.map_or(u64::MAX, |b| b / PAGE_SIZE);
        let longest = folios.entries().iter().map(|f| f.range().len()).max().expect("a folio");
        let got = match got {
            Err(GupError::ExtentCap { folio_bytes, .. }) => {
                prop_assert!(longest > cap_pages);
                prop_assert_eq!(folio_bytes, longest * PAGE_SIZE);
                return Ok(());
            }
            Err(GupError::ExtentCount { needed, max }) => {
                prop_assert_eq!(Some(max), max_extents);
                prop_assert!(needed > max);
                prop_assert_eq!(Some(needed), fewest(&pfns, align, cap_pages));
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
            Ok(got) => got,
        };
        prop_assert!(longest <= cap_pages);
        prop_assert_eq!(Some(got.len()), fewest(&pfns, align, cap_pages));
        prop_assert!(max_extents.is_none_or(|max| got.len() <= max));
        let mut page = 0usize;
        for (k, e) in got.iter().enumerate() {
            prop_assert_eq!(e.addr, addr + page * PAGE);
            prop_assert_eq!(e.offset, (first + page as u64) * PAGE_SIZE);
            prop_assert!(e.len > 0 && e.len % PAGE_SIZE == 0 && e.len / PAGE_SIZE <= cap_pages);
            let n = (e.len / PAGE_SIZE) as usize;
            for i in 0..n {
                prop_assert_eq!(pfns[page + i], e.pfn.add(i as u64));
            }
            if page > 0 {
                let (before, at) = (pfns[page - 1], pfns[page]);
                prop_assert!(
                    before.raw() + 1 != at.raw() || at.is_aligned(align),
                    "extent {} starts inside a folio", k
                );
            }
            if let Some(next) = got.get(k + 1) {
                let runs_on = e.addr + e.len as usize == next.addr
                    && e.offset + e.len == next.offset
                    && e.pfn.raw() + e.len / PAGE_SIZE == next.pfn.raw();
                prop_assert!(!runs_on || e.len + next.len > cap_pages.saturating_mul(PAGE_SIZE));
            }
            page += n;
        }
        prop_assert_eq!(page as u64, len);
    }
}
