//! Namespace geometry against the kernel's `nd_pfn_init`: the usable sizes a real kernel gave,
//! tables worked from the C by hand, the invariants over any size, the layout an older devmap
//! gave 4 KiB namespaces, and the pgmaps it builds.

use proptest::prelude::*;

use super::*;
use crate::addr::Pfn;
use crate::init::InitMode;
use crate::memmap::MemmapError;
use crate::pgmap::{DeviceSpace, PgmapError};

const K4: u64 = 4 << 10;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
const T1: u64 = 1 << 40;
const MODES: [NamespaceMode; 2] = [NamespaceMode::Devdax, NamespaceMode::Fsdax];
use MemmapLocation::{Dev, Mem};

fn ns(size: u64, align: u64, mode: NamespaceMode, map: MemmapLocation) -> Namespace {
    Namespace::new(size, align, mode, map)
        .unwrap_or_else(|e| panic!("{size}/{align}/{mode:?}/{map:?}: {e}"))
}

/// A config of `n` at pfn 0, where an estimate needs no device space.
fn config_at_zero(n: &Namespace, layout: Layout) -> PgmapConfig {
    let range = PfnRange::new(Pfn::new(0), n.pages()).expect("range");
    n.pgmap_config(range, layout).expect("config")
}

#[test]
fn the_kernel_rule_at_each_align_in_both_modes() {
    // 1 TiB: npfns = 2^28 - 2, and 8 KiB + 64 * npfns = 16 GiB + 8064 bytes.
    // 100 GiB: npfns = 100 * 2^18 - 2, and 8 KiB + 64 * npfns = 1600 MiB + 8064 bytes.
    // At 4K the offset is aligned to memremap_compat_align(), 2 MiB, as at 2M.
    let cases = [
        (T1, K4, Dev, (16 << 30) + M2),
        (T1, M2, Dev, (16 << 30) + M2),
        (T1, G1, Dev, 17 << 30),
        (100 << 30, M2, Dev, 1602 << 20),
        (T1, K4, Mem, M2),
        (T1, M2, Mem, M2),
        (T1, G1, Mem, G1),
    ];
    for (size, align, map, offset) in cases {
        for mode in MODES {
            let n = ns(size, align, mode, map);
            assert_eq!(n.data_offset(), offset, "{size}/{align}/{mode:?}/{map:?}");
            assert_eq!(n.data_bytes(), size - offset);
            assert!(n.data_offset().is_multiple_of(align));
        }
    }
}

#[test]
fn mode_sets_the_shift_and_type_but_not_the_offset() {
    let d = ns(T1, M2, NamespaceMode::Devdax, Dev);
    let f = ns(T1, M2, NamespaceMode::Fsdax, Dev);
    assert_eq!(d.data_offset(), f.data_offset());
    assert_eq!(d.altmap(), f.altmap());
    assert_eq!(
        (d.vmemmap_shift(), f.vmemmap_shift()),
        (Order::PMD, Order::BASE)
    );
    let (dc, fc) = (
        config_at_zero(&d, Layout::Flat),
        config_at_zero(&f, Layout::Flat),
    );
    assert_eq!(
        (dc.memory_type, fc.memory_type),
        (MemoryType::Generic, MemoryType::FsDax)
    );
}

/// fsdax has order-0 compounds, and the altmap used to be padded to a compound only: the data
/// of a 1 TiB `--map dev` namespace started at 16 GiB + 8 KiB, off the 2 MiB align.
#[test]
fn fsdax_map_dev_data_starts_on_the_align() {
    let n = ns(T1, M2, NamespaceMode::Fsdax, Dev);
    let cfg = config_at_zero(&n, Layout::Flat);
    assert_eq!(
        (cfg.altmap_reserve, cfg.altmap_free),
        (Some(2), Some(((16 << 30) + M2) / PAGE_SIZE - 2))
    );
    let cost = cfg.estimate_cost().expect("cost");
    assert_eq!(cost.device_bytes, (16 << 30) + M2);
    assert_eq!(cost.metadata_bytes, 0);

    // Built for real: the pgmap's first data pfn is the namespace's, on the align.
    let n = ns(64 << 20, M2, NamespaceMode::Fsdax, Dev);
    let space = DeviceSpace::new();
    let range = space.reserve_range(n.size(), n.align()).expect("range");
    let mut cfg = n.pgmap_config(range, Layout::Flat).expect("config");
    cfg.init = InitMode::Sync;
    let p = space.memremap_pages(cfg).expect("pgmap");
    let data: Vec<PfnRange> = p.data_ranges().collect();
    assert_eq!(data, [n.data_range(range).expect("data")]);
    assert!(data[0].start().is_aligned(Order::PMD), "{data:?}");
    let a = p.altmap().expect("altmap");
    assert_eq!(a.offset() * PAGE_SIZE, n.data_offset());
    // 16384 pfns of Flat memmap take 256 pfns of the 510 set aside.
    assert_eq!((a.reserve, a.free, a.alloc), (2, 510, 256));
    assert!(p.pfn_valid(data[0].start()));
    assert!(!p.pfn_valid(Pfn::new(data[0].start().raw() - 1)));
}

