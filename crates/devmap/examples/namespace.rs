//! Maps a namespace of a region through the library, writes to it, pins a range for DMA, and
//! (with `--inject OFFSET`) reports a memory error at a byte of it before disabling, so that
//! `devmap list --media-errors` shows it afterwards.
//!
//! ```text
//! devmap create-region --path /tmp/pmem.img --size 4G
//! devmap create-namespace -r /tmp/pmem.img -s 1G -n vm0
//! cargo run --release -p devmap --example namespace -- /tmp/pmem.img vm0 --inject 4M
//! devmap list -r /tmp/pmem.img --media-errors -u
//! ```

use std::error::Error;

use devmap::dax::DaxOptions;
use devmap::memory_failure::{MfFlags, memory_failure};
use devmap::namespace::{Access, Region};
use devmap::{DeviceSpace, GupFlags, Order, PAGE_SIZE};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, name) = match args.as_slice() {
        [path, name, ..] => (path.clone(), name.clone()),
        _ => return Err("usage: namespace REGION-FILE NAMESPACE [--inject OFFSET]".into()),
    };
    let inject = match args.iter().position(|a| a == "--inject") {
        Some(i) => Some(parse_offset(
            args.get(i + 1).ok_or("--inject needs an offset")?,
        )?),
        None => None,
    };

    let space = DeviceSpace::new();
    let mut region = Region::open(&path, Access::Manage)?;
    let ns = region.enable(&space, &name, DaxOptions::new(Order::PMD))?;
    let dev = ns.device();
    println!(
        "enabled {name}: {} MiB of data at {} KiB alignment, previous disable {}, memmap {}",
        dev.size() >> 20,
        dev.align().bytes() >> 10,
        if ns.was_clean() {
            "clean"
        } else {
            "not clean (or first enable)"
        },
        match ns.path() {
            devmap::namespace::EnablePath::Warm => "adopted from the device (warm)",
            devmap::namespace::EnablePath::Cold => "initialised on the device (cold)",
            devmap::namespace::EnablePath::Host => "initialised in host memory",
        }
    );

    // A file-backed device faults its leaves explicitly: populate the first one (a leaf
    // poisoned earlier would be refused, and a whole-device populate with it).
    let m = dev.mmap(0, dev.size(), true)?;
    m.populate(m.addr(), dev.align().bytes())?;
    m.bytes().write(0, b"hello from devmap")?;
    let mut back = [0u8; 17];
    m.read_mc(0, &mut back)?;
    println!("wrote and read back {:?}", String::from_utf8_lossy(&back));

    // Pin the first 2 MiB for DMA and show what a caller would register.
    let pins = m.pin_user_folios(m.addr(), (2 << 20) / PAGE_SIZE, GupFlags::WRITE)?;
    for (addr, f) in pins.with_addresses() {
        println!(
            "pinned folio {}: {} pages at user address {:#x}",
            f.head(),
            f.range().len(),
            addr
        );
    }
    drop(pins);

    if let Some(offset) = inject {
        let pfn = dev
            .pfn_at(offset)
            .ok_or("--inject offset is outside the namespace")?;
        m.populate(
            m.addr() + (offset - offset % dev.align().bytes()) as usize,
            1,
        )?;
        let report = memory_failure(&space, pfn, MfFlags::NONE)?;
        println!(
            "memory error at offset {offset:#x} (pfn {pfn}): {} mapping(s) lost it, {:?}",
            report.revoked.len(),
            report.elapsed
        );
    }
    drop(m);
    region.disable(ns)?;
    println!("disabled {name}: its bad pages are on disk");
    Ok(())
}

/// A byte offset with an optional K/M/G suffix.
fn parse_offset(text: &str) -> Result<u64, Box<dyn Error>> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    Ok(digits.parse::<u64>()? << shift)
}
