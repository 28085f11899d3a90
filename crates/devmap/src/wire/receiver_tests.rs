//! The [`Receiver`] against a scripted peer that follows the kernel's rules for a stream
//! socket: frames cut into sends and reads of any size, reads interrupted or blocked on the
//! way, descriptors on any send; and hostile input (arbitrary bytes, damaged frames, stray
//! descriptors), which must end in a typed error, never a panic or a hang.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::OwnedFd;

use proptest::prelude::*;
use rustix::io::Errno;

use super::receiver::{Chunk, Source};
use super::{Frame, HEADER_LEN, Header, MAX_FDS, MAX_PAYLOAD, Receiver, WireError};

fn header(kind: u16, id: u32, len: usize) -> [u8; HEADER_LEN] {
    Header::new(kind, id, len).expect("header").encode()
}

/// One read of a scripted source.
#[derive(Debug, Clone)]
enum Step {
    /// At most this many bytes (at least one).
    Read(usize),
    /// `EINTR`.
    Interrupted,
    /// `EAGAIN`, as a timeout or a non-blocking socket.
    Blocked,
}

/// A peer as the receiver sees it through a `Source`, with the kernel's rules for a stream
/// socket: each send's bytes, its descriptors handed over with the first read that touches
/// them (at most 8, more cut off as `MSG_CTRUNC`), and a read that stops after the send whose
/// descriptors it handed over. Reads are further cut by the script's steps.
struct Script {
    /// Each send: its bytes, its descriptors not yet handed over, the bytes read.
    sends: VecDeque<(Vec<u8>, usize, usize)>,
    steps: VecDeque<Step>,
}

impl Script {
    fn new(sends: Vec<(Vec<u8>, usize)>, steps: Vec<Step>) -> Script {
        let sends = sends.into_iter().filter(|(b, _)| !b.is_empty());
        Script {
            sends: sends.map(|(b, fds)| (b, fds, 0)).collect(),
            steps: steps.into(),
        }
    }
}

impl Source for Script {
    fn read(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<Chunk, Errno> {
        let limit = match self.steps.pop_front().unwrap_or(Step::Read(usize::MAX)) {
            Step::Interrupted => return Err(Errno::INTR),
            Step::Blocked => return Err(Errno::AGAIN),
            Step::Read(n) => n.max(1).min(buf.len()),
        };
        let (mut got, mut ctrunc) = (0, false);
        while got < limit
            && let Some((bytes, attached, read)) = self.sends.front_mut()
        {
            let n = (limit - got).min(bytes.len() - *read);
            buf[got..got + n].copy_from_slice(&bytes[*read..*read + n]);
            got += n;
            *read += n;
            let handed = std::mem::take(attached);
            ctrunc = handed > 8;
            for _ in 0..handed.min(8) {
                fds.push(File::open("/dev/null").expect("/dev/null").into());
            }
            if *read == bytes.len() {
                self.sends.pop_front();
            }
            if handed > 0 {
                break;
            }
        }
        Ok(Chunk { len: got, ctrunc })
    }
}

/// Receives from `script` until an error other than `WouldBlock`: the frames and that error.
fn drain(mut script: Script) -> (Vec<Frame>, WireError) {
    let mut receiver = Receiver::new();
    let mut frames = Vec::new();
    let limit = script.steps.len() + script.sends.iter().map(|s| s.0.len()).sum::<usize>() + 2;
    for _ in 0..limit {
        match receiver.recv_from(&mut script) {
            Ok(frame) => {
                assert!(frame.payload.len() == frame.header.payload_len());
                assert!(frame.payload.len() <= MAX_PAYLOAD && frame.fds.len() <= MAX_FDS);
                frames.push(frame);
            }
            Err(WireError::WouldBlock { .. }) => {}
            Err(e) => return (frames, e),
        }
    }
    panic!("the receiver neither ended nor consumed its input in {limit} calls");
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1usize..40).prop_map(Step::Read),
        1 => Just(Step::Interrupted),
        1 => Just(Step::Blocked),
    ]
}

