//! The transport under the devmap service and its clients (issue 19): versioned,
//! length-prefixed frames over a Unix stream socket, descriptors passed with them
//! (`SCM_RIGHTS`), and the peer's credentials (`SO_PEERCRED`). It owns the bytes and the
//! descriptors on the wire and nothing of what they mean: message types, requests and replies
//! are defined above it, as [`Encode`]/[`Decode`] implementations of a frame kind
//! ([`WireMessage`]). DESIGN §6.7 documents the frame byte by byte.
//!
//! A frame is a 16-byte [`Header`] (magic `DVMP`, [`VERSION`], kind, request id, payload
//! length, little-endian), then at most [`MAX_PAYLOAD`] payload bytes, with at most
//! [`MAX_FDS`] descriptors attached to its first byte. Payloads are written with a
//! [`Writer`] and read with a [`Reader`] that checks every bound and names the field that
//! was short or bad. Every failure is a [`WireError`], whose
//! [`errno`](WireError::errno) a reply carries; hostile input (random bytes, truncated
//! frames, huge lengths, too many or misplaced descriptors) ends in one, never in a panic, a
//! large allocation or a descriptor left open.
//!
//! ```
//! use std::os::fd::AsFd;
//! use std::os::unix::net::UnixStream;
//! use devmap::wire::{Reader, Receiver, Writer, send_frame};
//!
//! let (client, service) = UnixStream::pair()?;
//! let mut w = Writer::new();
//! w.u64(2 << 20).str("pin");
//! send_frame(&client, 7, 1, &w.finish()?, &[client.as_fd()])?;
//!
//! let frame = Receiver::new().recv(&service)?;
//! assert_eq!((frame.kind(), frame.request_id(), frame.fds.len()), (7, 1, 1));
//! let mut r = Reader::new(&frame.payload);
//! assert_eq!(r.u64("len")?, 2 << 20);
//! assert_eq!(r.str("verb", 16)?, "pin");
//! r.finish()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod error;
mod frame;
mod peer;
mod receiver;
mod socket;

pub use codec::{
    Decode, Encode, MAX_STR, Reader, WireMessage, Writer, decode_payload, encode_payload,
};
pub use error::WireError;
pub use frame::{HEADER_LEN, Header, MAGIC, MAX_FDS, MAX_PAYLOAD, VERSION};
pub use peer::{PeerCredentials, peer_credentials};
pub use receiver::{READ_AHEAD, Receiver, recv_frame};
pub use socket::{Frame, send_frame, send_frame_now, send_message};

#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod receiver_tests;
#[cfg(test)]
mod socket_tests;
