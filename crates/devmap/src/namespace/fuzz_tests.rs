//! The fuzz run every on-disk parser of the namespace module goes through: mutated copies of a
//! valid block (bits flipped, bytes set, 8-byte runs overwritten, the block truncated), half of
//! them resealed so that the checks behind the checksum are reached. No parser may panic,
//! every refusal must say why, and anything accepted must encode back to the same bytes.
//! `DEVMAP_FUZZ_CASES` sets the cases (10^5 by hand), 20 000 by default.

use std::fmt::Display;

use super::ondisk::fletcher64;
use crate::test_support::Rng;

/// Fuzzes `decode` from `base`, mutating mostly its first `focus` bytes; returns how many
/// cases were accepted and refused.
pub(super) fn fuzz<T, E: Display>(
    what: &str,
    seed: u64,
    base: &[u8],
    focus: usize,
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> (u64, u64) {
    let cases: u64 = std::env::var("DEVMAP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let len = base.len();
    let mut rng = Rng::new(seed);
    let (mut accepted, mut refused) = (0u64, 0u64);
    for case in 0..cases {
        let mut bytes = base.to_vec();
        for _ in 0..1 + rng.below(8) {
            let span = if rng.below(4) == 0 { len } else { focus };
            let at = rng.below(span as u64) as usize;
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                2 => {
                    let v = rng.next().to_le_bytes();
                    let end = (at + 8).min(bytes.len());
                    bytes[at..end].copy_from_slice(&v[..end - at]);
                }
                _ => bytes.truncate(at.max(1)),
            }
            if bytes.len() < len {
                break;
            }
        }
        if rng.below(2) == 0 && bytes.len() == len {
            bytes[len - 8..].fill(0);
            let sum = fletcher64(&bytes);
            bytes[len - 8..].copy_from_slice(&sum.to_le_bytes());
        }
        match decode(&bytes) {
            Ok(v) => {
                let again = encode(&v);
                let differs = again.iter().zip(&bytes).position(|(a, b)| a != b);
                assert_eq!(
                    differs, None,
                    "{what} case {case}: accepted a non-canonical block"
                );
                accepted += 1;
            }
            Err(e) => {
                assert!(
                    !e.to_string().is_empty(),
                    "{what} case {case}: a refusal without a reason"
                );
                refused += 1;
            }
        }
    }
    eprintln!("{what} fuzz: {accepted} accepted, {refused} refused");
    assert!(
        refused > accepted,
        "{what}: {accepted} accepted, {refused} refused"
    );
    (accepted, refused)
}
