//! The payload encoding: fixed-width little-endian integers, and byte strings and UTF-8
//! strings as a `u32` length then the bytes, nothing else (no tags, no padding). A [`Writer`]
//! appends fields; a [`Reader`] takes them back in the same order, checks every bound before it
//! touches a byte and names the field that was short or bad, and [`Reader::finish`] refuses
//! bytes after the last field. Message types implement [`Encode`] and [`Decode`] (and
//! [`WireMessage`] for their frame kind) over these two; nothing here knows any message.

use super::error::WireError;
use super::frame::MAX_PAYLOAD;

/// The longest string [`String`]'s [`Decode`] accepts: `PATH_MAX`.
pub const MAX_STR: usize = 4096;

/// Appends a payload's fields. Infallible as it goes; [`Writer::finish`] refuses a payload
/// longer than a frame carries (or a field longer than `u32::MAX` bytes, which is).
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
    /// A byte field too long for its `u32` length: the payload is refused at `finish`.
    overlong: Option<u64>,
}

impl Writer {
    /// An empty payload.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// An empty payload reusing `buf`'s allocation (its bytes are cleared).
    pub fn reuse(mut buf: Vec<u8>) -> Writer {
        buf.clear();
        Writer {
            buf,
            overlong: None,
        }
    }

    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Writer {
        self.buf.push(v);
        self
    }

    /// Appends a `u16`, little-endian.
    pub fn u16(&mut self, v: u16) -> &mut Writer {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a `u32`, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Writer {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a `u64`, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Writer {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends an `i32`, little-endian two's complement.
    pub fn i32(&mut self, v: i32) -> &mut Writer {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a `bool` as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) -> &mut Writer {
        self.u8(u8::from(v))
    }

    /// Appends a byte string: its length as a `u32`, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Writer {
        match u32::try_from(v.len()) {
            Ok(len) => {
                self.u32(len);
                self.buf.extend_from_slice(v);
            }
            Err(_) => self.overlong = Some(v.len() as u64),
        }
        self
    }

    /// Appends a string: its UTF-8 length as a `u32`, then its bytes.
    pub fn str(&mut self, v: &str) -> &mut Writer {
        self.bytes(v.as_bytes())
    }

    /// Appends bytes as they are, no length: a fixed-size field the reader takes with
    /// [`Reader::array`].
    pub fn raw(&mut self, v: &[u8]) -> &mut Writer {
        self.buf.extend_from_slice(v);
        self
    }

    /// The payload so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The payload's length so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The payload, or [`WireError::PayloadTooLarge`] when it is longer than
    /// [`MAX_PAYLOAD`].
    pub fn finish(self) -> Result<Vec<u8>, WireError> {
        let len = match self.overlong {
            Some(field) => field,
            None => self.buf.len() as u64,
        };
        if len > MAX_PAYLOAD as u64 {
            return Err(WireError::PayloadTooLarge {
                len,
                max: MAX_PAYLOAD,
            });
        }
        Ok(self.buf)
    }
}

/// Takes a payload's fields back in order. Every read checks the bytes left first and names
/// its field when they are too few or hold a bad value; nothing is allocated.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader of `payload`'s fields.
    pub fn new(payload: &'a [u8]) -> Reader<'a> {
        Reader { rest: payload }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `N` bytes, a fixed-size field.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let (head, rest) = self.rest.split_first_chunk::<N>().ok_or(WireError::Short {
            field,
            need: N as u64,
            left: self.rest.len(),
        })?;
        self.rest = rest;
        Ok(*head)
    }

    /// A `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        self.array::<1>(field).map(|[b]| b)
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        self.array(field).map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        self.array(field).map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A little-endian `i32`.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, WireError> {
        self.array(field).map(i32::from_le_bytes)
    }

    /// A `bool`: one byte, 0 or 1 ([`WireError::BadValue`] otherwise).
    pub fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::BadValue {
                field,
                value: u64::from(v),
                expected: "0 or 1",
            }),
        }
    }

    /// A byte string of at most `max` bytes: a `u32` length, then the bytes, borrowed from
    /// the payload. The length is checked against `max` ([`WireError::TooLong`]) and against
    /// the bytes left ([`WireError::Short`]) before anything is taken.
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.u32(field)?;
        if len as usize > max {
            return Err(WireError::TooLong {
                field,
                len: u64::from(len),
                max,
            });
        }
        if len as usize > self.rest.len() {
            return Err(WireError::Short {
                field,
                need: u64::from(len),
                left: self.rest.len(),
            });
        }
        let (head, rest) = self.rest.split_at(len as usize);
        self.rest = rest;
        Ok(head)
    }

    /// A UTF-8 string of at most `max` bytes, as [`Reader::bytes`] takes it
    /// ([`WireError::BadUtf8`] when it is not UTF-8).
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<&'a str, WireError> {
        let bytes = self.bytes(field, max)?;
        std::str::from_utf8(bytes).map_err(|source| WireError::BadUtf8 { field, source })
    }

    /// Ends the payload: [`WireError::TrailingBytes`] when bytes are left after the last
    /// field.
    pub fn finish(self) -> Result<(), WireError> {
        match self.rest.len() {
            0 => Ok(()),
            left => Err(WireError::TrailingBytes { left }),
        }
    }
}

/// A value that appends itself to a payload.
pub trait Encode {
    /// Appends the value's fields to `w`.
    fn encode(&self, w: &mut Writer);
}

/// A value read back from a payload.
pub trait Decode: Sized {
    /// Reads the value's fields from `r`, naming the field that is short or bad.
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError>;
}

/// A message: a value that is a frame's whole payload, of one frame kind.
pub trait WireMessage: Encode + Decode {
    /// The frame kind (header bytes 6..8) of this message.
    const KIND: u16;
}

/// `value`'s payload ([`WireError::PayloadTooLarge`] past [`MAX_PAYLOAD`]).
pub fn encode_payload<T: Encode + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut w = Writer::new();
    value.encode(&mut w);
    w.finish()
}

/// The value `payload` holds, every byte of it ([`WireError::TrailingBytes`] otherwise).
pub fn decode_payload<T: Decode>(payload: &[u8]) -> Result<T, WireError> {
    let mut r = Reader::new(payload);
    let value = T::decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

macro_rules! fixed {
    ($($t:ident),*) => {$(
        impl Encode for $t {
            fn encode(&self, w: &mut Writer) {
                w.$t(*self);
            }
        }
        impl Decode for $t {
            fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
                r.$t(stringify!($t))
            }
        }
    )*};
}
fixed!(u8, u16, u32, u64, i32, bool);

impl Encode for str {
    fn encode(&self, w: &mut Writer) {
        w.str(self);
    }
}

impl Encode for String {
    fn encode(&self, w: &mut Writer) {
        w.str(self);
    }
}

impl Decode for String {
    /// At most [`MAX_STR`] bytes.
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.str("string", MAX_STR).map(str::to_owned)
    }
}

impl Encode for [u8] {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self);
    }
}

impl Encode for Vec<u8> {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self);
    }
}

impl Decode for Vec<u8> {
    /// At most [`MAX_PAYLOAD`] bytes.
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.bytes("bytes", MAX_PAYLOAD).map(<[u8]>::to_vec)
    }
}
