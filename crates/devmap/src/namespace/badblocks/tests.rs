//! The badblocks list: merging, round trips, refusals, and a fuzz run of mutated blocks.

use super::*;
use crate::test_support::Rng;

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
    let mut flipped = good;
    flipped[40] ^= 1;
    check(&flipped, "corrupt: checksum");
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
    let cases: u64 = std::env::var("DEVMAP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng::new(0xbadb);
    let base = Badblocks::from_pages([5, 6, 7, 100, 4000], 3)
        .encode()
        .expect("encode");
    for case in 0..cases {
        let mut bytes = base.to_vec();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(128) as usize;
            bytes[at] = rng.next() as u8;
        }
        if rng.below(2) == 0 {
            let arr: [u8; BADBLOCKS_LEN] = bytes.clone().try_into().expect("len");
            let sum = checksum_of(&arr);
            bytes[CHECKSUM_AT..].copy_from_slice(&sum.to_le_bytes());
        }
        match Badblocks::decode(&bytes) {
            Ok(list) => {
                let again = list.encode().expect("re-encode");
                assert!(
                    again[..] == bytes[..],
                    "case {case}: non-canonical list accepted"
                );
            }
            Err(e) => assert!(!e.to_string().is_empty(), "case {case}"),
        }
    }
}
