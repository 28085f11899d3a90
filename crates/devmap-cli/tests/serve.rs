//! `devmap serve` with real client processes: the service runs as the `devmap` binary on a
//! temporary socket, and each client is this test binary run again as a child (the ignored
//! `serve_child` test, told its role in `DEVMAP_SERVE_CHILD`), using the library's client.
//! Region files live on tmpfs (`/dev/shm`), where the service resolves the clients' touches.
//! The ndctl verbs through the service (create, destroy, check, clear errors; several regions)
//! are tested in `serve/verbs.rs`.

mod common;
#[path = "serve/verbs.rs"]
mod verbs;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use devmap::client::Client;
use devmap::service::proto;
use serde_json::Value;

use common::devmap;

const CHILD: &str = "DEVMAP_SERVE_CHILD";
/// The namespace a client child opens (`vm0` without it).
const CHILD_NS: &str = "DEVMAP_SERVE_NS";
const MIB: u64 = 1 << 20;
/// Where client A writes: in the second 2 MiB leaf.
const AT: u64 = 3 * MIB + 5;
const GREETING: &[u8] = b"hello from client A";
/// The page `inject-error` poisons: in the second leaf, which every victim touched.
const LOST: u64 = 3 * MIB + 8192;

/// A client process's half: connects, opens vm0 (or the namespace `DEVMAP_SERVE_NS` names),
/// maps its first 8 MiB and then, by role, writes the greeting (`writer`) or reads it back
/// (`reader`); prints what it did and its mapping's address, then waits for a line on stdin
/// before it exits (0), unmapping first.
#[test]
#[ignore = "the client half of the serve tests, which run it as a child process"]
fn serve_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (role, socket) = spec.split_once(':').expect("role:socket");
    let client = Client::connect(socket).expect("connect");
    let name = std::env::var(CHILD_NS).unwrap_or_else(|_| "vm0".into());
    if role == "creator" {
        // Only whether this process (of another uid) may create a namespace.
        let asked = proto::CreateNamespace {
            region: String::new(),
            name: "mine".into(),
            size: 4 * MIB,
            align: 2 * MIB,
            mode: "devdax".into(),
            map: "mem".into(),
            uid: 0,
            gid: 0,
            perm: 0o600,
        };
        match client.create_namespace(&asked) {
            Ok(c) => println!("creator allowed {}", c.name),
            Err(e) => println!("creator refused {} {e}", e.errno()),
        }
        return;
    }
    if role == "opener" {
        // Only whether this process (of another uid) may open vm0.
        match client.open(None, "vm0") {
            Ok(_) => println!("opener allowed"),
            Err(e) => println!("opener refused {} {e}", e.errno()),
        }
        return;
    }
    let ns = client.open(None, &name).expect("open the namespace");
    assert!(ns.caught(), "a region on tmpfs has its touches caught");
    let m = ns.map(0, 8 * MIB).expect("map");
    match role {
        "writer" => m.bytes().write(AT, GREETING).expect("write"),
        "reader" => {
            let mut got = vec![0u8; GREETING.len()];
            m.bytes().read(AT, &mut got).expect("read");
            assert_eq!(got, GREETING, "the reader sees the writer's bytes");
        }
        "toucher" => {}
        "lost-reader" => {
            // The page `inject-error` poisons, and its neighbour, read back.
            let mut b = [0u8; 2];
            m.bytes()
                .read(LOST - 1, &mut b)
                .expect("read across the page");
        }
        "victim" => {
            // Every page of the second leaf touched; after the go, what it was told, then the
            // neighbour of the lost page, then the lost page itself (SIGBUS).
            for page in 0..512u64 {
                m.bytes().write(2 * MIB + page * 4096, &[7]).expect("touch");
            }
            println!("victim ok at {:#x}", m.addr());
            std::io::stdout().flush().expect("flush");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            for n in client.notices().expect("notices") {
                println!("notice {} {} {:#x} {}", n.what, n.handle, n.addr, n.len);
            }
            let mut b = [0u8];
            m.bytes().read(LOST - 4096, &mut b).expect("the neighbour");
            assert_eq!(b, [7]);
            println!("neighbour ok");
            std::io::stdout().flush().expect("flush");
            let _ = m.bytes().read(LOST, &mut b);
            println!("the lost page read back");
            std::process::exit(3);
        }
        "churner" => {
            // Maps, touches, pins and unmaps until killed, at a random point of any of them.
            let mut i: u64 = u64::from(std::process::id());
            loop {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let leaf = (i >> 33) % 4;
                let m2 = ns.map(0, 8 * MIB).expect("map");
                m2.bytes()
                    .write(leaf * 2 * MIB + 64, b"churn")
                    .expect("touch");
                let p = m2
                    .pin(
                        m2.addr() + (leaf * 2 * MIB) as usize,
                        512,
                        devmap::GupFlags::WRITE,
                        true,
                    )
                    .expect("pin");
                if i & 1 == 0 {
                    p.unpin(false).expect("unpin");
                }
                drop(m2);
            }
        }
        "forker" => {
            // A child that holds this client's socket after the client is gone.
            let sleeper = inherit_sockets_to_a_sleeper();
            println!("forker ok at {:#x} sleeper {sleeper}", m.addr());
            std::io::stdout().flush().expect("flush");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            return;
        }
        other => panic!("unknown role {other}"),
    }
    println!("{role} ok at {:#x}", m.addr());
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    if role == "toucher" {
        // A leaf nobody touched yet, after the service is gone: SIGBUS, never a wait.
        let _ = m.bytes().write(5 * MIB, b"after the service");
        println!("the touch returned");
        std::process::exit(3);
    }
    drop(m);
}

