//! Memory errors the kernel reports by signal: an opt-in SIGBUS handler for `BUS_MCEERR_AR`
//! (an access met poison) and `BUS_MCEERR_AO` (poison was found; no access yet) whose
//! `si_addr` lies in a device-dax mapping of this process. The kernel sends these when its own
//! memory failure handling hits a page mapped here; devmap then runs [`memory_failure_at`] for
//! the address, so its metadata, revocation and owners follow the hardware. An `AR` makes the
//! mapping holding `si_addr` the current one, whose owner is told with `BUS_MCEERR_AR`; an
//! `AO` reaches early-kill owners only.
//!
//! The handler is async-signal-safe by construction: it reads the signal's fields, asks the
//! lock-free address table ([`crate::dax::is_devmap_address`]) whether the address is devmap's,
//! stores the report in a fixed array of atomics, and writes 8 bytes to an eventfd to wake the
//! service thread. It takes no lock, allocates nothing and calls nothing but `write(2)`,
//! `sigaction(2)` and `raise(3)`, all on the async-signal-safe list. A test delivers the
//! signal to a thread that holds the device registry's lock (which the service thread takes),
//! so a handler that took it would deadlock there.
//!
//! What is not devmap's, and every `AR` (returning would re-run the access that met the poison),
//! goes on to the handler installed before this one, or to the default action (the process
//! dies of SIGBUS), after an `AR` of devmap's has been recorded for the service thread. Reports
//! that arrive faster than the service thread drains them, beyond [`SLOTS`], are dropped and
//! counted ([`SigbusStats::dropped`]).
//!
//! `si_addr_lsb` is read at its offset in the x86-64 and arm64 `siginfo_t` (24 bytes in); the
//! module is for Linux on 64-bit targets.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::{MfError, MfFlags, MfReport, memory_failure_at};
use crate::dax::is_devmap_address;

/// Reports the handler can hold before the service thread drains them.
pub const SLOTS: usize = 64;

/// What the service thread tells the installer, once per report it handled.
pub type SigbusReportFn = dyn Fn(usize, MfFlags, Result<MfReport, MfError>) + Send + Sync;

/// Why the handler could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigbusError {
    /// It is installed already (once per process).
    #[error("the memory-error SIGBUS handler is installed already")]
    AlreadyInstalled,
    /// The eventfd, the service thread or `sigaction` failed.
    #[error("cannot install the memory-error SIGBUS handler: {what}: {source}")]
    Setup {
        /// Which step.
        what: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// Counts kept by the handler and the service thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SigbusStats {
    /// Memory-error signals at devmap addresses, recorded for the service thread.
    pub recorded: u64,
    /// Signals passed on to the previous handler or the default action.
    pub chained: u64,
    /// Reports dropped because every slot was full.
    pub dropped: u64,
    /// Reports the service thread has handled.
    pub handled: u64,
}

/// Slot states.
const FREE: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

static STATE: [AtomicU8; SLOTS] = [const { AtomicU8::new(FREE) }; SLOTS];
static ADDR: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static CODE: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

static RECORDED: AtomicU64 = AtomicU64::new(0);
static CHAINED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);

/// The eventfd the handler writes to (-1 before installation).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The handler installed before ours: its `sa_sigaction` and `sa_flags`, read by the handler.
static PREV_ACTION: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREV_FLAGS: AtomicI32 = AtomicI32::new(0);

/// Installation happens once.
static INSTALLED: OnceLock<OwnedFd> = OnceLock::new();
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// The counts so far.
pub fn sigbus_stats() -> SigbusStats {
    SigbusStats {
        recorded: RECORDED.load(Ordering::Relaxed),
        chained: CHAINED.load(Ordering::Relaxed),
        dropped: DROPPED.load(Ordering::Relaxed),
        handled: HANDLED.load(Ordering::Relaxed),
    }
}