/// The offset is the info block's, written for a 64-byte `struct page` per pfn: a layout whose
/// memmap is smaller uses less of the room, and the data starts at the same place.
#[test]
fn the_offset_does_not_depend_on_the_layout() {
    let n = ns(T1, M2, NamespaceMode::Devdax, Dev);
    for layout in Layout::ALL {
        let cost = config_at_zero(&n, layout).estimate_cost().expect("cost");
        assert_eq!(cost.device_bytes, n.data_offset(), "{layout:?}");
    }
    let n = ns(256 << 20, M2, NamespaceMode::Devdax, Dev);
    let space = DeviceSpace::new();
    let mut allocs = Vec::new();
    for layout in Layout::ALL {
        let range = space.reserve_range(n.size(), n.align()).expect("range");
        let mut cfg = n.pgmap_config(range, layout).expect("config");
        cfg.init = InitMode::Sync;
        let p = space.memremap_pages(cfg).expect("pgmap");
        let a = p.altmap().expect("altmap");
        assert_eq!(a.offset() * PAGE_SIZE, n.data_offset(), "{layout:?}");
        assert!(a.alloc <= a.free, "{layout:?}: {a:?}");
        allocs.push(a.alloc);
    }
    // Of the 1534 pfns set aside: Flat and Vmemmap keep 65536 descriptors in 1024, Heads 128
    // in two.
    assert_eq!(allocs, [1024, 1024, 2]);
}

#[test]
fn map_mem_pgmap_covers_the_whole_namespace() {
    let n = ns(1 << 30, M2, NamespaceMode::Devdax, Mem);
    let cfg = config_at_zero(&n, Layout::Flat);
    assert_eq!((cfg.altmap_reserve, cfg.altmap_free), (None, None));
    let cost = cfg.estimate_cost().expect("cost");
    assert_eq!((cost.metadata_bytes, cost.device_bytes), (16 << 20, 0));
    assert_eq!(cost.descriptors_initialized, 262_144);
    let range = cfg.ranges[0];
    let data = n.data_range(range).expect("data");
    assert_eq!(
        (data.start(), data.end()),
        (range.start().add(512), range.end())
    );
}

#[test]
fn no_room_for_data_is_refused_with_the_smallest_that_works() {
    // (size, align, map, data offset, end_trunc, smallest). At 4K everything is rounded to
    // 2 MiB: the smallest namespace is 4 MiB, and 4 MiB - 4 KiB leaves 2 MiB - 4 KiB truncated.
    let cases = [
        (M2, M2, Dev, M2, 0, 4 << 20),
        (M2, M2, Mem, M2, 0, 4 << 20),
        (G1, G1, Mem, G1, 0, 2 << 30),
        (G1, G1, Dev, G1, 0, 2 << 30),
        (K4, K4, Mem, M2, K4, 4 << 20),
        (8 << 10, K4, Mem, M2, 8 << 10, 4 << 20),
        (K4, K4, Dev, M2, K4, 4 << 20),
        (12 << 10, K4, Dev, M2, 12 << 10, 4 << 20),
        ((4 << 20) - K4, K4, Dev, M2, M2 - K4, 4 << 20),
        ((4 << 20) - K4, K4, Mem, M2, M2 - K4, 4 << 20),
        (0, M2, Dev, M2, 0, 4 << 20),
    ];
    for (size, align, map, offset, end_trunc, smallest) in cases {
        assert_eq!(
            Namespace::new(size, align, NamespaceMode::Fsdax, map),
            Err(NamespaceError::NoRoomForData {
                size,
                align,
                map,
                data_offset: offset,
                data_align: align.max(M2),
                end_trunc,
                smallest: Some(smallest),
            }),
            "{size}/{align}/{map:?}"
        );
        let n = ns(smallest, align, NamespaceMode::Fsdax, map);
        assert_eq!(n.data_bytes(), align.max(M2));
    }
    let e = Namespace::new(K4, K4, NamespaceMode::Devdax, Mem).expect_err("no data");
    assert_eq!(
        crate::errno::namespace(&e),
        libc::EINVAL,
        "a refused argument"
    );
    assert!(
        e.to_string()
            .contains("requested alignment): the smallest such namespace is 4194304 bytes"),
        "{e}"
    );
}

