//! Sending frames over a Unix stream socket ([`send_frame`], [`send_message`]), and the
//! [`Frame`] a receive hands out. A frame goes out in one `sendmsg` when the socket buffer has
//! room (partial writes are continued), with up to [`MAX_FDS`] descriptors attached
//! (`SCM_RIGHTS`) to that first send, so each frame starts a send of its own and its
//! descriptors travel with its first byte: what the [`Receiver`](super::Receiver) relies on
//! to tell which frame descriptors belong to.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

use super::codec::{WireMessage, decode_payload, encode_payload};
use super::error::WireError;
use super::frame::{HEADER_LEN, Header, MAX_FDS};

/// Room for at least one more descriptor than a frame carries (rustix's alignment slack
/// makes room for a few more), so that a few too many are counted
/// ([`WireError::TooManyFds`]) and more than fit are cut by the kernel (`MSG_CTRUNC`,
/// [`WireError::FdsTruncated`]), which closes those it cut.
pub(super) const CMSG_ROOM: usize = rustix::cmsg_space!(ScmRights(MAX_FDS + 1));

/// A frame received: its header, its payload and the descriptors that came with it.
#[derive(Debug)]
pub struct Frame {
    /// The header (kind, request id, payload length).
    pub header: Header,
    /// The payload, `header.len` bytes.
    pub payload: Vec<u8>,
    /// The descriptors attached to the frame's first byte, at most [`MAX_FDS`], close-on-exec.
    pub fds: Vec<OwnedFd>,
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> u16 {
        self.header.kind
    }

    /// The frame's request id.
    pub fn request_id(&self) -> u32 {
        self.header.request_id
    }

    /// The message of kind `M::KIND` the payload holds, every byte of it
    /// ([`WireError::WrongKind`] for a frame of another kind).
    pub fn message<M: WireMessage>(&self) -> Result<M, WireError> {
        if self.header.kind != M::KIND {
            return Err(WireError::WrongKind {
                expected: M::KIND,
                got: self.header.kind,
            });
        }
        decode_payload(&self.payload)
    }

    /// Takes the frame's descriptors when there are exactly `N` of them
    /// ([`WireError::WrongFdCount`] otherwise, and they are closed).
    pub fn take_fds<const N: usize>(&mut self) -> Result<[OwnedFd; N], WireError> {
        let fds = std::mem::take(&mut self.fds);
        let got = fds.len();
        fds.try_into().map_err(|_| WireError::WrongFdCount {
            kind: self.header.kind,
            want: N,
            got,
        })
    }
}

/// Sends one frame: the header of `kind` and `request_id`, then `payload`, with `fds`
/// attached to its first byte. Partial writes are continued and `EINTR` retried; `SIGPIPE`
/// is never raised (`MSG_NOSIGNAL`: a closed peer is an `EPIPE` [`WireError::Io`]).
///
/// Nothing is sent when the payload is longer than a frame carries
/// ([`WireError::PayloadTooLarge`]) or there are more than [`MAX_FDS`] descriptors
/// ([`WireError::TooManyFds`]). A write timeout (`set_write_timeout`) or a non-blocking
/// socket that fills up ends in [`WireError::WouldBlock`] with the bytes written: with none
/// (descriptors not sent either), the call may be repeated; with some, the peer has part of
/// a frame and the connection must be closed.
pub fn send_frame(
    stream: &UnixStream,
    kind: u16,
    request_id: u32,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), WireError> {
    send_frame_flags(stream, kind, request_id, payload, fds, SendFlags::empty())
}

/// As [`send_frame`], without ever waiting: a socket whose buffer is full ends it at once in
/// [`WireError::WouldBlock`] (with `done` 0, nothing was sent and the frame may be dropped or
/// sent later; with more, part of it was and the connection must be closed). What a sender
/// that must not stall behind a peer that stopped reading uses: the service's notices.
pub fn send_frame_now(
    stream: &UnixStream,
    kind: u16,
    request_id: u32,
    payload: &[u8],
) -> Result<(), WireError> {
    send_frame_flags(stream, kind, request_id, payload, &[], SendFlags::DONTWAIT)
}

fn send_frame_flags(
    stream: &UnixStream,
    kind: u16,
    request_id: u32,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
    extra: SendFlags,
) -> Result<(), WireError> {
    let header = Header::new(kind, request_id, payload.len())?.encode();
    if fds.len() > MAX_FDS {
        return Err(WireError::TooManyFds {
            count: fds.len(),
            max: MAX_FDS,
        });
    }
    let mut room = [MaybeUninit::<u8>::uninit(); CMSG_ROOM];
    let mut control = SendAncillaryBuffer::new(&mut room);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        // Unreachable: the room holds MAX_FDS + 1 descriptors.
        return Err(WireError::TooManyFds {
            count: fds.len(),
            max: MAX_FDS,
        });
    }
    let total = HEADER_LEN + payload.len();
    let mut sent = 0;
    while sent < total {
        let (head, body) = if sent < HEADER_LEN {
            (&header[sent..], payload)
        } else {
            (&header[HEADER_LEN..], &payload[sent - HEADER_LEN..])
        };
        let iov = [IoSlice::new(head), IoSlice::new(body)];
        let result = if sent == 0 {
            sendmsg(stream, &iov, &mut control, SendFlags::NOSIGNAL | extra)
        } else {
            sendmsg(
                stream,
                &iov,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL | extra,
            )
        };
        match result {
            Ok(0) => {
                return Err(WireError::Io {
                    op: "sendmsg",
                    source: std::io::ErrorKind::WriteZero.into(),
                });
            }
            Ok(n) => sent += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                return Err(WireError::WouldBlock {
                    op: "send",
                    done: sent,
                });
            }
            Err(e) => {
                return Err(WireError::Io {
                    op: "sendmsg",
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

/// Sends `message` as a frame of its kind for `request_id`, with `fds`, as [`send_frame`].
pub fn send_message<M: WireMessage>(
    stream: &UnixStream,
    request_id: u32,
    message: &M,
    fds: &[BorrowedFd<'_>],
) -> Result<(), WireError> {
    send_frame(stream, M::KIND, request_id, &encode_payload(message)?, fds)
}
