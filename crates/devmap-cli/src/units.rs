//! Sizes and durations as the command line spells them: parsing sizes with binary suffixes,
//! printing them back the same way (`3G`, `3000M`), byte counts for reading (`4.03 GiB`),
//! milliseconds, and latencies in the unit that suits them.

use anyhow::{Result, anyhow, bail};

/// Parses a size with an optional binary suffix (`K`, `M`, `G`, `T`, `P`, `E`; powers of
/// 1024); `what` names it in refusals (`size`, `align`), and `overflow_hint` ends the message
/// when the number does not fit in 64 bits. A text that is not a number and a unit (an
/// exponent as in `1e30`, a sign, hex, digits after the unit) is malformed, never too large.
pub fn parse_bytes(what: &str, text: &str, overflow_hint: &str) -> Result<u64> {
    if text.trim_start().starts_with('-') {
        bail!("{what} {text} is negative: sizes count bytes, e.g. 16G");
    }
    let malformed = || {
        anyhow!(
            "{what} {text:?} is malformed: write a number with an optional K, M, G, T, P or E \
             suffix (powers of 1024), e.g. 64G, 1024M or 4K"
        )
    };
    if !size_shaped(text) {
        return Err(malformed());
    }
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => {
                anyhow!("{what} {text:?} does not fit in 64 bits: {overflow_hint}")
            }
            _ => malformed(),
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
/// `512K`, `100`): the spelling `--size` accepts back, so suggestions can be pasted.
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
    for (shift, unit) in UNITS {
        if bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// `bytes` in the largest binary unit it reaches, two decimals (`4.03 GiB`).
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

/// Nanoseconds as milliseconds with three decimals.
pub fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// Nanoseconds in the largest unit that keeps them above 1, two decimals (`850 ns`,
/// `12.40 us`, `3.02 ms`, `1.50 s`).
pub fn nanos(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.2} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(4 << 30), "4.00 GiB");
        assert_eq!(human(4_328_521_728), "4.03 GiB");
        assert_eq!(ms(1_500_000), "1.500 ms");
        assert_eq!(nanos(850), "850 ns");
        assert_eq!(nanos(12_400), "12.40 us");
        assert_eq!(nanos(3_020_000), "3.02 ms");
        assert_eq!(nanos(1_500_000_000), "1.50 s");
    }

    #[test]
    fn format_size_picks_exact_unit() {
        assert_eq!(format_size(3 << 30), "3G");
        assert_eq!(format_size(3072 << 20), "3G");
        assert_eq!(format_size(3000 << 20), "3000M");
        assert_eq!(format_size(1 << 40), "1T");
        assert_eq!(format_size(4096), "4K");
        assert_eq!(format_size(100), "100");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn malformed_sizes_are_called_malformed_not_too_large() {
        for text in [
            "1e30", "1e3", "1.5e1", "1e3K", "0x10", "1_000", "sixteen", "", "16G4", ".",
        ] {
            let e = parse_bytes("size", text, "hint")
                .expect_err(text)
                .to_string();
            assert!(e.contains("is malformed"), "{text}: {e}");
            assert!(e.contains("e.g. 64G, 1024M or 4K"), "{text}: {e}");
        }
        for (text, bytes) in [("16G", 16 << 30), ("1.5 GiB", 3 << 29), (" 4096 ", 4096)] {
            assert_eq!(parse_bytes("size", text, "").expect(text), bytes);
        }
        let e = parse_bytes("size", "99999999999999T", "hint").expect_err("overflow");
        assert!(
            e.to_string().contains("does not fit in 64 bits: hint"),
            "{e}"
        );
    }

    #[test]
    fn formatted_sizes_parse_back() {
        for bytes in [
            4096,
            3000 << 20,
            3 << 30,
            1 << 50,
            (1 << 40) + (2 << 20),
            100,
        ] {
            let text = format_size(bytes);
            assert_eq!(parse_bytes("size", &text, "").expect(&text), bytes);
        }
    }
}
