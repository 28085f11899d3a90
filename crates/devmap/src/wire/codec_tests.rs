//! The payload codec and the frame header: what round-trips, and what each bad input is
//! refused with (the field named, the bounds checked before anything is taken).

use super::*;
use proptest::prelude::*;

/// A message as the layer above would write one: every field type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sample {
    flag: bool,
    small: u8,
    port: u16,
    id: u32,
    len: u64,
    status: i32,
    name: String,
    blob: Vec<u8>,
}

impl Encode for Sample {
    fn encode(&self, w: &mut Writer) {
        w.bool(self.flag)
            .u8(self.small)
            .u16(self.port)
            .u32(self.id)
            .u64(self.len)
            .i32(self.status)
            .str(&self.name)
            .bytes(&self.blob);
    }
}

impl Decode for Sample {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Sample {
            flag: r.bool("flag")?,
            small: r.u8("small")?,
            port: r.u16("port")?,
            id: r.u32("id")?,
            len: r.u64("len")?,
            status: r.i32("status")?,
            name: r.str("name", 64)?.to_owned(),
            blob: r.bytes("blob", 1024)?.to_vec(),
        })
    }
}

impl WireMessage for Sample {
    const KIND: u16 = 42;
}

fn sample() -> Sample {
    Sample {
        flag: true,
        small: 7,
        port: 0xbeef,
        id: 0xdead_beef,
        len: u64::MAX - 1,
        status: -libc::EINVAL,
        name: "région".into(),
        blob: vec![0, 1, 2, 255],
    }
}

#[test]
fn a_message_round_trips_through_its_payload() {
    let payload = encode_payload(&sample()).expect("encode");
    // 1 + 1 + 2 + 4 + 8 + 4, then 4 + 7 ("région" is 7 UTF-8 bytes) and 4 + 4.
    assert_eq!(payload.len(), 20 + 11 + 8);
    assert_eq!(
        &payload[..4],
        &[1, 7, 0xef, 0xbe],
        "little-endian, no padding"
    );
    assert_eq!(
        decode_payload::<Sample>(&payload).expect("decode"),
        sample()
    );
}

