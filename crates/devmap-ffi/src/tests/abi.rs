//! The C ABI from Rust: errnos and messages, null pointers, short arrays, freeing in any
//! order, handles shared between threads.

use std::ffi::CStr;
use std::ptr;

use crate::*;

const MIB: u64 = 1 << 20;

/// This thread's last error message.
pub(super) fn last_error() -> String {
    // SAFETY: devmap_last_error returns a NUL-terminated string valid until the next failing
    // call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(devmap_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts `rc` is 0, with the message if not.
pub(super) fn ok(rc: i32) {
    assert_eq!(rc, 0, "failed: {}", last_error());
}

/// A space and a memfd device of `size` at `align` with default options.
pub(super) fn device(size: u64, align: u64) -> (*mut devmap_space, *mut devmap_device) {
    let mut space = ptr::null_mut();
    let mut dev = ptr::null_mut();
    let mut opts = devmap_device_options {
        align: 0,
        layout: 0,
        init: 0,
        init_threads: 0,
        faults: 0,
        handlers: 0,
        granularity: 0,
        fault_around: 0,
        zero_ahead: 0,
    };
    // SAFETY: every pointer is to a live local.
    unsafe {
        ok(devmap_space_new(&mut space));
        ok(devmap_device_options_init(align, &mut opts));
        ok(devmap_device_create_memfd(space, size, &opts, &mut dev));
    }
    (space, dev)
}

#[test]
fn null_pointers_are_efault_and_change_nothing() {
    let (space, dev) = device(4 * MIB, 2 * MIB);
    // SAFETY: the handles are live; the null pointers are what is tested.
    unsafe {
        assert_eq!(devmap_space_new(ptr::null_mut()), -libc::EFAULT);
        assert!(last_error().contains("out is NULL"), "{}", last_error());
        assert_eq!(
            devmap_mmap(
                dev,
                0,
                4 * MIB,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut()
            ),
            -libc::EFAULT
        );
        let mut info = std::mem::zeroed::<devmap_device_info>();
        ok(devmap_device_get_info(dev, &mut info));
        assert_eq!(info.nr_mappings, 0, "a failed mmap left a mapping");
        assert_eq!(
            devmap_device_get_info(ptr::null(), &mut info),
            -libc::EFAULT
        );
        assert_eq!(devmap_unpin(ptr::null_mut(), false), -libc::EFAULT);
        assert_eq!(
            devmap_device_create_memfd(space, 4 * MIB, ptr::null(), &mut ptr::null_mut()),
            -libc::EFAULT
        );
        devmap_device_free(ptr::null_mut());
        devmap_mapping_free(ptr::null_mut());
        devmap_space_free(ptr::null_mut());
        devmap_region_free(ptr::null_mut());
        devmap_device_free(dev);
        devmap_space_free(space);
    }
}

#[test]
fn bad_input_is_einval_with_the_reason() {
    let (space, dev) = device(4 * MIB, 2 * MIB);
    // SAFETY: the handles are live and the out pointers point to locals.
    unsafe {
        let mut opts = std::mem::zeroed::<devmap_device_options>();
        ok(devmap_device_options_init(3 * MIB, &mut opts));
        let mut other = ptr::null_mut();
        assert_eq!(
            devmap_device_create_memfd(space, 6 * MIB, &opts, &mut other),
            -libc::EINVAL
        );
        ok(devmap_device_options_init(2 * MIB, &mut opts));
        opts.layout = 7;
        assert_eq!(
            devmap_device_create_memfd(space, 4 * MIB, &opts, &mut other),
            -libc::EINVAL
        );
        assert!(
            last_error().contains("unknown layout 7"),
            "{}",
            last_error()
        );
        opts.layout = DEVMAP_LAYOUT_VMEMMAP;
        assert_eq!(
            devmap_device_create_memfd(space, 3 * MIB, &opts, &mut other),
            -libc::EINVAL
        );
        assert!(last_error().contains("not a multiple"), "{}", last_error());
        // The library's bound on handler threads, with the limit named.
        opts.handlers = 100_000;
        assert_eq!(
            devmap_device_create_memfd(space, 4 * MIB, &opts, &mut other),
            -libc::EINVAL
        );
        assert!(last_error().contains("use 1 to 256"), "{}", last_error());
        let mut map = ptr::null_mut();
        assert_eq!(
            devmap_mmap(dev, 0, 8 * MIB, &mut map, ptr::null_mut(), ptr::null_mut()),
            -libc::EINVAL
        );
        assert!(last_error().contains("past the end"), "{}", last_error());
        let mut pfn = 0;
        assert_eq!(devmap_device_pfn_at(dev, 4 * MIB, &mut pfn), -libc::EINVAL);
        ok(devmap_device_pfn_at(dev, 4096, &mut pfn));
        // A pfn no device holds.
        assert_eq!(
            devmap_memory_failure(space, 1, 0, ptr::null_mut()),
            -libc::ENXIO
        );
        assert_eq!(
            devmap_memory_failure_at(ptr::without_provenance(4096), 0, ptr::null_mut()),
            -libc::EFAULT
        );
        devmap_device_free(dev);
        devmap_space_free(space);
    }
}

#[test]
fn pins_copy_out_with_enospc_and_outlive_every_other_handle() {
    let (space, dev) = device(8 * MIB, 2 * MIB);
    // SAFETY: the handles are live until freed below; the out pointers point to locals.
    unsafe {
        let mut map = ptr::null_mut();
        let mut addr = ptr::null_mut();
        ok(devmap_mmap(
            dev,
            0,
            8 * MIB,
            &mut map,
            &mut addr,
            ptr::null_mut(),
        ));
        let mut pins = ptr::null_mut();
        // NOFAULT on leaves nobody faulted: gup's -EFAULT.
        assert_eq!(
            devmap_pin_folios(map, addr, 1024, DEVMAP_PIN_NOFAULT, &mut pins),
            -libc::EFAULT
        );
        assert_eq!(
            devmap_pin_folios(map, addr, 1024, 1 << 9, &mut pins),
            -libc::EINVAL
        );
        ok(devmap_pin_folios(
            map,
            addr.cast::<u8>().add(4096).cast(),
            1024,
            DEVMAP_PIN_WRITE,
            &mut pins,
        ));
        let mut n = 0;
        let mut two = [devmap_folio::default(); 2];
        assert_eq!(
            devmap_pins_folios(pins, two.as_mut_ptr(), 2, &mut n),
            -libc::ENOSPC
        );
        assert_eq!(n, 3);
        assert_eq!(two[0].nr_pages, 511);
        assert_eq!(two[1].nr_pages, 512);
        let mut all = [devmap_folio::default(); 3];
        ok(devmap_pins_folios(pins, all.as_mut_ptr(), 3, &mut n));
        assert_eq!(all[2].nr_pages, 1);
        assert_eq!(all[0].addr, addr as usize + 4096);
        assert_eq!(all[0].pfn, all[0].head + 1);
        let mut page = devmap_page::default();
        assert_eq!(devmap_pins_pages(pins, &mut page, 1, &mut n), -libc::EINVAL);
        // Everything else goes first; the pins still hold the device.
        devmap_mapping_free(map);
        devmap_device_free(dev);
        devmap_space_free(space);
        let mut pages = 0;
        ok(devmap_pins_nr_pages(pins, &mut pages));
        assert_eq!(pages, 1024);
        ok(devmap_unpin(pins, true));
    }
}

#[test]
fn handles_are_shared_between_threads() {
    let (space, dev) = device(16 * MIB, 2 * MIB);
    let mut map = ptr::null_mut();
    let mut addr = ptr::null_mut();
    // SAFETY: the handles are live; the out pointers point to locals.
    unsafe {
        ok(devmap_mmap(
            dev,
            0,
            16 * MIB,
            &mut map,
            &mut addr,
            ptr::null_mut(),
        ))
    };
    let (map_at, base) = (map as usize, addr as usize);
    std::thread::scope(|s| {
        for t in 0..4usize {
            s.spawn(move || {
                let map = map_at as *const devmap_mapping;
                let at = (base + t * 4 * MIB as usize) as *const std::ffi::c_void;
                for _ in 0..50 {
                    let mut pins = ptr::null_mut();
                    // SAFETY: the mapping stays live until every thread is joined.
                    unsafe {
                        ok(devmap_pin_folios(
                            map,
                            at,
                            1024,
                            DEVMAP_PIN_WRITE,
                            &mut pins,
                        ));
                        ok(devmap_unpin(pins, false));
                    }
                }
            });
        }
    });
    // SAFETY: the handles are live and freed once.
    unsafe {
        devmap_mapping_free(map);
        devmap_device_free(dev);
        devmap_space_free(space);
    }
}

#[test]
fn a_failure_on_one_thread_leaves_another_threads_message() {
    // SAFETY: a null out pointer is what is tested.
    unsafe { assert_eq!(devmap_space_new(ptr::null_mut()), -libc::EFAULT) };
    let here = last_error();
    let there = std::thread::spawn(last_error).join().expect("thread");
    assert!(here.contains("NULL"));
    assert_eq!(there, "");
}

#[test]
fn estimate_matches_the_readme() {
    let mut cost = devmap_cost::default();
    // SAFETY: `cost` is a live local.
    unsafe {
        ok(devmap_estimate(
            1 << 40,
            1 << 30,
            DEVMAP_LAYOUT_HEADS,
            DEVMAP_MAP_MEM,
            DEVMAP_MODE_DEVDAX,
            &mut cost,
        ));
    }
    assert_eq!(cost.metadata_bytes, 64 << 10);
    assert_eq!(cost.descriptors_initialized, 1024);
}

#[test]
fn regions_report_their_errnos() {
    let dir = std::env::temp_dir().join(format!("devmap-ffi-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = std::ffi::CString::new(dir.join("r.img").into_os_string().into_encoded_bytes())
        .expect("no NUL");
    // SAFETY: the strings and out pointers are live locals; handles are freed once.
    unsafe {
        let mut region = ptr::null_mut();
        assert_eq!(
            devmap_region_open(path.as_ptr(), DEVMAP_REGION_READ, &mut region),
            -libc::ENOENT
        );
        assert_eq!(
            devmap_region_create(path.as_ptr(), 4096, &mut region),
            -libc::EINVAL
        );
        ok(devmap_region_create(path.as_ptr(), 64 * MIB, &mut region));
        assert_eq!(
            devmap_namespace_create(region, c"".as_ptr(), 2 * MIB, 2 * MIB, 0, 0),
            -libc::EINVAL
        );
        assert_eq!(
            devmap_namespace_create(region, c"big".as_ptr(), 128 * MIB, 2 * MIB, 0, 0),
            -libc::ENOSPC
        );
        ok(devmap_namespace_create(
            region,
            c"a".as_ptr(),
            8 * MIB,
            2 * MIB,
            0,
            0,
        ));
        let mut n = 0;
        assert_eq!(
            devmap_namespace_list(region, ptr::null_mut(), 0, &mut n),
            -libc::ENOSPC
        );
        assert_eq!(n, 1);
        devmap_region_free(region);
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn extents_merge_cap_and_count_and_pin_stats_see_the_pins() {
    let (space, dev) = device(64 * MIB, 2 * MIB);
    // SAFETY: the handles are live until freed below; the out pointers point to locals.
    unsafe {
        let mut map = ptr::null_mut();
        let mut addr = ptr::null_mut();
        ok(devmap_mmap(
            dev,
            0,
            64 * MIB,
            &mut map,
            &mut addr,
            ptr::null_mut(),
        ));
        let mut pins = ptr::null_mut();
        ok(devmap_pin_folios(
            map,
            addr,
            16 * MIB / 4096,
            DEVMAP_PIN_WRITE,
            &mut pins,
        ));
        let mut n = 0;
        let mut one = devmap_extent::default();
        ok(devmap_pins_extents(pins, 0, 0, &mut one, 1, &mut n));
        assert_eq!(
            (n, one.addr, one.offset, one.len),
            (1, addr as usize, 0, 16 * MIB)
        );
        // 4 MiB cap: four extents; an array of two is -ENOSPC with the count.
        let mut two = [devmap_extent::default(); 2];
        assert_eq!(
            devmap_pins_extents(pins, 0, 4 * MIB, two.as_mut_ptr(), 2, &mut n),
            -libc::ENOSPC
        );
        assert_eq!(n, 4);
        assert_eq!(two[1].offset, 4 * MIB);
        assert_eq!(two[1].pfn, two[0].pfn + 1024);
        // At most three allowed: -E2BIG, not -ENOSPC; a cap inside a folio: -EINVAL.
        n = 99;
        assert_eq!(
            devmap_pins_extents(pins, 3, 4 * MIB, ptr::null_mut(), 0, &mut n),
            -libc::E2BIG
        );
        assert_eq!(n, 99);
        assert_eq!(
            devmap_pins_extents(pins, 0, MIB, ptr::null_mut(), 0, &mut n),
            -libc::EINVAL
        );
        let mut stats = devmap_pin_stats::default();
        ok(devmap_device_pin_stats(dev, &mut stats));
        assert_eq!(stats.pinned_bytes, 16 * MIB);
        assert_eq!(stats.pin_refs, 16 * MIB / 4096);
        // Page-array pins export the same way.
        let mut pages = ptr::null_mut();
        ok(devmap_pin_pages(map, addr, 1024, 0, &mut pages));
        ok(devmap_pins_extents(pages, 0, 0, &mut one, 1, &mut n));
        assert_eq!((n, one.len), (1, 4 * MIB));
        ok(devmap_unpin(pages, false));
        ok(devmap_unpin(pins, true));
        ok(devmap_device_pin_stats(dev, &mut stats));
        assert_eq!(stats, devmap_pin_stats::default());
        devmap_mapping_free(map);
        devmap_device_free(dev);
        devmap_space_free(space);
    }
}

#[test]
fn a_panic_is_caught_at_the_boundary_as_eio() {
    let rc = crate::error::call(|| panic!("boom"));
    assert_eq!(rc, -libc::EIO);
    assert!(last_error().contains("boom"), "{}", last_error());
}

#[test]
fn file_and_devdax_devices() {
    let dir = std::env::temp_dir().join(format!("devmap-ffi-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = std::ffi::CString::new(dir.join("dev.img").into_os_string().into_encoded_bytes())
        .expect("no NUL");
    // SAFETY: the strings and out pointers are live locals; handles are freed once.
    unsafe {
        let mut space = ptr::null_mut();
        ok(devmap_space_new(&mut space));
        let mut opts = std::mem::zeroed::<devmap_device_options>();
        ok(devmap_device_options_init(2 * MIB, &mut opts));
        let mut dev = ptr::null_mut();
        assert_eq!(
            devmap_device_create_file(space, path.as_ptr(), 0, &opts, &mut dev),
            -libc::ENOENT
        );
        ok(devmap_device_create_file(
            space,
            path.as_ptr(),
            8 * MIB,
            &opts,
            &mut dev,
        ));
        let mut info = std::mem::zeroed::<devmap_device_info>();
        ok(devmap_device_get_info(dev, &mut info));
        assert!(!info.catches_touches);
        assert_eq!(info.granularity, DEVMAP_GRANULARITY_LEAF);
        let (mut map, mut addr) = (ptr::null_mut(), ptr::null_mut());
        ok(devmap_mmap(
            dev,
            0,
            8 * MIB,
            &mut map,
            &mut addr,
            ptr::null_mut(),
        ));
        // A file device faults every leaf's metadata in when it maps: nothing left to populate.
        let mut mapped = 0;
        ok(devmap_mapping_populate(map, addr, 4 * MIB, &mut mapped));
        assert_eq!(mapped, 0);
        let mut pins = ptr::null_mut();
        ok(devmap_pin_folios(
            map,
            addr,
            1024,
            DEVMAP_PIN_NOFAULT,
            &mut pins,
        ));
        ok(devmap_unpin(pins, false));
        // With a timeout and the mapping still open, the close gives up with -EBUSY.
        assert_eq!(devmap_device_close(dev, 10), -libc::EBUSY);
        devmap_mapping_free(map);
        ok(devmap_device_close(dev, 1000));
        assert_eq!(
            devmap_mmap(dev, 0, 2 * MIB, &mut map, ptr::null_mut(), ptr::null_mut()),
            -libc::ENXIO,
            "a torn-down device: dax_mmap's -ENXIO"
        );
        devmap_device_free(dev);
        assert_eq!(
            devmap_device_create_devdax(space, c"/dev/dax-none.0".as_ptr(), &opts, &mut dev),
            -libc::ENOENT
        );
        devmap_space_free(space);
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn namespaces_enable_disable_and_keep_their_bad_pages() {
    let dir = std::env::temp_dir().join(format!("devmap-ffi-enable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = std::ffi::CString::new(dir.join("r.img").into_os_string().into_encoded_bytes())
        .expect("no NUL");
    // SAFETY: the strings and out pointers are live locals; handles are freed once.
    unsafe {
        let (mut region, mut space) = (ptr::null_mut(), ptr::null_mut());
        ok(devmap_space_new(&mut space));
        ok(devmap_region_create(path.as_ptr(), 64 * MIB, &mut region));
        ok(devmap_namespace_create(
            region,
            c"vm0".as_ptr(),
            16 * MIB,
            2 * MIB,
            DEVMAP_MODE_DEVDAX,
            DEVMAP_MAP_DEV,
        ));
        let mut dev = ptr::null_mut();
        let mut info = devmap_enable_info::default();
        assert_eq!(
            devmap_namespace_enable(
                region,
                space,
                c"nope".as_ptr(),
                ptr::null(),
                &mut dev,
                &mut info
            ),
            -libc::ENOENT
        );
        ok(devmap_namespace_enable(
            region,
            space,
            c"vm0".as_ptr(),
            ptr::null(),
            &mut dev,
            &mut info,
        ));
        assert!(!info.was_clean);
        assert_eq!(info.path, DEVMAP_ENABLE_COLD);
        // One device at a time: another space (or this one) is refused, nothing written.
        let mut second_space = ptr::null_mut();
        ok(devmap_space_new(&mut second_space));
        for s in [second_space, space] {
            let mut twice = ptr::null_mut();
            assert_eq!(
                devmap_namespace_enable(
                    region,
                    s,
                    c"vm0".as_ptr(),
                    ptr::null(),
                    &mut twice,
                    ptr::null_mut()
                ),
                -libc::EBUSY
            );
            assert!(twice.is_null());
            assert!(last_error().contains("enabled already"), "{}", last_error());
        }
        devmap_space_free(second_space);
        let (mut map, mut addr) = (ptr::null_mut(), ptr::null_mut());
        let mut dinfo = std::mem::zeroed::<devmap_device_info>();
        ok(devmap_device_get_info(dev, &mut dinfo));
        ok(devmap_mmap(
            dev,
            0,
            dinfo.size,
            &mut map,
            &mut addr,
            ptr::null_mut(),
        ));
        ok(devmap_mapping_populate(map, addr, 2 * MIB, ptr::null_mut()));
        ok(devmap_memory_failure_at(
            addr.cast::<u8>().add(8192).cast(),
            0,
            ptr::null_mut(),
        ));
        // A plain device is not a namespace; an open mapping keeps the namespace enabled.
        let (other_space, other) = device(2 * MIB, 2 * MIB);
        assert_eq!(devmap_namespace_disable(region, other), -libc::EINVAL);
        devmap_device_free(other);
        devmap_space_free(other_space);
        assert_eq!(devmap_namespace_disable(region, dev), -libc::EBUSY);
        assert!(
            last_error().contains("1 mapping or pin"),
            "{}",
            last_error()
        );
        devmap_mapping_free(map);
        ok(devmap_namespace_disable(region, dev));
        // Warm the second time, clean, and the bad page is back.
        ok(devmap_namespace_enable(
            region,
            space,
            c"vm0".as_ptr(),
            ptr::null(),
            &mut dev,
            &mut info,
        ));
        assert!(info.was_clean);
        assert_eq!(info.path, DEVMAP_ENABLE_WARM);
        let mut bad = devmap_badblock::default();
        let mut n = 0;
        ok(devmap_badblocks(dev, &mut bad, 1, &mut n));
        assert_eq!((n, bad.offset, bad.len), (1, 8192, 4096));
        ok(devmap_namespace_disable(region, dev));
        devmap_region_free(region);
        devmap_space_free(space);
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_abi_version_is_the_headers_and_the_sonames() {
    assert_eq!(crate::devmap_abi_version(), crate::DEVMAP_ABI_VERSION);
    let build = include_str!("../../build.rs");
    assert!(
        build.contains(&format!("libdevmap.so.{}", crate::DEVMAP_ABI_VERSION)),
        "build.rs gives libdevmap.so a soname of another ABI version"
    );
}
