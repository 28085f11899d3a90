//! Arguments more than one command takes, and their validation: a namespace's size, align, map
//! and mode (turned into the library's [`Namespace`]), the memmap layout, and counts. Every
//! refusal says what was wrong and suggests a value that would work.

use std::num::{IntErrorKind, ParseIntError};
use std::str::FromStr;

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use devmap::namespace::INFO_BLOCK_BYTES;
use devmap::{Layout, MemmapLocation, Namespace, NamespaceError, NamespaceMode};

use crate::units::{format_size, parse_bytes};

/// The largest namespace the tool accepts: 1 PiB.
pub const MAX_SIZE: u64 = 1 << 50;

/// `--layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// One descriptor per 4 KiB page.
    Flat,
    /// Software vmemmap with tail-block dedup.
    Vmemmap,
    /// Head descriptors only: one per compound page, tails computed.
    Heads,
    /// Each layout in turn.
    All,
}

impl LayoutArg {
    /// The layouts this argument names.
    pub fn layouts(self) -> Vec<Layout> {
        match self {
            LayoutArg::Flat => vec![Layout::Flat],
            LayoutArg::Vmemmap => vec![Layout::Vmemmap],
            LayoutArg::Heads => vec![Layout::Heads],
            LayoutArg::All => Layout::ALL.to_vec(),
        }
    }
}

/// `--map`: where the memmap lives (ndctl's `--map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MapArg {
    /// In host memory.
    Mem,
    /// On the device itself (an altmap).
    Dev,
}

impl From<MapArg> for MemmapLocation {
    fn from(map: MapArg) -> Self {
        match map {
            MapArg::Mem => MemmapLocation::Mem,
            MapArg::Dev => MemmapLocation::Dev,
        }
    }
}

/// `--mode`: the namespace mode (ndctl's `--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Device-dax: folios of `align` bytes, idle refcount 1.
    Devdax,
    /// Filesystem DAX: base-page memmap (folios form at fault time), idle refcount 0.
    Fsdax,
}

impl From<ModeArg> for NamespaceMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Devdax => NamespaceMode::Devdax,
            ModeArg::Fsdax => NamespaceMode::Fsdax,
        }
    }
}

/// What every namespace command takes.
#[derive(Debug, Args)]
pub struct NamespaceArgs {
    /// Namespace size, with K/M/G/T suffixes in powers of 1024 (e.g. 128G).
    #[arg(long, short = 's', allow_hyphen_values = true)]
    size: String,
    /// Page size of the namespace's folios: 4K, 2M or 1G.
    #[arg(long, short = 'a', default_value = "2M", allow_hyphen_values = true)]
    align: String,
    /// Where the memmap lives: host memory, or the device itself (an altmap).
    #[arg(long, short = 'M', value_enum, default_value = "mem")]
    map: MapArg,
    /// Namespace mode.
    #[arg(long, short = 'm', value_enum, default_value = "devdax")]
    mode: ModeArg,
    /// Print a JSON array of objects with raw integers.
    #[arg(long, short = 'j')]
    pub json: bool,
}

impl NamespaceArgs {
    /// The namespace these arguments describe.
    pub fn namespace(&self) -> Result<Namespace> {
        namespace(&self.size, &self.align, self.mode, self.map)
    }
}

/// The aligns a namespace may have: the library's rule.
const SUPPORTED_ALIGNS: [u64; 3] = Namespace::SUPPORTED_ALIGNS;
/// The hint that names them.
const USE_SUPPORTED: &str = "use --align 4K, 2M or 1G";

/// Parses `--size`.
pub fn parse_size(text: &str) -> Result<u64> {
    parse_bytes(
        "size",
        text,
        &format!("the largest namespace is {}", format_size(MAX_SIZE)),
    )
}

