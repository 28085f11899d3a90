//! Namespace geometry against the kernel's `nd_pfn_init`, worked by hand, and the pgmaps it
//! builds.

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
    let cases = [
        (T1, K4, Dev, (16 << 30) + (8 << 10)),
        (T1, M2, Dev, (16 << 30) + M2),
        (T1, G1, Dev, 17 << 30),
        (100 << 30, M2, Dev, 1602 << 20),
        (T1, K4, Mem, 8 << 10),
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
    let cases = [
        (M2, M2, Dev, M2, 4 << 20),
        (M2, M2, Mem, M2, 4 << 20),
        (G1, G1, Mem, G1, 2 << 30),
        (G1, G1, Dev, G1, 2 << 30),
        (K4, K4, Mem, 8 << 10, 12 << 10),
        (8 << 10, K4, Mem, 8 << 10, 12 << 10),
        (K4, K4, Dev, 8 << 10, 16 << 10),
        (12 << 10, K4, Dev, 12 << 10, 16 << 10),
        (0, M2, Dev, M2, 4 << 20),
    ];
    for (size, align, map, offset, smallest) in cases {
        assert_eq!(
            Namespace::new(size, align, NamespaceMode::Fsdax, map),
            Err(NamespaceError::NoRoomForData {
                size,
                align,
                map,
                data_offset: offset,
                smallest: Some(smallest),
            }),
            "{size}/{align}/{map:?}"
        );
        let n = ns(smallest, align, NamespaceMode::Fsdax, map);
        assert_eq!(n.data_bytes(), align);
    }
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
            assert_eq!(
                Namespace::for_data(size, align, NamespaceMode::Devdax, map),
                Err(NamespaceError::TooLarge { bytes: size, align })
            );
        }
    }
}

#[test]
fn a_layout_that_overflows_the_kernels_room_is_refused() {
    // 65 pfns at 4 KiB: the info block's room is ALIGN(8 KiB + 64 * 63, 4 KiB) = 3 pfns, one
    // for the memmap, but a Flat memmap of 65 descriptors takes two.
    let n = ns(65 * K4, K4, NamespaceMode::Devdax, Dev);
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
            align: n.align(),
        });
        assert_eq!(n.pgmap_config(range, Layout::Heads).map(|_| ()), want);
        assert_eq!(n.data_range(range).map(|_| ()), want);
    }
}

fn aligns() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![K4, M2, G1])
}

fn maps() -> impl Strategy<Value = MemmapLocation> {
    prop::sample::select(vec![Mem, Dev])
}

proptest! {
    /// Any size, aligned or not, lays out or is refused; a namespace that lays out has its data
    /// on the align, after the info block and (for `--map dev`) 64 bytes per pfn.
    #[test]
    fn any_size_lays_out_or_is_refused(x in any::<u64>(), scale in 0u32..64, round in any::<bool>(), align in aligns(), map in maps()) {
        let size = if round { (x >> scale) & !(align - 1) } else { x >> scale };
        match Namespace::new(size, align, NamespaceMode::Devdax, map) {
            Ok(n) => {
                prop_assert!(n.data_offset() < size);
                prop_assert!(n.data_offset().is_multiple_of(align));
                let room = match map {
                    Mem => INFO_BLOCK_BYTES,
                    Dev => INFO_BLOCK_BYTES + 64 * ((size - INFO_BLOCK_BYTES) / PAGE_SIZE),
                };
                prop_assert!(n.data_offset() >= room && n.data_offset() - room < align);
            }
            Err(NamespaceError::SizeNotAligned { .. }) => prop_assert!(!size.is_multiple_of(align)),
            Err(NamespaceError::NoRoomForData { smallest, .. }) => prop_assert!(smallest.is_some()),
            Err(e) => prop_assert!(false, "{size}/{align}/{map:?}: {e}"),
        }
    }

    /// `for_data` gives a namespace with exactly that much data, and one align less would not
    /// hold it.
    #[test]
    fn for_data_is_the_smallest_namespace_holding_the_data(aligns_of_data in 1u64..1 << 22, align in aligns(), map in maps()) {
        let data = aligns_of_data * align;
        let n = Namespace::for_data(data, align, NamespaceMode::Fsdax, map).expect("layout");
        prop_assert_eq!(n.data_bytes(), data);
        let less = Namespace::new(n.size() - align, align, NamespaceMode::Fsdax, map);
        prop_assert!(less.is_err() || less.is_ok_and(|l| l.data_bytes() < data));
    }
}
