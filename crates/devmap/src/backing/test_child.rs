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
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, "1")
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
