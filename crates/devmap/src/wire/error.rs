//! [`WireError`], every way a frame can fail to be built, sent, received or decoded, each
//! variant carrying what a log line or a reply needs: the field, the lengths, the versions,
//! the descriptor counts. Its kernel-style errno ([`WireError::errno`], what a reply to the
//! failed request carries) is chosen in the library's errno module with every other error's.
//!
//! Which errors leave the connection usable: [`WireError::WouldBlock`] of a receive (the
//! [`Receiver`](super::Receiver) keeps what it has and resumes), the payload errors a
//! [`Reader`](super::Reader) returns (the frame was read whole; only its content is bad) and
//! [`WireError::WrongKind`], [`WireError::UnknownKind`] and [`WireError::WrongFdCount`] (the
//! same). Every other error of a send or a receive leaves the byte stream at an unknown
//! point: close the connection.

use std::io;
use std::str::Utf8Error;

/// Why a frame could not be built, sent, received or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame header whose first four bytes are not the protocol's magic: not a devmap
    /// peer, or a stream that lost its frame boundaries.
    #[error("bad frame magic {found:02x?}: not a devmap frame (want \"DVMP\")")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A frame of another protocol version.
    #[error("protocol version {theirs} from the peer; this side speaks version {ours}")]
    VersionMismatch {
        /// The version this side speaks.
        ours: u16,
        /// The version the frame carried.
        theirs: u16,
    },
    /// A payload longer than a frame may carry: declared by a received header (refused before
    /// anything is allocated) or handed to a send.
    #[error("payload of {len} bytes is longer than a frame carries ({max} bytes at most)")]
    PayloadTooLarge {
        /// The length declared or given.
        len: u64,
        /// The most a frame carries, `MAX_PAYLOAD`.
        max: usize,
    },
    /// A payload that ended inside a field.
    #[error("payload ends inside field `{field}`: it needs {need} more bytes, {left} are left")]
    Short {
        /// The field being read.
        field: &'static str,
        /// The bytes the field needs.
        need: u64,
        /// The bytes left in the payload.
        left: usize,
    },
    /// A string or byte field declaring more bytes than the field may hold.
    #[error("field `{field}` is {len} bytes long, more than its {max} bytes at most")]
    TooLong {
        /// The field being read.
        field: &'static str,
        /// The length the field declared.
        len: u64,
        /// The most it may hold.
        max: usize,
    },
    /// A string field that is not UTF-8.
    #[error("field `{field}` is not UTF-8")]
    BadUtf8 {
        /// The field being read.
        field: &'static str,
        /// Where the bytes stop being UTF-8.
        #[source]
        source: Utf8Error,
    },
    /// A field whose value is not one of those it may take.
    #[error("field `{field}` is {value}: want {expected}")]
    BadValue {
        /// The field being read.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What the field may hold, for the message.
        expected: &'static str,
    },
    /// Bytes left after the last field of a message.
    #[error("{left} bytes follow the last field of the message")]
    TrailingBytes {
        /// How many.
        left: usize,
    },
    /// A frame of another kind than the one expected (a reply to another request, say).
    #[error("frame of kind {got} where kind {expected} was expected")]
    WrongKind {
        /// The kind expected.
        expected: u16,
        /// The kind the frame carried.
        got: u16,
    },
    /// A frame kind this side does not know.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind the frame carried.
        kind: u16,
    },
    /// A frame carrying another number of descriptors than its kind takes; those it carried
    /// are closed.
    #[error("frame of kind {kind} carries {got} descriptors; its kind takes {want}")]
    WrongFdCount {
        /// The frame's kind.
        kind: u16,
        /// How many its kind takes.
        want: usize,
        /// How many it carried.
        got: usize,
    },
    /// More descriptors than a frame may carry: offered to a send (nothing is sent), or
    /// received (every one is closed).
    #[error("{count} descriptors with one frame, more than the {max} a frame carries")]
    TooManyFds {
        /// How many were offered or received.
        count: usize,
        /// The most a frame carries, `MAX_FDS`.
        max: usize,
    },
    /// The kernel cut the ancillary data of a receive short (`MSG_CTRUNC`): the peer sent
    /// more descriptors than a frame carries. Those received are closed, the kernel closed
    /// the rest.
    #[error(
        "the peer attached more descriptors than a frame carries: ancillary data cut off \
         (MSG_CTRUNC) after {received}, all closed"
    )]
    FdsTruncated {
        /// How many arrived before the cut.
        received: usize,
    },
    /// Descriptors attached to a byte other than the first of a frame; they are closed.
    #[error("{count} descriptors arrived at byte {offset} of a frame; they go with its first")]
    FdsMidFrame {
        /// The frame offset of the read they came with.
        offset: usize,
        /// How many.
        count: usize,
    },
    /// The peer closed the connection between frames: the normal end of a connection.
    #[error("the peer closed the connection")]
    PeerClosed,
    /// The peer closed the connection inside a frame.
    #[error("the peer closed the connection {got} bytes into a frame of at least {want}")]
    Truncated {
        /// The frame's bytes received.
        got: usize,
        /// The frame's length, as far as it is known (the header's, until it is read).
        want: usize,
    },
    /// The socket would block (a non-blocking socket) or its timeout expired
    /// (`set_read_timeout`, `set_write_timeout`) after `done` bytes of the frame. A receive
    /// resumes where it stopped on the next call to the same `Receiver`; a send with
    /// `done > 0` left part of a frame on the stream, so the connection must be closed.
    #[error("{op} would block (or timed out) {done} bytes into a frame")]
    WouldBlock {
        /// "send" or "receive".
        op: &'static str,
        /// The frame's bytes moved before it stopped.
        done: usize,
    },
    /// The system refused a call.
    #[error("{op} failed")]
    Io {
        /// The call: `sendmsg`, `recvmsg`, `getsockopt(SO_PEERCRED)`.
        op: &'static str,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}
