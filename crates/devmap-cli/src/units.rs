//! Sizes and durations as the command line spells them: sizes through the library's
//! `devmap::units` (parsed with binary suffixes, printed back the same way, `3G`, `3000M`, and
//! for reading, `4.03 GiB`), sizes as ndctl's `-u` prints them (`1006.00 MiB (1054.87 MB)`),
//! milliseconds, and latencies in the unit that suits them.

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

/// `bytes` as ndctl's `-u` prints a size (`display_size` in its `util/json.c`, after mdadm's
/// `human_size_brief`): binary then decimal, in hundredths rounded to nearest, MiB and MB below
/// 2 GiB, GiB and GB below 2 TiB, TiB and TB from there (`"1006.00 MiB (1054.87 MB)"`). ndctl
/// prints a count below 5000 KiB as the plain number, so that is `None`.
pub fn ndctl_size(bytes: u64) -> Option<String> {
    let b = u128::from(bytes);
    if b < 5000 << 10 {
        return None;
    }
    let (binary, binary_unit, decimal, decimal_unit) = if b < 2 << 30 {
        (1 << 20, "MiB", 1_000_000, "MB")
    } else if b < 2 << 40 {
        (1 << 30, "GiB", 1_000_000_000, "GB")
    } else {
        (1 << 40, "TiB", 1_000_000_000_000, "TB")
    };
    // ndctl's arithmetic (`(x + 1) / 2`: half-hundredths rounded up), in u128 where its 64
    // bits would overflow past 92 PB.
    let centi_binary = (b * 200 / binary).div_ceil(2);
    let centi_decimal = (b / (decimal / 200)).div_ceil(2);
    Some(format!(
        "{}.{:02} {binary_unit} ({}.{:02} {decimal_unit})",
        centi_binary / 100,
        centi_binary % 100,
        centi_decimal / 100,
        centi_decimal % 100
    ))
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
    fn sizes_as_ndctl_prints_them() {
        assert_eq!(
            ndctl_size(1006 << 20).as_deref(),
            Some("1006.00 MiB (1054.87 MB)")
        );
        // The usable bytes of a 1 TiB namespace at 2M with --map mem.
        assert_eq!(
            ndctl_size(1_099_509_530_624).as_deref(),
            Some("1024.00 GiB (1099.51 GB)")
        );
        assert_eq!(ndctl_size(4 << 40).as_deref(), Some("4.00 TiB (4.40 TB)"));
        assert_eq!(
            ndctl_size((2 << 30) - 1).as_deref(),
            Some("2048.00 MiB (2147.48 MB)")
        );
        assert_eq!(ndctl_size(2 << 30).as_deref(), Some("2.00 GiB (2.15 GB)"));
        assert_eq!(
            ndctl_size(5000 << 10).as_deref(),
            Some("4.88 MiB (5.12 MB)")
        );
        assert_eq!(
            ndctl_size((5000 << 10) - 1),
            None,
            "a plain number below 5000 KiB"
        );
        assert_eq!(ndctl_size(2 << 20), None);
        assert!(ndctl_size(u64::MAX).is_some(), "no overflow");
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
