//! A namespace's badblocks list on disk: the pages memory failure reported and `clear-errors`
//! has not cleared, kept in the first 4 KiB of the namespace (the part of the 8 KiB info block
//! reserve before the info block), so that they survive restarts. Ranges are in 4 KiB pages
//! from the start of the namespace's data, merged and in order. An all-zero block is an empty
//! list (a namespace that never had an error).
//!
//! | bytes | field |
//! |---|---|
//! | 0..16 | signature `DEVMAP_BADBLOCKS` |
//! | 16..18, 18..20 | version major, minor |
//! | 20..24 | ranges |
//! | 24..32 | generation |
//! | 32..4032 | up to [`MAX_BAD_RANGES`] ranges of (first page, pages), 8 bytes each |
//! | 4032..4088 | zero |
//! | 4088..4096 | checksum (Fletcher-64, as the info block's) |

use super::ondisk::{self, Header, u32_at, u64_at};

/// Bytes of the block.
pub const BADBLOCKS_LEN: usize = 4096;
/// Where it sits in its namespace.
pub const BADBLOCKS_OFFSET: u64 = 0;
/// Ranges the block holds; a list longer than this cannot be recorded.
pub const MAX_BAD_RANGES: usize = 250;
/// The signature.
pub const BADBLOCKS_SIGNATURE: [u8; 16] = *b"DEVMAP_BADBLOCKS";

const VERSION: (u16, u16) = (1, 0);
const RANGES_AT: usize = 32;
const CHECKSUM_AT: usize = BADBLOCKS_LEN - 8;

/// A namespace's bad pages: (first page, pages) from the start of its data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Badblocks {
    /// The ranges, merged, in order.
    pub ranges: Vec<(u64, u64)>,
    /// Bumped on every write.
    pub generation: u64,
}

/// Why a badblocks block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadblocksError {
    /// Fewer bytes than a block.
    #[error("the badblocks list is truncated: {len} bytes, a block is {BADBLOCKS_LEN}")]
    Truncated {
        /// Bytes there were.
        len: usize,
    },
    /// Neither zero nor a devmap badblocks block.
    #[error("no devmap badblocks list here (and the block is not empty)")]
    Foreign,
    /// Written by a newer version.
    #[error("the badblocks list is version {major}.{minor}, newer than this devmap reads (1.0)")]
    NewerVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The checksum does not match.
    #[error("the badblocks list is corrupt: checksum {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// Stored.
        stored: u64,
        /// Computed.
        computed: u64,
    },
    /// Ranges out of order, overlapping, empty or too many, or non-zero reserved bytes.
    #[error("the badblocks list is invalid: {why}")]
    Invalid {
        /// What is wrong.
        why: String,
    },
}

fn invalid(why: impl Into<String>) -> BadblocksError {
    BadblocksError::Invalid { why: why.into() }
}

impl Badblocks {
    /// The list of `pages` (page offsets from the start of the data, any order, repeats
    /// allowed) as merged ranges.
    pub fn from_pages(pages: impl IntoIterator<Item = u64>, generation: u64) -> Badblocks {
        let mut sorted: Vec<u64> = pages.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for p in sorted {
            match ranges.last_mut() {
                Some((first, n)) if *first + *n == p => *n += 1,
                _ => ranges.push((p, 1)),
            }
        }
        Badblocks { ranges, generation }
    }

    /// Every bad page, in order.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(first, n)| first..first + n)
    }

    /// Ranges in order, not overlapping, not touching (merged), none empty, at most
    /// [`MAX_BAD_RANGES`].
    pub fn check(&self) -> Result<(), BadblocksError> {
        if self.ranges.len() > MAX_BAD_RANGES {
            return Err(invalid(format!(
                "{} ranges, a namespace records at most {MAX_BAD_RANGES}",
                self.ranges.len()
            )));
        }
        let mut end = None;
        for (i, &(first, n)) in self.ranges.iter().enumerate() {
            if n == 0 {
                return Err(invalid(format!("range {i} is empty")));
            }
            if end.is_some_and(|e: u64| first <= e) {
                return Err(invalid(format!(
                    "range {i} (page {first}) is out of order or not merged with the one before"
                )));
            }
            end = Some(
                first
                    .checked_add(n)
                    .ok_or_else(|| invalid(format!("range {i} runs past the last page")))?,
            );
        }
        Ok(())
    }

    /// The block's bytes.
    pub fn encode(&self) -> Result<[u8; BADBLOCKS_LEN], BadblocksError> {
        self.check()?;
        let mut b = [0u8; BADBLOCKS_LEN];
        ondisk::write_header(&mut b, &BADBLOCKS_SIGNATURE, VERSION);
        b[20..24].copy_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        for (i, &(first, n)) in self.ranges.iter().enumerate() {
            let at = RANGES_AT + i * 16;
            b[at..at + 8].copy_from_slice(&first.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&n.to_le_bytes());
        }
        ondisk::seal(&mut b);
        Ok(b)
    }

    /// Decodes and checks a block; an all-zero block is the empty list.
    pub fn decode(bytes: &[u8]) -> Result<Badblocks, BadblocksError> {
        if bytes.len() >= BADBLOCKS_LEN && bytes[..BADBLOCKS_LEN].iter().all(|&x| x == 0) {
            return Ok(Badblocks::default());
        }
        let b: &[u8; BADBLOCKS_LEN] =
            ondisk::check(bytes, &BADBLOCKS_SIGNATURE, VERSION).map_err(|h| match h {
                Header::Truncated { len } => BadblocksError::Truncated { len },
                Header::Foreign { .. } => BadblocksError::Foreign,
                Header::Newer { major, minor } => BadblocksError::NewerVersion { major, minor },
                Header::Checksum { stored, computed } => {
                    BadblocksError::Checksum { stored, computed }
                }
            })?;
        let count = u32_at(b, 20) as usize;
        if count > MAX_BAD_RANGES {
            return Err(invalid(format!(
                "{count} ranges, a namespace records at most {MAX_BAD_RANGES}"
            )));
        }
        let used = RANGES_AT + count * 16;
        if b[used..CHECKSUM_AT].iter().any(|&x| x != 0) {
            return Err(invalid("bytes after the ranges are not zero"));
        }
        let ranges = (0..count)
            .map(|i| {
                let at = RANGES_AT + i * 16;
                (u64_at(b, at), u64_at(b, at + 8))
            })
            .collect();
        let list = Badblocks {
            ranges,
            generation: u64_at(b, 24),
        };
        list.check()?;
        Ok(list)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
