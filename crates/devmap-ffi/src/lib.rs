//! The C ABI of devmap: `libdevmap.so` / `libdevmap.a` and `include/devmap.h` (generated
//! from this crate by cbindgen; `tests/header.rs` checks it is current).
//!
//! Handles are opaque pointers: `devmap_space`, `devmap_device`, `devmap_mapping`,
//! `devmap_pins` (both pin forms) and `devmap_region`; for a client of `devmap serve`,
//! `devmap_client`, `devmap_client_ns`, `devmap_client_mapping` and `devmap_client_pins`. Each
//! is made by one function and freed by one (`devmap_*_free`, or `devmap_unpin` and
//! `devmap_client_unpin` for pins). Devices hold their space, and mappings and pins hold their
//! device (a client's handles their connection), so handles may be freed in any order: the
//! device is torn down (the connection closed) when the last handle that holds it goes.
//!
//! Every fallible function returns 0 or a negative errno (`errno.rs` maps each library error
//! to one) and leaves a message for `devmap_last_error`. No panic crosses the boundary: each
//! entry point catches it and returns -EIO. A NULL pointer where one is needed is -EFAULT,
//! checked before anything is done.
//!
//! Thread-safety: every handle may be used from several threads at once, except that the
//! call that frees a handle must not run concurrently with any other call on that handle.

// The C names of the handle and entry types are the Rust names: cbindgen copies them.
#![allow(non_camel_case_types)]

mod client;
mod client_list;
mod client_notices;
mod device;
mod errno;
mod error;
mod estimate;
mod mapping;
mod pins;
mod poison;
mod region;

use std::ffi::c_char;

pub use client::{
    devmap_client, devmap_client_connect, devmap_client_free, devmap_client_map,
    devmap_client_mapping, devmap_client_mapping_free, devmap_client_ns, devmap_client_ns_free,
    devmap_client_ns_get_info, devmap_client_ns_info, devmap_client_open, devmap_client_pin,
    devmap_client_pins, devmap_client_pins_extents, devmap_client_pins_is_fast,
    devmap_client_pins_nr_pages, devmap_client_status, devmap_client_unpin,
};
pub use client_list::{devmap_client_list, devmap_client_ns_entry, devmap_client_region_path};
pub use client_notices::{
    DEVMAP_NOTICE_MAPPING_REVOKED, DEVMAP_NOTICE_MEMORY_LOST, DEVMAP_NOTICE_PIN_DROPPED,
    devmap_client_disable, devmap_client_enable, devmap_client_inject_error,
    devmap_client_mapping_handle, devmap_client_notices, devmap_client_pins_handle,
    devmap_client_report_error, devmap_injected, devmap_notice,
};
pub use device::{
    DEVMAP_FAULTS_AUTO, DEVMAP_FAULTS_EXPLICIT, DEVMAP_FAULTS_USERFAULTFD, DEVMAP_GRANULARITY_LEAF,
    DEVMAP_GRANULARITY_PAGE, DEVMAP_INIT_ASYNC, DEVMAP_INIT_PARALLEL, DEVMAP_INIT_SYNC,
    DEVMAP_LAYOUT_FLAT, DEVMAP_LAYOUT_HEADS, DEVMAP_LAYOUT_VMEMMAP, devmap_device,
    devmap_device_close, devmap_device_create_devdax, devmap_device_create_file,
    devmap_device_create_hugetlb, devmap_device_create_memfd, devmap_device_free,
    devmap_device_get_info, devmap_device_info, devmap_device_options, devmap_device_options_init,
    devmap_device_pfn_at, devmap_space, devmap_space_free, devmap_space_new,
};
pub use estimate::{devmap_cost, devmap_estimate};
pub use mapping::{devmap_mapping, devmap_mapping_free, devmap_mapping_populate, devmap_mmap};
pub use pins::{
    DEVMAP_PIN_LONGTERM, DEVMAP_PIN_NOFAULT, DEVMAP_PIN_WRITE, devmap_device_pin_stats,
    devmap_extent, devmap_folio, devmap_page, devmap_pin_folios, devmap_pin_pages,
    devmap_pin_stats, devmap_pins, devmap_pins_extents, devmap_pins_folios, devmap_pins_nr_pages,
    devmap_pins_pages, devmap_unpin,
};
pub use poison::{
    DEVMAP_MF_ACTION_REQUIRED, DEVMAP_MF_HANDLED_BY_CALLBACK, DEVMAP_MF_HANDLED_BY_GENERIC,
    DEVMAP_MF_RECORD_UNMAPPED, DEVMAP_MF_TELL_ALL, devmap_badblock, devmap_badblocks,
    devmap_clear_poison, devmap_memory_failure, devmap_memory_failure_at, devmap_mf_report,
    devmap_read_mc,
};
pub use region::{
    DEVMAP_ENABLE_COLD, DEVMAP_ENABLE_HOST, DEVMAP_ENABLE_WARM, DEVMAP_MAP_DEV, DEVMAP_MAP_MEM,
    DEVMAP_MODE_DEVDAX, DEVMAP_MODE_FSDAX, DEVMAP_NAME_LEN, DEVMAP_REGION_MANAGE,
    DEVMAP_REGION_READ, devmap_enable_info, devmap_namespace_create, devmap_namespace_destroy,
    devmap_namespace_disable, devmap_namespace_enable, devmap_namespace_info,
    devmap_namespace_list, devmap_region, devmap_region_create, devmap_region_free,
    devmap_region_get_info, devmap_region_info, devmap_region_open,
};

/// The ABI version this header describes. It changes whenever a function, a struct's layout or
/// a constant's meaning changes incompatibly; `libdevmap.so` carries it in its soname
/// (`libdevmap.so.2`). 2: `devmap_device_options` gained `fault_around` and `zero_ahead`, and
/// `devmap_device_info` the zero-ahead counts, so both structs grew.
pub const DEVMAP_ABI_VERSION: u32 = 2;

/// The ABI version of the library actually loaded: a program compares it with
/// `DEVMAP_ABI_VERSION` from the header it was built against, and refuses to run on a
/// mismatch.
///
/// Thread-safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn devmap_abi_version() -> u32 {
    DEVMAP_ABI_VERSION
}

/// The message of the last call that failed on this thread, NUL-terminated; an empty string
/// if none has. Successful calls leave it alone.
///
/// Ownership: the string belongs to the library; it stays valid until the next failing call
/// on this thread, or the thread's end. Copy it to keep it.
/// Thread-safety: each thread has its own.
#[unsafe(no_mangle)]
pub extern "C" fn devmap_last_error() -> *const c_char {
    error::last_error()
}

/// Every handle may be shared between threads: checked here, so a library change that would
/// break the header's promise fails to build.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<devmap_space>();
    shared::<devmap_device>();
    shared::<devmap_mapping>();
    shared::<devmap_pins>();
    shared::<devmap_region>();
    shared::<devmap_client>();
    shared::<devmap_client_ns>();
    shared::<devmap_client_mapping>();
    shared::<devmap_client_pins>();
};

#[cfg(test)]
mod tests;
