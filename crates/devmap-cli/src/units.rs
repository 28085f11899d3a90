//! Sizes and durations as the command line spells them: sizes through the library's
//! `devmap::units` (parsed with binary suffixes, printed back the same way, `3G`, `3000M`, and
//! for reading, `4.03 GiB`), milliseconds, and latencies in the unit that suits them.

use anyhow::{Result, anyhow};
use devmap::units::{SizeError, parse_size};

pub use devmap::units::{format_size, human};

/// Parses a size as every front end does ([`devmap::units::parse_size`]); `what` names it in
/// refusals (`size`, `align`), and `overflow_hint` ends the message when the number does not
/// fit in 64 bits.
pub fn parse_bytes(what: &str, text: &str, overflow_hint: &str) -> Result<u64> {
    parse_size(text).map_err(|e| match e {
        SizeError::TooLarge { .. } => anyhow!("{what} {e}: {overflow_hint}"),
        _ => anyhow!("{what} {e}"),
    })
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
    fn durations() {
        assert_eq!(ms(1_500_000), "1.500 ms");
        assert_eq!(nanos(850), "850 ns");
        assert_eq!(nanos(12_400), "12.40 us");
        assert_eq!(nanos(3_020_000), "3.02 ms");
        assert_eq!(nanos(1_500_000_000), "1.50 s");
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
}
