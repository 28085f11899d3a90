//! Receiving frames from a Unix stream socket with their descriptors: the [`Receiver`], its
//! read-ahead buffer, and the rule that gives each batch of descriptors to a frame.
//!
//! A frame costs one `recvmsg` (header and payload together) because the receiver reads as
//! much as its buffer holds, [`READ_AHEAD`] bytes or a whole frame, and keeps what follows
//! the frame for the next call. Reading ahead means a read can hold the end of one frame and
//! the start of the next, so which frame its descriptors belong to comes from how the kernel
//! delivers them on a stream socket: they are attached to the bytes of the `sendmsg` that
//! carried them, handed over with the first read that touches those bytes, and that read
//! stops at the end of that send's bytes (it never continues into later sends). So the
//! descriptors of a read belong to a send that ends the read, and as [`send_frame`]
//! starts each frame with a send of its own, to the last frame that *starts* within the
//! read's bytes. A read with descriptors in which no frame starts is refused
//! ([`WireError::FdsMidFrame`]); a hostile peer that attaches descriptors to a later send of
//! a frame whose start the same read holds cannot be told apart, and its descriptors count
//! as that frame's (still at most [`MAX_FDS`]).
//!
//! Descriptors are received with `MSG_CMSG_CLOEXEC` into `OwnedFd`s, so each is closed on
//! every path that does not hand it to the caller: more than [`MAX_FDS`], ancillary data cut
//! short (`MSG_CTRUNC`), a bad header, an error later in the stream.
//!
//! [`send_frame`]: super::send_frame

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

use super::error::WireError;
use super::frame::{HEADER_LEN, Header, MAX_FDS};
use super::socket::{CMSG_ROOM, Frame};

/// The receive buffer's size until a frame needs more (then `HEADER_LEN + len`, at most
/// `HEADER_LEN + MAX_PAYLOAD`, once its header has passed its checks).
pub const READ_AHEAD: usize = 4096;

/// What one read returned: its bytes, and whether the kernel cut its ancillary data short.
/// Descriptors it brought were pushed to the caller's vector.
pub(super) struct Chunk {
    pub(super) len: usize,
    pub(super) ctrunc: bool,
}

/// Where a [`Receiver`] reads from: a socket, or in tests a scripted peer.
pub(super) trait Source {
    /// One read of at most `buf.len()` bytes; descriptors that come with it go to `fds`.
    fn read(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<Chunk, Errno>;
}

impl Source for &UnixStream {
    fn read(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<Chunk, Errno> {
        let mut room = [MaybeUninit::<u8>::uninit(); CMSG_ROOM];
        let mut control = RecvAncillaryBuffer::new(&mut room);
        let msg = recvmsg(
            *self,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        Ok(Chunk {
            len: msg.bytes,
            ctrunc: msg.flags.contains(ReturnFlags::CTRUNC),
        })
    }
}

/// Reads frames from a stream, one per call, with the descriptors that came with each.
///
/// What it has read of a frame it keeps across a [`WireError::WouldBlock`] (a read timeout
/// or a non-blocking socket), so the next [`Receiver::recv`] resumes it. After any other
/// error the stream's frame boundaries are lost: close the connection. Use one receiver per
/// connection, for the connection's life: it may hold bytes and descriptors of the frames
/// after the one it returned. It holds at most `HEADER_LEN + MAX_PAYLOAD` bytes (a buffer
/// of [`READ_AHEAD`] until a frame needs more) and the descriptors of two frames: each read
/// brings those of one frame at most, and it reads only when every frame before the one it
/// is completing has been handed out.
#[derive(Default)]
pub struct Receiver {
    /// Received bytes are `buf[start..filled]`, the current frame first.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Descriptors waiting for their frame, by the buffer offset where it starts.
    fds: VecDeque<(usize, Vec<OwnedFd>)>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("buffered", &(self.filled - self.start))
            .field("buffer", &self.buf.len())
            .field(
                "pending_fds",
                &self.fds.iter().map(|(_, g)| g.len()).sum::<usize>(),
            )
            .finish()
    }
}

impl Receiver {
    /// A receiver at a frame boundary, with no buffer yet.
    pub fn new() -> Receiver {
        Receiver::default()
    }

