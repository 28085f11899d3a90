//! The frame header: the 16 bytes before every payload on a devmap connection, their
//! layout, their bounds and the checks a received header passes before anything is allocated
//! for its payload (DESIGN §6.7). The header and payload travel together; see
//! [`send_frame`](super::send_frame) and [`Receiver`](super::Receiver).

use super::error::WireError;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"DVMP";

/// The protocol version this side speaks, bytes 4..6 of every frame.
pub const VERSION: u16 = 1;

/// The header's length: magic 4, version 2, kind 2, request id 4, payload length 4.
pub const HEADER_LEN: usize = 16;

/// The most bytes a frame's payload carries (64 KiB). A header declaring more is refused
/// before anything is allocated.
pub const MAX_PAYLOAD: usize = 64 << 10;

/// The most descriptors a frame carries (attached to its first byte).
pub const MAX_FDS: usize = 4;

/// A frame header, without its magic and version (always [`MAGIC`] and [`VERSION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the payload is: the message's kind, defined by the layer above.
    pub kind: u16,
    /// The request this frame is, or answers: a reply carries its request's id.
    pub request_id: u32,
    /// The payload's length, at most [`MAX_PAYLOAD`].
    pub len: u32,
}

impl Header {
    /// The header of a frame of `kind` for `request_id` carrying `len` payload bytes;
    /// [`WireError::PayloadTooLarge`] past [`MAX_PAYLOAD`].
    pub fn new(kind: u16, request_id: u32, len: usize) -> Result<Header, WireError> {
        let too_large = || WireError::PayloadTooLarge {
            len: len as u64,
            max: MAX_PAYLOAD,
        };
        if len > MAX_PAYLOAD {
            return Err(too_large());
        }
        let len = u32::try_from(len).map_err(|_| too_large())?;
        Ok(Header {
            kind,
            request_id,
            len,
        })
    }

    /// The payload's length as a `usize`.
    pub fn payload_len(&self) -> usize {
        self.len as usize
    }

    /// The header's bytes, little-endian, as they go on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&self.kind.to_le_bytes());
        out[8..12].copy_from_slice(&self.request_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// The header these bytes are, checked in order: the magic ([`WireError::BadMagic`]),
    /// the version ([`WireError::VersionMismatch`]), the payload length
    /// ([`WireError::PayloadTooLarge`]).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let [
            m0,
            m1,
            m2,
            m3,
            v0,
            v1,
            k0,
            k1,
            r0,
            r1,
            r2,
            r3,
            l0,
            l1,
            l2,
            l3,
        ] = *bytes;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(WireError::BadMagic {
                found: [m0, m1, m2, m3],
            });
        }
        let version = u16::from_le_bytes([v0, v1]);
        if version != VERSION {
            return Err(WireError::VersionMismatch {
                ours: VERSION,
                theirs: version,
            });
        }
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        if len as usize > MAX_PAYLOAD {
            return Err(WireError::PayloadTooLarge {
                len: u64::from(len),
                max: MAX_PAYLOAD,
            });
        }
        Ok(Header {
            kind: u16::from_le_bytes([k0, k1]),
            request_id: u32::from_le_bytes([r0, r1, r2, r3]),
            len,
        })
    }
}
