//! The label index: round trips, which copy is current, every refusal with its reason, and a
//! fuzz run of mutated copies.

use super::*;
use crate::namespace::fuzz_tests;
use crate::namespace::ondisk::seal;
use crate::namespace::{MemmapLocation, NamespaceMode};

fn index(seq: u32) -> LabelIndex {
    let ns =
        |size, align, mode| Namespace::new(size, align, mode, MemmapLocation::Dev).expect("ns");
    LabelIndex {
        seq,
        region_uuid: [3; 16],
        region_size: 8 << 30,
        labels: vec![
            Label {
                uuid: [1; 16],
                name: "vm0".into(),
                offset: 2 << 20,
                namespace: ns(1 << 30, 2 << 20, NamespaceMode::Devdax),
            },
            Label {
                uuid: [2; 16],
                name: "kv".into(),
                offset: 2 << 30,
                namespace: ns(2 << 30, 1 << 30, NamespaceMode::Devdax),
            },
        ],
    }
}

fn resealed(mut b: [u8; LABEL_INDEX_LEN]) -> [u8; LABEL_INDEX_LEN] {
    seal(&mut b);
    b
}

#[test]
fn copies_round_trip_and_the_newer_of_two_is_current() {
    for seq in 1..=3 {
        let i = index(seq);
        assert_eq!(
            LabelIndex::decode(&i.encode().expect("encode")).expect("decode"),
            i
        );
    }
    for (a, b, want) in [(1, 2, 2), (2, 3, 3), (3, 1, 1), (2, 1, 2), (1, 3, 1)] {
        let (x, y) = (index(a), index(b));
        assert_eq!(
            current(Some(&x), Some(&y)).map(|i| i.seq),
            Some(want),
            "{a} {b}"
        );
    }
    let only = index(2);
    assert_eq!(current(None, Some(&only)).map(|i| i.seq), Some(2));
    assert_eq!(current(None, None), None);
}