/// Frames as a well-behaved sender writes them: (kind, request id, payload, descriptors).
fn frames() -> impl Strategy<Value = Vec<(u16, u32, Vec<u8>, usize)>> {
    proptest::collection::vec(
        (
            any::<u16>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..100),
            0..=MAX_FDS,
        ),
        0..5,
    )
}

/// The sends of a well-behaved sender: one per frame, its descriptors on it, then cut
/// further at `cuts` (a large frame goes out in several pieces), the descriptors on the first.
fn sends(frames: &[(u16, u32, Vec<u8>, usize)], cuts: &[usize]) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    for (i, (kind, id, payload, fds)) in frames.iter().enumerate() {
        let bytes = [&header(*kind, *id, payload.len())[..], payload].concat();
        let cut = cuts.get(i).map_or(bytes.len(), |c| c % (bytes.len() + 1));
        out.push((bytes[..cut].to_vec(), *fds));
        out.push((bytes[cut..].to_vec(), if cut == 0 { *fds } else { 0 }));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whole frames come out as they went in, with their own descriptors, however the
    /// stream is cut into reads and whatever reads are interrupted or blocked on the way.
    #[test]
    fn frames_survive_any_read_sizes(
        frames in frames(),
        cuts in proptest::collection::vec(any::<usize>(), 0..5),
        steps in proptest::collection::vec(step(), 0..60),
    ) {
        let (got, end) = drain(Script::new(sends(&frames, &cuts), steps));
        prop_assert!(matches!(end, WireError::PeerClosed), "{:?}", end);
        prop_assert_eq!(got.len(), frames.len());
        for (g, (kind, id, payload, fds)) in got.iter().zip(&frames) {
            prop_assert_eq!(
                (g.kind(), g.request_id(), &g.payload, g.fds.len()),
                (*kind, *id, payload, *fds)
            );
        }
    }

    /// Arbitrary bytes, valid frames damaged by a flipped byte or a cut, and descriptors on
    /// arbitrary sends end in frames and a typed error: never a panic or a hang.
    #[test]
    fn hostile_input_ends_in_a_typed_error(
        frames in frames(),
        noise in proptest::collection::vec(any::<u8>(), 0..200),
        flip in any::<(usize, u8)>(),
        cut in any::<usize>(),
        pieces in proptest::collection::vec(
            (1usize..50, prop_oneof![4 => Just(0usize), 1 => 1usize..12]),
            1..20,
        ),
        steps in proptest::collection::vec(step(), 0..60),
        mode in 0..3,
    ) {
        let mut data: Vec<u8> = sends(&frames, &[]).into_iter().flat_map(|(b, _)| b).collect();
        match mode {
            0 => data = noise,
            1 if !data.is_empty() => {
                let at = flip.0 % data.len();
                data[at] ^= flip.1.max(1);
            }
            _ => data.truncate(cut % (data.len() + 1)),
        }
        // Cut into sends of the pieces' sizes (the last takes the rest), descriptors on some.
        let mut sends = Vec::new();
        let mut rest = &data[..];
        for (i, (len, fds)) in pieces.iter().enumerate() {
            let n = if i + 1 == pieces.len() { rest.len() } else { (*len).min(rest.len()) };
            sends.push((rest[..n].to_vec(), *fds));
            rest = &rest[n..];
        }
        let (_, end) = drain(Script::new(sends, steps));
        prop_assert!(
            matches!(end, WireError::PeerClosed | WireError::Truncated { .. }
                | WireError::BadMagic { .. } | WireError::VersionMismatch { .. }
                | WireError::PayloadTooLarge { .. }
                | WireError::TooManyFds { .. } | WireError::FdsTruncated { .. }
                | WireError::FdsMidFrame { .. }),
            "{:?}", end
        );
    }
}