/// Clears close-on-exec on every socket of this process and starts `sleep`, which inherits
/// them; returns its pid.
fn inherit_sockets_to_a_sleeper() -> u32 {
    for entry in std::fs::read_dir("/proc/self/fd").expect("fds").flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if link.to_string_lossy().starts_with("socket:") {
            // SAFETY: `raw` is open (just listed) and stays open for this call: this thread
            // closes nothing meanwhile, and the borrow ends with the statement.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).expect("clear cloexec");
        }
    }
    Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sleep")
        .id()
}

/// A region file on tmpfs, removed when dropped.
struct ShmRegion(PathBuf);

impl ShmRegion {
    fn new(tag: &str) -> ShmRegion {
        let path = PathBuf::from(format!("/dev/shm/devmap-{tag}-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        ShmRegion(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running `devmap serve`, killed if the test ends without stopping it.
struct Served {
    child: Child,
    out: BufReader<ChildStdout>,
    socket: PathBuf,
}

impl Served {
    /// Starts the service and waits for its ready line.
    fn start(socket: &Path, region: &ShmRegion, enable: &str) -> (Served, String) {
        Served::start_regions(socket, &[region], enable)
    }

    /// Starts the service on `regions`, in that order, and waits for its ready line.
    fn start_regions(socket: &Path, regions: &[&ShmRegion], enable: &str) -> (Served, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_devmap"))
            .args(["serve", "--socket"])
            .arg(socket)
            .args(regions.iter().flat_map(|r| ["-r", r.arg()]))
            .args(if enable.is_empty() {
                vec![]
            } else {
                vec!["--enable", enable]
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn devmap serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut ready = String::new();
        out.read_line(&mut ready).expect("ready line");
        assert!(ready.starts_with("devmap serve: ready on"), "{ready:?}");
        (
            Served {
                child,
                out,
                socket: socket.to_path_buf(),
            },
            ready,
        )
    }

    /// Sends `signal` and waits for the exit: the status and the last line printed.
    fn stop(mut self, signal: rustix::process::Signal) -> (std::process::ExitStatus, String) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signal the service");
        let mut last = String::new();
        self.out.read_line(&mut last).expect("read the last line");
        let status = self.child.wait().expect("wait");
        (status, last)
    }

    fn status(&self) -> Value {
        let out = devmap(&["status", "--socket", self.socket.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client process, started with its role; its first line says what it did.
fn client(role: &str, socket: &Path) -> (Child, String) {
    let (child, line, _) = client_lines(role, socket);
    (child, line)
}

/// As [`client`], and the lines it prints after the first, as they come.
fn client_lines(role: &str, socket: &Path) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    client_of(role, socket, "vm0")
}

/// As [`client_lines`], for the namespace `ns`.
fn client_of(
    role: &str,
    socket: &Path,
    ns: &str,
) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "serve_child",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(CHILD, format!("{role}:{}", socket.display()))
        .env(CHILD_NS, ns)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a client");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains(" ok at ") {
        line.clear();
        if out.read_line(&mut line).expect("client output") == 0 {
            panic!("the {role} client ended without saying it mapped");
        }
    }
    // The rest of its output is forwarded (or drained, once nobody listens), so it never
    // writes to a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { break };
            let _ = tx.send(l);
        }
    });
    (child, line, rx)
}

/// `n` "victim" client processes, each with the address its mapping starts at (from its ready
/// line) and the lines it prints after.
fn victims(n: usize, socket: &Path) -> Vec<(Child, u64, std::sync::mpsc::Receiver<String>)> {
    (0..n)
        .map(|_| {
            let (c, line, rx) = client_lines("victim", socket);
            let addr = u64::from_str_radix(line.trim().rsplit("0x").next().expect("addr"), 16)
                .expect("hex");
            (c, addr, rx)
        })
        .collect()
}

/// The pids of the mappings of the first namespace in a status.
fn mapping_pids(status: &Value) -> Vec<u64> {
    let mut pids: Vec<u64> = status["namespaces"][0]["mappings"]
        .as_array()
        .expect("mappings")
        .iter()
        .map(|m| m["pid"].as_u64().expect("pid"))
        .collect();
    pids.sort_unstable();
    pids
}

fn create(region: &ShmRegion) {
    for args in [
        vec!["create-region", "--path", region.arg(), "--size", "256M"],
        vec![
            "create-namespace",
            "-r",
            region.arg(),
            "-s",
            "64M",
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

#[test]
fn client_processes_share_bytes_lose_their_mappings_when_killed_and_a_restart_is_warm() {
    let region = ShmRegion::new("serve");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-serve-{}.sock", std::process::id()));
    let (served, ready) = Served::start(&socket, &region, "vm0");
    assert!(ready.contains("vm0 (cold)"), "{ready}");

    // A writes through its mapping; B, another process, reads it through its own. Both
    // first touches are caught in the clients and resolved by the service.
    let (mut a, a_line) = client("writer", &socket);
    let (mut b, b_line) = client("reader", &socket);
    let status = served.status();
    let want = {
        let mut p = vec![u64::from(a.id()), u64::from(b.id())];
        p.sort_unstable();
        p
    };
    assert_eq!(mapping_pids(&status), want, "{status}");
    let clients: Vec<u64> = status["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["pid"].as_u64().expect("pid"))
        .collect();
    for pid in &want {
        assert!(clients.contains(pid), "client {pid} missing from {status}");
    }
    let ns = &status["namespaces"][0];
    assert!(ns["client_faults"].as_u64() >= Some(2), "{ns}");
    assert_eq!(ns["sigbus"].as_u64(), Some(0), "{ns}");
    // Each mapping is reported at the address its client printed.
    for (line, pid) in [(&a_line, a.id()), (&b_line, b.id())] {
        let addr = u64::from_str_radix(line.trim().rsplit("0x").next().expect("address"), 16)
            .expect("hex address");
        let m = ns["mappings"]
            .as_array()
            .expect("mappings")
            .iter()
            .find(|m| m["pid"].as_u64() == Some(u64::from(pid)))
            .expect("the client's mapping");
        assert_eq!(m["addr"].as_u64(), Some(addr), "{m}");
    }

    // A killed client loses its mapping: the service sees its socket close.
    a.kill().expect("kill A");
    a.wait().expect("reap A");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if mapping_pids(&served.status()) == vec![u64::from(b.id())] {
            break;
        }
        assert!(Instant::now() < deadline, "A's mapping outlived A");
        std::thread::sleep(Duration::from_millis(10));
    }

    // B ends cleanly (it unmaps first).
    b.stdin
        .take()
        .expect("stdin")
        .write_all(b"\n")
        .expect("tell B");
    assert!(b.wait().expect("reap B").success());
    assert!(mapping_pids(&served.status()).is_empty());

    // SIGTERM disables cleanly; the next start adopts the memmap (warm) and finds A's bytes.
    let (exit, last) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success(), "{exit:?}: {last}");
    assert!(
        last.contains("SIGTERM") && last.contains("disabled cleanly: vm0"),
        "{last}"
    );
    assert!(!socket.exists(), "the socket file is removed");
    let (served, ready) = Served::start(&socket, &region, "vm0");
    assert!(ready.contains("vm0 (warm)"), "{ready}");
    let (mut r, _) = client("reader", &socket);
    r.stdin
        .take()
        .expect("stdin")
        .write_all(b"\n")
        .expect("tell the reader");
    assert!(r.wait().expect("reap").success());
    let (exit, last) = served.stop(rustix::process::Signal::INT);
    assert!(exit.success() && last.contains("SIGINT"), "{last}");
}

#[test]
fn requests_the_service_cannot_serve_are_refused_with_their_reason() {
    let region = ShmRegion::new("serve-refuse");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-refuse-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let c = Client::connect(&socket).expect("connect");
    let names: Vec<String> = c
        .list()
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["vm0".to_string()]);
    let e = c.open(None, "nope").expect_err("no such namespace");
    assert_eq!(e.errno(), rustix::io::Errno::NOENT.raw_os_error(), "{e}");
    assert!(
        e.to_string()
            .contains("no served region has a namespace \"nope\""),
        "{e}"
    );
    let ns = c.open(None, "vm0").expect("open");
    let e = ns.map(MIB, 2 * MIB).expect_err("unaligned offset");
    assert!(e.to_string().contains("offset"), "{e}");
    // A disable while a client maps and pins it names the client; --force takes the mapping
    // and the pins, and the client is told which.
    let m = ns.map(0, 2 * MIB).expect("map");
    let pins = m
        .pin(m.addr(), 16, devmap::GupFlags::NONE, false)
        .expect("pin");
    let e = c.disable(None, "vm0", false).expect_err("in use");
    assert!(
        e.to_string().contains(&std::process::id().to_string()),
        "{e}"
    );
    assert!(c.notices().expect("notices").is_empty());
    c.disable(None, "vm0", true).expect("forced disable");
    let told: Vec<(u8, u32, u64, u64)> = c
        .notices()
        .expect("notices")
        .iter()
        .map(|n| (n.what, n.handle, n.addr, n.len))
        .collect();
    assert_eq!(
        told,
        vec![
            (proto::notice::PIN_DROPPED, pins.handle(), 0, 16 * 4096),
            (
                proto::notice::MAPPING_REVOKED,
                m.handle(),
                m.addr() as u64,
                2 * MIB
            ),
        ]
    );
    drop(pins);
    drop(m);
    assert!(
        c.enable(None, "vm0").expect("enable again"),
        "a clean disable: warm"
    );
    // A second service on the same socket is refused while the first answers.
    let out = devmap(&[
        "serve",
        "--socket",
        socket.to_str().expect("utf-8"),
        "-r",
        region.arg(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("socket of a running service"), "{err}");
    drop(c);
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// The service dies (SIGKILL) with a client attached: the client's next touch of a leaf the
/// service never mapped gets SIGBUS at once instead of waiting forever for an answer.
#[test]
fn a_touch_after_the_service_died_is_sigbus_never_a_hang() {
    use std::os::unix::process::ExitStatusExt;
    let region = ShmRegion::new("serve-died");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-died-{}.sock", std::process::id()));
    let (mut served, _) = Served::start(&socket, &region, "vm0");
    let (mut t, _) = client("toucher", &socket);
    served.child.kill().expect("SIGKILL the service");
    served.child.wait().expect("reap the service");
    t.stdin
        .take()
        .expect("stdin")
        .write_all(b"\n")
        .expect("tell it to touch");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = t.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the touch hangs");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(7), "SIGBUS, got {status:?}");
}

/// Pins by client address: the service pins inside the client's own mapping and answers with
/// the extents to register; status counts them; a disable names the pinning pid.
#[test]
fn pins_from_a_client_carry_their_extents_and_hold_the_namespace() {
    let region = ShmRegion::new("serve-pins");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-pins-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let c = Client::connect(&socket).expect("connect");
    let ns = c.open(None, "vm0").expect("open");
    let m = ns.map(0, 8 * MIB).expect("map");
    let from = m.addr() + MIB as usize;
    let pins = m
        .pin(from, (4 * MIB) / 4096, devmap::GupFlags::WRITE, true)
        .expect("pin 4 MiB across three leaves");
    assert_eq!(pins.nr_pages(), 1024);
    let e = pins.extents();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].addr, e[0].offset, e[0].len),
        (from as u64, MIB, 4 * MIB)
    );
    let status = served.status();
    let ns_status = &status["namespaces"][0];
    assert_eq!(ns_status["pins"].as_u64(), Some(1), "{ns_status}");
    assert_eq!(
        ns_status["pinned_bytes"].as_u64(),
        Some(4 * MIB),
        "{ns_status}"
    );
    // A pin outside the client's mapping, and unknown flags, are refused.
    let e = m
        .pin(
            m.addr() + (8 * MIB) as usize,
            1,
            devmap::GupFlags::NONE,
            false,
        )
        .expect_err("outside the mapping");
    assert!(e.to_string().contains("not inside this mapping"), "{e}");
    // While pinned, a disable names this process.
    let e = c.disable(None, "vm0", false).expect_err("pinned");
    assert!(
        e.to_string().contains(&std::process::id().to_string()),
        "{e}"
    );
    pins.unpin(true).expect("unpin");
    assert_eq!(served.status()["namespaces"][0]["pins"].as_u64(), Some(0));
    drop(m);
    drop(ns);
    drop(c);
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// Fast pins (DESIGN §9.5): a pin of leaves the client has touched is taken in the client with
/// no request and names the same pfns a request would; status counts it; a leaf not yet
/// touched or with a poisoned page goes by request; a forced disable revokes the fast pins
/// with a notice, and no fast pin succeeds after it.
#[test]
fn fast_pins_in_the_client_name_the_same_pfns_and_end_with_the_mapping() {
    let region = ShmRegion::new("serve-fast");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-fast-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let c = Client::connect(&socket).expect("connect");
    let ns = c.open(None, "vm0").expect("open");
    let m = ns.map(0, 8 * MIB).expect("map");
    for leaf in 0..3 {
        m.bytes().write(leaf * 2 * MIB, &[1]).expect("touch");
    }
    let from = m.addr() + MIB as usize;
    let fast = m
        .pin(from, (4 * MIB) / 4096, devmap::GupFlags::WRITE, true)
        .expect("pin 4 MiB across three touched leaves");
    assert!(fast.is_fast(), "every leaf was touched: no request");
    assert_eq!(fast.handle(), 0);
    let asked = m
        .pin_by_request(from, (4 * MIB) / 4096, devmap::GupFlags::WRITE, true)
        .expect("the same pin by request");
    assert_eq!(fast.extents(), asked.extents(), "the same pfns either way");
    asked.unpin(false).expect("unpin");
    let status = served.status();
    let ns_status = &status["namespaces"][0];
    assert_eq!(ns_status["fast_pins"].as_u64(), Some(1), "{ns_status}");
    assert_eq!(ns_status["fast_pinned_bytes"].as_u64(), Some(4 * MIB));
    assert_eq!(ns_status["mappings"][0]["fast_pins"].as_u64(), Some(1));
    assert_eq!(
        ns_status["pins"].as_u64(),
        Some(0),
        "no pin by request left"
    );
    let me = &status["clients"][0];
    assert_eq!(me["pid"].as_u64(), Some(u64::from(std::process::id())));
    assert_eq!(me["namespaces"], serde_json::json!(["vm0"]), "{me}");
    assert_eq!(me["mapped_bytes"].as_u64(), Some(8 * MIB), "{me}");
    assert_eq!(me["fast_pinned_bytes"].as_u64(), Some(4 * MIB), "{me}");

    // Leaf 3 was never touched: by request, which faults it in; then it is fast.
    let p = m
        .pin(
            m.addr() + (6 * MIB) as usize,
            1,
            devmap::GupFlags::NONE,
            false,
        )
        .expect("pin an untouched leaf");
    assert!(!p.is_fast());
    p.unpin(false).expect("unpin");
    let p = m
        .pin(
            m.addr() + (6 * MIB) as usize,
            1,
            devmap::GupFlags::NONE,
            false,
        )
        .expect("pin it again");
    assert!(p.is_fast(), "faulted by the request");
    p.unpin(false).expect("unpin");

    // A poisoned page takes its leaf out of the fast path; the request refuses it.
    c.inject_error(None, "vm0", 2 * MIB + 8192, 1)
        .expect("inject an error in leaf 1");
    let e = m
        .pin(
            m.addr() + (2 * MIB) as usize,
            1,
            devmap::GupFlags::NONE,
            false,
        )
        .expect_err("leaf 1 has a poisoned page");
    assert!(e.to_string().contains("poison"), "{e}");
    let p = m
        .pin(m.addr(), 1, devmap::GupFlags::NONE, false)
        .expect("leaf 0 is clean");
    assert!(p.is_fast());
    p.unpin(false).expect("unpin");

    // A forced disable revokes the fast pins, tells the client, and none succeeds after.
    let _ = c.notices().expect("the memory-lost notice");
    c.disable(None, "vm0", true).expect("forced disable");
    let told: Vec<(u8, u32, u64, u64)> = c
        .notices()
        .expect("notices")
        .iter()
        .map(|n| (n.what, n.handle, n.addr, n.len))
        .collect();
    assert_eq!(
        told,
        vec![
            (proto::notice::PIN_DROPPED, 0, m.addr() as u64, 4 * MIB),
            (
                proto::notice::MAPPING_REVOKED,
                m.handle(),
                m.addr() as u64,
                8 * MIB
            ),
        ]
    );
    let e = m
        .pin(m.addr(), 1, devmap::GupFlags::NONE, false)
        .expect_err("revoked");
    assert_eq!(e.errno(), rustix::io::Errno::BADF.raw_os_error(), "{e}");
    fast.unpin(false)
        .expect("a fast unpin after the revocation is harmless");
    drop(m);
    drop(ns);
    drop(c);
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// A memory error a client met (its SIGBUS, reported with `Mapping::report_memory_error`)
/// reaches every client that maps the page, as `inject-error` does: each loses that 4 KiB and
/// is told at its own address, the reporter too.
#[test]
fn a_memory_error_a_client_reports_reaches_every_client() {
    use std::os::unix::process::ExitStatusExt;
    let region = ShmRegion::new("serve-report");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-report-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let victims = victims(3, &socket);
    let c = Client::connect(&socket).expect("connect");
    let ns = c.open(None, "vm0").expect("open");
    let m = ns.map(0, 8 * MIB).expect("map");
    m.bytes().write(LOST, &[1]).expect("touch the page");
    let done = m
        .report_memory_error(m.addr() + LOST as usize + 100)
        .expect("report");
    assert_eq!((done.pages, done.revoked, done.told), (1, 4, 4), "{done:?}");
    let mine: Vec<(u8, u32, u64, u64)> = c
        .notices()
        .expect("notices")
        .iter()
        .map(|n| (n.what, n.handle, n.addr, n.len))
        .collect();
    assert_eq!(
        mine,
        vec![(
            proto::notice::MEMORY_LOST,
            m.handle(),
            m.addr() as u64 + LOST,
            4096
        )]
    );
    // An address outside the mapping is refused with the reason.
    let e = m
        .report_memory_error(m.addr() + (8 * MIB) as usize)
        .expect_err("outside");
    assert!(e.to_string().contains("not"), "{e}");
    for (mut v, addr, lines) in victims {
        v.stdin.take().expect("stdin").write_all(b"\n").expect("go");
        let status = v.wait().expect("wait");
        let text: Vec<String> = lines.iter().collect();
        assert!(
            text.iter()
                .any(|l| l.starts_with("notice 3 ")
                    && l.ends_with(&format!("{:#x} 4096", addr + LOST))),
            "told at its own address: {text:?}"
        );
        assert!(text.iter().any(|l| l == "neighbour ok"), "{text:?}");
        assert_eq!(
            status.signal(),
            Some(7),
            "SIGBUS at the lost page: {status:?}"
        );
    }
    drop(m);
    drop(ns);
    drop(c);
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// `client-test` measures a client of a running service: every figure is there and the
/// touches it timed were resolved by the service.
#[test]
fn client_test_measures_a_running_service() {
    let region = ShmRegion::new("serve-bench");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-bench-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let s = socket.to_str().expect("utf-8");
    let rows = common::json(&[
        "client-test",
        "--socket",
        s,
        "--leaves",
        "4",
        "--pins",
        "20",
        "--json",
    ]);
    let row = &rows[0];
    assert_eq!(common::field(row, "leaves"), 4);
    for f in [
        "connect_open_map_ns",
        "touch_p50_ns",
        "kernel_touch_p50_ns",
        "pin_p50_ns",
        "request_pin_p50_ns",
        "local_pin_p50_ns",
        "range_pin_ns",
    ] {
        assert!(common::field(row, f) > 0, "{f} in {row}");
    }
    assert_eq!(row["pins_fast"], true, "the touched leaves pin fast: {row}");
    let status = served.status();
    let ns = &status["namespaces"][0];
    assert!(ns["client_faults"].as_u64() >= Some(4));
    let (p50, p99) = (ns["resolve_p50_ns"].as_u64(), ns["resolve_p99_ns"].as_u64());
    assert!(p50 > Some(0) && p99 >= p50, "resolve percentiles: {ns}");
    // The same figures for Prometheus.
    let out = devmap(&["status", "--socket", s, "--prometheus"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# TYPE devmap_namespace_client_faults_total counter"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("devmap_namespace_client_faults_total{"))
        .expect("the faults line");
    assert!(
        line.contains(&format!("region=\"{}\",name=\"vm0\"", region.arg())),
        "{line}"
    );
    let faults: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(faults >= 4.0, "{line}");
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// A client touching from two threads at once gets a second fault handler in the service (the
/// first one, busy with a fault, starts it), which `status` counts, in JSON and for
/// Prometheus; once the client has gone, its handlers are stopped and the count is 0.
#[test]
fn a_client_touching_from_two_threads_gets_a_second_handler() {
    let region = ShmRegion::new("serve-handlers");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-handlers-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let s = socket.to_str().expect("utf-8");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(served.status()["client_fault_handlers"], 0, "no client yet");
    let mut client = Command::new(env!("CARGO_BIN_EXE_devmap"))
        .args([
            "client-test",
            "--socket",
            s,
            "--leaves",
            "8",
            "--threads",
            "2",
            "--pins",
            "1",
            "--json",
            "--in-step",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client-test");
    let mut stdin = client.stdin.take().expect("stdin");
    let mut stderr = BufReader::new(client.stderr.take().expect("stderr"));
    let mut wait_for = |phase: &str| {
        let mut line = String::new();
        stderr.read_line(&mut line).expect("client-test's stderr");
        assert_eq!(line.trim(), format!("ready {phase}"));
    };
    wait_for("served");
    assert_eq!(
        served.status()["client_fault_handlers"],
        1,
        "one handler waits for a mapped client that has not touched"
    );
    stdin.write_all(b"\n").expect("go");
    wait_for("kernel");
    // The client still maps the namespace: its handlers are there.
    let status = served.status();
    let handlers = status["client_fault_handlers"].as_u64().expect("a count") as usize;
    assert!(
        (2.min(cores)..=cores).contains(&handlers),
        "{handlers} handlers for two touching threads on {cores} cores: {status}"
    );
    let out = devmap(&["status", "--socket", s, "--prometheus"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("devmap_client_fault_handlers {handlers}")),
        "{text}"
    );
    stdin.write_all(b"\n").expect("go");
    drop(stdin);
    let out = client.wait_with_output().expect("client-test");
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.status()["client_fault_handlers"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the gone client's handlers were not stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// A client whose socket a forked child still holds: the service sees the client's process
/// exit through its pidfd and drops its mapping, though the socket stays open.
#[test]
fn a_client_is_gone_when_its_process_exits_though_a_child_holds_its_socket() {
    let region = ShmRegion::new("serve-pidfd");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-pidfd-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let (mut f, line) = client("forker", &socket);
    let sleeper: i32 = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the sleeper's pid");
    assert_eq!(mapping_pids(&served.status()), vec![u64::from(f.id())]);
    f.kill().expect("kill the client");
    f.wait().expect("reap it");
    let deadline = Instant::now() + Duration::from_secs(3);
    let gone = loop {
        if mapping_pids(&served.status()).is_empty() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(pid) = rustix::process::Pid::from_raw(sleeper) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    assert!(
        gone,
        "the mapping outlived its client while a child held the socket"
    );
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// Opening is checked against the client's credentials and the namespace's owner, as a
/// `/dev/dax` node's mode is: a client of another uid is refused EACCES until the namespace is
/// given to it.
#[test]
fn a_client_of_another_uid_may_open_only_what_it_owns() {
    use std::os::unix::process::CommandExt;
    let region = ShmRegion::new("serve-owner");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-owner-{}.sock", std::process::id()));
    let open_as_nobody = |socket: &Path| -> String {
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "serve_child",
                "--ignored",
                "--nocapture",
                "--quiet",
            ])
            .env(CHILD, format!("opener:{}", socket.display()))
            // nobody, in group root so that it may use the socket (mode 0660, root's).
            .uid(65534)
            .gid(0)
            .output()
            .expect("run a client as nobody");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("opener "),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    {
        let (served, _) = Served::start(&socket, &region, "vm0");
        let said = open_as_nobody(&socket);
        assert!(said.contains("opener refused 13"), "{said}");
        assert!(
            said.contains("uid 65534 may not open namespace \"vm0\""),
            "{said}"
        );
        let (exit, _) = served.stop(rustix::process::Signal::TERM);
        assert!(exit.success());
    }
    let mut r = devmap::namespace::Region::open(&region.0, devmap::namespace::Access::Manage)
        .expect("open the region");
    r.set_owner(
        "vm0",
        devmap::namespace::Owner {
            uid: 65534,
            gid: 0,
            mode: 0o600,
        },
    )
    .expect("give vm0 to nobody");
    drop(r);
    let (served, _) = Served::start(&socket, &region, "vm0");
    let said = open_as_nobody(&socket);
    assert!(said.contains("opener allowed"), "{said}");
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// The ndctl verbs through the service: `list` without `-r` lists the service's regions with
/// what it has enabled, and `enable-namespace` / `disable-namespace --socket` have the service
/// enable and disable (the second enable warm).
#[test]
fn list_enable_and_disable_work_through_the_service() {
    let region = ShmRegion::new("serve-verbs");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-verbs-{}.sock", std::process::id()));
    let (served, ready) = Served::start(&socket, &region, "");
    assert!(ready.contains("enabled: none"), "{ready}");
    let s = socket.to_str().expect("utf-8");
    let listed = |want: bool| {
        let out = Command::new(env!("CARGO_BIN_EXE_devmap"))
            .args(["list"])
            .env("DEVMAP_SOCKET", s)
            .output()
            .expect("list");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v[0]["name"], "vm0", "{v}");
        assert_eq!(v[0]["enabled"], want, "{v}");
        assert_eq!(v[0]["path"], region.arg(), "{v}");
    };
    listed(false);
    let verb = |args: &[&str]| -> Value {
        let out = devmap(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let e = verb(&["enable-namespace", "-r", region.arg(), "vm0", "--socket", s]);
    assert_eq!(e["enable_path"], "cold", "{e}");
    listed(true);
    let d = verb(&[
        "disable-namespace",
        "-r",
        region.arg(),
        "vm0",
        "--socket",
        s,
    ]);
    assert_eq!(d["disabled"], true, "{d}");
    listed(false);
    let e = verb(&["enable-namespace", "-r", region.arg(), "vm0", "--socket", s]);
    assert_eq!(e["enable_path"], "warm", "{e}");
    // Without the service, the region is the service's: the verb says so.
    let out = devmap(&["enable-namespace", "-r", region.arg(), "vm0"]);
    assert!(!out.status.success());
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// Leases: clients killed with SIGKILL at random points of map, touch, pin and unmap leave
/// nothing behind (no client, mapping or pin; the service's descriptors back to the first
/// round's count, its RSS within 1 MiB of the first round's), and the namespace then disables
/// cleanly and enables warm. `DEVMAP_LEASE_ROUNDS` and `DEVMAP_LEASE_CLIENTS` size it
/// (CI: 8 rounds of 8; by hand, 1000 of 64).
#[test]
fn clients_killed_at_random_points_leave_nothing_behind() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (rounds, clients) = (
        env("DEVMAP_LEASE_ROUNDS", 4),
        env("DEVMAP_LEASE_CLIENTS", 8),
    );
    let region = ShmRegion::new("serve-lease");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-lease-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let pid = served.child.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .count()
    };
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .expect("VmRSS")
    };
    let idle = |round: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = served.status();
            let ns = &st["namespaces"][0];
            let quiet = st["clients"].as_array().is_some_and(|c| c.len() <= 1)
                && ns["mappings"].as_array().is_some_and(Vec::is_empty)
                && ns["pins"].as_u64() == Some(0);
            if quiet {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: left behind: {st}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut base: Option<(usize, u64)> = None;
    for round in 0..rounds {
        let kids: Vec<Child> = (0..clients)
            .map(|_| {
                Command::new(std::env::current_exe().expect("test binary"))
                    .args(["--exact", "serve_child", "--ignored", "--quiet"])
                    .env(CHILD, format!("churner:{}", socket.display()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn a churner")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + (round * 37) % 150));
        for mut k in kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        idle(round);
        // The status's own session closes its socket and pidfd, and the service, idle again,
        // gives its freed heap back, just after `idle` returns: the descriptors are read
        // until they come back to the first round's count (in the first round, until two
        // reads 50 ms apart agree), and the RSS after that.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = fds();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let again = fds();
            let back = match base {
                Some((f, _)) => again == f,
                None => again == seen,
            };
            seen = again;
            if back || Instant::now() > deadline {
                break;
            }
        }
        let now = (seen, rss_kib());
        if std::env::var_os("DEVMAP_LEASE_VERBOSE").is_some() {
            eprintln!("round {round}: {} descriptors, RSS {} KiB", now.0, now.1);
        }
        // Round `DEVMAP_LEASE_WARM` (the first, unless set) is the baseline: every later
        // round has its descriptors and an RSS within 1 MiB of its.
        let warm = env("DEVMAP_LEASE_WARM", 0);
        if round < warm {
            continue;
        }
        match base {
            Some((f, rss)) => {
                assert_eq!(now.0, f, "round {round}: descriptors");
                assert!(
                    now.1 <= rss + 1024,
                    "round {round}: RSS {} KiB, round {warm}'s {rss} KiB",
                    now.1
                );
            }
            None => base = Some(now),
        }
    }
    let s = socket.to_str().expect("utf-8");
    let c = Client::connect(&socket).expect("connect");
    c.disable(None, "vm0", false)
        .expect("a clean disable, nothing held");
    assert!(c.enable(None, "vm0").expect("enable"), "warm");
    drop(c);
    let _ = s;
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// Memory failure across processes (`inject-error` against a served namespace): four clients
/// map the page, one of them stopped; each loses exactly that 4 KiB (its neighbour reads back),
/// is told its own address (the stopped one once it runs again), and dies of SIGBUS touching
/// the lost page; the page is in the namespace's badblocks.
#[test]
fn a_memory_error_reaches_every_client_process_even_a_stopped_one() {
    use std::os::unix::process::ExitStatusExt;
    let region = ShmRegion::new("serve-mf");
    create(&region);
    let socket = std::env::temp_dir().join(format!("devmap-mf-{}.sock", std::process::id()));
    let (served, _) = Served::start(&socket, &region, "vm0");
    let victims = victims(4, &socket);
    let stopped = rustix::process::Pid::from_child(&victims[0].0);
    rustix::process::kill_process(stopped, rustix::process::Signal::STOP).expect("SIGSTOP");
    let out = devmap(&[
        "inject-error",
        "-r",
        region.arg(),
        "vm0",
        "--offset",
        &LOST.to_string(),
        "--socket",
        socket.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (done["pages"].as_u64(), done["mappings_revoked"].as_u64()),
        (Some(1), Some(4)),
        "{done}"
    );
    assert_eq!(done["owners_told"].as_u64(), Some(4), "{done}");
    rustix::process::kill_process(stopped, rustix::process::Signal::CONT).expect("SIGCONT");
    for (mut c, addr, lines) in victims {
        c.stdin.take().expect("stdin").write_all(b"\n").expect("go");
        let status = c.wait().expect("wait");
        let text: Vec<String> = lines.iter().collect();
        let told = text
            .iter()
            .find(|l| l.starts_with("notice 3 "))
            .unwrap_or_else(|| panic!("not told: {text:?}"));
        assert!(
            told.ends_with(&format!("{:#x} 4096", addr + LOST)),
            "{told}"
        );
        assert!(text.iter().any(|l| l == "neighbour ok"), "{text:?}");
        assert!(!text.iter().any(|l| l.contains("read back")), "{text:?}");
        assert_eq!(
            status.signal(),
            Some(7),
            "SIGBUS at the lost page: {status:?}"
        );
    }
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
    let listed = common::json(&["list", "-r", region.arg(), "-M"]);
    assert_eq!(listed[0]["badblock_count"].as_u64(), Some(8), "{listed:?}");
}