#[test]
fn bad_aligns_and_sizes_are_refused() {
    for align in [0, 3 << 20, 2048, 1 << 43] {
        assert!(
            matches!(
                Namespace::new(1 << 44, align, NamespaceMode::Devdax, Mem),
                Err(NamespaceError::BadAlign { .. })
            ),
            "{align}"
        );
    }
    assert_eq!(
        Namespace::new(3 << 20, M2, NamespaceMode::Devdax, Mem),
        Err(NamespaceError::SizeNotAligned {
            size: 3 << 20,
            align: M2
        })
    );
    assert!(matches!(
        Namespace::for_data(3 << 20, M2, NamespaceMode::Devdax, Dev),
        Err(NamespaceError::SizeNotAligned { .. })
    ));
}

#[test]
fn arithmetic_is_checked_up_to_u64_max() {
    assert!(matches!(
        Namespace::new(u64::MAX, M2, NamespaceMode::Devdax, Dev),
        Err(NamespaceError::SizeNotAligned { .. })
    ));
    // The largest aligned namespaces lay out without overflow...
    for align in [K4, M2, G1] {
        for map in [Mem, Dev] {
            let size = u64::MAX - (align - 1);
            let n = ns(size, align, NamespaceMode::Devdax, map);
            assert!(n.data_offset() < size);
            // ...but one holding that much data would not fit.
            let data = u64::MAX - (align.max(M2) - 1);
            assert_eq!(
                Namespace::for_data(data, align, NamespaceMode::Devdax, map),
                Err(NamespaceError::TooLarge { bytes: data, align })
            );
        }
    }
}

/// Only a namespace an older devmap laid out at 4 KiB can have a room too small for its memmap:
/// the kernel's rounds the room up to 2 MiB (see `kernel_layouts_keep_their_invariants`).
#[test]
fn a_layout_that_overflows_the_kernels_room_is_refused() {
    // 65 pfns at 4 KiB: the info block's room was ALIGN(8 KiB + 64 * 63, 4 KiB) = 3 pfns, one
    // for the memmap, but a Flat memmap of 65 descriptors takes two.
    let n = Namespace::own_align(65 * K4, K4, NamespaceMode::Devdax, Dev).expect("own align");
    assert_eq!(n.rule(), GeometryRule::OwnAlign);
    assert_eq!(n.data_offset(), 3 * K4);
    assert!(matches!(
        config_at_zero(&n, Layout::Flat).estimate_cost(),
        Err(PgmapError::Memmap {
            index: 0,
            source: MemmapError::AltmapTooSmall {
                memmap_pfns: 2,
                free: 1,
                ..
            }
        })
    ));
}

#[test]
fn configs_need_a_range_that_fits() {
    let n = ns(64 << 20, M2, NamespaceMode::Devdax, Dev);
    for range in [
        PfnRange::new(Pfn::new(0), n.pages() - 512),
        PfnRange::new(Pfn::new(256), n.pages()),
    ] {
        let range = range.expect("range");
        let want = Err(NamespaceError::RangeMismatch {
            range,
            size: n.size(),
            start_align: M2,
        });
        assert_eq!(n.pgmap_config(range, Layout::Heads).map(|_| ()), want);
        assert_eq!(n.data_range(range).map(|_| ()), want);
    }
}

