//! How the library's values are spelled for people: sizes with binary suffixes, parsed and
//! printed back the same way ([`parse_size()`], [`format_size`]), byte counts for reading
//! ([`Bytes`], [`human`]), the names of option values ([`UnknownName`], what every option
//! type's `FromStr` refuses with), and an error with its causes ([`describe`]). The command
//! line, the C ABI and the Python module all spell values through here, so that they accept,
//! refuse and print the same.

use std::error::Error as StdError;
use std::fmt;

/// How a size is written, for refusals: what [`parse_size()`] accepts.
pub const SIZE_FORM: &str = "a number with an optional K, M, G, T, P or E suffix (powers of \
                             1024), e.g. 64G, 1024M or 4K";

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// A minus sign: sizes count bytes.
    #[error("{text} is negative: sizes count bytes, e.g. 16G")]
    Negative {
        /// The text given.
        text: String,
    },
    /// Not a number and a unit (an exponent as in `1e30`, hex, `_` between digits, digits
    /// after the unit, a word).
    #[error("{text:?} is malformed: write {SIZE_FORM}")]
    Malformed {
        /// The text given.
        text: String,
    },
    /// A well-formed size past `u64::MAX` bytes.
    #[error("{text:?} does not fit in 64 bits")]
    TooLarge {
        /// The text given.
        text: String,
    },
}

/// Parses a size with an optional binary suffix (`K`, `M`, `G`, `T`, `P`, `E`, with or without
/// `iB`; powers of 1024, as ndctl reads them) and an optional fraction (`1.5G`): `"64M"` is
/// 67108864. Surrounding blanks are ignored.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    if text.trim_start().starts_with('-') {
        return Err(SizeError::Negative { text: text.into() });
    }
    if !size_shaped(text) {
        return Err(SizeError::Malformed { text: text.into() });
    }
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => SizeError::TooLarge { text: text.into() },
            _ => SizeError::Malformed { text: text.into() },
        })
}

/// Whether `text` has the shape of a size: digits, an optional fraction, and an optional unit
/// of letters after optional blanks (`16G`, `1.5 GiB`, `4096`). parse-size also takes
/// exponents (`1e30`, which it then calls too large) and `_` between digits; sizes here do not.
fn size_shaped(text: &str) -> bool {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(end);
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let whole_and_fraction = match number.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(number),
    };
    whole_and_fraction && unit.trim_start().bytes().all(|b| b.is_ascii_alphabetic())
}

/// `bytes` in the largest binary unit that divides it exactly (`3072M` is `3G`; `3000M`,
/// `512K`, `100`): the spelling [`parse_size()`] reads back, so suggestions can be pasted.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 6] = [
        (60, "E"),
        (50, "P"),
        (40, "T"),
        (30, "G"),
        (20, "M"),
        (10, "K"),
    ];
    if bytes == 0 {
        return "0".to_owned();
    }
    UNITS
        .iter()
        .find(|(shift, _)| bytes.trailing_zeros() >= *shift)
        .map(|(shift, unit)| format!("{}{unit}", bytes >> shift))
        .unwrap_or_else(|| bytes.to_string())
}

/// `bytes` in the largest binary unit it reaches, two decimals (`4.03 GiB`, `512 B`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A byte count shown in the largest binary unit that divides it exactly (`2 MiB`, `4097 B`,
/// `0`): how library messages name sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 == 0 {
            return write!(f, "0");
        }
        let mut v = self.0;
        let mut unit = 0;
        while v != 0 && v.is_multiple_of(1024) && unit + 1 < UNITS.len() {
            v /= 1024;
            unit += 1;
        }
        write!(f, "{v} {}", UNITS[unit])
    }
}

/// A name no value of an option type has: what each option type's `FromStr` refuses with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}: expected {}", one_of(expected))]
pub struct UnknownName {
    /// The option (`layout`, `init`, ...).
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// Every name the option has.
    pub expected: &'static [&'static str],
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The value of `names` (`(name, value)` pairs) called `given`, or [`UnknownName`].
pub(crate) fn by_name<T: Copy>(
    what: &'static str,
    given: &str,
    names: &'static [&'static str],
    values: &[T],
) -> Result<T, UnknownName> {
    names
        .iter()
        .position(|n| *n == given)
        .and_then(|i| values.get(i).copied())
        .ok_or_else(|| UnknownName {
            what,
            given: given.into(),
            expected: names,
        })
}