#[test]
fn every_short_field_is_named() {
    type Read = fn(&mut Reader<'_>) -> Result<(), WireError>;
    let cases: [(&[u8], &str, u64, Read); 10] = [
        (&[], "a_u8", 1, |r| r.u8("a_u8").map(drop)),
        (&[1], "a_u16", 2, |r| r.u16("a_u16").map(drop)),
        (&[1, 2, 3], "a_u32", 4, |r| r.u32("a_u32").map(drop)),
        (&[0; 7], "a_u64", 8, |r| r.u64("a_u64").map(drop)),
        (&[0; 2], "an_i32", 4, |r| r.i32("an_i32").map(drop)),
        (&[], "a_bool", 1, |r| r.bool("a_bool").map(drop)),
        (&[0; 5], "an_array", 6, |r| {
            r.array::<6>("an_array").map(drop)
        }),
        // The length prefix itself cut short, then the bytes it declares.
        (&[3, 0], "a_len", 4, |r| r.bytes("a_len", 16).map(drop)),
        (&[3, 0, 0, 0, b'a'], "some_bytes", 3, |r| {
            r.bytes("some_bytes", 16).map(drop)
        }),
        (&[9, 0, 0, 0, b'a'], "a_str", 9, |r| {
            r.str("a_str", 16).map(drop)
        }),
    ];
    for (bytes, field, need, read) in cases {
        let mut r = Reader::new(bytes);
        match read(&mut r) {
            Err(WireError::Short {
                field: f,
                need: n,
                left,
            }) => {
                assert_eq!((f, n), (field, need), "{bytes:?}");
                assert!(left < need as usize);
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn a_short_field_after_good_ones_names_the_one_that_ran_out() {
    let payload = encode_payload(&sample()).expect("encode");
    for cut in 0..payload.len() {
        let err = decode_payload::<Sample>(&payload[..cut]).expect_err("short");
        let WireError::Short { field, .. } = err else {
            panic!("cut at {cut}: {err:?}");
        };
        let expected = match cut {
            0 => "flag",
            1 => "small",
            2..=3 => "port",
            4..=7 => "id",
            8..=15 => "len",
            16..=19 => "status",
            20..=30 => "name",
            _ => "blob",
        };
        assert_eq!(field, expected, "cut at {cut}");
        assert_eq!(err.errno(), libc::EBADMSG);
    }
}

#[test]
fn lengths_past_their_bound_are_refused_before_anything_is_taken() {
    // A byte field declaring u32::MAX bytes in a 9-byte payload: TooLong against the field's
    // bound (nothing is sliced or allocated), then Short against the payload.
    let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5]);
    match r.bytes("blob", MAX_PAYLOAD) {
        Err(WireError::TooLong { field, len, max }) => {
            assert_eq!(
                (field, len, max),
                ("blob", u64::from(u32::MAX), MAX_PAYLOAD)
            );
        }
        other => panic!("{other:?}"),
    }
    let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5]);
    match r.bytes("blob", usize::MAX) {
        Err(WireError::Short { field, need, left }) => {
            assert_eq!((field, need, left), ("blob", u64::from(u32::MAX), 5));
        }
        other => panic!("{other:?}"),
    }
    let mut w = Writer::new();
    w.str("/a/path/longer/than/sixteen");
    let payload = w.finish().expect("payload");
    let err = Reader::new(&payload).str("path", 16).expect_err("bound");
    assert!(
        matches!(
            err,
            WireError::TooLong {
                field: "path",
                len: 27,
                max: 16
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EMSGSIZE);
}

#[test]
fn strings_must_be_utf8_and_bools_zero_or_one() {
    let mut w = Writer::new();
    w.bytes(&[b'o', 0xff, b'k']);
    let payload = w.finish().expect("payload");
    let err = Reader::new(&payload).str("name", 16).expect_err("utf-8");
    assert!(
        matches!(err, WireError::BadUtf8 { field: "name", .. }),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EINVAL);

    let err = Reader::new(&[2]).bool("writable").expect_err("bool");
    assert!(
        matches!(
            err,
            WireError::BadValue {
                field: "writable",
                value: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("0 or 1"), "{err}");
}

#[test]
fn finish_refuses_trailing_bytes() {
    let mut payload = encode_payload(&sample()).expect("encode");
    payload.extend_from_slice(&[0, 0, 0]);
    let err = decode_payload::<Sample>(&payload).expect_err("trailing");
    assert!(
        matches!(err, WireError::TrailingBytes { left: 3 }),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EBADMSG);
    let mut r = Reader::new(&[1, 2]);
    r.u16("both").expect("u16");
    assert_eq!(r.remaining(), 0);
    r.finish().expect("nothing left");
}

#[test]
fn a_payload_longer_than_a_frame_is_refused_by_the_writer() {
    let mut w = Writer::new();
    w.raw(&vec![0; MAX_PAYLOAD]);
    assert_eq!(
        w.clone().finish().expect("exactly the bound").len(),
        MAX_PAYLOAD
    );
    w.u8(0);
    let err = w.finish().expect_err("one past");
    assert!(
        matches!(err, WireError::PayloadTooLarge { len, max: MAX_PAYLOAD }
            if len == MAX_PAYLOAD as u64 + 1),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EMSGSIZE);
}

#[test]
fn the_header_is_sixteen_little_endian_bytes() {
    let header = Header::new(0x0102, 0x0304_0506, 0x0708).expect("header");
    assert_eq!(
        header.encode(),
        [
            b'D', b'V', b'M', b'P', 1, 0, 0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0x08, 0x07, 0, 0
        ]
    );
    assert_eq!(Header::decode(&header.encode()).expect("decode"), header);
    assert!(Header::new(1, 1, MAX_PAYLOAD).is_ok());
    assert!(matches!(
        Header::new(1, 1, MAX_PAYLOAD + 1),
        Err(WireError::PayloadTooLarge { .. })
    ));
}

#[test]
fn bad_headers_are_refused_in_order_magic_version_length() {
    let good = Header::new(3, 9, 10).expect("header").encode();

    let mut bytes = good;
    bytes[0] = b'X';
    bytes[4] = 9; // a bad version too: the magic is checked first
    let err = Header::decode(&bytes).expect_err("magic");
    assert!(
        matches!(err, WireError::BadMagic { found } if found == *b"XVMP"),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EPROTO);

    let mut bytes = good;
    bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
    bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes()); // and a bad length
    let err = Header::decode(&bytes).expect_err("version");
    assert!(
        matches!(
            err,
            WireError::VersionMismatch {
                ours: VERSION,
                theirs: 2
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains('1') && text.contains('2'),
        "names both: {text}"
    );
    assert_eq!(err.errno(), libc::EPROTONOSUPPORT);

    for len in [MAX_PAYLOAD as u32 + 1, u32::MAX - 1, u32::MAX] {
        let mut bytes = good;
        bytes[12..16].copy_from_slice(&len.to_le_bytes());
        let err = Header::decode(&bytes).expect_err("length");
        assert!(
            matches!(err, WireError::PayloadTooLarge { len: l, max: MAX_PAYLOAD }
                if l == u64::from(len)),
            "{err:?}"
        );
    }
}

#[test]
fn decoding_a_frame_checks_its_kind_and_descriptors() {
    let frame = Frame {
        header: Header::new(Sample::KIND + 1, 5, 0).expect("header"),
        payload: Vec::new(),
        fds: Vec::new(),
    };
    let err = frame.message::<Sample>().expect_err("kind");
    assert!(
        matches!(
            err,
            WireError::WrongKind {
                expected: 42,
                got: 43
            }
        ),
        "{err:?}"
    );

    let payload = encode_payload(&sample()).expect("encode");
    let devnull = std::fs::File::open("/dev/null").expect("/dev/null");
    let mut frame = Frame {
        header: Header::new(Sample::KIND, 5, payload.len()).expect("header"),
        payload,
        fds: vec![devnull.into()],
    };
    assert_eq!(frame.message::<Sample>().expect("decode"), sample());
    let err = frame.take_fds::<2>().expect_err("one, not two");
    assert!(
        matches!(
            err,
            WireError::WrongFdCount {
                kind: 42,
                want: 2,
                got: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EBADF);
    assert!(frame.fds.is_empty(), "taken and closed");
    let [] = frame.take_fds::<0>().expect("none left");
}

proptest! {
    /// Any bytes decode to a message or a typed error, never a panic; and any message
    /// round-trips.
    #[test]
    fn arbitrary_payloads_decode_or_fail_cleanly(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        match decode_payload::<Sample>(&bytes) {
            Ok(s) => prop_assert_eq!(encode_payload(&s).expect("encode"), bytes),
            Err(e) => prop_assert!(e.errno() > 0),
        }
    }

    #[test]
    fn messages_round_trip(
        flag in any::<bool>(), small in any::<u8>(), port in any::<u16>(), id in any::<u32>(),
        len in any::<u64>(), status in any::<i32>(), name in "\\PC{0,16}",
        blob in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let s = Sample { flag, small, port, id, len, status, name, blob };
        let payload = encode_payload(&s).expect("encode");
        prop_assert_eq!(decode_payload::<Sample>(&payload).expect("decode"), s);
    }
}