/// Usable bytes (`ndctl list`'s `size`, [`Namespace::data_bytes`]) that a real kernel with
/// ndctl gave 4K namespaces: 2 MiB - 8 KiB less than devmap's own-align layout did.
#[test]
fn usable_bytes_at_4k_are_what_a_real_kernel_gave() {
    for (size, map, usable, own_align) in [
        (64u64 << 30, Mem, 68_717_379_584, 68_719_468_544),
        (64 << 30, Dev, 67_643_637_760, 67_645_726_720),
        (256 << 30, Dev, 270_580_842_496, 270_582_931_456),
    ] {
        for mode in MODES {
            let n = ns(size, K4, mode, map);
            assert_eq!(n.data_bytes(), usable, "{size}/{map:?}/{mode:?}");
            assert_eq!(n.rule(), GeometryRule::Kernel);
            let old = Namespace::own_align(size, K4, mode, map).expect("own align");
            assert_eq!(
                old.data_bytes(),
                own_align,
                "{size}/{map:?}: the old layout"
            );
            assert_eq!(old.data_bytes() - n.data_bytes(), M2 - 2 * K4);
        }
    }
}

/// Raw size x align x map from 16 GiB to 1 TiB: (data offset, usable bytes), worked from
/// `nd_pfn_init` for a start on 2 MiB. At 4K every number is the 2M one (the data align is
/// 2 MiB in both); the 2M and 1G ones are what devmap gave before too.
#[test]
fn the_kernels_table_of_sizes_aligns_and_maps() {
    const G: u64 = 1 << 30;
    let cases: [(u64, u64, MemmapLocation, u64, u64); 15] = [
        (16 * G, M2, Mem, M2, 17_177_772_032),
        (16 * G, M2, Dev, 270_532_608, 16_909_336_576),
        (16 * G, G1, Mem, G1, 16_106_127_360),
        (16 * G, G1, Dev, G1, 16_106_127_360),
        (64 * G, M2, Mem, M2, 68_717_379_584),
        (64 * G, M2, Dev, 1_075_838_976, 67_643_637_760),
        (64 * G, G1, Dev, 2 * G, 66_571_993_088),
        (100 * G, M2, Mem, M2, 107_372_085_248),
        (100 * G, M2, Dev, 1_679_818_752, 105_694_363_648),
        (100 * G, G1, Dev, 2 * G, 105_226_698_752),
        (256 * G, M2, Dev, 4_297_064_448, 270_580_842_496),
        (256 * G, G1, Dev, 5 * G, 269_509_197_824),
        // The 1 TiB map=mem namespace of `ndctl list` in the reference notes: size
        // 1099509530624.
        (T1, M2, Mem, M2, 1_099_509_530_624),
        (T1, M2, Dev, 17_181_966_336, 1_082_329_661_440),
        (T1, G1, Dev, 17 * G, 1_081_258_016_768),
    ];
    for (size, align, map, offset, usable) in cases {
        let aligns: &[u64] = if align == M2 { &[K4, M2] } else { &[align] };
        for &align in aligns {
            let n = ns(size, align, NamespaceMode::Devdax, map);
            let what = format!("{size}/{align}/{map:?}");
            assert_eq!(
                (n.data_offset(), n.end_trunc(), n.data_bytes()),
                (offset, 0, usable),
                "{what}"
            );
            assert_eq!(n.start_align(), align.max(M2), "{what}");
            // The 2M and 1G layouts are what the older rule gave: nothing to tell apart.
            if align >= M2 {
                assert_eq!(
                    Namespace::own_align(size, align, n.mode(), map),
                    Ok(n),
                    "{what}"
                );
            }
        }
    }
}

