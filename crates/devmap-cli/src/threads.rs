//! Work shared among named scoped threads, each given a contiguous share of a range of units,
//! with a panic or a failed spawn turned into an error rather than an abort: what the commands
//! that touch or read device memory from several threads have in common. Also work timed on a
//! thread of its own while this one draws its progress ([`while_drawing`]).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

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

/// Runs `work` on a thread of its own while this thread calls `draw` (at once, then every
/// `period` until the work ends), and returns what `work` returned with the instant it ended.
/// That instant is read on the work's thread as `work` returns, and the end wakes this thread
/// at once rather than at its next period, so neither the period nor a slow `draw` adds to a
/// time measured up to it (an enable that takes 0.3 ms is timed as 0.3 ms, not as one
/// period). A panic of `work` is an error.
pub fn while_drawing<T: Send>(
    what: &str,
    work: impl FnOnce() -> T + Send,
    period: Duration,
    draw: impl FnMut(),
) -> Result<(T, Instant)> {
    while_drawing_with(what, work, period, &Instant::now, draw)
}

/// [`while_drawing`] with the clock that stamps the end given (a test's, to see when it is read).
fn while_drawing_with<T: Send>(
    what: &str,
    work: impl FnOnce() -> T + Send,
    period: Duration,
    clock: &(dyn Fn() -> Instant + Sync),
    mut draw: impl FnMut(),
) -> Result<(T, Instant)> {
    // The work's thread drops the sender as it ends (or unwinds), which ends the wait below.
    let (ended_tx, ended_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let job = s.spawn(move || {
            let out = work();
            let ended = clock();
            drop(ended_tx);
            (out, ended)
        });
        draw();
        while let Err(RecvTimeoutError::Timeout) = ended_rx.recv_timeout(period) {
            draw();
        }
        job.join().map_err(|_| anyhow!("{what} panicked"))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use super::*;

    /// The end of the work is stamped before the drawing thread is woken, whatever that
    /// thread is doing: here its first `draw` does not return until the stamp has been taken
    /// (or 10 s have passed, the guard that turns a stamp taken after the drawing into a
    /// failure rather than a hang), and the period is an hour, so a helper that waited for its
    /// next period, or stamped the end once the drawing was done, fails or never returns.
    #[test]
    fn the_end_is_stamped_where_the_work_ends_not_when_the_drawing_wakes() {
        let stamped = (Mutex::new(false), Condvar::new());
        let clock = || {
            let now = Instant::now();
            *stamped.0.lock().expect("stamp lock") = true;
            stamped.1.notify_all();
            now
        };
        let mut draws = 0;
        let mut woke = None;
        let (out, ended) = while_drawing_with(
            "the test work",
            || 42,
            Duration::from_secs(3600),
            &clock,
            || {
                draws += 1;
                if woke.is_none() {
                    let guard = stamped.0.lock().expect("stamp lock");
                    let (guard, _) = stamped
                        .1
                        .wait_timeout_while(guard, Duration::from_secs(10), |s| !*s)
                        .expect("stamp lock");
                    drop(guard);
                    woke = Some(Instant::now());
                }
            },
        )
        .expect("the work ran");
        assert_eq!(out, 42);
        assert_eq!(
            draws, 1,
            "the end woke the drawing thread before its period"
        );
        let woke = woke.expect("drawn once");
        assert!(
            ended <= woke,
            "the end was stamped after the drawing thread woke: {:?} late",
            ended - woke
        );
    }

    #[test]
    fn a_panic_of_the_work_is_an_error() {
        let r: Result<((), Instant)> = while_drawing(
            "the test work",
            || panic!("on purpose"),
            Duration::from_secs(3600),
            || {},
        );
        let e = r.expect_err("a panic is an error");
        assert!(e.to_string().contains("the test work panicked"), "{e}");
    }
}