    /// The receive buffer's size: what reading has allocated.
    #[cfg(test)]
    pub(super) fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether it holds part of a frame (a receive stopped by [`WireError::WouldBlock`], or
    /// bytes read ahead).
    pub fn in_frame(&self) -> bool {
        self.filled > self.start
    }

    /// The next frame from `stream`, with its descriptors. [`WireError::PeerClosed`] when the
    /// peer closed the connection at a frame boundary, [`WireError::Truncated`] inside a
    /// frame. A bad header is refused before its payload is read or room is made for it.
    pub fn recv(&mut self, stream: &UnixStream) -> Result<Frame, WireError> {
        self.recv_from(&mut { stream })
    }

    pub(super) fn recv_from(&mut self, source: &mut impl Source) -> Result<Frame, WireError> {
        let result = self.next(source);
        if let Err(e) = &result
            && !matches!(e, WireError::WouldBlock { .. })
        {
            // The stream is lost: drop what was read, closing every descriptor held.
            self.start = 0;
            self.filled = 0;
            self.fds.clear();
        }
        result
    }

    fn next(&mut self, source: &mut impl Source) -> Result<Frame, WireError> {
        let mut arrived = Vec::new();
        loop {
            let want = match self.header_at(self.start)? {
                None => HEADER_LEN,
                Some(header) if self.filled - self.start < HEADER_LEN + header.payload_len() => {
                    HEADER_LEN + header.payload_len()
                }
                Some(header) => return Ok(self.take(header)),
            };
            self.make_room(want);
            let room = self.buf.len() - self.filled;
            let chunk = match source.read(&mut self.buf[self.filled..], &mut arrived) {
                Ok(chunk) => chunk,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    return Err(WireError::WouldBlock {
                        op: "receive",
                        done: self.filled - self.start,
                    });
                }
                Err(e) => {
                    return Err(WireError::Io {
                        op: "recvmsg",
                        source: e.into(),
                    });
                }
            };
            // Descriptors first: every error below drops `arrived`, closing them.
            if chunk.ctrunc {
                return Err(WireError::FdsTruncated {
                    received: arrived.len(),
                });
            }
            if arrived.len() > MAX_FDS {
                return Err(WireError::TooManyFds {
                    count: arrived.len(),
                    max: MAX_FDS,
                });
            }
            // A read never returns more than it had room for; a `Source` that says so is
            // taken at its room's word rather than trusted past it.
            let n = chunk.len.min(room);
            if n == 0 {
                return Err(match self.filled - self.start {
                    0 => WireError::PeerClosed,
                    got => WireError::Truncated { got, want },
                });
            }
            let from = self.filled;
            self.filled += n;
            if !arrived.is_empty() {
                let owner = self.owner(from).map_err(|offset| WireError::FdsMidFrame {
                    offset,
                    count: arrived.len(),
                })?;
                self.fds.push_back((owner, std::mem::take(&mut arrived)));
            }
        }
    }

    /// The checked header of the frame starting at `at`, once all of it is buffered.
    fn header_at(&self, at: usize) -> Result<Option<Header>, WireError> {
        match self.buf.get(at..self.filled).and_then(|b| b.first_chunk()) {
            Some(bytes) => Header::decode(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The last frame start in the bytes of the read that began at `from`: the frame its
    /// descriptors belong to; or, when no frame starts there, how far into its frame the
    /// read began.
    fn owner(&self, from: usize) -> Result<usize, usize> {
        let (mut at, mut containing, mut last) = (self.start, self.start, None);
        while at < self.filled {
            if at >= from {
                last = Some(at);
            } else {
                containing = at;
            }
            match self.header_at(at) {
                Ok(Some(header)) => at += HEADER_LEN + header.payload_len(),
                // Not all of it read, or bad (refused when the frame is reached).
                Ok(None) | Err(_) => break,
            }
        }
        last.ok_or(from - containing)
    }

    /// Hands out the whole frame at `start` and moves past it.
    fn take(&mut self, header: Header) -> Frame {
        let body = self.start + HEADER_LEN;
        let end = body + header.payload_len();
        // Descriptors are only ever queued for a frame start, so the front group is this
        // frame's or a later one's; anything else would be dropped (closed) here.
        let mut fds = Vec::new();
        while let Some((at, _)) = self.fds.front()
            && *at < end
            && let Some((at, group)) = self.fds.pop_front()
        {
            if at == self.start {
                fds = group;
            }
        }
        let frame = Frame {
            header,
            payload: self.buf[body..end].to_vec(),
            fds,
        };
        self.start = end;
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        }
        frame
    }

    /// Makes room after `filled` for the current frame's `want` bytes (and at least some
    /// read-ahead): moves the frame to the front of the buffer when it does not fit behind
    /// it, and grows the buffer when the frame does not fit at all.
    fn make_room(&mut self, want: usize) {
        if self.start + want > self.buf.len() {
            self.buf.copy_within(self.start..self.filled, 0);
            for (at, _) in &mut self.fds {
                *at -= self.start;
            }
            self.filled -= self.start;
            self.start = 0;
        }
        if want.max(READ_AHEAD) > self.buf.len() {
            self.buf.resize(want.max(READ_AHEAD), 0);
        }
    }
}

/// The next frame from `stream`, as a fresh [`Receiver`] reads it. Only for a stream that
/// carries nothing after the frame: bytes and descriptors read ahead are lost, and so is a
/// frame cut short by a [`WireError::WouldBlock`]. Keep a [`Receiver`] otherwise.
pub fn recv_frame(stream: &UnixStream) -> Result<Frame, WireError> {
    Receiver::new().recv(stream)
}
