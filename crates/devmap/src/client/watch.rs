//! The watcher of a client connection: a thread asleep in `poll` on the socket's hangup which,
//! when the service goes away, fences every mapping of the connection and closes its
//! userfaultfd, so that a touch gets SIGBUS instead of waiting for an answer that will not come.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::fast::FastPath;
use crate::backing::{Mmap, Userfaultfd};

/// What a mapping shares with its connection's watcher: the window, this process's copy of
/// the userfaultfd it is registered with, and its fast-pin files.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) bytes: Mmap,
    pub(super) uffd: Mutex<Option<Userfaultfd>>,
    pub(super) fast: Option<FastPath>,
}

impl Window {
    /// The service is gone: fence the window and close the userfaultfd (see the module doc).
    fn lose(&self) {
        // First, so that no fast pin succeeds in a window about to be fenced.
        if let Some(f) = &self.fast {
            f.revoke();
        }
        if let Err(e) = self.bytes.fence(0, self.bytes.len() as u64) {
            tracing::error!(error = %e, "client: cannot fence a mapping of a lost service");
        }
        drop(self.uffd.lock().take());
    }
}

/// The mappings a watcher fences.
pub(super) type Windows = Mutex<Vec<Weak<Window>>>;

/// A connection's watcher thread and the eventfd that stops it.
#[derive(Debug)]
pub(super) struct Watcher {
    pub(super) windows: Arc<Windows>,
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub(super) fn start(stream: &Arc<UnixStream>) -> std::io::Result<Watcher> {
        let stop = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let windows: Arc<Windows> = Arc::default();
        let thread = {
            let (stream, stop, windows) =
                (Arc::clone(stream), Arc::clone(&stop), Arc::clone(&windows));
            std::thread::Builder::new()
                .name("devmap-client-watch".into())
                .spawn(move || watch(&stream, &stop, &windows))?
        };
        Ok(Watcher {
            windows,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The eventfd stays readable, so the thread sees the stop wherever it is.
        if rustix::io::write(&*self.stop, &1u64.to_ne_bytes()).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

/// Sleeps until the service hangs up (or the stop): then fences every live window.
fn watch(stream: &UnixStream, stop: &OwnedFd, windows: &Windows) {
    use rustix::event::{PollFd, PollFlags, poll};
    loop {
        let mut fds = [
            PollFd::new(stream, PollFlags::RDHUP),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "client: cannot watch the service's socket");
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
        if fds[0].revents().intersects(gone) {
            tracing::warn!("client: the service hung up; fencing every mapping");
            for w in windows.lock().iter().filter_map(Weak::upgrade) {
                w.lose();
            }
            return;
        }
    }
}
