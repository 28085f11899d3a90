//! Frames and descriptors over real socket pairs: round trips, refusals (too many
//! descriptors, misplaced ones, bad headers, truncation) with every received descriptor
//! closed, timeouts on both sides, arbitrary bytes; and peer credentials of a socket pair and
//! of a child process. The receiver against a scripted peer is in `receiver_tests.rs`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rustix::fs::{MemfdFlags, fstat, memfd_create};
use rustix::io::{FdFlags, fcntl_getfd};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

use super::{
    HEADER_LEN, Header, MAX_FDS, MAX_PAYLOAD, PeerCredentials, READ_AHEAD, Receiver, VERSION,
    WireError, peer_credentials, recv_frame, send_frame,
};
use crate::backing::file::TempPath;

/// A memfd with a name no other test uses, so that the descriptors open on it can be counted
/// in /proc/self/fd whatever other test threads open meanwhile.
fn memfd(tag: &str) -> (File, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "devmap-wire-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let fd = memfd_create(name.as_str(), MemfdFlags::CLOEXEC).expect("memfd_create");
    (File::from(fd), name)
}

/// How many of this process's descriptors refer to the memfd called `name`.
fn open_on(name: &str) -> usize {
    let target = format!("/memfd:{name} (deleted)");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|link| link.as_os_str() == target.as_str())
        .count()
}

/// Sends `bytes` with `fds` attached in one `sendmsg`, with no checks (a hostile peer).
fn send_raw(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut room = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut room);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let sent = sendmsg(
        stream,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .expect("sendmsg");
    assert_eq!(sent, bytes.len());
}

fn header(kind: u16, id: u32, len: usize) -> [u8; HEADER_LEN] {
    Header::new(kind, id, len).expect("header").encode()
}

