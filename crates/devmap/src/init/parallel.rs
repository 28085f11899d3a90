//! The parallel engine: compound-aligned chunks handed out from one atomic cursor to scoped
//! threads, the caller included (`padata_do_multithreaded` with a load-balance factor of 4).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::addr::PfnRange;
use crate::memmap::Memmap;

use super::{InitProgress, InitTarget, init_span};

/// Chunks per thread: a slow thread holds up the end by at most a quarter of its share.
const LOAD_BALANCE_FACTOR: u64 = 4;
/// Smallest chunk in pages (one 128 MiB section), so threads are not woken for crumbs.
const MIN_CHUNK_PAGES: u64 = 32_768;

/// The chunk size in pages for `pages` split over `threads`, a multiple of `compound` pages.
pub(crate) fn chunk_pages(pages: u64, threads: u64, compound: u64) -> u64 {
    let share = pages / threads.max(1).saturating_mul(LOAD_BALANCE_FACTOR);
    share
        .max(MIN_CHUNK_PAGES)
        .next_multiple_of(compound)
        .max(compound)
}

/// `init_span` over `range` on this thread, a [`MIN_CHUNK_PAGES`] chunk (rounded to whole
/// compounds) at a time, adding each chunk's descriptors to `progress`.
pub(crate) fn counted(
    memmap: &Memmap,
    range: PfnRange,
    t: InitTarget,
    progress: &InitProgress,
) -> u64 {
    let compound = memmap.geometry().shift().nr_pages();
    let chunk = MIN_CHUNK_PAGES.next_multiple_of(compound);
    let mut written = 0;
    let mut start = range.start();
    while start < range.end() {
        let end = start.add(chunk).min(range.end());
        let n = init_span(memmap, PfnRange::new_unchecked(start, end), t);
        progress.add(n);
        written += n;
        start = end;
    }
    written
}

/// Runs `init_span` over `range` on up to `threads` threads, adding each chunk's descriptors
/// to `progress` if given; returns (descriptors, threads used).
pub(crate) fn run(
    memmap: &Memmap,
    range: PfnRange,
    t: InitTarget,
    threads: usize,
    progress: Option<&InitProgress>,
) -> (u64, usize) {
    let compound = memmap.geometry().shift().nr_pages();
    let chunk = chunk_pages(range.len(), threads as u64, compound);
    let nr_chunks = range.len().div_ceil(chunk);
    let workers = (threads as u64).min(nr_chunks).max(1) as usize;
    if workers == 1 {
        let n = match progress {
            Some(p) => counted(memmap, range, t, p),
            None => init_span(memmap, range, t),
        };
        return (n, 1);
    }
    let cursor = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let work = || {
        let mut mine = 0;
        loop {
            // Relaxed: the cursor only partitions work; results are published by the scope join.
            let i = cursor.fetch_add(1, Ordering::Relaxed);
            if i >= nr_chunks {
                break;
            }
            let start = range.start().add(i * chunk);
            let end = start.add(chunk).min(range.end());
            let n = init_span(memmap, PfnRange::new_unchecked(start, end), t);
            if let Some(p) = progress {
                p.add(n);
            }
            mine += n;
        }
        written.fetch_add(mine, Ordering::Relaxed);
    };
    let started = std::thread::scope(|s| {
        // A thread the OS will not create is work the others take from the cursor.
        let helpers: Vec<_> = (1..workers)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        let started = 1 + helpers.len();
        work();
        // Joined one by one, not left to the scope, which waits only for the closures: a
        // thread still exiting after init returns would change the process's resident memory
        // under whoever measures it. A helper's panic is the scope's to propagate.
        for h in helpers {
            let _ = h.join();
        }
        started
    });
    (written.into_inner(), started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_compound_aligned_and_balanced() {
        // 16 GiB of 4 KiB pages over 2 threads: 8 chunks of 2^19 pages.
        assert_eq!(chunk_pages(1 << 22, 2, 512), 1 << 19);
        // 1 GiB compounds are never split.
        assert_eq!(chunk_pages(1 << 22, 2, 1 << 18), 1 << 19);
        assert_eq!(chunk_pages(1 << 20, 8, 1 << 18), 1 << 18);
        // Small ranges get the minimum chunk.
        assert_eq!(chunk_pages(1000, 2, 1), MIN_CHUNK_PAGES);
        // Any thread count is a valid request: no overflow (nor, wrapped, a division by zero).
        assert_eq!(chunk_pages(1 << 22, u64::MAX, 512), MIN_CHUNK_PAGES);
    }
}
