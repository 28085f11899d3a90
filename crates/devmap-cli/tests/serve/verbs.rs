//! The ndctl verbs through a running service (`--socket`), with real processes: namespaces of
//! a region created, enabled, mapped and destroyed while another is mapped; a destroy of an
//! enabled namespace refused; errors injected and cleared; checks; management refused to a
//! client of another uid; several regions numbered in the service's order.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use devmap::client::Client;
use serde_json::Value;

use super::common::devmap;
use super::{CHILD, CHILD_NS, LOST, Served, ShmRegion, client_of, create, mapping_pids};

/// The JSON object a verb that must succeed prints.
fn object(args: &[&str]) -> Value {
    let out = devmap(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The top-level keys of a printed JSON object, in the order printed.
fn keys(printed: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(printed)
        .lines()
        .filter_map(|l| l.strip_prefix("  \""))
        .filter_map(|l| l.split_once('"').map(|(k, _)| k.to_owned()))
        .collect()
}

/// The stderr of a verb that must fail.
fn refused(args: &[&str]) -> String {
    let out = devmap(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A socket path for `tag`.
fn socket_for(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("devmap-{tag}-{}.sock", std::process::id()))
}

/// Tells a client started with [`client_of`] to end, and checks that it ended well.
fn finish(mut c: std::process::Child) {
    c.stdin.take().expect("stdin").write_all(b"\n").expect("go");
    let status = c.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

/// Runs a client child of `role` on `ns` to its end (its stdin closed at once).
fn run_client(role: &str, socket: &Path, ns: &str) -> Output {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "serve_child",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(CHILD, format!("{role}:{}", socket.display()))
        .env(CHILD_NS, ns)
        .stdin(Stdio::null())
        .output()
        .expect("run a client")
}

/// While a client maps vm0, vm1 is created through the service, enabled, and shared by two
/// more clients; its destroy is refused while it is enabled (EBUSY, the reason and the pids
/// named), and once it is disabled the service destroys it. vm0's client never noticed.
#[test]
fn namespaces_are_created_and_destroyed_through_the_service_while_another_is_mapped() {
    let region = ShmRegion::new("verbs-create");
    create(&region);
    let socket = socket_for("verbs-create");
    let s = socket.to_str().expect("utf-8");
    let (served, _) = Served::start(&socket, &region, "vm0");
    let (a, _, _) = client_of("writer", &socket, "vm0");

    let r = region.arg();
    let create = ["create-namespace", "-s", "32M", "-n", "vm1", "-r"];
    let out = devmap(&[&create[..], &[r, "--socket", s]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(made["name"], "vm1", "{made}");
    assert_eq!(made["dev"], "namespace0.1", "{made}");
    assert_eq!(
        made["daxregion"]["devices"][0]["chardev"], "dax0.1",
        "{made}"
    );
    assert_eq!(made["raw_size"].as_u64(), Some(32 << 20), "{made}");
    assert_eq!(made["service"], s, "{made}");
    // The in-process verb's object, field for field and in its order, then the socket. (A
    // region the service does not serve is changed in-process, the socket notwithstanding.)
    let scratch = ShmRegion::new("verbs-create-alone");
    super::create(&scratch);
    let alone = devmap(&[&create[..], &[scratch.arg(), "--socket", s]].concat());
    assert!(alone.status.success(), "{alone:?}");
    assert!(!String::from_utf8_lossy(&alone.stdout).contains("service"));
    let mut want = keys(&alone.stdout);
    want.push("service".into());
    assert_eq!(keys(&out.stdout), want);
    // Without the service, the region is the service's: the in-process verb says so.
    let err = refused(&["create-namespace", "-r", r, "-s", "4M", "-n", "no"]);
    assert!(err.contains("managed by another process"), "{err}");

    let e = object(&["enable-namespace", "-r", r, "vm1", "--socket", s]);
    assert_eq!(e["enable_path"], "cold", "{e}");
    let (b, _, _) = client_of("writer", &socket, "vm1");
    let (c, _, _) = client_of("reader", &socket, "vm1");
    let status = served.status();
    let on = |name: &str| -> Vec<u64> {
        let ns = status["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {status}"));
        let mut pids: Vec<u64> = ns["mappings"]
            .as_array()
            .expect("mappings")
            .iter()
            .map(|m| m["pid"].as_u64().expect("pid"))
            .collect();
        pids.sort_unstable();
        pids
    };
    assert_eq!(on("vm0"), vec![u64::from(a.id())]);
    let mut want = vec![u64::from(b.id()), u64::from(c.id())];
    want.sort_unstable();
    assert_eq!(on("vm1"), want);

    // Enabled, it is not destroyed, forced or not.
    for force in [false, true] {
        let mut args = vec!["destroy-namespace", "-r", r, "vm1", "--socket", s];
        if force {
            args.push("--force");
        }
        let err = refused(&args);
        assert!(
            err.contains("is enabled by this service") && err.contains("disable it first"),
            "{err}"
        );
        assert!(err.contains(&b.id().to_string()), "{err}");
    }
    let lib = Client::connect(&socket).expect("connect");
    let e = lib
        .destroy_namespace(None, "vm1", false)
        .expect_err("enabled");
    assert_eq!(e.errno(), rustix::io::Errno::BUSY.raw_os_error(), "{e}");
    drop(lib);

    finish(b);
    finish(c);
    let d = object(&["disable-namespace", "-r", r, "vm1", "--socket", s]);
    assert_eq!(d["disabled"], true, "{d}");
    let out = devmap(&["destroy-namespace", "-r", r, "namespace0.1", "--socket", s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("destroyed 1 namespace: vm1 in {r}")
    );
    let names: Vec<String> = Client::connect(&socket)
        .expect("connect")
        .list()
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["vm0".to_string()]);
    // vm0's client still maps it, and its bytes are there for a reader.
    assert_eq!(mapping_pids(&served.status()), vec![u64::from(a.id())]);
    let (reader, _, _) = client_of("reader", &socket, "vm0");
    finish(reader);
    finish(a);
    let (exit, last) = served.stop(rustix::process::Signal::TERM);
    assert!(
        exit.success() && last.contains("disabled cleanly: vm0"),
        "{last}"
    );
}

/// An error injected into a served namespace is cleared through the service, page by page:
/// one while the namespace is enabled (through its device: a client mapping from then on
/// reads the page), one once it is disabled (in its list); `list -M` shows none left.
#[test]
fn errors_are_cleared_through_the_service_enabled_or_not() {
    let region = ShmRegion::new("verbs-clear");
    create(&region);
    let socket = socket_for("verbs-clear");
    let s = socket.to_str().expect("utf-8");
    let r = region.arg();
    let (served, _) = Served::start(&socket, &region, "vm0");
    let lost = LOST.to_string();
    let injected = object(&[
        "inject-error",
        "-r",
        r,
        "vm0",
        "--offset",
        &lost,
        "-n",
        "2",
        "--socket",
        s,
    ]);
    assert_eq!(injected["pages"].as_u64(), Some(2), "{injected}");
    let listed = super::common::json(&["list", "--socket", s, "-M"]);
    assert_eq!(listed[0]["badblock_count"].as_u64(), Some(16), "{listed:?}");
    // A client touching the lost page dies of it.
    let out = run_client("lost-reader", &socket, "vm0");
    assert_eq!(out.status.signal(), Some(7), "SIGBUS: {out:?}");

    let out = devmap(&[
        "clear-errors",
        "-r",
        r,
        "vm0",
        "-o",
        &lost,
        "-l",
        "4K",
        "--socket",
        s,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "cleared 1 bad page(s) of namespace vm0 (1 left)"
    );
    let listed = super::common::json(&["list", "--socket", s, "-M"]);
    assert_eq!(listed[0]["badblock_count"].as_u64(), Some(8), "{listed:?}");
    let out = run_client("lost-reader", &socket, "vm0");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("lost-reader ok at"),
        "the cleared page reads again: {out:?}"
    );

    // Disabled: the service clears the list.
    let d = object(&["disable-namespace", "-r", r, "vm0", "--socket", s]);
    assert_eq!(d["disabled"], true, "{d}");
    let next = (LOST + 4096).to_string();
    let cleared = object(&[
        "clear-errors",
        "-r",
        r,
        "vm0",
        "-o",
        &next,
        "-l",
        "4K",
        "--socket",
        s,
        "--json",
    ]);
    assert!(cleared.get("badblock_count").is_none(), "{cleared}");
    assert_eq!(cleared["service"], s, "{cleared}");
    let listed = super::common::json(&["list", "--socket", s, "-M"]);
    assert!(listed[0].get("badblock_count").is_none(), "{listed:?}");
    // A range off a page is refused before the service is asked.
    let err = refused(&["clear-errors", "-r", r, "vm0", "-o", "3K", "--socket", s]);
    assert!(err.contains("not a multiple of 4K"), "{err}");
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// `check-namespace --socket`: the service checks an enabled namespace (enabled by it), a
/// disabled one (clean) and one never enabled, and prints them as the in-process verb does.
#[test]
fn namespaces_are_checked_through_the_service() {
    let region = ShmRegion::new("verbs-check");
    create(&region);
    let socket = socket_for("verbs-check");
    let s = socket.to_str().expect("utf-8");
    let r = region.arg();
    let (served, _) = Served::start(&socket, &region, "vm0");
    let pid = served.child.id();
    let c = object(&["check-namespace", "-r", r, "vm0", "--socket", s]);
    assert_eq!(
        c["enable_state"],
        format!("enabled by process {pid}"),
        "{c}"
    );
    assert_eq!(
        (c["ok"].as_bool(), c["clean"].as_bool()),
        (Some(true), Some(false)),
        "{c}"
    );
    assert_eq!(c["dev"], "namespace0.0", "{c}");
    assert_eq!(c["service"], s, "{c}");
    object(&[
        "create-namespace",
        "-r",
        r,
        "-s",
        "16M",
        "-n",
        "vm1",
        "--socket",
        s,
    ]);
    let c = object(&["check-namespace", "-r", r, "vm1", "--socket", s]);
    assert_eq!(c["enable_state"], "never enabled", "{c}");
    object(&["disable-namespace", "-r", r, "vm0", "--socket", s]);
    let c = object(&["check-namespace", "-r", r, "namespace0.0", "--socket", s]);
    assert_eq!(c["enable_state"], "clean", "{c}");
    assert_eq!(c["memmap_layout"], "heads", "{c}");
    let err = refused(&["check-namespace", "-r", r, "nope", "--socket", s]);
    assert!(err.contains("the namespaces of region"), "{err}");
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// Management is for root and the service's own uid: a client of another uid (nobody) is
/// refused EACCES, with the reason, and the region is left as it was.
#[test]
fn a_client_of_another_uid_may_not_manage_namespaces() {
    let region = ShmRegion::new("verbs-uid");
    create(&region);
    let socket = socket_for("verbs-uid");
    let s = socket.to_str().expect("utf-8");
    let (served, _) = Served::start(&socket, &region, "vm0");
    // nobody, in group root so that it may use the socket (mode 0660, root's).
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "serve_child",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(CHILD, format!("creator:{s}"))
        .uid(65534)
        .gid(0)
        .output()
        .expect("run a client as nobody");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("creator refused 13"), "{said}");
    assert!(
        said.contains("uid 65534 may not create a namespace"),
        "{said}"
    );
    for args in [
        vec![
            "create-namespace",
            "-r",
            region.arg(),
            "-s",
            "4M",
            "-n",
            "x",
        ],
        vec!["destroy-namespace", "-r", region.arg(), "vm0", "--force"],
        vec!["disable-namespace", "-r", region.arg(), "vm0", "--force"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_devmap"))
            .args(&args)
            .args(["--socket", s])
            .uid(65534)
            .gid(0)
            .output()
            .expect("run devmap as nobody");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("uid 65534 may not"), "{args:?}: {err}");
    }
    let names: Vec<(String, bool)> = Client::connect(&socket)
        .expect("connect")
        .list()
        .expect("list")
        .into_iter()
        .map(|e| (e.name, e.enabled))
        .collect();
    assert_eq!(names, vec![("vm0".to_string(), true)]);
    let (exit, _) = served.stop(rustix::process::Signal::TERM);
    assert!(exit.success());
}

/// Two regions served: `list` numbers them region0 and region1 in the service's `-r` order,
/// across restarts, their namespaces `namespace0.N` and `namespace1.N` (`dax0.N`, `dax1.N`);
/// a verb on the second names its namespace `namespace1.N`; in-process, each is `region0`.
#[test]
fn several_regions_are_numbered_in_the_services_order() {
    let (first, second) = (ShmRegion::new("verbs-r0"), ShmRegion::new("verbs-r1"));
    create(&first);
    create(&second);
    let socket = socket_for("verbs-regions");
    let s = socket.to_str().expect("utf-8");
    let devs = || -> Vec<(String, String, String)> {
        let rows = super::common::json(&["list", "-R", "-N", "--socket", s]);
        rows.iter()
            .flat_map(|region| {
                region["namespaces"]
                    .as_array()
                    .expect("nested namespaces")
                    .iter()
                    .map(|ns| {
                        (
                            region["dev"].as_str().expect("dev").to_owned(),
                            ns["dev"].as_str().expect("dev").to_owned(),
                            ns["chardev"].as_str().expect("chardev").to_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let want = vec![
        ("region0".into(), "namespace0.0".into(), "dax0.0".into()),
        ("region1".into(), "namespace1.0".into(), "dax1.0".into()),
    ];
    for _run in 0..2 {
        let (served, _) = Served::start_regions(&socket, &[&first, &second], "");
        assert_eq!(devs(), want);
        // The second region's vm0 by its dev, through the service.
        let e = object(&[
            "enable-namespace",
            "-r",
            second.arg(),
            "namespace1.0",
            "--socket",
            s,
        ]);
        assert_eq!(
            (e["name"].as_str(), e["dev"].as_str()),
            (Some("vm0"), Some("namespace1.0"))
        );
        let listed = super::common::json(&["list", "-r", second.arg(), "--socket", s]);
        assert_eq!(listed[0]["dev"], "namespace1.0", "{listed:?}");
        assert_eq!(listed[0]["enabled"], true, "{listed:?}");
        let (exit, _) = served.stop(rustix::process::Signal::TERM);
        assert!(exit.success());
    }
    // In-process, a region file alone is region0.
    let listed = super::common::json(&["list", "-r", second.arg()]);
    assert_eq!(listed[0]["dev"], "namespace0.0", "{listed:?}");
    assert!(listed[0].get("enabled").is_none(), "{listed:?}");
}
