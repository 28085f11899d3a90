//! The info block: round trips over the geometries, the checksum, every refusal with its
//! reason, and a fuzz run of mutated blocks (no panic, every rejection explained, and nothing
//! accepted that does not encode back to the same bytes).

use super::*;
use crate::addr::Pfn;
use crate::memmap::Layout;
use crate::namespace::fuzz_tests;
use crate::namespace::ondisk::{fletcher64, seal};
use crate::namespace::{MemmapLocation, NamespaceMode};

fn block(mode: NamespaceMode, map: MemmapLocation, size: u64, align: u64) -> InfoBlock {
    InfoBlock {
        uuid: [7; 16],
        parent_uuid: [9; 16],
        name: "kv-cache".into(),
        namespace: Namespace::new(size, align, mode, map).expect("geometry"),
        flags: InfoFlags::CLEAN,
        generation: 42,
        memmap: None,
    }
}

/// A `--map dev` devdax block with a memmap record (version 1.1).
fn recorded(size: u64, align: u64) -> InfoBlock {
    let mut b = block(NamespaceMode::Devdax, MemmapLocation::Dev, size, align);
    b.memmap = Some(MemmapRecord {
        base: Pfn::new(1 << 21),
        pgmap_id: (1 << 61) | 12345,
        layout: Layout::Heads,
    });
    b
}

/// `b` with the checksum recomputed, so that a test reaches the check after it.
fn resealed(mut b: [u8; INFO_BLOCK_LEN]) -> [u8; INFO_BLOCK_LEN] {
    seal(&mut b);
    b
}

#[test]
fn blocks_round_trip_in_every_mode_map_and_align() {
    for mode in [NamespaceMode::Devdax, NamespaceMode::Fsdax] {
        for map in [MemmapLocation::Mem, MemmapLocation::Dev] {
            for (size, align) in [(64 << 20, 4096), (1 << 30, 2 << 20), (4 << 30, 1 << 30)] {
                let want = block(mode, map, size, align);
                let bytes = want.encode().expect("encode");
                assert_eq!(InfoBlock::decode(&bytes).expect("decode"), want);
            }
        }
    }
    let mut unnamed = block(NamespaceMode::Devdax, MemmapLocation::Dev, 1 << 30, 2 << 20);
    unnamed.name.clear();
    unnamed.flags = InfoFlags::NONE;
    let bytes = unnamed.encode().expect("encode");
    assert_eq!(InfoBlock::decode(&bytes).expect("decode"), unnamed);
    assert_eq!(
        &bytes[16..20],
        &[1, 0, 0, 0],
        "no record: still version 1.0"
    );
    for layout in [Layout::Flat, Layout::Vmemmap, Layout::Heads] {
        let mut want = recorded(1 << 30, 2 << 20);
        if let Some(r) = want.memmap.as_mut() {
            r.layout = layout;
        }
        let bytes = want.encode().expect("encode");
        assert_eq!(&bytes[16..20], &[1, 0, 1, 0], "a record: version 1.1");
        assert_eq!(InfoBlock::decode(&bytes).expect("decode"), want);
    }
}

#[test]
fn the_checksum_is_fletcher64_of_32_bit_words() {
    assert_eq!(fletcher64(&[1, 0, 0, 0, 2, 0, 0, 0]), (4 << 32) | 3);
    assert_eq!(fletcher64(&[]), 0);
}

