//! The signals that ask a process to end (SIGINT from Ctrl-C, SIGTERM, SIGHUP), turned from a
//! death into an event, so that a process holding a namespace enabled can disable it cleanly
//! and say so instead of dying with the namespace left in use (the next enable would then
//! rebuild its memmap). [`StopSignals::block`] blocks them in the calling thread, and every
//! thread started from it afterwards inherits the mask; [`StopSignals::wait`] takes one with
//! `sigtimedwait(2)` when it comes, or returns at a deadline. Dropping the guard restores the
//! thread's mask.
//!
//! Signal masks are per thread: a thread started before `block` keeps these signals unblocked,
//! and the kernel may deliver a signal sent to the process to that thread, whose default
//! action ends the process. Call `block` before any thread is started (a command-line tool: as
//! the command begins, before it opens a device, whose handler and init threads then inherit
//! the mask).

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// A signal that asks the process to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT: Ctrl-C on the terminal.
    Interrupt,
    /// SIGTERM: `kill PID`, a service manager stopping the process.
    Terminate,
    /// SIGHUP: the terminal went away.
    Hangup,
}

impl StopSignal {
    /// Every stop signal.
    pub const ALL: [StopSignal; 3] = [
        StopSignal::Interrupt,
        StopSignal::Terminate,
        StopSignal::Hangup,
    ];

    /// The signal's name: `SIGINT`, `SIGTERM`, `SIGHUP`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Hangup => "SIGHUP",
        }
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Interrupt => libc::SIGINT,
            StopSignal::Terminate => libc::SIGTERM,
            StopSignal::Hangup => libc::SIGHUP,
        }
    }

    fn from_number(n: i32) -> Option<StopSignal> {
        StopSignal::ALL.into_iter().find(|s| s.number() == n)
    }
}

/// The stop signals blocked in this thread (and the threads it starts from now on) until
/// dropped, to be taken with [`StopSignals::wait`]. Not `Send`: the mask it restores is its
/// thread's.
pub struct StopSignals {
    set: libc::sigset_t,
    old: libc::sigset_t,
    _this_thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for StopSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignals")
            .field("signals", &StopSignal::ALL.map(StopSignal::name))
            .finish()
    }
}

/// The longest single `sigtimedwait` (a longer wait is several).
const LONGEST_WAIT: Duration = Duration::from_secs(24 * 3600);

impl StopSignals {
    /// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread, so that they stay pending for
    /// [`wait`](Self::wait) instead of ending the process. Fails only if `pthread_sigmask`
    /// does, which it does not for the arguments given here.
    pub fn block() -> std::io::Result<StopSignals> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given, a local here; sigaddset adds a
        // valid signal number to that initialised set. Neither can fail for these arguments.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for s in StopSignal::ALL {
                libc::sigaddset(set.as_mut_ptr(), s.number());
            }
            set.assume_init()
        };
        // SAFETY: as above: `old` is initialised empty, so it is valid even if the call below
        // failed before writing it.
        unsafe { libc::sigemptyset(old.as_mut_ptr()) };
        // SAFETY: pthread_sigmask reads `set` and writes the previous mask into `old`, both
        // valid for the call; it changes only this thread's mask.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(StopSignals {
            set,
            // SAFETY: initialised by sigemptyset above, then by pthread_sigmask.
            old: unsafe { old.assume_init() },
            _this_thread: PhantomData,
        })
    }

    /// Waits up to `timeout` for a stop signal and takes it (it no longer pends), or returns
    /// `None` at the deadline. A signal that came before the call is taken at once, so a
    /// zero `timeout` asks whether one came.
    pub fn wait(&self, timeout: Duration) -> Option<StopSignal> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline
                .map_or(LONGEST_WAIT, |d| {
                    d.saturating_duration_since(Instant::now())
                })
                .min(LONGEST_WAIT);
            let ts = libc::timespec {
                // At most a day: fits every time_t.
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
            };
            // SAFETY: sigtimedwait reads the set and the timeout, both valid for the call, and
            // writes no siginfo when given a null pointer for it.
            let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
            if sig > 0 {
                // Only the signals of the set are taken.
                return StopSignal::from_number(sig);
            }
            let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
            match std::io::Error::last_os_error().raw_os_error() {
                // Another signal's handler ran (EINTR), or a day-long piece ended (EAGAIN).
                Some(libc::EINTR | libc::EAGAIN) if !timed_out => {}
                _ => return None,
            }
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask `block` found, in the thread that blocked it (the guard is
        // not Send); reads `old` only.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
#[path = "signals_tests.rs"]
mod tests;