/// A 4K namespace whose size is not a multiple of 2 MiB: the end past the last 2 MiB is
/// truncated (`end_trunc`), holds no data and is left out of the pgmap; `npfns` is counted from
/// the raw size for the memmap room, as the kernel does.
#[test]
fn the_end_of_a_4k_namespace_is_truncated_to_2m() {
    for (size, map, offset, end_trunc, usable) in [
        ((64u64 << 30) + K4, Mem, M2, K4, 68_717_379_584),
        ((64 << 30) + K4, Dev, 1_075_838_976, K4, 67_643_637_760),
        (
            (64 << 30) + M2 - K4,
            Dev,
            1_075_838_976,
            M2 - K4,
            67_643_637_760,
        ),
        ((6 << 20) + 12 * K4, Mem, M2, 12 * K4, 4 << 20),
    ] {
        let n = ns(size, K4, NamespaceMode::Devdax, map);
        assert_eq!(
            (n.data_offset(), n.end_trunc(), n.data_bytes()),
            (offset, end_trunc, usable),
            "{size}/{map:?}"
        );
        assert_eq!(n.pages(), size / PAGE_SIZE);
    }
    let n = ns((6 << 20) + 12 * K4, K4, NamespaceMode::Devdax, Mem);
    let space = DeviceSpace::new();
    let range = space
        .reserve_range(n.size(), n.start_align())
        .expect("range");
    let mut cfg = n.pgmap_config(range, Layout::Flat).expect("config");
    assert_eq!(
        cfg.ranges,
        [PfnRange::new(range.start(), 3 * 512).expect("6 MiB")]
    );
    let data = n.data_range(range).expect("data");
    assert_eq!(
        (data.start(), data.end()),
        (range.start().add(512), range.start().add(3 * 512))
    );
    cfg.init = InitMode::Sync;
    let p = space.memremap_pages(cfg).expect("pgmap");
    assert!(p.pfn_valid(Pfn::new(data.end().raw() - 1)));
    assert!(!p.pfn_valid(data.end()), "the truncated end has no memmap");
}

/// nd_pfn_init refuses a namespace whose start is off memremap_compat_align() (-EINVAL): a
/// 4K namespace's range starts on 2 MiB, where an older devmap's started on 4 KiB.
#[test]
fn a_4k_namespace_starts_on_2m() {
    let n = ns(4 << 20, K4, NamespaceMode::Devdax, Mem);
    assert_eq!(n.start_align(), M2);
    let off = PfnRange::new(Pfn::new(1), n.pages()).expect("range");
    let e = n
        .pgmap_config(off, Layout::Flat)
        .expect_err("start off 2 MiB");
    assert_eq!(
        e,
        NamespaceError::RangeMismatch {
            range: off,
            size: 4 << 20,
            start_align: M2
        }
    );
    assert_eq!(crate::errno::namespace(&e), libc::EINVAL);
    assert!(
        e.to_string()
            .contains("start on a multiple of 2097152 bytes"),
        "{e}"
    );
    let old = Namespace::own_align(4 << 20, K4, NamespaceMode::Devdax, Mem).expect("own align");
    assert_eq!(old.start_align(), K4);
    assert!(old.pgmap_config(off, Layout::Flat).is_ok());
}

/// What a devmap from before the kernel's rule gave a 4K namespace, which an existing one
/// keeps: the data on the next 4 KiB after the info block and the room, nothing truncated.
#[test]
fn the_own_align_rule_is_the_old_layout() {
    for (size, map, offset) in [
        (T1, Dev, (16 << 30) + 2 * K4),
        (T1, Mem, 2 * K4),
        (65 * K4, Dev, 3 * K4),
        (1 << 20, Mem, 2 * K4),
    ] {
        let n = Namespace::own_align(size, K4, NamespaceMode::Devdax, map).expect("own align");
        assert_eq!(
            (n.rule(), n.data_offset(), n.end_trunc(), n.data_bytes()),
            (GeometryRule::OwnAlign, offset, 0, size - offset),
            "{size}/{map:?}"
        );
    }
    // 1 MiB at 4K had data before; the kernel's rule leaves it none.
    assert!(matches!(
        Namespace::new(1 << 20, K4, NamespaceMode::Devdax, Mem),
        Err(NamespaceError::NoRoomForData { .. })
    ));
}

#[test]
fn for_data_asks_for_whole_data_aligns() {
    let n = Namespace::for_data(64 << 20, K4, NamespaceMode::Devdax, Dev).expect("64 MiB");
    assert_eq!((n.size(), n.data_bytes()), (66 << 20, 64 << 20));
    let e = Namespace::for_data(3 << 20, K4, NamespaceMode::Devdax, Mem).expect_err("3 MiB");
    assert_eq!(
        e,
        NamespaceError::DataNotAligned {
            bytes: 3 << 20,
            align: K4,
            data_align: M2
        }
    );
    assert!(
        e.to_string()
            .contains("so ask for 2097152 or 4194304 bytes"),
        "{e}"
    );
    let e = Namespace::for_data(1 << 20, K4, NamespaceMode::Devdax, Mem).expect_err("1 MiB");
    assert!(e.to_string().ends_with("so ask for 2097152 bytes"), "{e}");
}

fn aligns() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![K4, M2, G1])
}

fn maps() -> impl Strategy<Value = MemmapLocation> {
    prop::sample::select(vec![Mem, Dev])
}