/// Installs the handler and starts its service thread, which calls `report` with the address,
/// the flags and the result of each `memory_failure_at` it runs. Once per process.
pub fn install_sigbus_handler(report: Box<SigbusReportFn>) -> Result<(), SigbusError> {
    let _once = INSTALL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if INSTALLED.get().is_some() {
        return Err(SigbusError::AlreadyInstalled);
    }
    let setup = |what| {
        move |e: rustix::io::Errno| SigbusError::Setup {
            what,
            source: e.into(),
        }
    };
    let fd = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::SEMAPHORE,
    )
    .map_err(setup("eventfd"))?;
    let thread_fd = fd.try_clone().map_err(|e| SigbusError::Setup {
        what: "dup",
        source: e,
    })?;
    std::thread::Builder::new()
        .name("devmap-mce".into())
        .spawn(move || serve(&thread_fd, &*report))
        .map_err(|e| SigbusError::Setup {
            what: "service thread",
            source: e,
        })?;
    WAKE_FD.store(fd.as_raw_fd(), Ordering::Release);

    // SAFETY: `sigaction` with a zeroed struct plus our handler and flags is well-formed; the
    // handler only does what the module documentation lists, all async-signal-safe. The old
    // action is read into `old`, owned here.
    let installed = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigbus;
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        let rc = libc::sigaction(libc::SIGBUS, &sa, &mut old);
        if rc == 0 {
            PREV_ACTION.store(old.sa_sigaction, Ordering::Release);
            PREV_FLAGS.store(old.sa_flags, Ordering::Release);
        }
        rc
    };
    if installed != 0 {
        return Err(SigbusError::Setup {
            what: "sigaction",
            source: std::io::Error::last_os_error(),
        });
    }
    let _ = INSTALLED.set(fd);
    Ok(())
}

/// The service thread: waits on the eventfd and runs memory failure for every ready report.
fn serve(fd: &OwnedFd, report: &SigbusReportFn) {
    let mut buf = [0u8; 8];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
        for slot in 0..SLOTS {
            // Acquire pairs with the Release that publishes a report in `record`.
            if STATE[slot].load(Ordering::Acquire) != READY {
                continue;
            }
            let addr = ADDR[slot].load(Ordering::Relaxed);
            let code = CODE[slot].load(Ordering::Relaxed);
            // Release: the slot's fields were read before it is handed back.
            STATE[slot].store(FREE, Ordering::Release);
            let flags = if code == libc::BUS_MCEERR_AR {
                MfFlags::ACTION_REQUIRED
            } else {
                MfFlags::NONE
            };
            let result = memory_failure_at(addr, flags);
            HANDLED.fetch_add(1, Ordering::Relaxed);
            report(addr, flags, result);
        }
    }
}

/// Records a report in a free slot and wakes the service thread. Async-signal-safe.
fn record(addr: usize, code: i32) {
    for slot in 0..SLOTS {
        // Acquire pairs with the service thread's Release when it frees the slot.
        if STATE[slot]
            .compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            ADDR[slot].store(addr, Ordering::Relaxed);
            CODE[slot].store(code, Ordering::Relaxed);
            // Release pairs with the service thread's Acquire: it sees the fields.
            STATE[slot].store(READY, Ordering::Release);
            RECORDED.fetch_add(1, Ordering::Relaxed);
            let one = 1u64.to_ne_bytes();
            let fd = WAKE_FD.load(Ordering::Acquire);
            // SAFETY: write(2) of 8 bytes from a stack array to our eventfd; async-signal-safe.
            unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
            return;
        }
    }
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// The handler.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel hands a SA_SIGINFO handler a valid siginfo for the signal.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let mce = code == libc::BUS_MCEERR_AR || code == libc::BUS_MCEERR_AO;
    let ours = mce && is_devmap_address(addr);
    if ours {
        record(addr, code);
        if code == libc::BUS_MCEERR_AO {
            return;
        }
    }
    CHAINED.fetch_add(1, Ordering::Relaxed);
    chain(sig, info, ctx);
}

/// Hands the signal to the previous handler, or to the default action.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREV_ACTION.load(Ordering::Acquire);
    let flags = PREV_FLAGS.load(Ordering::Acquire);
    if prev == libc::SIG_IGN {
        return;
    }
    if prev == libc::SIG_DFL {
        // SAFETY: resetting SIGBUS to its default action and raising it again, both
        // async-signal-safe: the signal is blocked while this handler runs, so it is
        // delivered, and kills the process, as the handler returns.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
            libc::raise(libc::SIGBUS);
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: `prev` was installed as a SA_SIGINFO handler of this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(prev) };
        f(sig, info, ctx);
    } else {
        // SAFETY: `prev` was installed as a plain handler of this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev) };
        f(sig);
    }
}

#[cfg(test)]
mod tests;