#[test]
fn every_refusal_names_what_is_wrong() {
    let good = index(1).encode().expect("encode");
    let check = |bytes: &[u8], want: &str| {
        let e = LabelIndex::decode(bytes).expect_err(want);
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
    };
    check(&good[..10], "truncated: 10 bytes");
    check(&[0u8; LABEL_INDEX_LEN], "no devmap label index here");
    let mut newer = good;
    newer[18..20].copy_from_slice(&1u16.to_le_bytes());
    check(&newer, "version 1.1, newer than this devmap reads (1.0)");
    let mut flipped = good;
    flipped[ENTRIES_AT + 90] ^= 4;
    check(&flipped, "corrupt: checksum");
    let mut seq = good;
    seq[20..24].copy_from_slice(&4u32.to_le_bytes());
    check(&resealed(seq), "sequence number 4 (1 to 3)");
    let mut count = good;
    count[48..52].copy_from_slice(&1u32.to_le_bytes());
    check(&resealed(count), "unused entry 1 is not zero");
    let mut overlap = good;
    let second = ENTRIES_AT + ENTRY_LEN + 80;
    overlap[second..second + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
    check(
        &resealed(overlap),
        "overlaps the label area or the namespace before it",
    );
    let mut past = good;
    past[40..48].copy_from_slice(&(3u64 << 30).to_le_bytes());
    check(&resealed(past), "runs past the region's end");
    let mut unaligned = good;
    unaligned[ENTRIES_AT + 80..ENTRIES_AT + 88].copy_from_slice(&(4096u64).to_le_bytes());
    check(&resealed(unaligned), "is not aligned to its align");
    let mut name = good;
    name[ENTRIES_AT + ENTRY_LEN + 16..ENTRIES_AT + ENTRY_LEN + 19].copy_from_slice(b"vm0");
    check(&resealed(name), "share a name or a uuid");
    let mut mode = good;
    mode[ENTRIES_AT + 104] = 9;
    check(&resealed(mode), "entry 0's mode 9");
}

/// A full table: [`MAX_NAMESPACES`] namespaces of 4 MiB, one after the other.
fn full(n: usize) -> LabelIndex {
    let mib = 1u64 << 20;
    let ns =
        Namespace::new(4 * mib, 2 * mib, NamespaceMode::Devdax, MemmapLocation::Mem).expect("ns");
    LabelIndex {
        seq: 1,
        region_uuid: [3; 16],
        region_size: 4 * mib * (n as u64 + 1),
        labels: (0..n)
            .map(|i| Label {
                uuid: [i as u8 + 1; 16],
                name: format!("ns{i}"),
                offset: 4 * mib * (i as u64 + 1),
                namespace: ns,
            })
            .collect(),
    }
}

#[test]
fn a_full_table_round_trips_and_one_more_namespace_is_refused() {
    let most = full(MAX_NAMESPACES);
    let bytes = most.encode().expect("a full table encodes");
    assert_eq!(LabelIndex::decode(&bytes).expect("and decodes"), most);

    let want = format!(
        "{} namespaces, a region holds at most {MAX_NAMESPACES}",
        MAX_NAMESPACES + 1
    );
    let e = full(MAX_NAMESPACES + 1).check().expect_err("one too many");
    assert!(e.to_string().contains(&want), "{e}");
    let e = full(MAX_NAMESPACES + 1)
        .encode()
        .expect_err("never written");
    assert!(e.to_string().contains(&want), "{e}");

    // A copy whose count claims one more than its (valid, full) table: decode refuses the
    // count itself, before it reads the entries.
    for count in [MAX_NAMESPACES as u32 + 1, u32::MAX] {
        let mut b = bytes;
        b[48..52].copy_from_slice(&count.to_le_bytes());
        let e = LabelIndex::decode(&resealed(b)).expect_err("count past the table");
        assert!(
            e.to_string()
                .contains(&format!("{count} namespaces, a region holds at most 48")),
            "{e}"
        );
    }
}

#[test]
fn names_are_1_to_64_bytes_without_nul() {
    for (name, ok) in [
        ("", false),
        ("a\0b", false),
        ("\0", false),
        (&"n".repeat(64)[..], true),
        (&"n".repeat(65)[..], false),
        ("é", true),
    ] {
        let mut i = index(1);
        i.labels[0].name = name.into();
        let got = i.check();
        match (ok, got) {
            (true, Ok(())) => {
                let decoded = LabelIndex::decode(&i.encode().expect("encode")).expect("decode");
                assert_eq!(decoded.labels[0].name, name);
            }
            (false, Err(e)) => {
                assert!(
                    e.to_string().contains("is not 1 to 64 bytes without NUL"),
                    "{name:?}: {e}"
                );
                i.encode().expect_err("never written");
            }
            (ok, got) => panic!("name {name:?}: want ok={ok}, got {got:?}"),
        }
    }
}

#[test]
fn a_flip_anywhere_before_the_checksum_is_caught() {
    let good = full(MAX_NAMESPACES).encode().expect("encode");
    // Past the header, every 61st byte, to the last byte before the checksum.
    for at in (20..CHECKSUM_AT).step_by(61).chain([CHECKSUM_AT - 1]) {
        let mut b = good;
        b[at] ^= 0x10;
        let e = LabelIndex::decode(&b).expect_err("flipped");
        assert!(
            e.to_string().contains("corrupt: checksum"),
            "byte {at}: {e}"
        );
    }
}

#[test]
fn mutated_copies_never_panic_and_every_refusal_has_a_reason() {
    let base = index(2).encode().expect("encode");
    fuzz_tests::fuzz(
        "label index",
        0x1abe1,
        &base,
        ENTRIES_AT + 2 * ENTRY_LEN,
        LabelIndex::decode,
        |i| i.encode().expect("re-encode").to_vec(),
    );
}