/// Parses `--align` and checks that `mode` supports it.
pub fn parse_align(text: &str, mode: ModeArg) -> Result<u64> {
    let align = parse_bytes("align", text, USE_SUPPORTED)?;
    if align == 0 || !align.is_power_of_two() {
        bail!("align {text} is not a power of two: {USE_SUPPORTED}");
    }
    if !SUPPORTED_ALIGNS.contains(&align) {
        bail!(
            "align {} is not supported for {}: {USE_SUPPORTED}",
            format_size(align),
            NamespaceMode::from(mode).name()
        );
    }
    Ok(align)
}

/// Validates `--size`, `--align`, `--mode` and `--map` together into a namespace.
pub fn namespace(
    size_text: &str,
    align_text: &str,
    mode: ModeArg,
    map: MapArg,
) -> Result<Namespace> {
    let size = parse_size(size_text)?;
    let align = parse_align(align_text, mode)?;
    if size == 0 {
        bail!(
            "size must be greater than zero: did you mean --size {}?",
            format_size(align)
        );
    }
    if size > MAX_SIZE {
        bail!(
            "size {} is larger than the largest namespace, {}: did you mean --size {}?",
            format_size(size),
            format_size(MAX_SIZE),
            format_size(MAX_SIZE)
        );
    }
    check_multiple(size, align)?;
    Namespace::new(size, align, mode.into(), map.into()).map_err(refusal)
}

/// Refuses a `--size` that is not a multiple of `--align`, naming the multiples around it.
/// A device-dax device's `--size` and `--align`: parsed, non-zero, the size a multiple of the
/// align (each refusal with a value that would work).
pub fn device_size_align(size: &str, align: &str) -> Result<(u64, u64)> {
    let size = parse_size(size)?;
    let align = parse_align(align, ModeArg::Devdax)?;
    if size == 0 {
        bail!(
            "size must be greater than zero: did you mean --size {}?",
            format_size(align)
        );
    }
    check_multiple(size, align)?;
    Ok((size, align))
}

pub fn check_multiple(size: u64, align: u64) -> Result<()> {
    if !size.is_multiple_of(align) {
        let down = size / align * align;
        let up = down + align;
        let hint = if down == 0 {
            format!("--size {}", format_size(up))
        } else {
            format!("--size {} or --size {}", format_size(down), format_size(up))
        };
        bail!(
            "size {} is not a multiple of align {}: did you mean {hint}?",
            format_size(size),
            format_size(align)
        );
    }
    Ok(())
}

/// A namespace the library would not lay out, told in terms of the flags.
pub fn refusal(e: NamespaceError) -> anyhow::Error {
    let NamespaceError::NoRoomForData {
        size,
        align,
        map,
        data_offset,
        data_align,
        end_trunc,
        smallest,
        ..
    } = e
    else {
        return e.into();
    };
    let bigger = match smallest {
        Some(s) => format!("--size {} or more", format_size(s)),
        None => "a larger --size".to_owned(),
    };
    let padded = if data_align == align {
        format!("the {} align", format_size(align))
    } else {
        format!(
            "{} (the kernel aligns data to at least memremap_compat_align())",
            format_size(data_align)
        )
    };
    let truncated = if end_trunc > 0 {
        format!(
            " (its last {} are truncated, past the last whole {})",
            format_size(end_trunc),
            format_size(data_align)
        )
    } else {
        String::new()
    };
    match map {
        MemmapLocation::Dev => anyhow!(
            "with --map dev the data starts after the info block and the room for the memmap, \
             padded to {padded}, at {}, leaving nothing for data in the {} namespace{truncated}: \
             use {bigger}, or --map mem",
            format_size(data_offset),
            format_size(size)
        ),
        MemmapLocation::Mem => anyhow!(
            "the data starts after the {} info block, padded to {padded}, at {}, leaving \
             nothing for data in the {} namespace{truncated}: use {bigger}",
            format_size(INFO_BLOCK_BYTES),
            format_size(data_offset),
            format_size(size)
        ),
    }
}

/// The largest power of two below `size`, and no smaller than `align`, for which `fits` holds:
/// a round size to suggest when `size` is too large.
pub fn smaller_fitting(size: u64, align: u64, fits: impl Fn(u64) -> bool) -> Option<u64> {
    let mut s = size.next_power_of_two() / 2;
    while s >= align {
        if fits(s) {
            return Some(s);
        }
        s /= 2;
    }
    None
}

