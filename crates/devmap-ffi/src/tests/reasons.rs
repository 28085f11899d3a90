//! The reasons and errnos the C ABI gives for refusals whose cause is easy to misname: a
//! poison clear off the 4 KiB grid, a pin running past its mapping's end, a pin or populate of
//! nothing, and `handlers = 0` (refused as Python refuses it, not turned into 1).

use std::ffi::{CStr, c_void};
use std::ptr;

use crate::*;

const MIB: u64 = 1 << 20;

/// This thread's last error message.
fn last_error() -> String {
    // SAFETY: devmap_last_error returns a NUL-terminated string valid until the next failing
    // call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(devmap_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts `rc` is `-errno` and the last error contains every one of `parts`.
fn refused(rc: i32, errno: i32, parts: &[&str]) {
    let msg = last_error();
    assert_eq!(rc, -errno, "wanted -{errno}, got {rc}: {msg}");
    for part in parts {
        assert!(msg.contains(part), "{part:?} is not in {msg:?}");
    }
}

/// A space, a 4 MiB memfd device of 2 MiB folios, and a mapping of its first 2 MiB.
struct Setup {
    space: *mut devmap_space,
    dev: *mut devmap_device,
    map: *mut devmap_mapping,
    addr: *mut c_void,
}

impl Setup {
    fn new() -> Setup {
        let mut s = Setup {
            space: ptr::null_mut(),
            dev: ptr::null_mut(),
            map: ptr::null_mut(),
            addr: ptr::null_mut(),
        };
        // SAFETY: every pointer is to a live local or field.
        unsafe {
            let mut opts = std::mem::zeroed::<devmap_device_options>();
            assert_eq!(devmap_space_new(&mut s.space), 0);
            assert_eq!(devmap_device_options_init(2 * MIB, &mut opts), 0);
            assert_eq!(
                devmap_device_create_memfd(s.space, 4 * MIB, &opts, &mut s.dev),
                0
            );
            assert_eq!(
                devmap_mmap(s.dev, 0, 2 * MIB, &mut s.map, &mut s.addr, ptr::null_mut()),
                0,
                "{}",
                last_error()
            );
        }
        s
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // SAFETY: the handles were made by `new` and are freed once, here.
        unsafe {
            devmap_mapping_free(self.map);
            devmap_device_free(self.dev);
            devmap_space_free(self.space);
        }
    }
}

#[test]
fn an_unaligned_poison_clear_names_the_alignment_and_the_pages_that_would_work() {
    let s = Setup::new();
    let mut cleared = 7;
    // SAFETY: a live device handle and a local.
    let rc = unsafe { devmap_clear_poison(s.dev, 100, 5, &mut cleared) };
    refused(
        rc,
        libc::EINVAL,
        &[
            "offset 100 B and length 5 B are not multiples of 4 KiB",
            "use offset 0 and length 4 KiB",
        ],
    );
    assert!(!last_error().contains("past the end"), "{}", last_error());
    assert_eq!(cleared, 7, "nothing written on a refusal");
    // SAFETY: as above.
    let rc = unsafe { devmap_clear_poison(s.dev, 4096 + 10, 8192, &mut cleared) };
    refused(rc, libc::EINVAL, &["use offset 4 KiB and length 12 KiB"]);
    // Past the end is still called that, once aligned.
    // SAFETY: as above.
    let rc = unsafe { devmap_clear_poison(s.dev, 4 * MIB - 4096, 8192, &mut cleared) };
    refused(
        rc,
        libc::EINVAL,
        &["runs past the end of the device (4 MiB)"],
    );
    // SAFETY: as above.
    let rc = unsafe { devmap_clear_poison(s.dev, 0, 4096, &mut cleared) };
    assert_eq!(rc, 0, "{}", last_error());
    assert_eq!(cleared, 0);
}

#[test]
fn a_pin_running_past_the_mapping_says_so_with_its_end_and_what_fits() {
    let s = Setup::new();
    let base = s.addr as usize;
    let end = base + 2 * MIB as usize;
    let inside = (base + MIB as usize) as *const c_void;
    let mut pins = ptr::null_mut();
    for pin in [devmap_pin_folios, devmap_pin_pages] {
        // 512 pages from the middle: 256 fit.
        // SAFETY: a live mapping handle and a local.
        let rc = unsafe { pin(s.map, inside, 512, DEVMAP_PIN_WRITE, &mut pins) };
        refused(
            rc,
            libc::EFAULT,
            &[
                "runs past the end of this mapping",
                &format!("at {end:#x}"),
                "at most 1 MiB (256 pages) fit from there",
            ],
        );
        assert!(!last_error().contains("not inside"), "{}", last_error());
        assert!(pins.is_null(), "nothing pinned on a refusal");
        // What the message says fits does.
        // SAFETY: as above.
        assert_eq!(unsafe { pin(s.map, inside, 256, 0, &mut pins) }, 0);
        // SAFETY: the pins just taken, given back once.
        assert_eq!(unsafe { devmap_unpin(pins, false) }, 0);
        pins = ptr::null_mut();
    }
    // An address outside the mapping is still "not inside".
    // SAFETY: as above.
    let rc = unsafe { devmap_pin_folios(s.map, end as *const c_void, 1, 0, &mut pins) };
    refused(rc, libc::EFAULT, &["is not inside this mapping"]);
    // populate says the same.
    // SAFETY: a live mapping handle.
    let rc = unsafe { devmap_mapping_populate(s.map, inside, 2 * MIB, ptr::null_mut()) };
    refused(rc, libc::EFAULT, &["runs past the end of this mapping"]);
}

#[test]
fn a_pin_or_populate_of_nothing_is_einval() {
    let s = Setup::new();
    let mut pins = ptr::null_mut();
    for pin in [devmap_pin_folios, devmap_pin_pages] {
        // SAFETY: a live mapping handle and a local.
        let rc = unsafe { pin(s.map, s.addr, 0, 0, &mut pins) };
        refused(
            rc,
            libc::EINVAL,
            &["a pin of 0 pages does nothing: ask for at least 1 page"],
        );
        assert!(pins.is_null());
    }
    let mut mapped = 7;
    // SAFETY: a live mapping handle and a local.
    let rc = unsafe { devmap_mapping_populate(s.map, s.addr, 0, &mut mapped) };
    refused(
        rc,
        libc::EINVAL,
        &["a populate of 0 bytes does nothing: ask for at least 1 byte"],
    );
    assert_eq!(mapped, 7);
}

#[test]
fn zero_handlers_are_refused_as_python_refuses_them() {
    let s = Setup::new();
    let mut dev = ptr::null_mut();
    for faults in [DEVMAP_FAULTS_AUTO, DEVMAP_FAULTS_EXPLICIT] {
        // SAFETY: locals and a live space handle.
        unsafe {
            let mut opts = std::mem::zeroed::<devmap_device_options>();
            assert_eq!(devmap_device_options_init(2 * MIB, &mut opts), 0);
            opts.faults = faults;
            opts.handlers = 0;
            let rc = devmap_device_create_memfd(s.space, 2 * MIB, &opts, &mut dev);
            refused(rc, libc::EINVAL, &["handlers = 0", "at least 1 handler"]);
            assert!(dev.is_null());
            opts.handlers = 1;
            assert_eq!(
                devmap_device_create_memfd(s.space, 2 * MIB, &opts, &mut dev),
                0
            );
            devmap_device_free(dev);
            dev = ptr::null_mut();
        }
    }
}