proptest! {
    /// Any size, aligned or not, lays out or is refused; a namespace that lays out has its data
    /// on the data align, after the info block and (for `--map dev`) 64 bytes per pfn of its
    /// raw size, its end truncated to the data align, and as many data pfns as fit between.
    #[test]
    fn any_size_lays_out_or_is_refused(x in any::<u64>(), scale in 0u32..64, round in any::<bool>(), align in aligns(), map in maps()) {
        let size = if round { (x >> scale) & !(align - 1) } else { x >> scale };
        match Namespace::new(size, align, NamespaceMode::Devdax, map) {
            Ok(n) => {
                let a = align.max(COMPAT_ALIGN);
                prop_assert_eq!(n.start_align(), a);
                prop_assert!(n.data_offset().is_multiple_of(a));
                prop_assert_eq!(n.end_trunc(), size % a);
                prop_assert!(n.data_offset() < size - n.end_trunc());
                let room = match map {
                    Mem => INFO_BLOCK_BYTES,
                    Dev => INFO_BLOCK_BYTES + 64 * ((size - INFO_BLOCK_BYTES) / PAGE_SIZE),
                };
                prop_assert!(n.data_offset() >= room && n.data_offset() - room < a);
                prop_assert_eq!(n.data_offset() + n.data_bytes() + n.end_trunc(), size);
                prop_assert!(n.data_bytes().is_multiple_of(a));
            }
            Err(NamespaceError::SizeNotAligned { .. }) => prop_assert!(!size.is_multiple_of(align)),
            Err(NamespaceError::NoRoomForData { smallest, data_offset, end_trunc, .. }) => {
                prop_assert!(smallest.is_some());
                prop_assert!(data_offset >= size - end_trunc);
            }
            Err(e) => prop_assert!(false, "{size}/{align}/{map:?}: {e}"),
        }
    }

    /// The kernel's layouts: the data, the info block and the memmap room fit in the namespace,
    /// the pgmap at any start on the start align covers all but the truncated end, `npfns`
    /// (the data pfns) is what the data range holds, and every memmap layout fits the room of a
    /// `--map dev` namespace (the room is rounded up to 2 MiB).
    #[test]
    fn kernel_layouts_keep_their_invariants(twos in 2u64..1 << 18, extra_pages in 0u64..512, align in aligns(), map in maps(), at in 0u64..4) {
        let a = align.max(COMPAT_ALIGN);
        let size = twos * a + if align == K4 { extra_pages * K4 } else { 0 };
        let Ok(n) = Namespace::new(size, align, NamespaceMode::Fsdax, map) else {
            // Only the smallest sizes leave no data.
            prop_assert!(size < 4 * a, "{}", size);
            return Ok(());
        };
        prop_assert!(n.data_offset() + n.data_bytes() <= size);
        let start = at * (a / PAGE_SIZE) + (1 << 20);
        let range = PfnRange::new(Pfn::new(start), n.pages()).expect("range");
        let data = n.data_range(range).expect("data");
        prop_assert_eq!(data.len(), n.data_bytes() / PAGE_SIZE);
        prop_assert_eq!(data.end().raw(), range.end().raw() - n.end_trunc() / PAGE_SIZE);
        prop_assert!(data.start().is_aligned(Order::from_bytes(a).expect("order")));
        if map == Dev {
            for layout in Layout::ALL {
                let cost = n.pgmap_config(range, layout).expect("config").estimate_cost();
                prop_assert!(cost.is_ok(), "{}/{:?}: {:?}", size, layout, cost);
            }
        }
    }

    /// `for_data` gives a namespace with exactly that much data, and one align less would not
    /// hold it.
    #[test]
    fn for_data_is_the_smallest_namespace_holding_the_data(units_of_data in 1u64..1 << 22, align in aligns(), map in maps()) {
        let data = units_of_data * align.max(COMPAT_ALIGN);
        let n = Namespace::for_data(data, align, NamespaceMode::Fsdax, map).expect("layout");
        prop_assert_eq!(n.data_bytes(), data);
        prop_assert_eq!(n.end_trunc(), 0);
        let less = Namespace::new(n.size() - align, align, NamespaceMode::Fsdax, map);
        prop_assert!(less.is_err() || less.is_ok_and(|l| l.data_bytes() < data));
    }
}
