//! Geometries from any input: refused with an error or accepted with arithmetic that cannot
//! wrap. Before these checks an altmap reserve near `u64::MAX` wrapped in release builds (the
//! on-device memmap then overlapped the data) and panicked in debug ones, a range large
//! enough overflowed `cost()`, and pfns at or above 2^63 lost their top bit in tail words.

use proptest::prelude::*;

use super::*;

#[test]
fn ranges_past_the_physical_address_space_are_refused() {
    for (start, len) in [
        (1u64 << 63, 512u64),
        (Pfn::END.raw() - 512, 1024),
        (0, Pfn::END.raw() + 512),
        (u64::MAX - 511, 511),
    ] {
        let range = PfnRange::new(Pfn::new(start), len).expect("range");
        assert!(
            matches!(
                Geometry::new(range, Order::BASE),
                Err(MemmapError::BeyondPhysicalSpace { .. })
            ),
            "{range:?}"
        );
    }
    // The last pfns of the space are fine.
    let last = PfnRange::new(Pfn::new(Pfn::END.raw() - 512), 512).expect("range");
    assert!(Geometry::new(last, Order::PMD).is_ok());
}

#[test]
fn an_altmap_reserve_past_the_range_is_refused_not_wrapped() {
    let range = PfnRange::new(Pfn::new(1 << 20), 1 << 15).expect("range");
    for reserve in [u64::MAX, u64::MAX - 100, 1 << 15, (1 << 15) - 1] {
        for layout in Layout::ALL {
            assert!(
                matches!(
                    Geometry::with_altmap(range, Order::PMD, layout, reserve),
                    Err(MemmapError::AltmapTooLarge { .. })
                ),
                "{layout:?} reserve {reserve:#x}"
            );
        }
    }
}

/// The exact cost of one layout in 128-bit arithmetic, for comparison.
fn exact_descriptor_bytes(layout: Layout, geo: &Geometry) -> u128 {
    let n = u128::from(geo.range().len());
    match layout {
        Layout::Flat => n * 64,
        Layout::Heads => (n >> geo.shift().get()) * 64,
        // Dedup keeps two blocks per compound; without it, one per 64 descriptors.
        Layout::Vmemmap if geo.dedups() => (n >> geo.shift().get()) * 2 * 4096,
        Layout::Vmemmap => n.div_ceil(64) * 4096,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any start, length, order, reserve and layout: a geometry is refused, or accepted with
    /// its data inside its range and a cost at least the descriptors it must hold, computed
    /// without wrapping (a debug build panics on overflow, so a wrap fails here either way).
    #[test]
    fn no_geometry_wraps(
        start in prop_oneof![any::<u64>(), 0u64..(1 << 41)],
        len in prop_oneof![any::<u64>(), 1u64..(1 << 41), Just(0u64)],
        shift in 0u32..=30,
        reserve in prop_oneof![Just(None), any::<u64>().prop_map(Some), (0u64..64).prop_map(Some)],
        layout in prop_oneof![Just(Layout::Flat), Just(Layout::Vmemmap), Just(Layout::Heads)],
    ) {
        let shift = Order::new(shift).expect("order");
        let len = len.min(u64::MAX - start);
        let range = PfnRange::new(Pfn::new(start), len).expect("range");
        let geo = match reserve {
            None => Geometry::new(range, shift),
            Some(r) => Geometry::with_altmap(range, shift, layout, r),
        };
        if let Ok(geo) = geo {
            prop_assert!(range.end() <= Pfn::END);
            prop_assert!(geo.altmap_pfns() < range.len());
            prop_assert_eq!(geo.data_pages() + geo.altmap_pfns(), range.len());
            prop_assert!(range.contains_range(geo.data_range()));
            let c = layout.cost(&geo);
            let stored = u128::from(c.metadata_bytes) + u128::from(c.device_bytes);
            prop_assert!(stored >= exact_descriptor_bytes(layout, &geo));
            prop_assert!(c.descriptors_initialized <= geo.data_pages());
        }
    }
}
