//! The badblocks list: merging, round trips, refusals, and a fuzz run of mutated blocks.

use super::*;
use crate::namespace::fuzz_tests;

#[test]
fn pages_merge_into_ranges_and_round_trip() {
    let list = Badblocks::from_pages([9, 3, 4, 5, 20, 4, 10], 7);
    assert_eq!(list.ranges, vec![(3, 3), (9, 2), (20, 1)]);
    assert_eq!(list.pages().collect::<Vec<_>>(), vec![3, 4, 5, 9, 10, 20]);
    let bytes = list.encode().expect("encode");
    assert_eq!(Badblocks::decode(&bytes).expect("decode"), list);
    assert_eq!(
        Badblocks::decode(&[0u8; BADBLOCKS_LEN]).expect("empty"),
        Badblocks::default()
    );
}

#[test]
fn refusals_name_what_is_wrong() {
    let good = Badblocks::from_pages([1, 2, 8], 1)
        .encode()
        .expect("encode");
    let check = |bytes: &[u8], want: &str| {
        let e = Badblocks::decode(bytes).expect_err(want);
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
    };
    check(&good[..8], "truncated");
    let mut foreign = [0u8; BADBLOCKS_LEN];
    foreign[100] = 1;
    check(&foreign, "no devmap badblocks list here");
    for at in [40, BADBLOCKS_LEN / 2, CHECKSUM_AT - 1] {
        let mut flipped = good;
        flipped[at] ^= 1;
        check(&flipped, "corrupt: checksum");
    }
    let unmerged = Badblocks {
        ranges: vec![(1, 2), (3, 1)],
        generation: 0,
    };
    assert!(
        unmerged
            .encode()
            .expect_err("unmerged")
            .to_string()
            .contains("not merged")
    );
    let too_many = Badblocks::from_pages((0..=MAX_BAD_RANGES as u64).map(|p| p * 2), 0);
    assert!(too_many.encode().is_err());
}

#[test]
fn mutated_blocks_never_panic_and_every_refusal_has_a_reason() {
    let base = Badblocks::from_pages([5, 6, 7, 100, 4000], 3)
        .encode()
        .expect("encode");
    fuzz_tests::fuzz(
        "badblocks list",
        0xbadb,
        &base,
        128,
        Badblocks::decode,
        |l| l.encode().expect("re-encode").to_vec(),
    );
}
