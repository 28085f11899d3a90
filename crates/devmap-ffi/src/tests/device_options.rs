//! The device options ABI 2 added, `fault_around` and `zero_ahead`, through the C functions:
//! the two structs' layout, the defaults `devmap_device_options_init` fills in, the values
//! refused with -EINVAL and why, and that each value reaches the device: a fault-around window
//! at 4 KiB, and a zero-ahead pool whose counts `devmap_device_get_info` reports.

use std::ffi::{CString, c_void};
use std::mem::offset_of;
use std::ptr;
use std::time::{Duration, Instant};

use devmap::Order;
use devmap::dax::DaxOptions;

use super::abi::{last_error, ok};
use crate::*;

const MIB: u64 = 1 << 20;

/// The options `devmap_device_options_init` fills in for `align`.
fn init(align: u64) -> devmap_device_options {
    // SAFETY: the struct is integers only, so all-zero is a value of it.
    let mut o = unsafe { std::mem::zeroed::<devmap_device_options>() };
    // SAFETY: `o` is a live local.
    ok(unsafe { devmap_device_options_init(align, &mut o) });
    o
}

/// A memfd device of `size` bytes in `space` built with `opts`, or the errno and message.
fn create(
    space: *mut devmap_space,
    size: u64,
    opts: &devmap_device_options,
) -> Result<*mut devmap_device, (i32, String)> {
    let mut dev = ptr::null_mut();
    // SAFETY: a live space handle and live locals.
    let rc = unsafe { devmap_device_create_memfd(space, size, opts, &mut dev) };
    if rc == 0 {
        Ok(dev)
    } else {
        assert!(dev.is_null(), "a failed create stored a handle");
        Err((rc, last_error()))
    }
}

/// What `devmap_device_get_info` says of `dev`.
fn info(dev: *const devmap_device) -> devmap_device_info {
    // SAFETY: the struct is integers and bools only, so all-zero is a value of it.
    let mut i = unsafe { std::mem::zeroed::<devmap_device_info>() };
    // SAFETY: a live device handle and a live local.
    ok(unsafe { devmap_device_get_info(dev, &mut i) });
    i
}

