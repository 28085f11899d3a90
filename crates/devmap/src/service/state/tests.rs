//! The service's state without sockets: namespaces of one served region created, enabled,
//! checked, cleared and destroyed independently of one another, each through the region API
//! the in-process verbs use.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::backing::file::TempPath;
use crate::memory_failure::{MfFlags, memory_failure};
use crate::namespace::RegionError;
use crate::service::proto::{CheckNamespace, ClearErrors, CreateNamespace, DestroyNamespace};

const MIB: u64 = 1 << 20;

/// A region of 128 MiB with `vm0` (16 MiB) in it, served.
fn served(tag: &str) -> (TempPath, State) {
    let path = TempPath::on_tmpfs(tag);
    let mut r = Region::create(&path.0, 128 * MIB).expect("create the region");
    r.create_namespace(
        "vm0",
        16 * MIB,
        2 * MIB,
        crate::NamespaceMode::Devdax,
        crate::MemmapLocation::Dev,
    )
    .expect("create vm0");
    drop(r);
    let state = State::open(std::slice::from_ref(&path.0)).expect("serve it");
    (path, state)
}

fn create(name: &str, size: u64) -> CreateNamespace {
    CreateNamespace {
        region: String::new(),
        name: name.into(),
        size,
        align: 2 * MIB,
        mode: "devdax".into(),
        map: "dev".into(),
        uid: 0,
        gid: 0,
        perm: 0o600,
    }
}

fn destroy(name: &str, force: bool) -> DestroyNamespace {
    DestroyNamespace {
        region: String::new(),
        name: name.into(),
        force,
    }
}

#[test]
fn a_served_region_creates_and_destroys_beside_an_enabled_namespace() {
    let (_path, state) = served("svc-carve");
    state.enable("", "vm0").expect("enable vm0");
    let made = state
        .create_namespace(&create("vm1", 8 * MIB))
        .expect("create");
    assert_eq!((made.name.as_str(), made.size), ("vm1", 8 * MIB));
    // The first free name, and the largest size that fits, when left out.
    let made = state.create_namespace(&create("", 0)).expect("defaults");
    assert_eq!(made.name, "namespace0");
    assert_eq!(made.size, 128 * MIB - 2 * MIB - 16 * MIB - 8 * MIB);
    let e = state.create_namespace(&create("", 0)).expect_err("full");
    assert_eq!(e.errno(), libc::ENOSPC, "{e}");
    state
        .destroy_namespace(&destroy("namespace0", false))
        .expect("destroy");

    let (live, enabled) = state.enable("", "vm1").expect("enable vm1");
    assert!(enabled && !live.warm);
    let e = state
        .destroy_namespace(&destroy("vm1", true))
        .expect_err("on");
    assert!(matches!(e, ServiceError::Enabled { .. }), "{e}");
    assert_eq!(e.errno(), libc::EBUSY);
    state.disable("", "vm1", false).expect("disable vm1");
    state
        .destroy_namespace(&destroy("vm1", false))
        .expect("destroy vm1");
    let names: Vec<String> = state.list().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["vm0"]);
    // vm0 was enabled all along, and disables cleanly.
    let (disabled, failed) = state.disable_all();
    assert_eq!(
        (disabled, failed.is_none()),
        (vec!["vm0".to_string()], true)
    );
}

#[test]
fn an_operation_on_a_namespace_waits_only_for_that_namespace() {
    let (_path, state) = served("svc-ops");
    let state = std::sync::Arc::new(state);
    // What a long enable of vm0 holds: its operation lock, and nothing of the region.
    let op = state.regions[0].op("vm0");
    let held = op.lock();
    let (tx, rx) = mpsc::channel();
    let s = std::sync::Arc::clone(&state);
    let other = std::thread::spawn(move || {
        let r = s
            .create_namespace(&create("vm1", 8 * MIB))
            .and_then(|_| s.enable("", "vm1"))
            .and_then(|_| s.disable("", "vm1", false))
            .and_then(|()| s.destroy_namespace(&destroy("vm1", false)));
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let done = rx.recv_timeout(Duration::from_secs(20));
    // vm0's own operations wait for it.
    let (tx, rx) = mpsc::channel();
    let s = std::sync::Arc::clone(&state);
    let same = std::thread::spawn(move || {
        let r = s.check_namespace(&CheckNamespace {
            region: String::new(),
            name: "vm0".into(),
        });
        let _ = tx.send(r.is_ok());
    });
    let early = rx.recv_timeout(Duration::from_millis(200));
    drop(held);
    let late = rx.recv_timeout(Duration::from_secs(20));
    other.join().expect("join");
    same.join().expect("join");
    assert_eq!(
        done.expect("vm1's create, enable, disable and destroy waited for vm0's lock"),
        Ok(())
    );
    assert!(early.is_err(), "vm0's check ran while its lock was held");
    assert_eq!(late, Ok(true));
}

#[test]
fn checks_and_clears_go_through_the_device_when_enabled_and_the_list_when_not() {
    let (_path, state) = served("svc-clear");
    let check = CheckNamespace {
        region: String::new(),
        name: "vm0".into(),
    };
    let c = state.check_namespace(&check).expect("check");
    assert_eq!((c.generation, c.clean, c.enabled_by), (1, false, 0));
    let (live, _) = state.enable("", "vm0").expect("enable");
    let c = state.check_namespace(&check).expect("check");
    assert_eq!(c.enabled_by, std::process::id());
    let pfns = live
        .with_device(|d| Ok([d.pfn_at(0), d.pfn_at(4096), d.pfn_at(8192)]))
        .expect("pfns");
    for pfn in pfns.into_iter().flatten() {
        memory_failure(&state.space, pfn, MfFlags::RECORD_UNMAPPED).expect("poison");
    }
    let clear = |offset: u64, len: u64| ClearErrors {
        region: String::new(),
        name: "vm0".into(),
        offset,
        len,
    };
    let done = state.clear_errors(&clear(0, 4096)).expect("clear enabled");
    assert_eq!((done.cleared, done.left), (1, 2));
    let e = state
        .clear_errors(&clear(100, 4096))
        .expect_err("unaligned");
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    state.disable("", "vm0", false).expect("disable");
    let c = state.check_namespace(&check).expect("check");
    assert!(c.clean && c.enabled_by == 0 && !c.memmap_layout.is_empty());
    let done = state
        .clear_errors(&clear(4096, 4096))
        .expect("clear disabled");
    assert_eq!((done.cleared, done.left), (1, 1));
    let e = state
        .clear_errors(&clear(0, 32 * MIB))
        .expect_err("past the data");
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    let r = state.regions[0].region.lock();
    let label = r.namespace("vm0").expect("vm0").clone();
    let left: Vec<u64> = r.badblocks(&label).expect("list").pages().collect();
    assert_eq!(left, [2]);
}

#[test]
fn a_shared_handle_changes_no_labels() {
    let (_path, state) = served("svc-shared");
    let mut shared = state.regions[0].region.lock().share().expect("share");
    let e = shared
        .create_namespace(
            "x",
            4 * MIB,
            2 * MIB,
            crate::NamespaceMode::Devdax,
            crate::MemmapLocation::Mem,
        )
        .expect_err("a stale index");
    assert!(matches!(e, RegionError::Shared { .. }), "{e}");
}
