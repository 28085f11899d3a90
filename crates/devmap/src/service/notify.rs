//! Writing to one client: its replies, and the notices it did not ask for (a mapping taken by a
//! forced disable, pins dropped with it, memory lost under a mapping). Every frame to a client
//! goes through its [`Notifier`], whose lock keeps two writers (the session answering, another
//! thread telling) from interleaving frames. A notice never waits: with the client's socket
//! full (it stopped reading, or is stopped), the notice is counted as lost rather than stall
//! the disable or the memory failure that sends it.

use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::proto::Notice;
use crate::wire::{WireError, WireMessage, encode_payload, send_frame, send_frame_now};

/// The writing end of one client's connection.
#[derive(Debug)]
pub(super) struct Notifier {
    stream: Arc<UnixStream>,
    lock: Mutex<()>,
    /// Notices dropped because the client's socket was full.
    lost: AtomicU64,
}

impl Notifier {
    pub(super) fn new(stream: Arc<UnixStream>) -> Notifier {
        Notifier {
            stream,
            lock: Mutex::new(()),
            lost: AtomicU64::new(0),
        }
    }

    /// Sends one frame (a reply), waiting up to the socket's write timeout.
    pub(super) fn send(
        &self,
        kind: u16,
        id: u32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), WireError> {
        let _g = self.lock.lock();
        send_frame(&self.stream, kind, id, payload, fds)
    }

    /// Tells the client `notice` (request id 0) without waiting; a notice that finds the socket
    /// full is counted lost, and one cut short ends the connection (its frames are lost).
    pub(super) fn notice(&self, notice: &Notice) {
        let Ok(payload) = encode_payload(notice) else {
            return;
        };
        let _g = self.lock.lock();
        match send_frame_now(&self.stream, Notice::KIND, 0, &payload) {
            Ok(()) => {}
            Err(WireError::WouldBlock { done: 0, .. }) => {
                // Relaxed: a statistic, read by status only.
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "serve: a notice cut the connection short");
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Notices dropped so far.
    pub(super) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}