/// Gives an option type of unit variants its names: `NAMES` (in the order of `ALL`),
/// `FromStr` (refusing with [`UnknownName`]) and `Display` (the name). The type must have
/// `ALL` and a `name()` that agree with the names given here, which a test of each checks.
macro_rules! named_values {
    ($ty:ty, $what:literal, [$($name:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value's name, in the order of `ALL`.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::units::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::units::by_name($what, s, <$ty>::NAMES, &<$ty>::ALL)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use named_values;

/// An error's message followed by its causes (`a: b: c`), skipping a cause the message
/// already quotes: how every front end shows a library error.
pub fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        for (text, bytes) in [
            ("16G", 16u64 << 30),
            ("1.5 GiB", 3 << 29),
            (" 4096 ", 4096),
            ("2M", 2 << 20),
            ("1K", 1024),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bytes in [
            4096,
            3000 << 20,
            3 << 30,
            1 << 50,
            (1 << 40) + (2 << 20),
            100,
        ] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        assert_eq!(format_size(3072 << 20), "3G");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn malformed_negative_and_too_large_sizes_are_told_apart() {
        for text in ["1e30", "1e3", "0x10", "1_000", "sixteen", "", "16G4", "."] {
            assert!(
                matches!(parse_size(text), Err(SizeError::Malformed { .. })),
                "{text}"
            );
        }
        assert!(matches!(parse_size("-1G"), Err(SizeError::Negative { .. })));
        assert!(matches!(
            parse_size("99999999999999T"),
            Err(SizeError::TooLarge { .. })
        ));
        let e = parse_size("1e30").expect_err("malformed").to_string();
        assert!(e.ends_with("e.g. 64G, 1024M or 4K"), "{e}");
    }

    #[test]
    fn byte_counts_for_reading() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(4_328_521_728), "4.03 GiB");
        assert_eq!(Bytes(2 << 20).to_string(), "2 MiB");
        assert_eq!(Bytes(4097).to_string(), "4097 B");
        assert_eq!(Bytes(0).to_string(), "0");
    }

    #[test]
    fn unknown_names_list_every_name() {
        let e = by_name("layout", "dense", &["flat", "vmemmap", "heads"], &[1, 2, 3])
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown layout \"dense\": expected flat, vmemmap or heads"
        );
        assert_eq!(by_name("x", "b", &["a", "b"], &[1, 2]), Ok(2));
    }

    #[test]
    fn every_option_type_reads_back_its_own_names() {
        use crate::dax::{Faults, Granularity};
        use crate::init::InitMode;
        use crate::memmap::Layout;
        use crate::namespace::{MemmapLocation, NamespaceMode};
        fn check<T>(all: &[T], names: &[&str])
        where
            T: std::str::FromStr<Err = UnknownName> + fmt::Display + PartialEq + fmt::Debug + Copy,
        {
            assert_eq!(all.len(), names.len());
            for (v, name) in all.iter().zip(names) {
                assert_eq!(v.to_string(), *name);
                assert_eq!(name.parse::<T>(), Ok(*v));
            }
            assert!("nonsense".parse::<T>().is_err());
        }
        check(&Layout::ALL, Layout::NAMES);
        check(&Granularity::ALL, Granularity::NAMES);
        check(&Faults::ALL, Faults::NAMES);
        check(&NamespaceMode::ALL, NamespaceMode::NAMES);
        check(&MemmapLocation::ALL, MemmapLocation::NAMES);
        for name in InitMode::NAMES {
            assert_eq!(
                name.parse::<InitMode>().map(|m| m.to_string()),
                Ok(name.to_string())
            );
        }
    }

    #[test]
    fn describe_follows_sources_without_repeating_them() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Quoting(#[source] std::io::Error);
        let io = || std::io::Error::other("inner");
        assert_eq!(describe(&Outer(io())), "outer: inner");
        assert_eq!(describe(&Quoting(io())), "outer: inner");
    }
}
