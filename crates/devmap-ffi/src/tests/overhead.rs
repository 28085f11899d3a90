//! The cost of the C ABI: pinning and unpinning 4 GiB of faulted 2 MiB leaves by address in
//! folio-range form through `devmap_pin_folios` / `devmap_pins_folios` / `devmap_unpin`,
//! against the same through the Rust API (`pin_user_folios`, reading the folios, `unpin`),
//! on the same mapping, interleaved round by round. Both copy every entry out, as a caller
//! registering the range for DMA does. Run it with
//!
//! ```text
//! cargo test -p devmap-ffi --release --locked -- --ignored --nocapture ffi_overhead
//! ```

use std::ptr;
use std::time::{Duration, Instant};

use devmap::{GupFlags, PAGE_SIZE};

use crate::*;

const GIB: u64 = 1 << 30;

/// The median, 10th and 90th percentiles of `v` (sorted in place).
fn spread(v: &mut [Duration]) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: usize| v[(v.len() - 1) * q / 100];
    (at(50), at(10), at(90))
}

#[test]
#[ignore = "a benchmark: run it in release, see the module documentation"]
fn ffi_overhead() {
    let size = 4 * GIB;
    let rounds: usize = std::env::var("DEVMAP_FFI_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2000);
    let mut space = ptr::null_mut();
    let mut dev = ptr::null_mut();
    let mut map = ptr::null_mut();
    let mut addr = ptr::null_mut();
    // SAFETY: every pointer is to a live local; the handles are freed once, at the end.
    let mut opts = unsafe { std::mem::zeroed::<devmap_device_options>() };
    // SAFETY: as above.
    unsafe {
        assert_eq!(devmap_space_new(&mut space), 0);
        assert_eq!(devmap_device_options_init(2 << 20, &mut opts), 0);
        // Faulting sets up every leaf's metadata and reference but allocates no bytes, so
        // 4 GiB of faulted leaves need no 4 GiB of memory; the pin path reads only metadata.
        opts.faults = DEVMAP_FAULTS_EXPLICIT;
        assert_eq!(devmap_device_create_memfd(space, size, &opts, &mut dev), 0);
        assert_eq!(
            devmap_mmap(dev, 0, size, &mut map, &mut addr, ptr::null_mut()),
            0
        );
        assert_eq!(devmap_mapping_populate(map, addr, size, ptr::null_mut()), 0);
    }
    // SAFETY: `map` is live until freed at the end.
    let rust = unsafe { &*map }.map();
    let nr_pages = size / PAGE_SIZE;
    let leaves = (size / (2 << 20)) as usize;
    let mut c_buf = vec![devmap_folio::default(); leaves];
    let mut rust_buf = vec![devmap_folio::default(); leaves];

    let through_c = |buf: &mut [devmap_folio]| {
        let mut pins = ptr::null_mut();
        let mut n = 0;
        // SAFETY: `map` is live, `buf` holds `buf.len()` entries, the out pointers are locals.
        unsafe {
            assert_eq!(
                devmap_pin_folios(map, addr, nr_pages, DEVMAP_PIN_WRITE, &mut pins),
                0
            );
            assert_eq!(
                devmap_pins_folios(pins, buf.as_mut_ptr(), buf.len(), &mut n),
                0
            );
            std::hint::black_box(&buf[..n]);
            assert_eq!(devmap_unpin(pins, true), 0);
        }
    };
    let through_rust = |buf: &mut [devmap_folio]| {
        let pins = rust
            .pin_user_folios(addr as usize, nr_pages, GupFlags::WRITE)
            .expect("pin");
        // The same copy into a caller's array as `devmap_pins_folios` makes.
        let mut n = 0;
        for (slot, (addr, f)) in buf.iter_mut().zip(pins.with_addresses()) {
            *slot = devmap_folio {
                addr,
                pfn: f.range().start().raw(),
                head: f.head().raw(),
                order: f.order().get(),
                nr_pages: f.range().len(),
            };
            n += 1;
        }
        std::hint::black_box(&buf[..n]);
        pins.unpin(true);
    };

    for _ in 0..rounds / 10 {
        through_c(&mut c_buf);
        through_rust(&mut rust_buf);
    }
    assert_eq!(c_buf, rust_buf, "both paths report the same folios");
    let (mut c, mut r) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds {
        // Alternate which goes first, so neither always runs on the other's warm caches.
        for first in [round % 2 == 0, round % 2 != 0] {
            let t = Instant::now();
            if first {
                through_c(&mut c_buf);
                c.push(t.elapsed());
            } else {
                through_rust(&mut rust_buf);
                r.push(t.elapsed());
            }
        }
    }
    let (c_med, c_lo, c_hi) = spread(&mut c);
    let (r_med, r_lo, r_hi) = spread(&mut r);
    let ratio = c_med.as_secs_f64() / r_med.as_secs_f64();
    println!(
        "pin + read + unpin of 4 GiB of faulted 2 MiB leaves ({leaves} folios), {rounds} \
         rounds each, interleaved:\n  C ABI: median {c_med:?} (p10 {c_lo:?}, p90 {c_hi:?})\n  \
         Rust:  median {r_med:?} (p10 {r_lo:?}, p90 {r_hi:?})\n  C / Rust = {ratio:.3}"
    );
    // SAFETY: each handle is live and freed once.
    unsafe {
        devmap_mapping_free(map);
        devmap_device_free(dev);
        devmap_space_free(space);
    }
    assert!(
        ratio < 1.05,
        "the C ABI costs {:.1}% more than the Rust call",
        (ratio - 1.0) * 100.0
    );
}
