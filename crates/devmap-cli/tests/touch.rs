//! `devmap touch-test` as a user meets it: the row a run prints for each backing (what the
//! device's fault path and the kernel mapped, and the baseline next to it), the files it keeps
//! and removes, and every refusal, including a hugetlb pool too small for the run.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

mod common;

use common::{fails, field, json};
use serde_json::Value;

/// Serialises the tests that read or change the 2 MiB huge page pool.
static POOL: Mutex<()> = Mutex::new(());

fn pool() -> MutexGuard<'static, ()> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

const FREE_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The one row of a run that must succeed.
fn row(args: &[&str]) -> Value {
    let mut full = vec!["touch-test"];
    full.extend_from_slice(args);
    full.push("--json");
    let rows = json(&full);
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

/// The latencies of both sides are ordered and non-zero, and the baseline touched the same
/// pages.
fn check_latencies(r: &Value) {
    for side in ["", "baseline_"] {
        let (p50, p99, max) = (
            field(r, &format!("{side}p50_ns")),
            field(r, &format!("{side}p99_ns")),
            field(r, &format!("{side}max_ns")),
        );
        assert!(0 < p50 && p50 <= p99 && p99 <= max, "{side}: {r}");
        assert!(field(r, &format!("{side}wall_ns")) >= max, "{side}: {r}");
    }
    assert!(r["ratio_p50"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    assert!(r["ratio_p99"].as_f64().is_some_and(|x| x > 0.0), "{r}");
}

#[test]
fn memfd_at_2m_maps_each_leaf_once_and_the_kernel_maps_every_page() {
    let r = row(&["--size", "64M", "--align", "2M", "--threads", "2"]);
    assert_eq!(r["backing"], "memfd");
    assert_eq!(r["init"], "async");
    assert_eq!(field(&r, "size"), 64 << 20);
    assert_eq!(field(&r, "threads"), 2);
    assert_eq!(field(&r, "leaves"), 32);
    assert_eq!(r["caught"], true);
    // Exact: one fault path run per leaf, one thread per leaf, so no fault of a leaf can find
    // another mapping it. The caught touches are at least one per leaf; the kernel may report
    // a touch twice (a spurious wake), but never fewer.
    assert_eq!(field(&r, "leaves_mapped"), 32);
    assert_eq!(field(&r, "raced"), 0);
    assert!(field(&r, "user_faults") >= 32, "{r}");
    // Shmem maps 4 KiB pages; every page was touched on both sides.
    for side in ["", "baseline_"] {
        assert_eq!(field(&r, &format!("{side}kernel_leaves_4k")), 16384, "{r}");
        assert_eq!(field(&r, &format!("{side}kernel_leaves_2m")), 0, "{r}");
        assert_eq!(field(&r, &format!("{side}kernel_leaves_1g")), 0, "{r}");
    }
    check_latencies(&r);
    // Async init of 32 heads is written by the time anyone looks at the end.
    assert_eq!(r["init_active_at_end"], false);
    assert_eq!(field(&r, "init_descriptors"), 32);
}

#[test]
fn a_tib_device_maps_at_once_and_touches_only_the_leaves_asked_for() {
    let r = row(&["--size", "1T", "--align", "2M", "--leaves", "8"]);
    assert_eq!(field(&r, "size"), 1 << 40);
    assert_eq!(field(&r, "leaves"), 8);
    assert_eq!(field(&r, "leaves_mapped"), 8);
    assert_eq!(
        field(&r, "handlers"),
        2,
        "one handler per touching thread by default"
    );
    // 8 leaves of 2 MiB, whole, and nothing else.
    assert_eq!(field(&r, "kernel_leaves_4k"), 8 * 512);
    assert_eq!(field(&r, "baseline_kernel_leaves_4k"), 8 * 512);
    assert!(
        field(&r, "mmap_ns") > 0 && field(&r, "baseline_mmap_ns") > 0,
        "{r}"
    );
    check_latencies(&r);
}

#[test]
fn memfd_at_4k_faults_around_sequential_touches() {
    let r = row(&[
        "--size",
        "8M",
        "--align",
        "4K",
        "--threads",
        "3",
        "--init",
        "sync",
    ]);
    assert_eq!(field(&r, "leaves"), 2048);
    assert_eq!(field(&r, "fault_around_max"), 128);
    // Every leaf once, most of them as the neighbours of a touched one: each thread touches
    // its share (683 leaves) in order, so its windows grow 1, 1, 2, ..., 128 (9 faults for
    // the first 255 leaves, then one per 128) and most touches find their leaf mapped.
    assert_eq!(field(&r, "leaves_mapped"), 2048);
    let (faults, around) = (field(&r, "user_faults"), field(&r, "fault_around"));
    assert!(around >= 2048 - 2048 / 16, "{r}");
    assert!(faults >= 2048 - around && faults < 2048 / 16, "{r}");
    assert_eq!(field(&r, "kernel_leaves_4k"), 2048);
    assert_eq!(field(&r, "baseline_kernel_leaves_4k"), 2048);
    assert_eq!(r["init"], "sync");
    assert_eq!(r["init_active_at_start"], false);
    check_latencies(&r);
}

#[test]
fn memfd_at_4k_without_fault_around_faults_every_page() {
    let r = row(&[
        "--size",
        "8M",
        "--align",
        "4K",
        "--threads",
        "3",
        "--init",
        "sync",
        "--fault-around",
        "1",
    ]);
    assert_eq!(field(&r, "leaves_mapped"), 2048);
    assert_eq!(field(&r, "fault_around"), 0);
    assert!(field(&r, "user_faults") >= 2048, "{r}");
    assert_eq!(field(&r, "kernel_leaves_4k"), 2048);
    check_latencies(&r);
}

/// A fresh directory for one test's files, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("devmap-touch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_file_is_populated_leaf_by_leaf_and_kept_and_its_baseline_removed() {
    let dir = TempDir::new("file");
    let path = dir.file("dev.img");
    let r = row(&[
        "--size",
        "16M",
        "--backing",
        "file",
        "--path",
        &path,
        "--init",
        "parallel",
    ]);
    assert_eq!(r["backing"], "file");
    assert_eq!(r["path"], path.as_str());
    assert_eq!(r["caught"], false);
    assert_eq!(field(&r, "leaves"), 8);
    // No userfaultfd on files: every leaf went through populate, none through the handler.
    assert_eq!(field(&r, "user_faults"), 0);
    assert_eq!(field(&r, "leaves_mapped"), 8);
    assert_eq!(field(&r, "kernel_leaves_4k"), 4096);
    assert_eq!(field(&r, "baseline_kernel_leaves_4k"), 4096);
    check_latencies(&r);
    // The device's file stays, sparse no more where touched; the baseline's is gone.
    assert_eq!(dir.names(), ["dev.img"]);
    assert_eq!(
        std::fs::metadata(&path).expect("kept").len(),
        16 << 20,
        "the file keeps its size"
    );
    // A second run reuses the file of exactly --size.
    let again = row(&["--size", "16M", "--backing", "file", "--path", &path]);
    assert_eq!(field(&again, "leaves_mapped"), 8);
    // Any other size is refused, and the file is left alone.
    fails(
        &[
            "touch-test",
            "--size",
            "8M",
            "--backing",
            "file",
            "--path",
            &path,
        ],
        "give --size 16M, a new --path, or an empty file",
    );
    assert_eq!(std::fs::metadata(&path).expect("kept").len(), 16 << 20);
    // An empty file is extended to --size.
    let empty = dir.file("empty.img");
    std::fs::write(&empty, b"").expect("empty file");
    let r = row(&["--size", "4M", "--backing", "file", "--path", &empty]);
    assert_eq!(field(&r, "leaves_mapped"), 2);
    assert_eq!(std::fs::metadata(&empty).expect("kept").len(), 4 << 20);
}

#[test]
fn zero_ahead_leaves_are_ready_for_a_paced_sequential_toucher() {
    // One thread touching its leaves in order, 20 ms apart: time for the pool to zero the
    // next 2 MiB leaf (about 1 ms on an idle machine) before a touch.
    let r = row(&[
        "--size",
        "32M",
        "--threads",
        "1",
        "--zero-ahead",
        "4",
        "--pace-us",
        "20000",
        "--init",
        "sync",
    ]);
    assert_eq!(field(&r, "zero_ahead"), 4);
    assert_eq!(field(&r, "pace_us"), 20000);
    assert_eq!(field(&r, "leaves_mapped"), 16);
    // How many touches find their leaf ready is the pool's speed, measured by the benchmarks
    // (BENCHMARKS.md): its thread runs in SCHED_IDLE, and beside the other tests of a busy
    // machine it got through only 3 or 4 leaves in a run. What the command must show is that
    // the pool worked through it: leaves prepared, touches that found theirs ready, and no
    // ready leaf counted twice.
    assert!(field(&r, "zero_ahead_hits") >= 1, "{r}");
    assert!(
        field(&r, "zeroed_ahead") >= field(&r, "zero_ahead_hits"),
        "{r}"
    );
    assert!(field(&r, "resolve_p50_ns") > 0, "{r}");
    check_latencies(&r);
}

#[test]
fn refusals_say_what_would_work() {
    fails(
        &["touch-test", "--size", "64M", "--leaves", "0"],
        "--leaves must be at least 1",
    );
    fails(
        &["touch-test", "--size", "64M", "--leaves", "33"],
        "--leaves 33 is more than the 32 leaves of 64M at align 2M: use --leaves 32 or fewer",
    );
    fails(
        &["touch-test", "--size", "1T", "--align", "2M"],
        "--leaves 8192, or add --force",
    );
    fails(
        &["touch-test", "--size", "64M", "--handlers", "0"],
        "--handlers 0 is not a usable count",
    );
    fails(
        &["touch-test", "--size", "64M", "--handlers", "300"],
        "--handlers 300 is not a usable count of fault handler threads: use 1 to 256",
    );
    fails(
        &["touch-test", "--size", "64M", "--fault-around", "3"],
        "--fault-around 3 is not a usable window: use a power of two from 1 (off) to 512 leaves",
    );
    fails(
        &["touch-test", "--size", "64M", "--fault-around", "1024"],
        "e.g. --fault-around 16",
    );
    fails(
        &["touch-test", "--size", "64M", "--zero-ahead", "513"],
        "--zero-ahead 513 is more leaves than the pool keeps ready (1 GiB of them): use 0 \
         (off) to 512 at --align 2M",
    );
    fails(
        &[
            "touch-test",
            "--size",
            "64M",
            "--align",
            "4K",
            "--zero-ahead",
            "4",
        ],
        "drop --zero-ahead, or use --align 2M",
    );
    fails(
        &[
            "touch-test",
            "--size",
            "4M",
            "--backing",
            "file",
            "--path",
            "/tmp/devmap-touch-unused",
            "--zero-ahead",
            "4",
        ],
        "a file backing has none: drop --zero-ahead, or use --backing memfd or hugetlb",
    );
    fails(
        &["touch-test", "--size", "3M"],
        "size 3M is not a multiple of align 2M: did you mean --size 2M or --size 4M?",
    );
    fails(
        &["touch-test", "--size", "0"],
        "size must be greater than zero: did you mean --size 2M?",
    );
    fails(
        &["touch-test", "--align", "64K"],
        "use --align 4K, 2M or 1G",
    );
    fails(
        &["touch-test", "--backing", "pmem"],
        "[possible values: memfd, hugetlb, file]",
    );
    fails(
        &["touch-test", "--backing", "file"],
        "--backing file needs --path PATH",
    );
    fails(
        &["touch-test", "--path", "/tmp/devmap-touch-unused"],
        "a memfd backing has no path: drop --path, or add --backing file",
    );
    fails(
        &["touch-test", "--size", "64M", "--threads", "0"],
        "--threads must be at least 1",
    );
    fails(
        &["touch-test", "--size", "4M", "--threads", "3"],
        "use --threads 2 or fewer, or a larger --size",
    );
    fails(
        &["touch-test", "--size", "32G"],
        "use --size 16G or less, --leaves 8192, or add --force",
    );
    fails(
        &["touch-test", "--size", "64M", "--layout", "all"],
        "choose --layout flat, vmemmap or heads",
    );
    fails(
        &[
            "touch-test",
            "--size",
            "64M",
            "--align",
            "4K",
            "--backing",
            "hugetlb",
        ],
        "use --align 2M or --align 1G, or --backing memfd",
    );
    let dir = TempDir::new("refuse");
    fails(
        &[
            "touch-test",
            "--size",
            "4M",
            "--backing",
            "file",
            "--path",
            &dir.0.to_string_lossy(),
        ],
        "is not a regular file",
    );
    assert!(
        dir.names().is_empty(),
        "a refusal created {:?}",
        dir.names()
    );
}

#[test]
fn hugetlb_is_refused_up_front_when_the_pool_is_short() {
    let _pool = pool();
    let Some(free) = read_u64(FREE_2M) else {
        println!("skipped: cannot read {FREE_2M}");
        return;
    };
    // 64M needs 32 pages; only a pool that short shows the refusal.
    if free >= 32 {
        println!("skipped: the pool has {free} free 2 MiB pages, enough for the run");
        return;
    }
    fails(
        &["touch-test", "--size", "64M", "--backing", "hugetlb"],
        &format!("needs 32 free 2M huge pages, and the pool has {free} free huge pages"),
    );
    fails(
        &["touch-test", "--size", "64M", "--backing", "hugetlb"],
        "/proc/sys/vm/nr_hugepages",
    );
}

/// The pool's `nr_hugepages`, put back on drop.
struct Restore(u64);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.0.to_string());
    }
}

