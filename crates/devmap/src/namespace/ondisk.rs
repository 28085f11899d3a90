//! What the namespace module's on-disk formats (info block, label index, badblocks list) share:
//! little-endian field access, the Fletcher-64 seal over a block whose last 8 bytes hold the
//! checksum (the kernel's `nd_sb_checksum`), the mode and map codes, and the header every
//! block starts with (a 16-byte signature, a version), checked in one order: length,
//! signature, version, checksum. Each format turns a [`Header`] refusal into its own error.

use super::{MemmapLocation, NamespaceMode};

/// `nd_fletcher64` over 32-bit little-endian words, as `nd_sb_checksum` computes it with the
/// checksum field zeroed.
pub fn fletcher64(bytes: &[u8]) -> u64 {
    let (mut lo, mut hi) = (0u32, 0u32);
    for w in bytes.chunks_exact(4) {
        lo = lo.wrapping_add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        hi = hi.wrapping_add(lo);
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The checksum of a block: Fletcher-64 with its last 8 bytes zeroed.
pub(super) fn checksum<const N: usize>(b: &[u8; N]) -> u64 {
    let mut copy = *b;
    copy[N - 8..].fill(0);
    fletcher64(&copy)
}

/// Writes the signature and version at the start of `b` (which is otherwise filled in by the
/// caller), then, by [`seal`], the checksum.
pub(super) fn write_header<const N: usize>(
    b: &mut [u8; N],
    signature: &[u8; 16],
    version: (u16, u16),
) {
    b[0..16].copy_from_slice(signature);
    b[16..18].copy_from_slice(&version.0.to_le_bytes());
    b[18..20].copy_from_slice(&version.1.to_le_bytes());
}

/// Stores the checksum in the last 8 bytes of `b`.
pub(super) fn seal<const N: usize>(b: &mut [u8; N]) {
    let sum = checksum(b);
    b[N - 8..].copy_from_slice(&sum.to_le_bytes());
}

/// Why a block's header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Header {
    Truncated { len: usize },
    Foreign { found: [u8; 16] },
    Newer { major: u16, minor: u16 },
    Checksum { stored: u64, computed: u64 },
}

/// Checks a block's length, signature, version (none newer than `version`; major 0 is foreign)
/// and checksum, in that order; the block on success.
pub(super) fn check<'b, const N: usize>(
    bytes: &'b [u8],
    signature: &[u8; 16],
    version: (u16, u16),
) -> Result<&'b [u8; N], Header> {
    let b: &[u8; N] = bytes
        .get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or(Header::Truncated { len: bytes.len() })?;
    let mut found = [0u8; 16];
    found.copy_from_slice(&b[0..16]);
    if &found != signature {
        return Err(Header::Foreign { found });
    }
    let (major, minor) = (u16_at(b, 16), u16_at(b, 18));
    if major == 0 {
        // No version 0 is ever written: a block claiming it is not ours.
        return Err(Header::Foreign { found });
    }
    if (major, minor) > version {
        return Err(Header::Newer { major, minor });
    }
    let stored = u64_at(b, N - 8);
    let computed = checksum(b);
    if stored != computed {
        return Err(Header::Checksum { stored, computed });
    }
    Ok(b)
}

/// The on-disk code of a mode.
pub(super) fn mode_code(mode: NamespaceMode) -> u32 {
    match mode {
        NamespaceMode::Devdax => 1,
        NamespaceMode::Fsdax => 2,
    }
}

/// The mode of an on-disk code.
pub(super) fn mode_of(code: u32) -> Option<NamespaceMode> {
    match code {
        1 => Some(NamespaceMode::Devdax),
        2 => Some(NamespaceMode::Fsdax),
        _ => None,
    }
}

/// The on-disk code of a memmap location.
pub(super) fn map_code(map: MemmapLocation) -> u32 {
    match map {
        MemmapLocation::Mem => 1,
        MemmapLocation::Dev => 2,
    }
}

/// The memmap location of an on-disk code.
pub(super) fn map_of(code: u32) -> Option<MemmapLocation> {
    match code {
        1 => Some(MemmapLocation::Mem),
        2 => Some(MemmapLocation::Dev),
        _ => None,
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