/// Parses a count (`-r`, `-n`, `--threads`, `--touch`) with a message that says what a count
/// looks like: the standard library's is "invalid digit found in string", and without
/// `allow_negative_numbers` clap takes `-1` for an unknown flag.
pub fn count<T: FromStr<Err = ParseIntError>>(text: &str) -> Result<T, String> {
    text.parse().map_err(|e: ParseIntError| match e.kind() {
        IntErrorKind::PosOverflow => format!("{text} is too large"),
        IntErrorKind::NegOverflow => format!("{text} is too small"),
        _ if text
            .strip_prefix('-')
            .is_some_and(|t| t.parse::<T>().is_ok()) =>
        {
            "must not be negative".to_owned()
        }
        _ => "not a whole number: give digits only, without a suffix, sign or fraction".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use devmap::Order;

    use super::*;

    fn err(size: &str, align: &str) -> String {
        err_map(size, align, MapArg::Mem)
    }

    fn err_map(size: &str, align: &str, map: MapArg) -> String {
        match namespace(size, align, ModeArg::Devdax, map) {
            Ok(s) => panic!("{size}/{align} accepted: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn suggestions_are_valid_sizes() {
        assert_eq!(
            err("3000M", "1G"),
            "size 3000M is not a multiple of align 1G: did you mean --size 2G or --size 3G?"
        );
        assert_eq!(
            err("1M", "2M"),
            "size 1M is not a multiple of align 2M: did you mean --size 2M?"
        );
        assert!(err("0", "2M").contains("did you mean --size 2M?"));
        assert!(err("16G", "3M").contains("not a power of two"));
        assert!(err("16G", "64K").contains("use --align 4K, 2M or 1G"));
        assert!(err("2P", "2M").contains("did you mean --size 1P?"));
        assert!(err("99999999999T", "2M").contains("does not fit in 64 bits"));
        assert!(err("lots", "2M").contains("is malformed"));
    }

    #[test]
    fn a_namespace_without_room_for_data_gets_the_smallest_that_has_some() {
        assert_eq!(
            err("1G", "1G"),
            "the data starts after the 8K info block, padded to the 1G align, at 1G, leaving \
             nothing for data in the 1G namespace: use --size 2G or more"
        );
        assert_eq!(
            err_map("2M", "2M", MapArg::Dev),
            "with --map dev the data starts after the info block and the room for the memmap, \
             padded to the 2M align, at 2M, leaving nothing for data in the 2M namespace: use \
             --size 4M or more, or --map mem"
        );
        assert_eq!(
            err("3M", "4K"),
            "the data starts after the 8K info block, padded to 2M (the kernel aligns data to \
             at least memremap_compat_align()), at 2M, leaving nothing for data in the 3M \
             namespace (its last 1M are truncated, past the last whole 2M): use --size 4M or more"
        );
        for (size, align, map) in [
            ("2G", "1G", MapArg::Mem),
            ("4M", "2M", MapArg::Dev),
            ("4M", "4K", MapArg::Mem),
        ] {
            namespace(size, align, ModeArg::Fsdax, map).expect("the suggestion works");
        }
    }

    #[test]
    fn sizes_are_binary() {
        let n = namespace("1T", "2M", ModeArg::Devdax, MapArg::Mem).expect("namespace");
        assert_eq!(
            (n.size(), n.align(), n.vmemmap_shift()),
            (1 << 40, 2 << 20, Order::PMD)
        );
        let n = namespace("4100k", "4k", ModeArg::Fsdax, MapArg::Dev).expect("namespace");
        assert_eq!((n.size(), n.vmemmap_shift()), (4100 << 10, Order::BASE));
        assert_eq!((n.data_bytes(), n.end_trunc()), (2 << 20, 4 << 10));
        assert_eq!(n.altmap().map(|a| a.reserve), Some(2));
    }
}
