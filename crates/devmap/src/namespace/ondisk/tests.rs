//! The seal every on-disk block carries: it covers each byte before the checksum field and
//! none of the field itself.

use super::*;

/// Bytes that are not all alike, so that no flip lands in a run that hides it.
fn block<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    b
}

fn every_byte_before_the_field_counts<const N: usize>() {
    let b = block::<N>();
    let sum = checksum(&b);
    for at in 0..N {
        let mut c = b;
        c[at] ^= 0x80;
        let changed = checksum(&c) != sum;
        assert_eq!(
            changed,
            at < N - 8,
            "{N}-byte block, byte {at}: only the last 8 bytes are the checksum's own"
        );
    }
}

#[test]
fn the_checksum_covers_every_byte_before_its_field() {
    // The info block and badblocks list (4 KiB) and a label index copy (8 KiB).
    every_byte_before_the_field_counts::<4096>();
    every_byte_before_the_field_counts::<8192>();
}

#[test]
fn a_sealed_block_passes_and_a_flip_past_its_first_eighth_fails() {
    let sig = *b"DEVMAP_TEST\0\0\0\0\0";
    let mut b = block::<4096>();
    write_header(&mut b, &sig, (1, 0));
    seal(&mut b);
    assert!(check::<4096>(&b, &sig, (1, 0)).is_ok());
    for at in [4096 / 8, 4096 / 2, 4096 - 9] {
        let mut c = b;
        c[at] ^= 1;
        assert!(
            matches!(
                check::<4096>(&c, &sig, (1, 0)),
                Err(Header::Checksum { .. })
            ),
            "byte {at}"
        );
    }
}
