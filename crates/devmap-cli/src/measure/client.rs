//! `devmap client-test`: what a client of `devmap serve` pays, measured from this process as a
//! client, beside the kernel's own figure in the same run where there is one:
//! connect + open + map of the whole namespace; the first touch of each 2 MiB leaf (one byte
//! written in every 4 KiB page of it) resolved by the service, against the kernel's first
//! touch of the same pages of a plain shared mapping of a tmpfs file of the same size; a pin
//! plus unpin of one folio per call, by client address, fast (§9.5) and by request, against
//! the same pin inside a device of this process (`gup-test --by-address`'s path, no socket);
//! and one pin of every touched leaf in one call, fast against in this process.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use devmap::backing::Backing;
use devmap::client::Client;
use devmap::dax::{DaxDevice, DaxOptions, Faults};
use devmap::{DeviceSpace, GupFlags, InitMode, Order, PAGE_SIZE};
use serde::Serialize;

use crate::measure::latency::{Latencies, percentiles};
use crate::units::format_size;

/// Measure a client of a running `devmap serve`: connect + open + map, first touches resolved by
/// the service against the kernel's own first touches of a tmpfs file, and one-folio pins by
/// address against the same pins in this process. The namespace must be enabled, on tmpfs, with
/// a 2 MiB align.
#[derive(Debug, Args)]
pub struct ClientTestArgs {
    /// The service's socket.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: PathBuf,
    /// The namespace.
    #[arg(short = 'n', long, default_value = "vm0")]
    name: String,
    /// Leaves to touch (from --from; at most what the namespace holds).
    #[arg(long, default_value_t = 64)]
    leaves: u64,
    /// The first leaf to touch: several client-tests at once each take their own leaves.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Threads touching at once, each its share of the leaves (the kernel's figure too).
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Before the service's touches and before the kernel's, print `ready served` / `ready
    /// kernel` on stderr and wait for a line on stdin: several client-tests then touch in step
    /// (scripts/touch-clients-bench.py), never one's kernel phase beside another's served one.
    #[arg(long)]
    in_step: bool,
    /// One-folio pins to time.
    #[arg(long, default_value_t = 2000)]
    pins: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What one run measured, in nanoseconds.
#[derive(Debug, Serialize)]
struct Row {
    namespace_bytes: u64,
    leaves: u64,
    connect_open_map_ns: u64,
    touch_p50_ns: u64,
    touch_p99_ns: u64,
    kernel_touch_p50_ns: u64,
    kernel_touch_p99_ns: u64,
    ratio_p50: f64,
    pins: u64,
    pin_p50_ns: u64,
    pin_p99_ns: u64,
    /// Every pin was fast.
    pins_fast: bool,
    request_pin_p50_ns: u64,
    request_pin_p99_ns: u64,
    local_pin_p50_ns: u64,
    pin_ratio_p50: f64,
    /// One pin + unpin of every touched leaf in one call: fast, and in this process (p50 of 9).
    range_pin_ns: u64,
    local_range_pin_ns: u64,
    range_pin_ratio: f64,
}

const LEAF: u64 = 2 << 20;

pub fn run(a: ClientTestArgs) -> Result<()> {
    let t = Instant::now();
    let client = Client::connect(&a.socket)?;
    let ns = client
        .open(None, &a.name)
        .with_context(|| format!("cannot open namespace {:?}", a.name))?;
    let m = ns.map(0, ns.size()).context("cannot map the namespace")?;
    let connect_open_map_ns = t.elapsed().as_nanos() as u64;
    ensure!(
        ns.align() == LEAF,
        "namespace {:?} has a {} align: client-test measures 2 MiB leaves (create it with -a 2M)",
        a.name,
        format_size(ns.align())
    );
    if !ns.caught() {
        bail!(
            "namespace {:?} is not on tmpfs: the service cannot catch its touches (put its region in /dev/shm)",
            a.name
        );
    }
    let first = a.from;
    let leaves = a.leaves.min((ns.size() / LEAF).saturating_sub(first));
    ensure!(
        leaves > 0,
        "--from {first} --leaves {}: the namespace holds {} leaves",
        a.leaves,
        ns.size() / LEAF
    );
    ensure!(
        (1..=leaves).contains(&a.threads),
        "--threads must be between 1 and the leaves touched ({leaves})"
    );
    // The service's first touches; then the kernel's, on a tmpfs file of the same size.
    let step = |phase: &str| -> Result<()> {
        if a.in_step {
            eprintln!("ready {phase}");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("--in-step: cannot read the go line from stdin")?;
        }
        Ok(())
    };
    step("served")?;
    let served = touch_all(m.bytes(), first, leaves, a.threads)?;
    step("kernel")?;
    let kernel = kernel_touches(leaves, a.threads)?;
    let first_addr = m.addr() + (first * LEAF) as usize;

    // One folio per call, pin and unpin: fast, by request, then in this process.
    let mut pins_fast = true;
    let mut timed = |by_request: bool| -> Result<Latencies> {
        let mut ns = Vec::with_capacity(a.pins as usize);
        for i in 0..a.pins {
            let at = first_addr + ((i % leaves) * LEAF) as usize;
            let t = Instant::now();
            let p = match by_request {
                false => m.pin(at, LEAF / PAGE_SIZE, GupFlags::WRITE, true)?,
                true => m.pin_by_request(at, LEAF / PAGE_SIZE, GupFlags::WRITE, true)?,
            };
            pins_fast &= by_request || p.is_fast();
            p.unpin(false)?;
            ns.push(t.elapsed().as_nanos() as u64);
        }
        Ok(percentiles(ns))
    };
    let pins = timed(false)?;
    let requested = timed(true)?;
    let range = median_of(9, || {
        let t = Instant::now();
        let p = m.pin(first_addr, leaves * LEAF / PAGE_SIZE, GupFlags::WRITE, true)?;
        pins_fast &= p.is_fast();
        p.unpin(false)?;
        Ok(t.elapsed().as_nanos() as u64)
    })?;
    let (local, local_range) = local_pins(leaves, a.pins)?;
    drop(m);

    let row = Row {
        namespace_bytes: ns.size(),
        leaves,
        connect_open_map_ns,
        touch_p50_ns: served.p50,
        touch_p99_ns: served.p99,
        kernel_touch_p50_ns: kernel.p50,
        kernel_touch_p99_ns: kernel.p99,
        ratio_p50: ratio(served.p50, kernel.p50),
        pins: a.pins,
        pin_p50_ns: pins.p50,
        pin_p99_ns: pins.p99,
        pins_fast,
        request_pin_p50_ns: requested.p50,
        request_pin_p99_ns: requested.p99,
        local_pin_p50_ns: local.p50,
        pin_ratio_p50: ratio(pins.p50, local.p50),
        range_pin_ns: range,
        local_range_pin_ns: local_range,
        range_pin_ratio: ratio(range, local_range),
    };
    if a.json {
        return crate::output::json(&[row]);
    }
    crate::output::say(&format!(
        "connect + open + map of {}: {:.1} µs",
        format_size(row.namespace_bytes),
        row.connect_open_map_ns as f64 / 1e3
    ))?;
    crate::output::say(&format!(
        "first touch of a 2 MiB leaf ({leaves} leaves): p50 {:.0} µs, p99 {:.0} µs; the kernel's \
         (tmpfs file): p50 {:.0} µs, p99 {:.0} µs; ratio p50 {:.2}x",
        row.touch_p50_ns as f64 / 1e3,
        row.touch_p99_ns as f64 / 1e3,
        row.kernel_touch_p50_ns as f64 / 1e3,
        row.kernel_touch_p99_ns as f64 / 1e3,
        row.ratio_p50
    ))?;
    crate::output::say(&format!(
        "pin + unpin of one 2 MiB folio ({} calls): {} p50 {:.2} µs, p99 {:.2} µs; by request: p50 \
         {:.1} µs, p99 {:.1} µs; in this process: p50 {:.2} µs; ratio (first ÷ this process) p50 {:.1}x",
        row.pins,
        if row.pins_fast {
            "fast,"
        } else {
            "(some by request)"
        },
        row.pin_p50_ns as f64 / 1e3,
        row.pin_p99_ns as f64 / 1e3,
        row.request_pin_p50_ns as f64 / 1e3,
        row.request_pin_p99_ns as f64 / 1e3,
        row.local_pin_p50_ns as f64 / 1e3,
        row.pin_ratio_p50
    ))?;
    crate::output::say(&format!(
        "pin + unpin of all {leaves} leaves ({}) in one call: {:.1} µs; in this process: {:.1} µs; \
         ratio {:.2}x",
        format_size(leaves * LEAF),
        row.range_pin_ns as f64 / 1e3,
        row.local_range_pin_ns as f64 / 1e3,
        row.range_pin_ratio
    ))?;
    Ok(())
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The first touch of one leaf: one byte written in each of its pages.
fn touch(bytes: &devmap::backing::Mmap, leaf: u64) -> Result<u64> {
    let t = Instant::now();
    for page in 0..LEAF / PAGE_SIZE {
        bytes.write(leaf * LEAF + page * PAGE_SIZE, &[1])?;
    }
    Ok(t.elapsed().as_nanos() as u64)
}

/// First touches of leaves `first..first + leaves` of `bytes` by `threads` threads at once,
/// leaf `i` by thread `i % threads`.
fn touch_all(
    bytes: &devmap::backing::Mmap,
    first: u64,
    leaves: u64,
    threads: u64,
) -> Result<Latencies> {
    let all = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (first + t..first + leaves)
                        .step_by(threads as usize)
                        .map(|leaf| touch(bytes, leaf))
                        .collect::<Result<Vec<u64>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a touching thread panicked")))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(percentiles(all.concat()))
}

/// The kernel's first touches of `leaves` leaves of a plain shared mapping of a fresh tmpfs
/// file (removed after), by `threads` threads at once.
fn kernel_touches(leaves: u64, threads: u64) -> Result<Latencies> {
    let path = PathBuf::from(format!(
        "/dev/shm/devmap-client-test-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let backing = Backing::create_file(&path, leaves * LEAF);
    let result = (|| {
        let backing = backing?;
        let bytes = backing.map_shared(0, leaves * LEAF, Order::PMD)?;
        touch_all(&bytes, 0, leaves, threads)
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// The median of `n` runs of `f`.
fn median_of(n: usize, mut f: impl FnMut() -> Result<u64>) -> Result<u64> {
    let mut v = (0..n).map(|_| f()).collect::<Result<Vec<_>>>()?;
    v.sort_unstable();
    Ok(v[n / 2])
}

/// One-folio pins plus unpins by address in a device of this process over a memfd, its
/// leaves faulted in first, as the served pins find them; and the median of nine pins of
/// every leaf in one call.
fn local_pins(leaves: u64, n: u64) -> Result<(Latencies, u64)> {
    let space = DeviceSpace::new();
    let mut opts = DaxOptions::new(Order::PMD);
    opts.faults = Faults::Explicit;
    opts.init = InitMode::Sync;
    let dev = DaxDevice::with_options(&space, Backing::memfd(leaves * LEAF)?, opts)?;
    let m = dev.mmap(0, leaves * LEAF, true)?;
    m.populate(m.addr(), leaves * LEAF)?;
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = m.addr() + ((i % leaves) * LEAF) as usize;
        let t = Instant::now();
        let p = m.pin_user_folios(at, LEAF / PAGE_SIZE, GupFlags::WRITE)?;
        p.unpin(false);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let range = median_of(9, || {
        let t = Instant::now();
        let p = m.pin_user_folios(m.addr(), leaves * LEAF / PAGE_SIZE, GupFlags::WRITE)?;
        p.unpin(false);
        Ok(t.elapsed().as_nanos() as u64)
    })?;
    drop(m);
    dev.close(None)?;
    Ok((percentiles(lat), range))
}
