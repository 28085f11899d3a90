//! Who is at the other end of a Unix socket: [`peer_credentials`], the kernel's record of the
//! process that connected (or created the socket pair), `SO_PEERCRED`. The service checks it
//! before it serves a client.
//!
//! `unsafe` here: the one `getsockopt` call (DESIGN §2). rustix's safe
//! `sockopt::socket_peercred` reads the answer into a `UCred` whose pid cannot be 0, but the
//! kernel answers pid 0 for a peer whose process is not visible in the caller's pid
//! namespace (a client in another container, say), so that call would produce an invalid
//! value from a valid answer. Here the answer is read into `libc::ucred`, plain integers.

use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::error::WireError;

/// The credentials of a socket's peer, as the kernel recorded them when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// The peer's process id in our pid namespace; `None` when its process is not visible
    /// there (the kernel reports 0).
    pub pid: Option<u32>,
    /// The peer's effective user id when it connected.
    pub uid: u32,
    /// The peer's effective group id when it connected.
    pub gid: u32,
}

/// The credentials of `stream`'s peer (`getsockopt(SO_PEERCRED)`).
pub fn peer_credentials(stream: &UnixStream) -> Result<PeerCredentials, WireError> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let expected = size_of::<libc::ucred>() as libc::socklen_t;
    let mut len = expected;
    // SAFETY: `cred` is a live, writable `ucred` of `len` bytes, the size SO_PEERCRED writes;
    // the kernel writes at most `len` bytes and stores the length written in `len`, a live
    // `socklen_t`. The descriptor is borrowed from `stream` for the call (a closed or wrong
    // descriptor is an error return, not undefined behaviour).
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    let op = "getsockopt(SO_PEERCRED)";
    if rc != 0 {
        return Err(WireError::Io {
            op,
            source: io::Error::last_os_error(),
        });
    }
    if len != expected {
        return Err(WireError::Io {
            op,
            source: io::Error::other(format!(
                "the kernel answered {len} bytes, not a {expected}-byte ucred"
            )),
        });
    }
    Ok(PeerCredentials {
        pid: u32::try_from(cred.pid).ok().filter(|&pid| pid != 0),
        uid: cred.uid,
        gid: cred.gid,
    })
}