#[test]
fn hugetlb_maps_one_huge_page_per_leaf() {
    let _pool = pool();
    const PAGES: u64 = 16;
    let (Some(total), Some(free)) = (read_u64(NR_HUGEPAGES), read_u64(FREE_2M)) else {
        println!("skipped: cannot read the 2 MiB huge page pool");
        return;
    };
    let _restore = Restore(total);
    if std::fs::write(NR_HUGEPAGES, (total + PAGES).to_string()).is_err() {
        println!("skipped: cannot write {NR_HUGEPAGES} (root needed)");
        return;
    }
    let now = read_u64(FREE_2M).unwrap_or(0);
    if now < PAGES {
        println!("skipped: asked for {PAGES} more 2 MiB pages, {now} free (was {free})");
        return;
    }
    let r = row(&["--size", "32M", "--backing", "hugetlb", "--threads", "2"]);
    assert_eq!(r["backing"], "hugetlb");
    assert_eq!(r["caught"], true);
    assert_eq!(field(&r, "leaves"), 16);
    assert_eq!(field(&r, "leaves_mapped"), 16);
    assert!(field(&r, "user_faults") >= 16, "{r}");
    for side in ["", "baseline_"] {
        assert_eq!(field(&r, &format!("{side}kernel_leaves_2m")), 16, "{r}");
        assert_eq!(field(&r, &format!("{side}kernel_leaves_4k")), 0, "{r}");
    }
    check_latencies(&r);
    // Both sides gave their pages back.
    assert_eq!(read_u64(FREE_2M), Some(now));
}
