//! What the kernel says about this process and machine: resident set size and available memory,
//! read from `/proc`.

use anyhow::{Context, Result, anyhow};

/// Reads a `Name:   123 kB` field of a `/proc` file, in bytes.
fn kb_field(path: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .ok_or_else(|| anyhow!("{path} has no {field} line"))?;
    let kb: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("cannot parse {field} in {path}: {line:?}"))?;
    Ok(kb * 1024)
}

/// Resident bytes of this process (`Rss` of `/proc/self/smaps_rollup`, else `VmRSS`).
pub fn rss_bytes() -> Result<u64> {
    kb_field("/proc/self/smaps_rollup", "Rss").or_else(|_| kb_field("/proc/self/status", "VmRSS"))
}

/// Memory the kernel could give us without swapping (`MemAvailable`).
pub fn mem_available() -> Result<u64> {
    kb_field("/proc/meminfo", "MemAvailable")
}

/// Never let one run take more than this share of the memory the kernel says is available.
pub const MEMORY_BUDGET_PERCENT: u64 = 80;

/// The most one run may allocate, and `MemAvailable` it was computed from.
pub fn memory_budget() -> Result<(u64, u64)> {
    let available = mem_available()?;
    Ok((available / 100 * MEMORY_BUDGET_PERCENT, available))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_grows_when_memory_is_touched() {
        let before = rss_bytes().expect("rss");
        let v = vec![1u8; 64 << 20];
        let after = rss_bytes().expect("rss");
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(v);
        assert!(mem_available().expect("meminfo") > 0);
    }
}
