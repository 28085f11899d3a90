//! The C ABI against the option table every front end shares (`tests/options.tsv`): namespace
//! creation, namespace enables and memfd devices accept and refuse exactly the values the
//! table says, and `devmap_device_options_init` fills in the defaults it names. The command
//! line and Python run the same table. C passes named values as `DEVMAP_*` constants, so a name
//! the table refuses is passed as a constant no name has; sizes are byte counts, so one the
//! library's size parser refuses never reaches C.

use std::ffi::{CStr, CString};
use std::ptr;

use crate::*;

#[path = "../../../../tests/options_table.rs"]
mod options_table;

use options_table::table;

/// A constant no name has: what C passes for a name the table refuses.
const UNKNOWN: u32 = 99;

/// The `DEVMAP_*` constant of a named value, or [`UNKNOWN`].
fn constant(option: &str, name: &str) -> u32 {
    let names: &[(&str, u32)] = match option {
        "layout" => &[
            ("flat", DEVMAP_LAYOUT_FLAT),
            ("vmemmap", DEVMAP_LAYOUT_VMEMMAP),
            ("heads", DEVMAP_LAYOUT_HEADS),
        ],
        "init" => &[
            ("sync", DEVMAP_INIT_SYNC),
            ("parallel", DEVMAP_INIT_PARALLEL),
            ("async", DEVMAP_INIT_ASYNC),
        ],
        "faults" => &[
            ("auto", DEVMAP_FAULTS_AUTO),
            ("userfaultfd", DEVMAP_FAULTS_USERFAULTFD),
            ("explicit", DEVMAP_FAULTS_EXPLICIT),
        ],
        "granularity" => &[
            ("page", DEVMAP_GRANULARITY_PAGE),
            ("leaf", DEVMAP_GRANULARITY_LEAF),
        ],
        "mode" => &[("devdax", DEVMAP_MODE_DEVDAX), ("fsdax", DEVMAP_MODE_FSDAX)],
        "map" => &[("mem", DEVMAP_MAP_MEM), ("dev", DEVMAP_MAP_DEV)],
        other => panic!("no constants for {other}"),
    };
    names
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(UNKNOWN, |&(_, c)| c)
}

/// The name of a constant, for the defaults.
fn name_of(option: &str, value: u32) -> &'static str {
    let all: &[&'static str] = match option {
        "layout" => &["flat", "vmemmap", "heads"],
        "init" => &["sync", "parallel", "async"],
        "faults" => &["auto", "userfaultfd", "explicit"],
        "granularity" => &["page", "leaf"],
        other => panic!("no names for {other}"),
    };
    all.iter()
        .copied()
        .find(|n| constant(option, n) == value)
        .expect("a named constant")
}

fn last_error() -> String {
    // SAFETY: devmap_last_error returns a NUL-terminated string valid until the next failing
    // call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(devmap_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn size(text: &str) -> Result<u64, devmap::units::SizeError> {
    devmap::units::parse_size(text)
}

