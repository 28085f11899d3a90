//! The label index: round trips, which copy is current, every refusal with its reason, and a
//! fuzz run of mutated copies.

use super::*;
use crate::namespace::fuzz_tests;
use crate::namespace::ondisk::seal;
use crate::namespace::{GeometryRule, MemmapLocation, NamespaceMode};

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
                owner: Owner::DEFAULT,
            },
            Label {
                uuid: [2; 16],
                name: "kv".into(),
                offset: 2 << 30,
                namespace: ns(2 << 30, 1 << 30, NamespaceMode::Devdax),
                owner: Owner::DEFAULT,
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
    newer[18..20].copy_from_slice(&3u16.to_le_bytes());
    check(&newer, "version 1.3, newer than this devmap reads (1.2)");
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
    check(
        &resealed(unaligned),
        "is not aligned to its start align 2097152",
    );
    let mut name = good;
    name[ENTRIES_AT + ENTRY_LEN + 16..ENTRIES_AT + ENTRY_LEN + 19].copy_from_slice(b"vm0");
    check(&resealed(name), "share a name or a uuid");
    let mut mode = good;
    mode[ENTRIES_AT + 104] = 9;
    check(&resealed(mode), "entry 0's mode 9");
}

/// `index(1)` (2M and 1G namespaces, whose layout both rules agree on) with a 4K namespace
/// `ns` at 4 GiB.
fn with_4k(ns: Namespace) -> LabelIndex {
    let mut i = index(1);
    i.labels.push(Label {
        uuid: [4; 16],
        name: "small".into(),
        offset: 4 << 30,
        namespace: ns,
        owner: Owner::DEFAULT,
    });
    i
}

const ENTRY2: usize = ENTRIES_AT + 2 * ENTRY_LEN;

#[test]
fn a_4k_namespace_laid_out_by_the_kernels_rule_needs_version_1_1() {
    // 2M and 1G namespaces only: what version 1.0 describes, so still written as 1.0.
    let old = index(1).encode().expect("encode");
    assert_eq!(&old[16..20], &[1, 0, 0, 0]);
    for e in 0..2 {
        let at = ENTRIES_AT + e * ENTRY_LEN;
        assert!(old[at + 112..at + 128].iter().all(|&x| x == 0), "entry {e}");
    }
    let decoded = LabelIndex::decode(&old).expect("decode");
    assert!(
        decoded
            .labels
            .iter()
            .all(|l| l.namespace.rule() == GeometryRule::Kernel)
    );

    let new = with_4k(
        Namespace::new(64 << 20, 4096, NamespaceMode::Devdax, MemmapLocation::Mem).expect("ns"),
    );
    let bytes = new.encode().expect("encode");
    assert_eq!(&bytes[16..20], &[1, 0, 1, 0], "version 1.1");
    assert_eq!(
        u32::from_le_bytes(bytes[ENTRY2 + 112..ENTRY2 + 116].try_into().expect("4")),
        1
    );
    let back = LabelIndex::decode(&bytes).expect("decode");
    assert_eq!(back, new);
    assert_eq!(back.labels[2].namespace.data_offset(), 2 << 20);
}

/// A 4K namespace in a 1.0 index is one an older devmap laid out: it keeps its data offset
/// (8 KiB for `--map mem`) and its start on 4 KiB, and writing the index again keeps it 1.0.
#[test]
fn a_4k_namespace_of_a_version_1_0_index_keeps_the_old_layout() {
    let old = Namespace::own_align(64 << 20, 4096, NamespaceMode::Devdax, MemmapLocation::Mem)
        .expect("own align");
    let mut i = with_4k(old);
    i.labels[2].offset = (4 << 30) + 4096;
    let bytes = i.encode().expect("encode");
    assert_eq!(&bytes[16..20], &[1, 0, 0, 0], "version 1.0");
    assert!(bytes[ENTRY2 + 112..ENTRY2 + 128].iter().all(|&x| x == 0));
    let back = LabelIndex::decode(&bytes).expect("decode");
    let ns = back.labels[2].namespace;
    assert_eq!(
        (
            ns.rule(),
            ns.data_offset(),
            ns.data_bytes(),
            ns.start_align()
        ),
        (GeometryRule::OwnAlign, 8192, (64 << 20) - 8192, 4096)
    );
    assert_eq!(back.encode().expect("again"), bytes);
}

