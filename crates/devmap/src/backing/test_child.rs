//! Runs one `#[ignore]`d test of this test binary in a child process, for tests whose reader
//! must die of a signal (SIGBUS from poison or teardown) without taking the runner with it.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a child ended and what it printed.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "code and stderr are read through Debug, in failure messages"
)]
pub(crate) struct ChildEnd {
    /// The signal that killed it, if one did.
    pub(crate) signal: Option<i32>,
    /// Its exit code, if it exited.
    pub(crate) code: Option<i32>,
    /// Standard output and standard error.
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the ignored test `name` (its full path) with `env` set to "1", waiting at most
/// `wait`; kills it and panics if it runs longer.
pub(crate) fn run_ignored(name: &str, env: &str, wait: Duration) -> ChildEnd {
    run_ignored_with(name, env, "1", wait)
}

/// As [`run_ignored`], with `env` set to `value` in the child.
pub(crate) fn run_ignored_with(name: &str, env: &str, value: &str, wait: Duration) -> ChildEnd {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let deadline = Instant::now() + wait;
    loop {
        if child.try_wait().expect("wait for the child").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("child output");
            panic!(
                "{name} neither died nor exited within {wait:?}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("child output");
    ChildEnd {
        signal: out.status.signal(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// In a child process: makes the next SIGBUS print `SIGBUS at 0x<si_addr>` on standard output
/// and end the process with exit code 7, so the parent can check where the fault was.
pub(crate) fn report_sigbus_address() {
    extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // Async-signal-safe: formats into a stack buffer and calls write(2) and _exit(2) only.
        // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler of SIGBUS, whose
        // si_addr is the faulting address.
        let addr = unsafe { (*info).si_addr() } as usize;
        let mut buf = *b"SIGBUS at 0x0000000000000000\n";
        for i in 0..16 {
            let nibble = (addr >> ((15 - i) * 4)) & 0xf;
            buf[12 + i] = b"0123456789abcdef"[nibble];
        }
        // SAFETY: writes our stack buffer to standard output, then ends the process without
        // running anything else; both are async-signal-safe.
        unsafe {
            libc::write(1, buf.as_ptr().cast(), buf.len());
            libc::_exit(7);
        }
    }
    // SAFETY: a zeroed sigaction is a valid starting value; the handler above only calls
    // async-signal-safe functions, and this runs in a child test process that expects to die.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigbus;
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}
