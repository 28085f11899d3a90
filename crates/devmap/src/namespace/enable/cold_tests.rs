//! The cold path's room: whatever the room held (a crash's leftovers, another layout's
//! memmap), a cold enable writes a fresh init's memmap on every engine, gives back the part of
//! the room no array took (it reads zero and holds no storage), and the next enable with the
//! same layout adopts what it wrote.
//!
//! A real file in the temp dir: a 512 MiB namespace at 2M, whose room (8 MiB of Flat
//! descriptors) is large enough to be faulted in huge folios where the file system keeps them.

use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;

use super::warm_tests::{fresh_memmap, memmap_of, opts, region_with};
use super::*;
use crate::init::InitMode;
use crate::memmap::DESC_SIZE;

const MIB: u64 = 1 << 20;
const NS: u64 = 512 * MIB;

/// Fills the namespace's room with a pattern, as a session killed mid-init leaves it.
fn scribble(path: &std::path::Path, room: (u64, u64)) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the region file");
    f.write_all_at(&vec![0x5a; room.1 as usize], room.0)
        .expect("scribble over the room");
}

/// The first byte at or after `from` that holds data (`SEEK_DATA`), if any.
fn next_data(path: &std::path::Path, from: u64) -> Option<u64> {
    let f = std::fs::File::open(path).expect("open the region file");
    rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(from)).ok()
}

#[test]
fn a_cold_enable_writes_a_fresh_memmap_over_any_room_and_the_next_one_adopts_it() {
    let (path, mut region) = region_with("cold-room", NS + 4 * MIB, "kv", NS);
    let label = region.namespace("kv").expect("kv").clone();
    let room_at = label.offset + INFO_BLOCK_BYTES;
    let room = (
        room_at,
        label.offset + label.namespace.data_offset() - room_at,
    );
    let two = InitMode::Parallel {
        threads: NonZeroUsize::MIN.saturating_add(1),
    };
    for (layout, init) in [
        (Layout::Flat, two),
        (Layout::Heads, two),
        (Layout::Flat, InitMode::Sync),
        (Layout::Flat, InitMode::async_default()),
    ] {
        let what = format!("{layout:?} {}", init.name());
        // The previous session's memmap, then a pattern over the whole room.
        scribble(&path.0, room);
        let space = DeviceSpace::new();
        let ns = region
            .enable(&space, "kv", opts(layout, init))
            .expect("cold enable");
        assert_eq!(ns.path(), EnablePath::Cold, "{what}");
        let fresh = fresh_memmap(&ns);
        assert!(memmap_of(ns.device()) == fresh, "{what}: a fresh init");
        // The room past the array (most of it for Heads, a few MiB for Flat) is given back:
        // it holds no storage and reads zero, not what was there.
        let pages = ns.device().size() / PAGE_SIZE;
        let per = if layout == Layout::Heads { 512 } else { 1 };
        let rest = room.0 + (pages / per * DESC_SIZE).next_multiple_of(PAGE_SIZE);
        let end = room.0 + room.1;
        assert!(rest < end, "{what}: the room has a rest");
        assert!(
            next_data(&path.0, rest).is_none_or(|at| at >= end),
            "{what}: the rest of the room holds no storage"
        );
        let mut got = vec![1u8; (end - rest) as usize];
        std::fs::File::open(&path.0)
            .expect("open")
            .read_exact_at(&mut got, rest)
            .expect("read");
        assert!(got.iter().all(|&b| b == 0), "{what}: and reads zero");
        let base = ns.device().ranges()[0].start();
        region.disable(ns).expect("disable");

        let space = DeviceSpace::new();
        let ns = region
            .enable(&space, "kv", opts(layout, InitMode::Sync))
            .expect("warm enable");
        assert_eq!(ns.path(), EnablePath::Warm, "{what}: adopted");
        assert_eq!(ns.device().ranges()[0].start(), base, "{what}");
        assert!(memmap_of(ns.device()) == fresh, "{what}: adopted whole");
        assert_eq!(
            ns.device().pgmap().rebuilt_room_units(),
            0,
            "{what}: every unit matches its checksum"
        );
        region.disable(ns).expect("disable");
        // Unclean again, so that the next round is cold whatever its layout.
        let mut block = region.info_block(&label).expect("block");
        block.flags = block.flags.with(InfoFlags::CLEAN, false);
        region
            .rewrite_info_block(&label, block, false, true)
            .expect("mark unclean");
    }
}