#[test]
fn geometry_codes_that_no_version_writes_are_refused() {
    let check = |bytes: &[u8], want: &str| {
        let e = LabelIndex::decode(bytes).expect_err(want);
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
    };
    let old = index(1).encode().expect("encode");
    let new = with_4k(
        Namespace::new(64 << 20, 4096, NamespaceMode::Devdax, MemmapLocation::Dev).expect("ns"),
    )
    .encode()
    .expect("encode");
    // A 1.0 index has no geometry field.
    let mut in_1_0 = old;
    in_1_0[ENTRIES_AT + 112] = 1;
    check(&resealed(in_1_0), "entry 0's reserved bytes are not zero");
    // 1.1 with nothing that needs it.
    let mut bumped = old;
    bumped[18] = 1;
    check(
        &resealed(bumped),
        "version 1.1 where its namespaces need 1.0",
    );
    // Geometry 1 where both rules agree (1 GiB).
    let mut agree = new;
    agree[ENTRIES_AT + ENTRY_LEN + 112] = 1;
    check(
        &resealed(agree),
        "says geometry 1 at align 1073741824, where both rules agree",
    );
    let mut unknown = new;
    unknown[ENTRY2 + 112] = 7;
    check(
        &resealed(unknown),
        "entry 2's geometry 7 (0 own align, 1 nd_pfn_init's)",
    );
    // The kernel's rule starts a 4K namespace on 2 MiB.
    let mut off = new;
    off[ENTRY2 + 80..ENTRY2 + 88].copy_from_slice(&((4u64 << 30) + 4096).to_le_bytes());
    check(&resealed(off), "is not aligned to its start align 2097152");
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
                owner: Owner::DEFAULT,
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
    let kernel_4k =
        Namespace::new(64 << 20, 4096, NamespaceMode::Fsdax, MemmapLocation::Dev).expect("ns");
    for (i, base) in [index(2), with_4k(kernel_4k)].into_iter().enumerate() {
        let base = base.encode().expect("encode");
        fuzz_tests::fuzz(
            "label index",
            0x1abe1 + i as u64,
            &base,
            ENTRIES_AT + 3 * ENTRY_LEN,
            LabelIndex::decode,
            |i| i.encode().expect("re-encode").to_vec(),
        );
    }
}

/// An owner other than root 0600 is written in version 1.2, read back, and checked: a default
/// owner stays all zeros (and 1.0), the mode needs its marker bit, and a version above what the
/// entries need is refused.
#[test]
fn an_owner_needs_version_1_2_and_the_default_owner_is_written_as_zeros() {
    let check = |bytes: &[u8], want: &str| {
        let e = LabelIndex::decode(bytes).expect_err(want);
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
    };
    let old = index(1).encode().expect("encode");
    assert_eq!(&old[16..20], &[1, 0, 0, 0]);
    let mut owned = index(1);
    owned.labels[1].owner = Owner {
        uid: 1000,
        gid: 100,
        mode: 0o660,
    };
    let bytes = owned.encode().expect("encode");
    assert_eq!(&bytes[16..20], &[1, 0, 2, 0], "version 1.2");
    let e1 = ENTRIES_AT + ENTRY_LEN;
    assert_eq!(
        u32::from_le_bytes(bytes[e1 + 116..e1 + 120].try_into().expect("4")),
        1000
    );
    assert_eq!(
        u32::from_le_bytes(bytes[e1 + 124..e1 + 128].try_into().expect("4")),
        0o660 | OWNER_SET
    );
    assert!(
        bytes[ENTRIES_AT + 116..ENTRIES_AT + 128]
            .iter()
            .all(|&x| x == 0)
    );
    assert_eq!(LabelIndex::decode(&bytes).expect("decode"), owned);
    // Owner fields in a 1.0 index, a 1.2 index whose owners are all default, an owner
    // without its marker, and the default spelled out are refused.
    let mut in_1_0 = old;
    in_1_0[ENTRIES_AT + 116] = 7;
    check(&resealed(in_1_0), "entry 0's reserved bytes are not zero");
    let mut bumped = old;
    bumped[18] = 2;
    check(
        &resealed(bumped),
        "version 1.2 where its namespaces need 1.0",
    );
    let mut unmarked = bytes;
    unmarked[e1 + 124..e1 + 128].copy_from_slice(&0o660u32.to_le_bytes());
    check(&resealed(unmarked), "entry 1's owner mode");
    let mut spelled = bytes;
    spelled[e1 + 116..e1 + 128].fill(0);
    spelled[e1 + 124..e1 + 128].copy_from_slice(&(0o600 | OWNER_SET).to_le_bytes());
    check(&resealed(spelled), "spells out the default owner");
}

#[test]
fn owners_permit_as_generic_permission_does() {
    let o = Owner {
        uid: 1000,
        gid: 100,
        mode: 0o640,
    };
    assert!(o.permits(0, &[]), "root");
    assert!(o.permits(1000, &[]), "the owner: rw");
    assert!(!o.permits(1001, &[100]), "the group: r only");
    assert!(!o.permits(1001, &[5]), "others: nothing");
    let g = Owner { mode: 0o660, ..o };
    assert!(g.permits(1001, &[5, 100]), "a member of the group: rw");
    assert!(!Owner::DEFAULT.permits(1000, &[0]), "root 0600 is root's");
}
