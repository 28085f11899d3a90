//! One device at a time serves a namespace: a second enable, from another device space, from
//! the same one, or from another process, is refused with nothing of the region file changed,
//! and the namespace enables again once the first device is disabled.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::backing::file::TempPath;
use crate::init::InitMode;
use crate::namespace::infoblock::INFO_BLOCK_LEN;
use crate::namespace::lock::NamespaceLock;

const CHILD: &str = "DEVMAP_NS_HOLDER";
const MIB: u64 = 1 << 20;

fn region_with_ns(tag: &str) -> (TempPath, Region) {
    super::warm_tests::region_with(tag, 64 * MIB, "vm0", 16 * MIB)
}

/// Sync init: nothing writes the memmap room after the enable returns, so the file's bytes
/// can be compared.
fn opts() -> DaxOptions {
    let mut o = DaxOptions::new(Order::PMD);
    o.init = InitMode::Sync;
    o
}

/// What a refused enable must leave as it was: the file's bytes, and (for a readable failure)
/// the info block.
fn on_disk(region: &Region, path: &TempPath) -> (Vec<u8>, InfoBlock) {
    let label = region.namespace("vm0").expect("vm0").clone();
    let block = region.info_block(&label).expect("info block");
    (std::fs::read(&path.0).expect("read the region"), block)
}

fn assert_busy(e: &RegionError) {
    assert!(matches!(e, RegionError::NamespaceBusy { .. }), "{e:?}");
    assert!(e.to_string().contains("namespace \"vm0\""), "{e}");
    assert!(e.to_string().contains("is enabled already"), "{e}");
    assert_eq!(crate::errno::region(e), libc::EBUSY);
}

#[test]
fn a_namespace_enabled_in_one_space_is_refused_to_another_and_to_the_same() {
    let (path, mut region) = region_with_ns("ns-twice");
    // First after creation (the cold path), then after a clean disable (the warm path).
    for (round, want) in [(0, EnablePath::Cold), (1, EnablePath::Warm)] {
        let (a, b) = (DeviceSpace::new(), DeviceSpace::new());
        let first = region.enable(&a, "vm0", opts()).expect("first enable");
        assert_eq!(first.path(), want, "round {round}");
        let (bytes, block) = on_disk(&region, &path);
        assert!(!block.flags.contains(InfoFlags::CLEAN), "in use");

        let e = region
            .enable(&b, "vm0", opts())
            .expect_err("a second space must be refused");
        let (after, after_block) = on_disk(&region, &path);
        assert_eq!(after_block, block, "round {round}: info block unchanged");
        assert!(after == bytes, "round {round}: region file unchanged");
        assert_busy(&e);

        let e = region
            .enable(&a, "vm0", opts())
            .expect_err("the same space must be refused");
        let (after, after_block) = on_disk(&region, &path);
        assert_eq!(after_block, block, "round {round}: info block unchanged");
        assert!(after == bytes, "round {round}: region file unchanged");
        assert_busy(&e);

        region.disable(first).expect("disable");
        let again = region.enable(&b, "vm0", opts()).expect("enable after");
        assert_eq!(again.path(), EnablePath::Warm, "round {round}");
        assert!(again.was_clean());
        region.disable(again).expect("disable");
    }
}

#[test]
fn dropping_an_enabled_namespace_releases_it() {
    let (_path, mut region) = region_with_ns("ns-drop");
    let space = DeviceSpace::new();
    let ns = region.enable(&space, "vm0", opts()).expect("enable");
    drop(ns);
    let other = DeviceSpace::new();
    let ns = region
        .enable(&other, "vm0", opts())
        .expect("enable after a drop");
    assert!(!ns.was_clean(), "a drop is no clean disable");
    region.disable(ns).expect("disable");
}

/// The child: holds vm0 until its standard input has a line, then lets go of it. `enable`:
/// enabled through a region it keeps open (as `devmap enable-namespace --hold` does), then
/// disabled. `lock`: only the namespace's lock, through a description of the file of its own
/// and no region handle, so no region lock: what a parent meets once regions are shared.
#[test]
#[ignore = "the child half of the two-process tests, which run it"]
fn ns_holder_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (what, path) = spec.split_once(':').expect("what:path");
    let wait = |holding: &str| {
        println!("{holding}");
        std::io::stdout().flush().expect("flush");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("wait");
    };
    match what {
        "enable" => {
            let space = DeviceSpace::new();
            let mut region = Region::open(path, Access::Manage).expect("open");
            let ns = region.enable(&space, "vm0", opts()).expect("enable");
            wait("holding vm0");
            region.disable(ns).expect("disable");
        }
        "lock" => {
            let region = Region::open(path, Access::Read).expect("open");
            let label = region.namespace("vm0").expect("vm0").clone();
            let file = std::fs::File::open(path).expect("open the file");
            let lock = NamespaceLock::try_take(
                &file,
                path.as_ref(),
                label.offset + INFO_BLOCK_OFFSET,
                INFO_BLOCK_LEN as u64,
            )
            .expect("lock")
            .expect("nobody holds it");
            drop(region);
            wait("holding vm0");
            drop(lock);
        }
        other => panic!("unknown case {other}"),
    }
    println!("released vm0");
}

