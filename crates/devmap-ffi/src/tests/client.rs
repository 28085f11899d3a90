//! The client ABI (`devmap_client_*`) against a real `devmap serve`: the `devmap` binary of
//! this build (`target/<profile>/devmap`, beside this test's `deps/` folder; `DEVMAP_BIN`
//! overrides it), serving a region file on tmpfs (`/dev/shm`) over a temporary socket. The
//! binary is not built by `cargo test -p devmap-ffi`: a test fails, saying how to build it, if
//! it is missing (`cargo test --workspace` builds it before running any test).

use std::ffi::{CStr, CString};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::ptr;

use crate::*;

const MIB: u64 = 1 << 20;

/// This thread's last error message.
fn last_error() -> String {
    // SAFETY: devmap_last_error returns a NUL-terminated string valid until the next failing
    // call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(devmap_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts `rc` is 0, with the message if not.
fn ok(rc: i32) {
    assert_eq!(rc, 0, "failed: {}", last_error());
}

/// Asserts `rc` is `-errno` and the message holds `want`.
fn refused(rc: i32, errno: i32, want: &str) {
    assert_eq!(rc, -errno, "wanted -{errno}: {}", last_error());
    assert!(
        last_error().contains(want),
        "{:?} lacks {want:?}",
        last_error()
    );
}

/// The `devmap` binary: `DEVMAP_BIN`, else the one beside this test binary's `deps/` folder.
fn devmap_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("DEVMAP_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("this test's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .join("devmap");
    assert!(
        bin.is_file(),
        "{} does not exist: these tests run a real `devmap serve`. Build it first with \
         `cargo build -p devmap-cli` (same profile as this test), or set DEVMAP_BIN to a devmap \
         binary",
        bin.display()
    );
    bin
}

/// Runs `devmap` with `args`, which must succeed.
fn devmap(args: &[&str]) {
    let out = Command::new(devmap_bin())
        .args(args)
        .output()
        .expect("run devmap");
    assert!(
        out.status.success(),
        "devmap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A region file on tmpfs holding namespace `vm0` (64 MiB at 2 MiB), served by `devmap serve`
/// on a socket of its own; the service is killed and the files removed if the test ends
/// without stopping it.
struct Served {
    child: Child,
    out: BufReader<ChildStdout>,
    region: PathBuf,
    socket: CString,
}

impl Served {
    fn start(tag: &str) -> Served {
        let pid = std::process::id();
        let region = PathBuf::from(format!("/dev/shm/devmap-ffi-{tag}-{pid}.img"));
        let socket = std::env::temp_dir().join(format!("devmap-ffi-{tag}-{pid}.sock"));
        let _ = std::fs::remove_file(&region);
        let r = region.to_str().expect("utf-8 path");
        devmap(&["create-region", "--path", r, "--size", "128M"]);
        devmap(&[
            "create-namespace",
            "-r",
            r,
            "-s",
            "64M",
            "-a",
            "2M",
            "-n",
            "vm0",
        ]);
        let mut child = Command::new(devmap_bin())
            .args(["serve", "--socket"])
            .arg(&socket)
            .args(["-r", r, "--enable", "vm0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn devmap serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut ready = String::new();
        out.read_line(&mut ready).expect("the ready line");
        assert!(ready.starts_with("devmap serve: ready on"), "{ready:?}");
        Served {
            child,
            out,
            region,
            socket: CString::new(socket.into_os_string().into_encoded_bytes()).expect("no NUL"),
        }
    }

    /// SIGTERM, then the exit, which must be 0 after a clean disable.
    fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with the pid of a child this test spawned and has not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "signal the service");
        let mut last = String::new();
        self.out.read_line(&mut last).expect("the last line");
        let status = self.child.wait().expect("wait for the service");
        assert!(status.success(), "{status:?}: {last}");
        assert!(last.contains("disabled cleanly: vm0"), "{last}");
    }

    /// A connection to the service.
    fn connect(&self) -> *mut devmap_client {
        let mut c = ptr::null_mut();
        // SAFETY: the socket is a C string, `c` a local.
        ok(unsafe { devmap_client_connect(self.socket.as_ptr(), &mut c) });
        c
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.region);
    }
}

/// The service's status JSON through `devmap_client_status`, grown to fit (it may grow
/// between two calls: each call asks the service again).
fn status(c: *const devmap_client) -> String {
    let mut need = 0usize;
    // SAFETY: `c` is live; with cap 0 `out` may be NULL; `need` is a local.
    let rc = unsafe { devmap_client_status(c, ptr::null_mut(), 0, &mut need) };
    assert_eq!(rc, -libc::ENOSPC, "{}", last_error());
    loop {
        let mut buf = vec![0 as std::ffi::c_char; need];
        // SAFETY: `buf` holds `need` entries; `need` is a local.
        match unsafe { devmap_client_status(c, buf.as_mut_ptr(), buf.len(), &mut need) } {
            0 => {
                // SAFETY: the library wrote a NUL-terminated string into `buf`.
                return unsafe { CStr::from_ptr(buf.as_ptr()) }
                    .to_str()
                    .expect("UTF-8 JSON")
                    .to_owned();
            }
            rc => assert_eq!(rc, -libc::ENOSPC, "{}", last_error()),
        }
    }
}

#[test]
fn two_connections_share_bytes_pin_with_extents_and_free_in_any_order() {
    let served = Served::start("share");
    let (a, b) = (served.connect(), served.connect());
    // SAFETY: every handle is live until freed below, never used after; out pointers are
    // locals; the bytes written and read lie inside the mappings.
    unsafe {
        let (mut ns_a, mut ns_b) = (ptr::null_mut(), ptr::null_mut());
        ok(devmap_client_open(
            a,
            ptr::null(),
            c"vm0".as_ptr(),
            &mut ns_a,
        ));
        ok(devmap_client_open(
            b,
            c"".as_ptr(),
            c"vm0".as_ptr(),
            &mut ns_b,
        ));
        // The served namespaces: one, in region 0, whose path the service names.
        let mut n = 0usize;
        refused(
            devmap_client_list(a, ptr::null_mut(), 0, &mut n),
            libc::ENOSPC,
            "",
        );
        assert_eq!(n, 1);
        let mut list = [devmap_client_ns_entry::default(); 2];
        ok(devmap_client_list(a, list.as_mut_ptr(), 2, &mut n));
        assert_eq!(n, 1);
        let vm0 = &list[0];
        assert_eq!(CStr::from_ptr(vm0.name.as_ptr()).to_str(), Ok("vm0"));
        assert_eq!(CStr::from_ptr(vm0.mode.as_ptr()).to_str(), Ok("devdax"));
        assert!(
            vm0.enabled && vm0.region == 0 && vm0.align == 2 * MIB,
            "{vm0:?}"
        );
        let mut path = [0 as std::ffi::c_char; 4096];
        ok(devmap_client_region_path(
            a,
            0,
            path.as_mut_ptr(),
            path.len(),
            &mut n,
        ));
        assert_eq!(
            CStr::from_ptr(path.as_ptr()).to_str().map(PathBuf::from),
            Ok(served.region.clone())
        );
        assert_eq!(n, served.region.as_os_str().len() + 1);
        refused(
            devmap_client_region_path(a, 1, path.as_mut_ptr(), path.len(), &mut n),
            libc::ENOENT,
            "region 1 is not one of them",
        );
        let mut info = devmap_client_ns_info::default();
        ok(devmap_client_ns_get_info(ns_a, &mut info));
        assert_eq!(info.align, 2 * MIB);
        assert!(info.size > 60 * MIB && info.size <= 64 * MIB, "{info:?}");
        assert!(info.caught, "a region on tmpfs has its touches caught");

        let (mut map_a, mut addr_a, mut len_a) = (ptr::null_mut(), ptr::null_mut(), 0u64);
        ok(devmap_client_map(
            ns_a,
            0,
            8 * MIB,
            &mut map_a,
            &mut addr_a,
            &mut len_a,
        ));
        assert_eq!(len_a, 8 * MIB);
        assert_eq!(
            addr_a as usize % (2 * MIB) as usize,
            0,
            "aligned to the align"
        );
        let mut map_b = ptr::null_mut();
        let mut addr_b = ptr::null_mut();
        ok(devmap_client_map(
            ns_b,
            2 * MIB,
            2 * MIB,
            &mut map_b,
            &mut addr_b,
            ptr::null_mut(),
        ));
        // A writes into its second leaf; B's window starts there and reads it back.
        let greeting = b"hello through the service";
        let at = addr_a.cast::<u8>().add((2 * MIB + 100) as usize);
        ptr::copy_nonoverlapping(greeting.as_ptr(), at, greeting.len());
        let got = std::slice::from_raw_parts(addr_b.cast::<u8>().add(100), greeting.len());
        assert_eq!(got, greeting);

        // 4 MiB from 1 MiB in: three leaves, one extent (the namespace is contiguous).
        let from = addr_a.cast::<u8>().add(MIB as usize).cast();
        let mut pins = ptr::null_mut();
        ok(devmap_client_pin(
            map_a,
            from,
            1024,
            DEVMAP_PIN_WRITE,
            true,
            &mut pins,
        ));
        let mut nr = 0;
        ok(devmap_client_pins_nr_pages(pins, &mut nr));
        assert_eq!(nr, 1024);
        let mut fast = -1;
        ok(devmap_client_pins_is_fast(pins, &mut fast));
        assert_eq!(fast, 0, "leaves 0 and 2 were never touched: by request");
        let mut n = 0usize;
        refused(
            devmap_client_pins_extents(pins, ptr::null_mut(), 0, &mut n),
            libc::ENOSPC,
            "call again with a larger one",
        );
        assert_eq!(n, 1);
        let mut e = [devmap_extent::default(); 2];
        ok(devmap_client_pins_extents(pins, e.as_mut_ptr(), 2, &mut n));
        assert_eq!(n, 1);
        assert_eq!(
            (e[0].addr, e[0].offset, e[0].len),
            (from as usize, MIB, 4 * MIB)
        );
        assert!(e[0].pfn > 0);
        let s = status(a);
        assert!(s.contains("\"pins\": 1,"), "{s}");
        assert!(s.contains(&std::process::id().to_string()), "{s}");

        // Handles go in any order: the connection first, then the namespace, the mapping,
        // and last the pins, which still reach the service through the connection they hold.
        devmap_client_free(a);
        devmap_client_ns_free(ns_a);
        devmap_client_mapping_free(map_a);
        ok(devmap_client_unpin(pins, true));
        assert!(status(b).contains("\"pins\": 0,"), "{}", status(b));
        devmap_client_mapping_free(map_b);
        devmap_client_ns_free(ns_b);
        devmap_client_free(b);
    }
    served.stop();
}

#[test]
fn refusals_are_negative_errnos_with_the_reason() {
    // SAFETY: the path is a C string, the out pointer a local.
    unsafe {
        let mut c = ptr::null_mut();
        refused(
            devmap_client_connect(c"/nonexistent/devmap.sock".as_ptr(), &mut c),
            libc::ENOENT,
            "is `devmap serve --socket /nonexistent/devmap.sock` running?",
        );
        assert!(c.is_null(), "a failed connect stored a handle");
        refused(
            devmap_client_connect(ptr::null(), &mut c),
            libc::EFAULT,
            "socket is NULL",
        );
    }
    let served = Served::start("refuse");
    let c = served.connect();
    // SAFETY: every handle is live until freed below; out pointers are locals.
    unsafe {
        let mut ns = ptr::null_mut();
        refused(
            devmap_client_open(c, ptr::null(), c"nope".as_ptr(), &mut ns),
            libc::ENOENT,
            "no served region has a namespace \"nope\"",
        );
        refused(
            devmap_client_open(c, ptr::null(), ptr::null(), &mut ns),
            libc::EFAULT,
            "name is NULL",
        );
        refused(
            devmap_client_open(c, ptr::null(), c"vm0".as_ptr(), ptr::null_mut()),
            libc::EFAULT,
            "out is NULL",
        );
        assert!(ns.is_null());
        ok(devmap_client_open(c, ptr::null(), c"vm0".as_ptr(), &mut ns));
        let mut map = ptr::null_mut();
        let (mut addr, mut len) = (ptr::null_mut(), 0);
        refused(
            devmap_client_map(ns, MIB, 2 * MIB, &mut map, &mut addr, &mut len),
            libc::EINVAL,
            "offset",
        );
        refused(
            devmap_client_map(ns, 0, 2 * MIB, ptr::null_mut(), &mut addr, &mut len),
            libc::EFAULT,
            "out_map is NULL",
        );
        ok(devmap_client_map(
            ns,
            0,
            2 * MIB,
            &mut map,
            &mut addr,
            &mut len,
        ));
        let mut pins = ptr::null_mut();
        refused(
            devmap_client_pin(
                map,
                addr.cast::<u8>().add((2 * MIB) as usize).cast(),
                1,
                0,
                false,
                &mut pins,
            ),
            libc::EFAULT,
            "not inside this mapping",
        );
        refused(
            devmap_client_pin(map, addr, 1, 1 << 9, false, &mut pins),
            libc::EINVAL,
            "not DEVMAP_PIN_*",
        );
        assert!(pins.is_null());
        refused(
            devmap_client_pins_nr_pages(ptr::null(), &mut 0),
            libc::EFAULT,
            "pins is NULL",
        );
        refused(
            devmap_client_unpin(ptr::null_mut(), false),
            libc::EFAULT,
            "",
        );
        let mut info = devmap_client_ns_info::default();
        refused(
            devmap_client_ns_get_info(ptr::null(), &mut info),
            libc::EFAULT,
            "ns is NULL",
        );
        // NULL is ignored by every freeing function.
        devmap_client_free(ptr::null_mut());
        devmap_client_ns_free(ptr::null_mut());
        devmap_client_mapping_free(ptr::null_mut());

        // Pins taken page by page; then the service stops under them: the next request is
        // refused with the connection's errno, and freeing everything afterwards is safe.
        ok(devmap_client_pin(map, addr, 16, 0, false, &mut pins));
        let mut nr = 0;
        ok(devmap_client_pins_nr_pages(pins, &mut nr));
        assert_eq!(nr, 16);
        served.stop();
        let mut more = ptr::null_mut();
        let rc = devmap_client_pin(map, addr, 1, 0, false, &mut more);
        assert!(
            rc < 0 && more.is_null(),
            "a pin after the service stopped: {rc}"
        );
        assert!(devmap_client_unpin(pins, false) < 0, "the service is gone");
        devmap_client_mapping_free(map);
        devmap_client_ns_free(ns);
        devmap_client_free(c);
    }
}

/// Notices reach C: a memory error injected through `devmap_client_inject_error` is told as
/// `DEVMAP_NOTICE_MEMORY_LOST` at this process's address; a forced `devmap_client_disable` (a
/// plain one is refused naming this process) as a pin dropped and a mapping revoked, each naming the handle `devmap_client_*_handle` gives; a small
/// buffer takes them a few at a time and keeps the rest.
#[test]
fn notices_name_their_handles_and_a_small_buffer_keeps_the_rest() {
    let served = Served::start("notices");
    let c = served.connect();
    // SAFETY: every handle is live until freed below, never used after; out pointers are
    // locals; the bytes written lie inside the mapping.
    unsafe {
        let mut ns = ptr::null_mut();
        ok(devmap_client_open(c, ptr::null(), c"vm0".as_ptr(), &mut ns));
        let (mut map, mut addr) = (ptr::null_mut(), ptr::null_mut());
        ok(devmap_client_map(
            ns,
            0,
            4 * MIB,
            &mut map,
            &mut addr,
            ptr::null_mut(),
        ));
        let base = addr as u64;
        addr.cast::<u8>().add((3 * MIB) as usize).write_volatile(7);
        let mut pins = ptr::null_mut();
        ok(devmap_client_pin(map, addr, 16, 0, false, &mut pins));
        let (mut map_handle, mut pins_handle) = (0u32, 0u32);
        ok(devmap_client_mapping_handle(map, &mut map_handle));
        ok(devmap_client_pins_handle(pins, &mut pins_handle));

        let mut done = devmap_injected::default();
        ok(devmap_client_inject_error(
            c,
            ptr::null(),
            c"vm0".as_ptr(),
            3 * MIB,
            1,
            &mut done,
        ));
        assert_eq!((done.pages, done.revoked, done.told), (1, 1, 1), "{done:?}");
        // An error this process met, reported by address: the same, at its own page.
        let mut met = devmap_injected::default();
        ok(devmap_client_report_error(
            map,
            addr.cast::<u8>().add((3 * MIB + 8192) as usize).cast(),
            &mut met,
        ));
        assert_eq!((met.pages, met.revoked, met.told), (1, 1, 1), "{met:?}");
        refused(
            devmap_client_report_error(
                map,
                addr.cast::<u8>().add((4 * MIB) as usize).cast(),
                ptr::null_mut(),
            ),
            libc::EFAULT,
            "",
        );
        refused(
            devmap_client_inject_error(
                c,
                ptr::null(),
                c"vm0".as_ptr(),
                3 * MIB + 1,
                1,
                ptr::null_mut(),
            ),
            libc::EINVAL,
            "4 KiB-aligned offset",
        );
        refused(
            devmap_client_disable(c, ptr::null(), c"vm0".as_ptr(), false),
            libc::EBUSY,
            &std::process::id().to_string(),
        );
        ok(devmap_client_disable(c, ptr::null(), c"vm0".as_ptr(), true));

        let mut got = Vec::new();
        loop {
            let mut one = [devmap_notice::default(); 1];
            let mut n = 0usize;
            ok(devmap_client_notices(c, one.as_mut_ptr(), 1, &mut n));
            if n == 0 {
                break;
            }
            got.push(one[0]);
        }
        let want = [
            (DEVMAP_NOTICE_MEMORY_LOST, map_handle, base + 3 * MIB, 4096),
            (
                DEVMAP_NOTICE_MEMORY_LOST,
                map_handle,
                base + 3 * MIB + 8192,
                4096,
            ),
            (DEVMAP_NOTICE_PIN_DROPPED, pins_handle, 0, 16 * 4096),
            (DEVMAP_NOTICE_MAPPING_REVOKED, map_handle, base, 4 * MIB),
        ];
        let seen: Vec<_> = got
            .iter()
            .map(|n| (n.what, n.handle, n.addr, n.len))
            .collect();
        assert_eq!(seen, want);
        ok(devmap_client_unpin(pins, false));
        devmap_client_mapping_free(map);
        devmap_client_ns_free(ns);
        let c2 = served.connect();
        devmap_client_free(c);
        let mut warm = false;
        ok(devmap_client_enable(
            c2,
            c"".as_ptr(),
            c"vm0".as_ptr(),
            &mut warm,
        ));
        assert!(warm, "the forced disable was clean");
        devmap_client_free(c2);
    }
    served.stop();
}