/// Waits (up to 30 s, as the library's zero-ahead tests do: the pool runs in SCHED_IDLE beside
/// whatever else runs) until `done` holds of the device's info, and returns it.
fn wait_for(
    dev: *const devmap_device,
    what: &str,
    done: impl Fn(&devmap_device_info) -> bool,
) -> devmap_device_info {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = info(dev);
        if done(&i) {
            return i;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {i:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A mapping of the whole device: its handle and address.
fn map_all(dev: *const devmap_device, size: u64) -> (*mut devmap_mapping, *mut c_void) {
    let (mut map, mut addr) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: a live device handle and live locals.
    ok(unsafe { devmap_mmap(dev, 0, size, &mut map, &mut addr, ptr::null_mut()) });
    (map, addr)
}

/// Touches byte `at` of the mapping at `addr` (a write, read back).
fn touch(addr: *mut c_void, at: u64) {
    let at = usize::try_from(at).expect("an offset in the mapping");
    // SAFETY: `at` is inside the live mapping at `addr`, whose touches the device serves.
    unsafe {
        let p = addr.cast::<u8>().add(at);
        p.write_volatile(0x5a);
        assert_eq!(p.read_volatile(), 0x5a);
    }
}

#[test]
fn the_options_and_info_structs_have_abi_2s_layout() {
    assert_eq!(DEVMAP_ABI_VERSION, 2);
    // Both new option fields at the end, after the six of ABI 1; no padding anywhere.
    assert_eq!(align_of::<devmap_device_options>(), 8);
    assert_eq!(offset_of!(devmap_device_options, granularity), 28);
    assert_eq!(offset_of!(devmap_device_options, fault_around), 32);
    assert_eq!(offset_of!(devmap_device_options, zero_ahead), 36);
    assert_eq!(size_of::<devmap_device_options>(), 40);
    // The three zero-ahead counts at the end of the info, after ABI 1's 40 bytes.
    assert_eq!(offset_of!(devmap_device_info, granularity), 36);
    assert_eq!(offset_of!(devmap_device_info, zeroed_ahead), 40);
    assert_eq!(offset_of!(devmap_device_info, zero_ahead_hits), 48);
    assert_eq!(offset_of!(devmap_device_info, zero_ahead_failed), 56);
    assert_eq!(size_of::<devmap_device_info>(), 64);
}

#[test]
fn init_fills_in_the_librarys_defaults_and_they_come_back_unchanged() {
    for order in [Order::BASE, Order::PMD, Order::PUD] {
        let o = init(order.bytes());
        let lib = DaxOptions::new(order);
        let want = |n: usize| u32::try_from(n).expect("a default that fits");
        assert_eq!(o.fault_around, want(lib.fault_around), "{order:?}");
        assert_eq!(o.zero_ahead, want(lib.zero_ahead), "{order:?}");
        let back = crate::device::options(&o).expect("the defaults are valid options");
        assert_eq!(back.fault_around, lib.fault_around);
        assert_eq!(back.zero_ahead, lib.zero_ahead);
    }
    // A value set in C is the one the library gets.
    let mut o = init(2 * MIB);
    o.fault_around = 64;
    o.zero_ahead = 7;
    let got = crate::device::options(&o).expect("valid options");
    assert_eq!((got.fault_around, got.zero_ahead), (64, 7));
    // The numbers the header's comments state.
    assert_eq!(DaxOptions::DEFAULT_FAULT_AROUND, 128);
    assert_eq!(DaxOptions::MAX_FAULT_AROUND, 512);
    assert_eq!(DaxOptions::max_zero_ahead(Order::PMD), 512);
    assert_eq!(DaxOptions::max_zero_ahead(Order::PUD), 1);
}

#[test]
fn values_the_library_refuses_are_einval_with_its_reason() {
    let mut space = ptr::null_mut();
    // SAFETY: a live local.
    ok(unsafe { devmap_space_new(&mut space) });
    let (k4, m2, g1) = (Order::BASE.bytes(), 2 * MIB, Order::PUD.bytes());
    // (align, fault_around, zero_ahead, faults, what the message says)
    let refused = [
        (
            m2,
            3,
            0,
            DEVMAP_FAULTS_AUTO,
            "fault_around = 3 is not a usable window",
        ),
        (
            k4,
            3,
            0,
            DEVMAP_FAULTS_AUTO,
            "fault_around = 3 is not a usable window",
        ),
        (m2, 1024, 0, DEVMAP_FAULTS_AUTO, "fault_around = 1024"),
        (m2, 0, 0, DEVMAP_FAULTS_AUTO, "fault_around = 0"),
        (
            m2,
            u32::MAX,
            0,
            DEVMAP_FAULTS_AUTO,
            "fault_around = 4294967295",
        ),
        (k4, 4, 1, DEVMAP_FAULTS_AUTO, "at align 4K"),
        (m2, 4, 513, DEVMAP_FAULTS_AUTO, "use 0 (off) to 512"),
        (m2, 4, u32::MAX, DEVMAP_FAULTS_AUTO, "zero-ahead 4294967295"),
        (g1, 4, 2, DEVMAP_FAULTS_AUTO, "use 0 (off) to 1"),
        (m2, 4, 4, DEVMAP_FAULTS_EXPLICIT, "does not catch"),
    ];
    for (align, fault_around, zero_ahead, faults, why) in refused {
        let mut o = init(align);
        (o.fault_around, o.zero_ahead, o.faults) = (fault_around, zero_ahead, faults);
        let size = align.max(4 * MIB);
        let (rc, msg) = create(space, size, &o).expect_err("refused options");
        assert_eq!(rc, -libc::EINVAL, "{o:?}: {msg}");
        assert!(msg.contains(why), "{o:?}: {msg:?} does not say {why:?}");
    }
    // The same aligns and faults build with values in range: each refusal above is the field's.
    let fine = [
        (k4, 1, 0, DEVMAP_FAULTS_AUTO),
        (k4, 512, 0, DEVMAP_FAULTS_AUTO),
        (m2, 512, 512, DEVMAP_FAULTS_AUTO),
        (m2, 4, 0, DEVMAP_FAULTS_EXPLICIT),
    ];
    for (align, fault_around, zero_ahead, faults) in fine {
        let mut o = init(align);
        (o.fault_around, o.zero_ahead, o.faults) = (fault_around, zero_ahead, faults);
        let dev = create(space, 4 * MIB, &o).expect("options in range");
        // SAFETY: the handle just made, freed once.
        unsafe { devmap_device_free(dev) };
    }
    // A file device catches no touches, nor does a namespace's (over its region file).
    let dir = std::env::temp_dir().join(format!("devmap-ffi-zero-ahead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file =
        CString::new(dir.join("dev.img").into_os_string().into_encoded_bytes()).expect("no NUL");
    let image =
        CString::new(dir.join("r.img").into_os_string().into_encoded_bytes()).expect("no NUL");
    let mut o = init(m2);
    o.zero_ahead = 1;
    // SAFETY: live handles, NUL-terminated strings and live locals; handles freed once.
    unsafe {
        let mut dev = ptr::null_mut();
        let rc = devmap_device_create_file(space, file.as_ptr(), 4 * MIB, &o, &mut dev);
        assert_eq!(rc, -libc::EINVAL, "{}", last_error());
        assert!(last_error().contains("does not catch"), "{}", last_error());
        let mut region = ptr::null_mut();
        ok(devmap_region_create(image.as_ptr(), 64 * MIB, &mut region));
        ok(devmap_namespace_create(
            region,
            c"z".as_ptr(),
            8 * MIB,
            m2,
            DEVMAP_MODE_DEVDAX,
            DEVMAP_MAP_DEV,
        ));
        let rc =
            devmap_namespace_enable(region, space, c"z".as_ptr(), &o, &mut dev, ptr::null_mut());
        assert_eq!(rc, -libc::EINVAL, "{}", last_error());
        assert!(last_error().contains("namespace"), "{}", last_error());
        // The rest of the options are checked as for any device.
        o.zero_ahead = 0;
        o.fault_around = 3;
        let rc =
            devmap_namespace_enable(region, space, c"z".as_ptr(), &o, &mut dev, ptr::null_mut());
        assert_eq!(rc, -libc::EINVAL, "{}", last_error());
        assert!(
            last_error().contains("fault_around = 3"),
            "{}",
            last_error()
        );
        devmap_region_free(region);
        devmap_space_free(space);
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_fault_around_window_reaches_the_device() {
    const PAGES: u64 = 64;
    let mut space = ptr::null_mut();
    // SAFETY: a live local.
    ok(unsafe { devmap_space_new(&mut space) });
    for window in [1, 16] {
        let mut o = init(4096);
        o.fault_around = window;
        let dev = create(space, 2 * MIB, &o).expect("a 4K device");
        let (map, addr) = map_all(dev, 2 * MIB);
        for page in 0..PAGES {
            touch(addr, page * 4096 + 1);
        }
        // SAFETY: a live device handle.
        let stats = unsafe { &*dev }.dev().fault_stats();
        assert!(stats.leaves_mapped >= PAGES, "{stats:?}");
        if window == 1 {
            // One leaf per caught touch.
            assert_eq!(stats.fault_around, 0, "{stats:?}");
            assert_eq!(stats.leaves_mapped, PAGES, "{stats:?}");
        } else {
            // Sequential touches grow the window: leaves mapped as neighbours of a touch.
            assert!(stats.fault_around > 0, "{stats:?}");
            assert!(stats.user_faults < PAGES, "{stats:?}");
        }
        // SAFETY: the handles made above, freed once.
        unsafe {
            devmap_mapping_free(map);
            devmap_device_free(dev);
        }
    }
    // SAFETY: the space made above, freed once.
    unsafe { devmap_space_free(space) };
}

#[test]
fn a_zero_ahead_device_prepares_leaves_for_a_sequential_toucher_and_counts_them() {
    const LEAVES: u64 = 8;
    let size = LEAVES * 2 * MIB;
    let mut space = ptr::null_mut();
    // SAFETY: a live local.
    ok(unsafe { devmap_space_new(&mut space) });
    for zero_ahead in [0, 4] {
        let mut o = init(2 * MIB);
        o.zero_ahead = zero_ahead;
        let dev = create(space, size, &o).expect("a 2M memfd device");
        assert!(info(dev).catches_touches);
        let (map, addr) = map_all(dev, size);
        if zero_ahead > 0 {
            // A new mapping is a stream from its first leaf: with nothing touched, the pool
            // prepares leaf 0 first. The pool may fall behind under load, so only its first
            // leaf is waited for, not every leaf.
            let i = wait_for(dev, "the pool preparing leaf 0", |i| i.zeroed_ahead >= 1);
            assert_eq!((i.leaves_mapped, i.zero_ahead_hits), (0, 0), "{i:?}");
        }
        for leaf in 0..LEAVES {
            touch(addr, leaf * 2 * MIB + 5);
        }
        let i = info(dev);
        assert_eq!(i.leaves_mapped, LEAVES, "{i:?}");
        if zero_ahead == 0 {
            assert_eq!(
                (i.zeroed_ahead, i.zero_ahead_hits, i.zero_ahead_failed),
                (0, 0, 0),
                "no pool, no counts: {i:?}"
            );
        } else {
            // Leaf 0 was ready before its touch, so at least that touch found it so.
            assert!(i.zero_ahead_hits >= 1, "{i:?}");
            assert!(i.zeroed_ahead >= i.zero_ahead_hits, "{i:?}");
            assert_eq!(i.zero_ahead_failed, 0, "16 MiB of memfd to allocate: {i:?}");
        }
        // The C counts are the library's, once the pool is still.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // SAFETY: a live device handle.
            let before = unsafe { &*dev }.dev().fault_stats();
            let i = info(dev);
            // SAFETY: as above.
            let after = unsafe { &*dev }.dev().fault_stats();
            if before == after {
                assert_eq!(
                    (i.zeroed_ahead, i.zero_ahead_hits, i.zero_ahead_failed),
                    (
                        after.zeroed_ahead,
                        after.zero_ahead_hits,
                        after.zero_ahead_failed
                    )
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the pool never stopped: {after:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: the handles made above, freed once.
        unsafe {
            devmap_mapping_free(map);
            devmap_device_free(dev);
        }
    }
    // SAFETY: the space made above, freed once.
    unsafe { devmap_space_free(space) };
}