fn same_file(a: impl AsFd, b: impl AsFd) -> bool {
    let (a, b) = (fstat(a).expect("fstat"), fstat(b).expect("fstat"));
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

#[test]
fn frames_round_trip_with_none_one_and_max_fds_descriptors() {
    let (client, service) = UnixStream::pair().expect("socketpair");
    let mut receiver = Receiver::new();
    for count in [0, 1, MAX_FDS] {
        let files: Vec<(File, String)> = (0..count).map(|_| memfd("round-trip")).collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(|(f, _)| f.as_fd()).collect();
        let payload: Vec<u8> = (0..count as u8 * 10).collect();
        send_frame(&client, 9, count as u32, &payload, &fds).expect("send");
        let frame = receiver.recv(&service).expect("receive");
        assert_eq!(
            frame.header,
            Header::new(9, count as u32, payload.len()).expect("h")
        );
        assert_eq!(frame.payload, payload);
        assert_eq!(frame.fds.len(), count);
        for (i, (fd, (file, name))) in frame.fds.into_iter().zip(&files).enumerate() {
            assert!(same_file(&fd, file), "descriptor {i} is another file");
            let flags = fcntl_getfd(&fd).expect("F_GETFD");
            assert!(
                flags.contains(FdFlags::CLOEXEC),
                "received without close-on-exec"
            );
            // Bytes written through the sender's descriptor are read through the received one.
            file.write_all_at(name.as_bytes(), 0).expect("write");
            let mut back = vec![0; name.len()];
            File::from(fd).read_exact_at(&mut back, 0).expect("read");
            assert_eq!(back, name.as_bytes());
        }
    }
}

#[test]
fn a_send_refuses_too_many_descriptors_or_bytes_and_sends_nothing() {
    let (client, service) = UnixStream::pair().expect("socketpair");
    let (file, _) = memfd("send-refused");
    let fds = vec![file.as_fd(); MAX_FDS + 1];
    let err = send_frame(&client, 1, 1, b"x", &fds).expect_err("too many");
    assert!(
        matches!(
            err,
            WireError::TooManyFds {
                count: 5,
                max: MAX_FDS
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::ETOOMANYREFS);
    let err = send_frame(&client, 1, 1, &vec![0; MAX_PAYLOAD + 1], &[]).expect_err("too long");
    assert!(matches!(err, WireError::PayloadTooLarge { .. }), "{err:?}");

    service
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let err = Receiver::new()
        .recv(&service)
        .expect_err("nothing was sent");
    assert!(
        matches!(
            err,
            WireError::WouldBlock {
                op: "receive",
                done: 0
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EAGAIN);
}

#[test]
fn one_descriptor_too_many_is_refused_and_all_are_closed() {
    let (client, service) = UnixStream::pair().expect("socketpair");
    let (file, name) = memfd("one-too-many");
    let frame = header(1, 1, 0);
    send_raw(&client, &frame, &[file.as_fd(); MAX_FDS + 1]);
    let err = recv_frame(&service).expect_err("too many");
    assert!(
        matches!(
            err,
            WireError::TooManyFds {
                count: 5,
                max: MAX_FDS
            }
        ),
        "{err:?}"
    );
    assert_eq!(open_on(&name), 1, "a received descriptor was left open");
}

#[test]
fn a_flood_of_descriptors_is_cut_by_the_kernel_and_all_are_closed() {
    let (client, service) = UnixStream::pair().expect("socketpair");
    let (file, name) = memfd("flood");
    send_raw(&client, &header(1, 1, 0), &vec![file.as_fd(); 200]);
    let err = recv_frame(&service).expect_err("flood");
    let WireError::FdsTruncated { received } = err else {
        panic!("{err:?}");
    };
    assert!(received > MAX_FDS && received < 200, "{received}");
    assert_eq!(err.errno(), libc::ETOOMANYREFS);
    assert_eq!(open_on(&name), 1, "a received descriptor was left open");
}

#[test]
fn descriptors_on_a_later_byte_of_a_frame_are_refused_and_closed() {
    let (client, service) = UnixStream::pair().expect("socketpair");
    service
        .set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let (file, name) = memfd("mid-frame");
    let mut receiver = Receiver::new();
    send_raw(&client, &header(1, 1, 8), &[]);
    let err = receiver.recv(&service).expect_err("the payload is missing");
    assert!(
        matches!(
            err,
            WireError::WouldBlock {
                done: HEADER_LEN,
                ..
            }
        ),
        "{err:?}"
    );
    send_raw(&client, &[0; 8], &[file.as_fd()]);
    let err = receiver.recv(&service).expect_err("mid-frame");
    assert!(
        matches!(
            err,
            WireError::FdsMidFrame {
                offset: HEADER_LEN,
                count: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EPROTO);
    assert_eq!(open_on(&name), 1, "a received descriptor was left open");
}

#[test]
fn frames_read_ahead_in_one_read_keep_their_own_descriptors() {
    // Sent before anything is read, so that reads take several frames at once.
    let (client, service) = UnixStream::pair().expect("socketpair");
    let files: Vec<(File, String)> = (0..MAX_FDS).map(|_| memfd("read-ahead")).collect();
    let counts = [0, 1, 0, 0, MAX_FDS, 2, 0, 1, MAX_FDS, 0];
    for (i, &count) in counts.iter().enumerate() {
        let fds: Vec<BorrowedFd<'_>> = files[..count].iter().map(|(f, _)| f.as_fd()).collect();
        send_frame(&client, 3, i as u32, &vec![i as u8; 10 * i], &fds).expect("send");
    }
    drop(client);
    let mut receiver = Receiver::new();
    for (i, &count) in counts.iter().enumerate() {
        let frame = receiver.recv(&service).expect("frame");
        assert_eq!(frame.request_id(), i as u32);
        assert_eq!(frame.payload, vec![i as u8; 10 * i]);
        assert_eq!(frame.fds.len(), count, "frame {i}");
        for (fd, (file, _)) in frame.fds.iter().zip(&files) {
            assert!(same_file(fd, file), "frame {i}");
        }
    }
    assert!(matches!(
        receiver.recv(&service),
        Err(WireError::PeerClosed)
    ));
    for (_, name) in &files {
        assert_eq!(open_on(name), 1, "a received descriptor was left open");
    }
}

#[test]
fn a_frame_longer_than_the_read_ahead_grows_the_buffer_to_fit() {
    let (client, service) = UnixStream::pair().expect("socketpair");
    let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| i as u8).collect();
    let sender = std::thread::spawn(move || {
        send_frame(&client, 1, 1, b"small", &[]).expect("send");
        send_frame(&client, 1, 2, &big, &[]).expect("send");
        send_frame(&client, 1, 3, b"after", &[]).expect("send");
    });
    let mut receiver = Receiver::new();
    assert_eq!(receiver.recv(&service).expect("small").payload, b"small");
    let frame = receiver.recv(&service).expect("big");
    assert_eq!(frame.payload.len(), MAX_PAYLOAD);
    assert!(frame.payload.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert_eq!(receiver.recv(&service).expect("after").payload, b"after");
    assert!(receiver.buffer_len() <= HEADER_LEN + MAX_PAYLOAD);
    sender.join().expect("sender");
}

#[test]
fn bad_headers_are_refused_before_the_payload_is_allocated_and_close_their_descriptors() {
    let mut bad_magic = header(1, 1, 4);
    bad_magic[..4].copy_from_slice(b"GET ");
    let mut bad_version = header(1, 1, 4);
    bad_version[4..6].copy_from_slice(&(VERSION + 1).to_le_bytes());
    let mut long = header(1, 1, 0);
    long[12..16].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
    let mut huge = header(1, 1, 0);
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    for (bytes, what) in [
        (bad_magic, "magic"),
        (bad_version, "version"),
        (long, "MAX_PAYLOAD + 1"),
        (huge, "u32::MAX"),
    ] {
        let (client, service) = UnixStream::pair().expect("socketpair");
        let (file, name) = memfd("bad-header");
        send_raw(&client, &bytes, &[file.as_fd()]);
        let mut receiver = Receiver::new();
        let err = receiver.recv(&service).expect_err(what);
        let ok = match what {
            "magic" => matches!(err, WireError::BadMagic { found } if found == *b"GET "),
            "version" => matches!(
                err,
                WireError::VersionMismatch {
                    ours: VERSION,
                    theirs: 2
                }
            ),
            _ => matches!(
                err,
                WireError::PayloadTooLarge {
                    max: MAX_PAYLOAD,
                    ..
                }
            ),
        };
        assert!(ok, "{what}: {err:?}");
        assert!(
            receiver.buffer_len() <= READ_AHEAD,
            "{what}: room made for the payload"
        );
        assert!(!receiver.in_frame());
        assert_eq!(
            open_on(&name),
            1,
            "{what}: a received descriptor was left open"
        );
    }
}

#[test]
fn the_end_of_the_stream_is_closed_between_frames_and_truncated_inside_one() {
    // Between frames: PeerClosed, after a whole frame.
    let (client, service) = UnixStream::pair().expect("socketpair");
    send_frame(&client, 1, 1, b"whole", &[]).expect("send");
    drop(client);
    let mut receiver = Receiver::new();
    assert_eq!(receiver.recv(&service).expect("frame").payload, b"whole");
    let err = receiver.recv(&service).expect_err("closed");
    assert!(matches!(err, WireError::PeerClosed), "{err:?}");
    assert_eq!(err.errno(), libc::ECONNRESET);

    // Inside the header, and inside the payload.
    let frame = [&header(1, 1, 100)[..], &[7; 40]].concat();
    for (cut, want) in [(10, HEADER_LEN), (HEADER_LEN + 40, HEADER_LEN + 100)] {
        let (mut client, service) = UnixStream::pair().expect("socketpair");
        client.write_all(&frame[..cut]).expect("write");
        drop(client);
        let err = recv_frame(&service).expect_err("truncated");
        assert!(
            matches!(err, WireError::Truncated { got, want: w } if got == cut && w == want),
            "cut at {cut}: {err:?}"
        );
        assert_eq!(err.errno(), libc::EPROTO);
    }
}

#[test]
fn a_read_timeout_keeps_the_part_of_a_frame_read_and_resumes_it() {
    let (client, service) = UnixStream::pair().expect("socketpair");
    service
        .set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let (file, _) = memfd("resume");
    let frame = [&header(4, 77, 6)[..], b"resume"].concat();
    let mut receiver = Receiver::new();
    for (from, to) in [(0, 8), (8, HEADER_LEN + 2)] {
        if from == 0 {
            send_raw(&client, &frame[from..to], &[file.as_fd()]);
        } else {
            (&client).write_all(&frame[from..to]).expect("write");
        }
        let err = receiver.recv(&service).expect_err("blocks");
        assert!(
            matches!(err, WireError::WouldBlock { op: "receive", done } if done == to),
            "{err:?}"
        );
        assert!(receiver.in_frame());
    }
    (&client)
        .write_all(&frame[HEADER_LEN + 2..])
        .expect("write");
    let got = receiver.recv(&service).expect("the rest");
    assert_eq!((got.request_id(), &got.payload[..]), (77, &b"resume"[..]));
    assert_eq!(got.fds.len(), 1);
    assert!(same_file(&got.fds[0], &file));
    assert!(!receiver.in_frame());
}

#[test]
fn a_peer_that_never_reads_makes_a_timed_send_fail_instead_of_hang() {
    let (client, _service) = UnixStream::pair().expect("socketpair");
    client
        .set_write_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let payload = vec![0; MAX_PAYLOAD];
    for _ in 0..1000 {
        match send_frame(&client, 1, 1, &payload, &[]) {
            Ok(()) => continue,
            Err(WireError::WouldBlock { op: "send", .. }) => return,
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("1000 frames of 64 KiB fit in a socket buffer");
}

#[test]
fn a_send_to_a_closed_peer_is_an_error() {
    let (client, service) = UnixStream::pair().expect("socketpair");
    drop(service);
    let err = send_frame(&client, 1, 1, b"x", &[]).expect_err("closed");
    assert!(
        matches!(err, WireError::Io { op: "sendmsg", .. }),
        "{err:?}"
    );
    assert_eq!(err.errno(), libc::EPIPE);
}

#[test]
fn the_peer_of_a_socket_pair_is_this_process() {
    let (a, _b) = UnixStream::pair().expect("socketpair");
    assert_eq!(
        peer_credentials(&a).expect("SO_PEERCRED"),
        PeerCredentials {
            pid: Some(std::process::id()),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    );
}

const CONNECT_TO: &str = "DEVMAP_WIRE_CONNECT_TO";

/// In a child (`the_peer_of_a_connection_is_the_process_that_connected`): connects to the
/// socket named by the environment and waits for its standard input to close.
#[test]
#[ignore = "a child process of the_peer_of_a_connection_is_the_process_that_connected"]
fn child_connects_and_waits() {
    let Some(path) = std::env::var_os(CONNECT_TO) else {
        return;
    };
    let _stream = UnixStream::connect(path).expect("connect");
    let _ = std::io::stdin().read(&mut [0]);
}

#[test]
fn the_peer_of_a_connection_is_the_process_that_connected() {
    let path = TempPath::new("wire-peer");
    let listener = UnixListener::bind(&path.0).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "wire::socket_tests::child_connects_and_waits",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CONNECT_TO, &path.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        let exited = child.try_wait().expect("wait");
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child did not connect: {exited:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let creds = peer_credentials(&stream).expect("SO_PEERCRED");
    drop(child.stdin.take());
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert_eq!(creds.pid, Some(child.id()));
    assert_eq!(creds.uid, rustix::process::getuid().as_raw());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Arbitrary bytes written to a real socket in arbitrary pieces, then the socket closed:
    /// the receiver ends in a typed error.
    #[test]
    fn arbitrary_bytes_over_a_socket_end_in_a_typed_error(
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..20),
        start_valid in any::<bool>(),
    ) {
        let (mut client, service) = UnixStream::pair().expect("socketpair");
        let writer = std::thread::spawn(move || {
            if start_valid {
                // A good header declaring more than follows, so the pieces land in a payload.
                client.write_all(&header(1, 1, 500)).expect("write");
            }
            for piece in pieces {
                client.write_all(&piece).expect("write");
            }
        });
        let mut receiver = Receiver::new();
        let end = loop {
            match receiver.recv(&service) {
                Ok(frame) => prop_assert!(frame.payload.len() <= MAX_PAYLOAD),
                Err(e) => break e,
            }
        };
        writer.join().expect("writer");
        prop_assert!(
            !matches!(end, WireError::WouldBlock { .. } | WireError::Io { .. }),
            "{:?}", end
        );
    }
}