/// The child process, killed if the test ends (or fails) before it exits.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs the child holding vm0 of `path` in mode `what`, then `meanwhile`, then lets the child
/// release it and waits for it to end.
fn while_a_child_holds(what: &str, path: &TempPath, meanwhile: impl FnOnce()) {
    let mut child = Holder(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "namespace::enable::lock_tests::ns_holder_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, format!("{what}:{}", path.0.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child"),
    );
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |want: &str| loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(want) => return,
            Ok(_) => {}
            Err(e) => panic!("the child never said {want:?}: {e}"),
        }
    };
    wait_for("holding vm0");
    meanwhile();
    child
        .0
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("tell the child");
    wait_for("released vm0");
    let status = child.0.wait().expect("child");
    assert!(status.success(), "{status:?}");
    reader.join().expect("reader");
}

#[test]
fn a_namespace_enabled_by_another_process_is_refused() {
    let (path, region) = region_with_ns("ns-two-procs");
    drop(region);
    while_a_child_holds("enable", &path, || {
        let before = std::fs::read(&path.0).expect("read");
        // Refused while the child's region lock is held, or else by the namespace lock: with
        // EBUSY either way, and nothing written.
        let space = DeviceSpace::new();
        let e = match Region::open(&path.0, Access::Manage) {
            Err(e) => e,
            Ok(mut region) => region
                .enable(&space, "vm0", opts())
                .map(drop)
                .expect_err("the child holds it"),
        };
        assert_eq!(crate::errno::region(&e), libc::EBUSY, "{e}");
        assert!(std::fs::read(&path.0).expect("read") == before, "unchanged");
    });
    let mut region = Region::open(&path.0, Access::Manage).expect("reopen");
    let space = DeviceSpace::new();
    let ns = region
        .enable(&space, "vm0", opts())
        .expect("enable once the child disabled it");
    assert!(ns.was_clean());
    assert_eq!(ns.path(), EnablePath::Warm);
    region.disable(ns).expect("disable");
}

#[test]
fn the_namespace_lock_of_another_process_refuses_an_enable_before_any_write() {
    let (path, mut region) = region_with_ns("ns-lock-procs");
    let space = DeviceSpace::new();
    let ns = region.enable(&space, "vm0", opts()).expect("enable");
    region.disable(ns).expect("disable");
    drop(region);
    while_a_child_holds("lock", &path, || {
        let mut region = Region::open(&path.0, Access::Manage).expect("no region lock held");
        let before = on_disk(&region, &path);
        let space = DeviceSpace::new();
        let e = region
            .enable(&space, "vm0", opts())
            .expect_err("the child holds the namespace");
        assert_busy(&e);
        let after = on_disk(&region, &path);
        assert_eq!(after.1, before.1, "info block unchanged");
        assert!(after.1.flags.contains(InfoFlags::CLEAN), "still clean");
        assert!(after.0 == before.0, "region file unchanged");
    });
    let mut region = Region::open(&path.0, Access::Manage).expect("reopen");
    let space = DeviceSpace::new();
    let ns = region
        .enable(&space, "vm0", opts())
        .expect("enable once the child let go");
    assert_eq!(ns.path(), EnablePath::Warm);
    region.disable(ns).expect("disable");
}

#[test]
fn an_enabled_namespace_is_not_destroyed_under_its_device() {
    // Through the very region handle that enabled it: the destroy is refused, with the
    // label and info block as they were, and it goes through once the device is disabled.
    let (path, mut region) = region_with_ns("ns-destroy-enabled");
    let space = DeviceSpace::new();
    let ns = region.enable(&space, "vm0", opts()).expect("enable");
    let before = on_disk(&region, &path);
    let e = region
        .destroy_namespace("vm0")
        .expect_err("destroyed under its device");
    assert_busy(&e);
    assert_eq!(on_disk(&region, &path), before, "nothing written");
    region.disable(ns).expect("disable");
    region
        .destroy_namespace("vm0")
        .expect("destroy once disabled");
    assert!(region.namespaces().is_empty());
}