/// Device options from the defaults for `align`, with `option` set to `value`.
fn device_options(align: u64, option: &str, value: &str) -> devmap_device_options {
    let mut o = devmap_device_options {
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
    // SAFETY: `o` is a live local.
    assert_eq!(unsafe { devmap_device_options_init(align, &mut o) }, 0);
    match option {
        "align" => o.align = size(value).expect("an align the parser reads"),
        "layout" => o.layout = constant(option, value),
        "init" => o.init = constant(option, value),
        "faults" => o.faults = constant(option, value),
        "granularity" => o.granularity = constant(option, value),
        "handlers" => o.handlers = value.parse().expect("a count"),
        "fault_around" => o.fault_around = value.parse().expect("a count"),
        "zero_ahead" => o.zero_ahead = value.parse().expect("a count"),
        "size" => {}
        other => panic!("unknown device option {other}"),
    }
    o
}

#[test]
fn the_c_abi_accepts_refuses_and_defaults_as_the_table_says() {
    let dir = std::env::temp_dir().join(format!("devmap-ffi-options-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let path = CString::new(dir.to_str().expect("utf-8")).expect("path");
    let mut region = ptr::null_mut();
    let mut space = ptr::null_mut();
    let e = CString::new("e").expect("name");
    // SAFETY: every pointer is to a live local or a NUL-terminated string.
    unsafe {
        assert_eq!(devmap_region_create(path.as_ptr(), 8 << 30, &mut region), 0);
        assert_eq!(devmap_space_new(&mut space), 0);
        assert_eq!(
            devmap_namespace_create(region, e.as_ptr(), 64 << 20, 2 << 20, 0, DEVMAP_MAP_DEV),
            0
        );
    }
    let mut checked = 0;
    for (i, row) in table().iter().enumerate() {
        let name = CString::new(format!("n{i}")).expect("name");
        let ok = row.expect == "ok";
        let fixed = |k: &str, default: &str| {
            row.with
                .iter()
                .find(|(w, _)| w == k)
                .map_or(default.to_owned(), |(_, v)| v.clone())
        };
        match (row.verb.as_str(), row.expect.as_str()) {
            // C has no defaults for these: every argument is given.
            ("create-namespace" | "enable-namespace", "default") => continue,
            ("create-namespace", _) => {
                let pick = |k: &str, default: &str| {
                    if row.option == k {
                        row.value.clone()
                    } else {
                        fixed(k, default)
                    }
                };
                let (size_text, align_text) = (pick("size", "64M"), pick("align", "2M"));
                let (Ok(bytes), Ok(align)) = (size(&size_text), size(&align_text)) else {
                    assert!(
                        !ok,
                        "{row:?}: the size parser refused what the table accepts"
                    );
                    checked += 1;
                    continue;
                };
                let mode = constant("mode", &pick("mode", "devdax"));
                let map = constant("map", &pick("map", "dev"));
                // SAFETY: live handle, NUL-terminated name.
                let rc = unsafe {
                    devmap_namespace_create(region, name.as_ptr(), bytes, align, mode, map)
                };
                assert_eq!(rc == 0, ok, "{row:?}: {}", last_error());
                if rc == 0 {
                    // SAFETY: as above.
                    let rc = unsafe { devmap_namespace_destroy(region, name.as_ptr()) };
                    assert_eq!(rc, 0, "{}", last_error());
                }
            }
            ("enable-namespace", _) => {
                let opts = device_options(4096, &row.option, &row.value);
                let mut dev = ptr::null_mut();
                // SAFETY: live handles and locals.
                let rc = unsafe {
                    devmap_namespace_enable(
                        region,
                        space,
                        e.as_ptr(),
                        &opts,
                        &mut dev,
                        ptr::null_mut(),
                    )
                };
                assert_eq!(rc == 0, ok, "{row:?}: {}", last_error());
                if rc == 0 {
                    // SAFETY: the device handle the enable made, given back once.
                    assert_eq!(unsafe { devmap_namespace_disable(region, dev) }, 0);
                }
            }
            ("device", "default") => {
                let o = device_options(2 << 20, "size", "");
                let got = match row.option.as_str() {
                    "layout" => name_of("layout", o.layout).to_owned(),
                    "init" => name_of("init", o.init).to_owned(),
                    "faults" => name_of("faults", o.faults).to_owned(),
                    "granularity" => name_of("granularity", o.granularity).to_owned(),
                    "handlers" => o.handlers.to_string(),
                    "fault_around" => o.fault_around.to_string(),
                    "zero_ahead" => o.zero_ahead.to_string(),
                    other => panic!("no default for {other}"),
                };
                let want = match row.value.as_str() {
                    "cores" => std::thread::available_parallelism()
                        .map_or(1, |n| n.get().min(256))
                        .to_string(),
                    v => v.to_owned(),
                };
                assert_eq!(got, want, "{row:?}");
            }
            ("device", _) => {
                let bytes = size(&fixed("size", "4M")).expect("a device size");
                let align = if row.option == "align" { "4K" } else { "2M" };
                let opts = device_options(size(align).expect("align"), &row.option, &row.value);
                let mut dev = ptr::null_mut();
                // SAFETY: live handles and locals.
                let rc = unsafe { devmap_device_create_memfd(space, bytes, &opts, &mut dev) };
                assert_eq!(rc == 0, ok, "{row:?}: {}", last_error());
                // SAFETY: NULL or the handle just made, freed once.
                unsafe { devmap_device_free(dev) };
            }
            (verb, _) => panic!("unknown verb {verb} in tests/options.tsv"),
        }
        checked += 1;
    }
    // SAFETY: the handles made above, freed once.
    unsafe {
        devmap_region_free(region);
        devmap_space_free(space);
    }
    let _ = std::fs::remove_file(&dir);
    assert!(checked >= 50, "only {checked} rows ran");
}
