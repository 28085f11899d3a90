//! Validating what a user asks for: sizes, alignments, layouts and maps, turned into a
//! [`Shape`] the library accepts. Every refusal says what was wrong and suggests a value that
//! would work.

use anyhow::{Result, anyhow, bail};
use clap::ValueEnum;
use devmap::addr::format_size;
use devmap::{Layout, MemoryType, Order, PAGE_SIZE};

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

impl MapArg {
    /// The name printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            MapArg::Mem => "mem",
            MapArg::Dev => "dev",
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

impl ModeArg {
    /// The name printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            ModeArg::Devdax => "devdax",
            ModeArg::Fsdax => "fsdax",
        }
    }

    /// The pgmap memory type.
    pub fn memory_type(self) -> MemoryType {
        match self {
            ModeArg::Devdax => MemoryType::Generic,
            ModeArg::Fsdax => MemoryType::FsDax,
        }
    }
}

/// A validated namespace shape.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Bytes.
    pub size: u64,
    /// Alignment in bytes.
    pub align: u64,
    /// Compound order of the memmap (`vmemmap_shift`).
    pub shift: Order,
    /// Mode.
    pub mode: ModeArg,
    /// Memmap placement.
    pub map: MapArg,
}

/// Info-block pfns reserved before an on-device memmap, like ndctl's 8 KiB `SZ_8K` info space.
pub const ALTMAP_RESERVE_PFNS: u64 = 2;

/// The aligns `devmap` supports.
const SUPPORTED_ALIGNS: [u64; 3] = [PAGE_SIZE, 2 << 20, 1 << 30];
/// The hint that names them.
const USE_SUPPORTED: &str = "use --align 4K, 2M or 1G";

/// Parses a size with an optional binary suffix (`K`, `M`, `G`, `T`, `P`; powers of 1024);
/// `overflow_hint` ends the message when the number does not fit in 64 bits.
fn parse_bytes(what: &str, text: &str, overflow_hint: &str) -> Result<u64> {
    if text.trim_start().starts_with('-') {
        bail!("{what} {text} is negative: sizes count bytes, e.g. 16G");
    }
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => {
                anyhow!("{what} {text:?} does not fit in 64 bits: {overflow_hint}")
            }
            _ => anyhow!(
                "{what} {text:?} is not a size: use a number with an optional K, M, G or T \
                 suffix (powers of 1024), e.g. 16G"
            ),
        })
}

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
            mode.name()
        );
    }
    Ok(align)
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

impl Shape {
    /// Validates `--size`, `--align`, `--mode` and `--map` together.
    pub fn new(size_text: &str, align_text: &str, mode: ModeArg, map: MapArg) -> Result<Self> {
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
        if size % align != 0 {
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
        let shift = match mode {
            ModeArg::Devdax => Order::from_bytes(align)?,
            // fsdax pgmaps have no vmemmap_shift: folios are formed at fault time.
            ModeArg::Fsdax => Order::BASE,
        };
        Ok(Self {
            size,
            align,
            shift,
            mode,
            map,
        })
    }

    /// Pages in the namespace.
    pub fn pages(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    /// The altmap reserve to pass to the library, if `--map dev`.
    pub fn altmap_reserve(&self) -> Option<u64> {
        (self.map == MapArg::Dev).then_some(ALTMAP_RESERVE_PFNS)
    }

    /// The error to show when an on-device memmap leaves no room for data.
    pub fn altmap_too_large(&self, layout: Layout, need: u64) -> anyhow::Error {
        let smallest = (need + 1)
            .next_multiple_of(self.align / PAGE_SIZE)
            .saturating_mul(PAGE_SIZE);
        anyhow!(
            "with --map dev the {} memmap takes {} of the {} namespace, leaving nothing for \
             data: use --size {} or more, or --map mem",
            layout.name(),
            format_size(need * PAGE_SIZE),
            format_size(self.size),
            format_size(smallest)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(size: &str, align: &str) -> String {
        match Shape::new(size, align, ModeArg::Devdax, MapArg::Mem) {
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
        assert!(err("lots", "2M").contains("is not a size"));
    }

    #[test]
    fn sizes_are_binary() {
        let s = Shape::new("1T", "2M", ModeArg::Devdax, MapArg::Mem).expect("shape");
        assert_eq!((s.size, s.align, s.shift), (1 << 40, 2 << 20, Order::PMD));
        let s = Shape::new("4k", "4k", ModeArg::Fsdax, MapArg::Dev).expect("shape");
        assert_eq!(
            (s.size, s.shift, s.altmap_reserve()),
            (4096, Order::BASE, Some(2))
        );
    }
}
