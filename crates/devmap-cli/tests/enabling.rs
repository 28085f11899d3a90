//! `enable-namespace` and `disable-namespace` through the command line: the first enable of a
//! `--map dev` namespace is cold and leaves a memmap on the device that the next one adopts
//! (warm, nothing initialised); a namespace a live process holds cannot be disabled from
//! another; one left enabled by a process killed with SIGKILL is named by `check-namespace`
//! with its repair, and repaired by `disable-namespace`, after which enables are warm again;
//! SIGINT or SIGTERM during `--hold` end the hold with a clean disable and the result printed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{TempRegion, fails, field, object};
use serde_json::Value;

fn region_with(tag: &str, map: &str) -> TempRegion {
    let r = TempRegion::new(tag);
    object(&["create-region", "--path", r.path(), "--size", "64M"]);
    object(&[
        "create-namespace",
        "-r",
        r.path(),
        "-s",
        "32M",
        "-a",
        "2M",
        "-M",
        map,
        "-n",
        "kv",
    ]);
    r
}

fn enable(r: &TempRegion, extra: &[&str]) -> Value {
    let mut args = vec!["enable-namespace", "-r", r.path(), "kv"];
    args.extend_from_slice(extra);
    let obj = object(&args);
    assert_eq!(obj["name"], "kv", "the namespace's object");
    assert_eq!(obj["dev"], "namespace0.0");
    obj
}

fn check(r: &TempRegion) -> Value {
    let out = common::devmap(&["check-namespace", "-r", r.path(), "kv"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("check prints JSON")
}

#[test]
fn the_first_enable_is_cold_and_the_next_adopts_its_memmap() {
    let r = region_with("warm", "dev");
    let first = enable(&r, &["--init", "sync"]);
    assert_eq!(first["enable_path"], "cold");
    assert_eq!(first["was_clean"], false);
    // 30 MiB of data at 2 MiB: 15 heads.
    assert_eq!(field(&first, "descriptors_initialized"), 15);
    let c = check(&r);
    assert_eq!(c["clean"], true);
    assert_eq!(c["memmap_layout"], "heads");

    let second = enable(&r, &[]);
    assert_eq!(second["enable_path"], "warm");
    assert_eq!(second["was_clean"], true);
    assert_eq!(field(&second, "descriptors_initialized"), 0);
    assert!(field(&second, "enable_ns") > 0);

    let flat = enable(&r, &["--layout", "flat"]);
    assert_eq!(flat["enable_path"], "cold", "another layout starts over");
    assert_eq!(field(&flat, "descriptors_initialized"), 15 * 512);
    assert_eq!(enable(&r, &["--layout", "flat"])["enable_path"], "warm");
    assert_eq!(enable(&r, &["--layout", "vmemmap"])["enable_path"], "host");
    assert_eq!(check(&r)["memmap_layout"], Value::Null);

    let mem = region_with("mem", "mem");
    assert_eq!(enable(&mem, &[])["enable_path"], "host");
    assert_eq!(enable(&mem, &[])["enable_path"], "host");
}

#[test]
fn a_namespace_left_enabled_by_a_killed_process_is_repaired_by_disable() {
    let r = region_with("killed", "dev");
    enable(&r, &[]);
    let clean = object(&["disable-namespace", "-r", r.path(), "kv"]);
    assert_eq!(clean["was_clean"], true);
    assert_eq!(clean["rebuilt"], false);
    assert_eq!(clean["dev"], "namespace0.0");

    let mut holder = Command::new(env!("CARGO_BIN_EXE_devmap"))
        .args(["enable-namespace", "-r", r.path(), "kv", "--hold", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a holder");
    // The holder marks the info block in use as it enables.
    let deadline = Instant::now() + Duration::from_secs(20);
    while check(&r)["clean"] == true {
        assert!(
            Instant::now() < deadline,
            "the holder never enabled the namespace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fails(
        &["disable-namespace", "-r", r.path(), "kv"],
        "is enabled by the process that manages the region: end that process",
    );
    fails(
        &["destroy-namespace", "-r", r.path(), "kv"],
        "managed by another process",
    );
    holder.kill().expect("SIGKILL the holder");
    holder.wait().expect("reap");

    // check-namespace says it was left enabled, and names the repair.
    let out = common::devmap(&["check-namespace", "-r", r.path(), "kv"]);
    assert!(
        !out.status.success(),
        "a namespace left enabled fails its check"
    );
    let c: Value = serde_json::from_slice(&out.stdout).expect("check prints JSON");
    assert_eq!(c["clean"], false, "the killed holder left it in use");
    assert_eq!(c["enable_state"], "left enabled");
    assert_eq!(c["ok"], false);
    let repair = format!("devmap disable-namespace -r {} kv", r.path());
    assert_eq!(c["repair"], repair.as_str());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&repair), "{err}");
    let repaired = object(&["disable-namespace", "-r", r.path(), "namespace0.0"]);
    assert_eq!(repaired["was_clean"], false);
    assert_eq!(repaired["rebuilt"], true);
    assert_eq!(repaired["name"], "kv");
    assert_eq!(check(&r)["clean"], true);
    let after = enable(&r, &[]);
    assert_eq!(
        after["enable_path"], "warm",
        "the repair left an adoptable memmap"
    );
}

/// Starts `enable-namespace --hold 60` of `r`'s kv and waits until it holds the namespace.
fn hold(r: &TempRegion) -> std::process::Child {
    let holder = Command::new(env!("CARGO_BIN_EXE_devmap"))
        .args(["enable-namespace", "-r", r.path(), "kv", "--hold", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a holder");
    // The holder marks the info block in use as it enables.
    let deadline = Instant::now() + Duration::from_secs(20);
    while check(r)["clean"] == true {
        assert!(
            Instant::now() < deadline,
            "the holder never enabled the namespace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    holder
}

#[test]
fn sigint_or_sigterm_during_hold_disables_cleanly_and_prints_the_result() {
    use rustix::process::{Pid, Signal, kill_process};

    let r = region_with("stop", "dev");
    enable(&r, &[]);
    for (signal, name) in [(Signal::TERM, "SIGTERM"), (Signal::INT, "SIGINT")] {
        let mut holder = hold(&r);
        let holding = format!("enabled by process {}", holder.id());
        let pid = Pid::from_raw(holder.id() as i32).expect("a child's pid");
        let during = check(&r);
        kill_process(pid, signal).expect("signal the holder");
        // Well inside the 60 s hold: the signal ended it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while holder.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "{name} did not end the hold");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = holder.wait_with_output().expect("the holder's output");
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let obj: Value = serde_json::from_slice(&out.stdout).expect("the result as JSON");
        assert_eq!(obj["name"], "kv", "{name}");
        assert_eq!(obj["enable_path"], "warm", "{name}");
        assert_eq!(obj["signal"], name);
        assert!(field(&obj, "disable_ns") > 0, "{name}: disabled");

        assert_eq!(
            during["enable_state"],
            holding.as_str(),
            "check names the holder"
        );
        assert_eq!(during["ok"], true);
        let c = check(&r);
        assert_eq!(c["clean"], true, "{name} left it clean");
        assert_eq!(c["enable_state"], "clean");
        assert_eq!(c["ok"], true);
        let next = enable(&r, &[]);
        assert_eq!(next["enable_path"], "warm", "after {name}");
        assert_eq!(next["signal"], Value::Null);
    }
}
