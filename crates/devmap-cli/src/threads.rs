//! Work shared among named scoped threads, each given a contiguous share of a range of units,
//! with a panic or a failed spawn turned into an error rather than an abort: what the commands
//! that touch or read device memory from several threads have in common.

use anyhow::{Result, anyhow};

/// Runs `work` on `threads` threads named `devmap-<name>-<i>`, thread `i` given the `i`-th
/// contiguous share of `0..units`, and returns their results in thread order; the first error
/// (or panic, or failed spawn) is the result.
pub fn share<T: Send>(
    name: &str,
    threads: u64,
    units: u64,
    work: impl Fn(std::ops::Range<u64>) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let work = &work;
    let results: Vec<Result<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = units * t / threads..units * (t + 1) / threads;
                std::thread::Builder::new()
                    .name(format!("devmap-{name}-{t}"))
                    .spawn_scoped(s, move || work(range))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a {name} thread panicked"))),
                Err(e) => Err(anyhow!(e).context(format!("cannot start a {name} thread"))),
            })
            .collect()
    });
    results.into_iter().collect()
}
