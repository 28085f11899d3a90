//! Hostile clients against a running `devmap serve`: random bytes, truncated frames, lengths
//! near 2^32, payloads that do not decode, descriptors where none belong, a flood of
//! descriptors, a descriptor that is not a userfaultfd, and more clients than `--max-clients`.
//! Each must end in an error reply or a disconnect; afterwards the service still answers, never
//! panicked, and holds exactly the descriptors it held before. `DEVMAP_FUZZ_CASES` sets the
//! number of cases (CI runs a few hundred; 100000 by hand).

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devmap::client::Client;
use devmap::service::proto::{self, kind};
use devmap::wire::{Receiver, encode_payload, send_frame};

use common::devmap;

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn service(socket: &Path, region: &str, extra: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_devmap"))
        .args(["serve", "--socket"])
        .arg(socket)
        .args(["-r", region, "--enable", "vm0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn devmap serve");
    let mut out = child.stdout.take().expect("stdout");
    let mut ready = [0u8; 21];
    out.read_exact(&mut ready).expect("ready line");
    assert_eq!(&ready, b"devmap serve: ready o");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the service's fds")
        .count()
}

fn create(path: &str) {
    for args in [
        vec!["create-region", "--path", path, "--size", "128M"],
        vec![
            "create-namespace",
            "-r",
            path,
            "-s",
            "32M",
            "-a",
            "2M",
            "-n",
            "vm0",
        ],
    ] {
        let out = devmap(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const KINDS: [u16; 13] = [
    kind::LIST,
    kind::OPEN,
    kind::MAP,
    kind::UNMAP,
    kind::STATUS,
    kind::PIN,
    kind::UNPIN,
    kind::DISABLE,
    kind::CREATE_NAMESPACE,
    kind::DESTROY_NAMESPACE,
    kind::CHECK_NAMESPACE,
    kind::CLEAR_ERRORS,
    0x7777,
];

/// One hostile exchange; the connection is dropped at the end.
fn case(rng: &mut Rng, socket: &Path, nulls: &[OwnedFd]) {
    let Ok(s) = UnixStream::connect(socket) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let fds =
        |n: usize| -> Vec<BorrowedFd<'_>> { nulls.iter().take(n).map(|f| f.as_fd()).collect() };
    match rng.below(8) {
        // Random bytes.
        0 => {
            let n = rng.below(200) as usize;
            let _ = (&s).write_all(&rng.bytes(n));
        }
        // A valid header declaring a huge payload, then nothing.
        1 => {
            let mut h = Vec::from(*b"DVMP");
            h.extend_from_slice(&1u16.to_le_bytes());
            h.extend_from_slice(&kind::LIST.to_le_bytes());
            h.extend_from_slice(&1u32.to_le_bytes());
            h.extend_from_slice(&(u32::MAX - rng.below(16) as u32).to_le_bytes());
            let _ = (&s).write_all(&h);
        }
        // A known (or unknown) kind with a random payload: an error reply, and the connection
        // still serves a valid request afterwards.
        2 | 3 => {
            let k = KINDS[rng.below(KINDS.len() as u64) as usize];
            let n = rng.below(64) as usize;
            if send_frame(&s, k, 7, &rng.bytes(n), &[]).is_ok() {
                let mut rx = Receiver::new();
                if let Ok(f) = rx.recv(&s) {
                    assert_eq!(f.request_id(), 7);
                    let list = encode_payload(&proto::List {}).expect("list");
                    if send_frame(&s, kind::LIST, 8, &list, &[]).is_ok()
                        && let Ok(f) = rx.recv(&s)
                    {
                        assert_eq!((f.kind(), f.request_id()), (kind::NAMESPACES, 8));
                    }
                }
            }
        }
        // Descriptors where none belong (1 to 4).
        4 => {
            let list = encode_payload(&proto::List {}).expect("list");
            let n = 1 + rng.below(4) as usize;
            if send_frame(&s, kind::LIST, 9, &list, &fds(n)).is_ok() {
                let _ = Receiver::new().recv(&s);
            }
        }
        // A flood of descriptors on raw bytes (more than a frame may carry).
        5 => {
            let v = fds(nulls.len());
            let room = &mut [std::mem::MaybeUninit::<u8>::uninit(); 512];
            let mut control = rustix::net::SendAncillaryBuffer::new(room);
            let _ = control.push(rustix::net::SendAncillaryMessage::ScmRights(&v));
            let _ = rustix::net::sendmsg(
                &s,
                &[std::io::IoSlice::new(&rng.bytes(32))],
                &mut control,
                rustix::net::SendFlags::NOSIGNAL,
            );
        }
        // A map whose "userfaultfd" is /dev/null.
        6 => {
            let m = proto::Map {
                ns: 1,
                offset: 0,
                len: 2 << 20,
                base: 1 << 40,
                features: 1,
            };
            let p = encode_payload(&m).expect("map");
            if send_frame(&s, kind::MAP, 3, &p, &fds(1)).is_ok() {
                let _ = Receiver::new().recv(&s);
            }
        }
        // A frame cut short.
        _ => {
            let p = encode_payload(&proto::Open {
                region: String::new(),
                name: "vm0".into(),
            })
            .expect("open");
            let mut frame = devmap::wire::Header::new(kind::OPEN, 1, p.len())
                .expect("header")
                .encode()
                .to_vec();
            frame.extend_from_slice(&p);
            let cut = rng.below(frame.len() as u64) as usize;
            let _ = (&s).write_all(&frame[..cut]);
        }
    }
}

#[test]
fn hostile_clients_get_an_error_or_a_disconnect_and_leave_nothing_behind() {
    let region = PathBuf::from(format!("/dev/shm/devmap-fuzz-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&region);
    let region_s = region.to_str().expect("utf-8").to_owned();
    create(&region_s);
    let socket = std::env::temp_dir().join(format!("devmap-fuzz-{}.sock", std::process::id()));
    let mut served = service(&socket, &region_s, &[]);
    // One clean client first, so the service's own descriptors are all open.
    drop(
        Client::connect(&socket)
            .expect("connect")
            .list()
            .expect("list"),
    );
    std::thread::sleep(Duration::from_millis(50));
    let before = fd_count(served.id());

    let cases: u64 = std::env::var("DEVMAP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed = Instant::now().elapsed().as_nanos() as u64
        ^ 0x9E37_79B9_7F4A_7C15
        ^ u64::from(std::process::id());
    let mut rng = Rng(seed | 1);
    let nulls: Vec<OwnedFd> = (0..8)
        .map(|_| std::fs::File::open("/dev/null").expect("/dev/null").into())
        .collect();
    for _ in 0..cases {
        case(&mut rng, &socket, &nulls);
    }

    // Still serving, and back to the descriptors it had (sessions end as their sockets close).
    let c = Client::connect(&socket).expect("connect after the fuzz");
    assert_eq!(c.list().expect("list").len(), 1, "seed {seed:#x}");
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = fd_count(served.id());
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed:#x}: the service holds {now} descriptors, {before} before"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_child(&served);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let out = served.wait_with_output_stderr();
    assert!(out.0.success(), "seed {seed:#x}: {:?}", out.0);
    assert!(!out.1.contains("panicked"), "seed {seed:#x}: {}", out.1);
    let _ = std::fs::remove_file(&region);
}

#[test]
fn a_client_over_max_clients_is_refused_with_the_limit() {
    let region = PathBuf::from(format!("/dev/shm/devmap-max-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&region);
    let region_s = region.to_str().expect("utf-8").to_owned();
    create(&region_s);
    let socket = std::env::temp_dir().join(format!("devmap-max-{}.sock", std::process::id()));
    let mut served = service(&socket, &region_s, &["--max-clients", "2"]);
    let a = Client::connect(&socket).expect("first");
    let b = Client::connect(&socket).expect("second");
    a.list().expect("first lists");
    b.list().expect("second lists");
    let c = Client::connect(&socket).expect("the third connects");
    let e = c.list().expect_err("the third is refused");
    assert!(e.to_string().contains("already has 2 clients"), "{e}");
    drop((a, b, c));
    let _ = served.kill();
    let _ = served.wait();
    let _ = std::fs::remove_file(&region);
}

/// The exit status and the stderr of a child whose stdout was taken.
trait WaitStderr {
    fn wait_with_output_stderr(&mut self) -> (std::process::ExitStatus, String);
}

impl WaitStderr for Child {
    fn wait_with_output_stderr(&mut self) -> (std::process::ExitStatus, String) {
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (self.wait().expect("wait"), err)
    }
}