#[test]
fn every_refusal_names_what_is_wrong() {
    let good = block(NamespaceMode::Devdax, MemmapLocation::Dev, 1 << 30, 2 << 20)
        .encode()
        .expect("encode");
    let check = |bytes: &[u8], want: &str| {
        let e = InfoBlock::decode(bytes).expect_err(want);
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
    };
    check(&good[..100], "truncated: 100 bytes");
    check(&[0u8; INFO_BLOCK_LEN], "no devmap info block here");
    let mut newer = good;
    newer[16..18].copy_from_slice(&2u16.to_le_bytes());
    check(
        &newer,
        "version 2.0, newer than this devmap reads (1.1): upgrade devmap",
    );
    let mut minor = good;
    minor[18..20].copy_from_slice(&2u16.to_le_bytes());
    check(&minor, "version 1.2, newer than this devmap reads (1.1)");
    let good11 = recorded(1 << 30, 2 << 20).encode().expect("encode");
    let mut no_record = good11;
    no_record[168..188].fill(0);
    check(&resealed(no_record), "memmap layout is invalid: 0");
    let mut layout = good11;
    layout[184..188].copy_from_slice(&7u32.to_le_bytes());
    check(&resealed(layout), "memmap layout is invalid: 7");
    let mut unaligned = good11;
    unaligned[168..176].copy_from_slice(&((1u64 << 21) + 1).to_le_bytes());
    check(&resealed(unaligned), "not on the align");
    let mut id = good11;
    id[176..184].fill(0);
    check(&resealed(id), "memmap pgmap id is invalid: 0");
    let mut old = good11;
    old[18..20].copy_from_slice(&0u16.to_le_bytes());
    check(&resealed(old), "reserved bytes is invalid");
    let mut mem = block(NamespaceMode::Devdax, MemmapLocation::Mem, 1 << 30, 2 << 20);
    mem.memmap = recorded(1 << 30, 2 << 20).memmap;
    let mem = mem.encode().expect("encode writes what it is given");
    check(&mem, "present in a --map mem namespace");
    for at in [130, INFO_BLOCK_LEN / 2, CHECKSUM_AT - 1] {
        let mut flipped = good;
        flipped[at] ^= 1;
        check(&flipped, "corrupt: checksum");
    }
    let mut mode = good;
    mode[120..124].copy_from_slice(&3u32.to_le_bytes());
    check(&resealed(mode), "mode is invalid: 3 (1 is devdax, 2 fsdax)");
    let mut map = good;
    map[124..128].copy_from_slice(&0u32.to_le_bytes());
    check(&resealed(map), "map is invalid: 0");
    let mut offset = good;
    offset[144..152].copy_from_slice(&(8u64 << 10).to_le_bytes());
    check(
        &resealed(offset),
        "data offset 8192 where nd_pfn_init puts it at",
    );
    let mut npfns = good;
    npfns[152..160].copy_from_slice(&1u64.to_le_bytes());
    check(&resealed(npfns), "1 data pfns where the namespace holds");
    let mut size = good;
    size[128..136].copy_from_slice(&((1u64 << 30) + 4096).to_le_bytes());
    check(&resealed(size), "geometry is inconsistent");
    let mut name = good;
    name[56] = 0xff;
    check(&resealed(name), "name is invalid: not UTF-8");
    let mut reserved = good;
    reserved[2000] = 1;
    check(&resealed(reserved), "reserved bytes is invalid");
    let mut flags = good;
    flags[20..24].copy_from_slice(&0x80u32.to_le_bytes());
    check(&resealed(flags), "flags is invalid: 0x80");

    let mut long = block(NamespaceMode::Devdax, MemmapLocation::Mem, 1 << 30, 2 << 20);
    long.name = "x".repeat(NAME_LEN + 1);
    assert!(
        long.encode().is_err(),
        "names longer than the field are refused"
    );
}

#[test]
fn mutated_blocks_never_panic_and_every_refusal_has_a_reason() {
    let geometries = [
        (
            NamespaceMode::Devdax,
            MemmapLocation::Dev,
            1u64 << 30,
            2u64 << 20,
        ),
        (NamespaceMode::Fsdax, MemmapLocation::Mem, 64 << 20, 4096),
        (NamespaceMode::Devdax, MemmapLocation::Mem, 4 << 30, 1 << 30),
    ];
    let bases = geometries
        .into_iter()
        .map(|(mode, map, size, align)| block(mode, map, size, align))
        .chain([recorded(1 << 30, 2 << 20)]);
    for (i, b) in bases.enumerate() {
        let base = b.encode().expect("encode");
        fuzz_tests::fuzz(
            "info block",
            0x1b10c + i as u64,
            &base,
            RESERVED.start,
            InfoBlock::decode,
            |b| b.encode().expect("re-encode").to_vec(),
        );
    }
}
