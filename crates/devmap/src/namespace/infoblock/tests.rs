//! The info block: round trips over the geometries, the checksum, every refusal with its
//! reason, and a fuzz run of mutated blocks (no panic, every rejection explained, and nothing
//! accepted that does not encode back to the same bytes).

use super::*;
use crate::addr::Pfn;
use crate::memmap::Layout;
use crate::namespace::fuzz_tests;
use crate::namespace::ondisk::{fletcher64, seal};
use crate::namespace::{GeometryRule, MemmapLocation, NamespaceMode};

fn block(mode: NamespaceMode, map: MemmapLocation, size: u64, align: u64) -> InfoBlock {
    InfoBlock {
        uuid: [7; 16],
        parent_uuid: [9; 16],
        name: "kv-cache".into(),
        namespace: Namespace::new(size, align, mode, map).expect("geometry"),
        flags: InfoFlags::CLEAN,
        generation: 42,
        memmap: None,
        room_sums: None,
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

/// A recorded block with the checksums of its room's units (version 1.2).
fn summed(size: u64, align: u64, units: usize) -> InfoBlock {
    let mut b = recorded(size, align);
    b.room_sums = Some(RoomSums {
        unit_compounds: 3,
        sums: (0..units as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect(),
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
    for units in [1, 2, 171, RoomSums::MAX_UNITS] {
        let want = summed(1 << 30, 2 << 20, units);
        let bytes = want.encode().expect("encode");
        assert_eq!(&bytes[16..20], &[1, 0, 2, 0], "room checksums: version 1.2");
        assert_eq!(InfoBlock::decode(&bytes).expect("decode"), want, "{units}");
    }
    let mut lone = block(NamespaceMode::Devdax, MemmapLocation::Dev, 1 << 30, 2 << 20);
    lone.room_sums = summed(1 << 30, 2 << 20, 4).room_sums;
    assert!(
        lone.encode().is_err(),
        "checksums without the record they describe are refused"
    );
    for bad in [0, RoomSums::MAX_UNITS + 1] {
        assert!(
            summed(1 << 30, 2 << 20, bad).encode().is_err(),
            "{bad} units"
        );
    }
}

/// A 1.1 block, as devmap wrote it before room checksums, still reads: its record and no
/// checksums (a warm enable then rebuilds each unit of the room on first use).
#[test]
fn a_block_written_before_room_checksums_still_reads() {
    let want = recorded(1 << 30, 2 << 20);
    let bytes = want.encode().expect("encode");
    assert_eq!(&bytes[16..20], &[1, 0, 1, 0]);
    let got = InfoBlock::decode(&bytes).expect("a 1.1 block");
    assert_eq!(got.memmap, want.memmap);
    assert_eq!(got.room_sums, None);
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
        "version 2.0, newer than this devmap reads (1.2): upgrade devmap",
    );
    let mut minor = good;
    minor[18..20].copy_from_slice(&3u16.to_le_bytes());
    check(&minor, "version 1.3, newer than this devmap reads (1.2)");
    let good12 = summed(1 << 30, 2 << 20, 5).encode().expect("encode");
    let mut count = good12;
    count[188..192].fill(0);
    check(&resealed(count), "room checksum count is invalid: 0");
    let mut count = good12;
    count[188..192].copy_from_slice(&481u32.to_le_bytes());
    check(&resealed(count), "room checksum count is invalid: 481");
    let mut unit = good12;
    unit[192..200].fill(0);
    check(
        &resealed(unit),
        "room checksum unit is invalid: 0 compounds",
    );
    let mut past = good12;
    past[200 + 8 * 5] = 1;
    check(&resealed(past), "bytes after the last unit are not zero");
    let mut sums11 = recorded(1 << 30, 2 << 20).encode().expect("encode");
    sums11[300] = 1;
    check(&resealed(sums11), "reserved bytes is invalid");
    let mut tail = good12;
    tail[4050] = 1;
    check(&resealed(tail), "reserved bytes is invalid");
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

/// The block of a 64 MiB 4K devdax namespace an older devmap created: its data at its own
/// align ([`GeometryRule::OwnAlign`]).
fn own_align(map: MemmapLocation) -> InfoBlock {
    let mut b = block(NamespaceMode::Devdax, map, 64 << 20, 4096);
    b.namespace =
        Namespace::own_align(64 << 20, 4096, NamespaceMode::Devdax, map).expect("own align");
    b
}

/// An info block an older devmap wrote for a 4K namespace records the data offset of its own
/// align: it still decodes, to that layout, and encodes back to the same bytes; a new 4K
/// namespace's block records the kernel's.
#[test]
fn a_block_with_the_old_4k_offset_still_decodes_unchanged() {
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    // (map, old offset, old npfns, kernel offset, kernel npfns): 64 MiB is 16384 pfns, and
    // --map dev set aside ALIGN(8 KiB + 64 * 16382, 4 KiB) = 1032192 + 8192 bytes.
    for (map, old, old_pfns, new, new_pfns) in [
        (MemmapLocation::Mem, 8192, 16382, 2 << 20, 15872),
        (MemmapLocation::Dev, 1_056_768, 16126, 2 << 20, 15872),
    ] {
        let want = own_align(map);
        let bytes = want.encode().expect("encode");
        assert_eq!(
            (u64_at(&bytes, 144), u64_at(&bytes, 152)),
            (old, old_pfns),
            "{map:?}"
        );
        assert_eq!(&bytes[16..20], &[1, 0, 0, 0], "{map:?}: as 1.0 wrote it");
        let got = InfoBlock::decode(&bytes).expect("decode");
        assert_eq!(got, want);
        assert_eq!(got.namespace.rule(), GeometryRule::OwnAlign);
        assert_eq!(got.encode().expect("again"), bytes);

        let kernel = block(NamespaceMode::Devdax, map, 64 << 20, 4096);
        let bytes = kernel.encode().expect("encode");
        assert_eq!(
            (u64_at(&bytes, 144), u64_at(&bytes, 152)),
            (new, new_pfns),
            "{map:?}"
        );
        assert_eq!(InfoBlock::decode(&bytes).expect("decode"), kernel);
    }
    // Neither layout: both named.
    let mut bytes = own_align(MemmapLocation::Mem).encode().expect("encode");
    bytes[144..152].copy_from_slice(&(12u64 << 10).to_le_bytes());
    let e = InfoBlock::decode(&resealed(bytes)).expect_err("neither");
    assert!(
        e.to_string().contains(
            "data offset 12288 where nd_pfn_init puts it at 2097152, and an older devmap at \
             the namespace's own align at 8192"
        ),
        "{e}"
    );
    // The old offset with the kernel's npfns, or the reverse, is neither either.
    let mut bytes = own_align(MemmapLocation::Mem).encode().expect("encode");
    bytes[152..160].copy_from_slice(&15872u64.to_le_bytes());
    let e = InfoBlock::decode(&resealed(bytes)).expect_err("mixed");
    assert!(
        e.to_string()
            .contains("15872 data pfns where the namespace holds 16382"),
        "{e}"
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
        .chain([
            recorded(1 << 30, 2 << 20),
            summed(1 << 30, 2 << 20, 3),
            own_align(MemmapLocation::Dev),
        ]);
    for (i, b) in bases.enumerate() {
        let base = b.encode().expect("encode");
        fuzz_tests::fuzz(
            "info block",
            0x1b10c + i as u64,
            &base,
            SUMS_TABLE_AT + 8 * 3,
            InfoBlock::decode,
            |b| b.encode().expect("re-encode").to_vec(),
        );
    }
}
