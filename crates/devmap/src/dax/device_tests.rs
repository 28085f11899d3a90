//! The device's life around its mappings and its threads: a device that does not catch
//! touches faults a new mapping's metadata in (so memory failure finds a mapping written
//! without `populate`), concurrent teardowns tear down once and give back only what the device
//! holds, a timed teardown that gives up during a final one leaves the device not live, the
//! handler count is bounded, and idle handlers sleep until an event or the stop.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use crate::addr::{PAGE_SIZE, PfnRange};
use crate::backing::Backing;
use crate::backing::file::TempPath;
use crate::backing::test_child::run_ignored;
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::memory_failure::{MfFlags, memory_failure};
use crate::pgmap::{DeviceSpace, PgmapError};

const MIB: u64 = 1 << 20;

fn options(faults: Faults) -> DaxOptions {
    let mut opts = DaxOptions::new(Order::PMD);
    opts.layout = Layout::Vmemmap;
    opts.init = InitMode::Sync;
    opts.faults = faults;
    opts
}

/// Defect: a device that does not catch touches gave a mapping with no metadata until someone
/// called `populate`, so bytes written through it were invisible to the rmap and a memory
/// error under them told no mapping.
#[test]
fn a_mapping_written_without_populate_is_found_by_memory_failure() {
    let file = TempPath::new("populate-on-map");
    let backings = [
        (
            "file",
            Backing::create_file(&file.0, 8 * MIB).expect("file"),
        ),
        ("explicit memfd", Backing::memfd(8 * MIB).expect("memfd")),
    ];
    for (what, backing) in backings {
        let space = DeviceSpace::new();
        let dev =
            DaxDevice::with_options(&space, backing, options(Faults::Explicit)).expect("device");
        assert!(!dev.catches_touches(), "{what}");
        let m = dev.mmap(0, 8 * MIB, true).expect("mmap");
        let at = 2 * MIB + 5 * PAGE_SIZE;
        m.bytes().write(at, b"no populate").expect("write");
        let pfn = dev.pfn_at(at).expect("pfn");
        let addr = m.addr() + at as usize;
        assert_eq!(dev.rmap(pfn), vec![(m.id(), addr)], "{what}");
        assert!(m.is_faulted(addr), "{what}");
        assert_eq!(
            dev.fault_stats().leaves_mapped,
            4,
            "{what}: every leaf, once"
        );
        let report = memory_failure(&space, pfn, MfFlags::NONE).expect("handled");
        let lost: Vec<_> = report.revoked.iter().map(|n| (n.mapping, n.addr)).collect();
        assert_eq!(lost, vec![(m.id(), addr)], "{what}");
        drop(m);
        dev.close(None).expect("shutdown");
    }
}

/// The opt-out keeps the explicit behaviour: nothing is faulted until `populate`.
#[test]
fn populate_on_map_off_leaves_the_faults_to_the_caller() {
    let space = DeviceSpace::new();
    let mut opts = options(Faults::Explicit);
    opts.populate_on_map = false;
    let dev = DaxDevice::with_options(&space, Backing::memfd(4 * MIB).expect("memfd"), opts)
        .expect("device");
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    assert_eq!(dev.fault_stats().leaves_mapped, 0);
    assert!(!m.is_faulted(m.addr()));
    let done = m.populate(m.addr(), 4 * MIB).expect("populate");
    assert_eq!((done.mapped, done.already), (2, 0));
}

/// Defect: a second concurrent `shutdown(None)` passed the closing gate, took the pgmap's
/// `NotRegistered` for success and released the device's pfn ranges again, after another
/// thread had reserved them: one range handed out twice. Several shutdowns race here while a
/// reserver spins on the device's exact range; once it holds the range, taking it again
/// means someone released what they did not own.
#[test]
fn concurrent_shutdowns_tear_down_once_and_release_only_what_the_device_holds() {
    const ROUNDS: usize = 40;
    const SHUTDOWNS: usize = 3;
    const LEN: u64 = 4 * MIB;
    for round in 0..ROUNDS {
        let space = DeviceSpace::new();
        let dev = DaxDevice::with_options(
            &space,
            Backing::memfd(LEN).expect("memfd"),
            options(Faults::Auto),
        )
        .expect("device");
        let m = dev.mmap(0, LEN, true).expect("mmap");
        m.populate(m.addr(), LEN).expect("populate");
        let range: PfnRange = dev.ranges()[0];
        let head = dev.pgmap().folio(range.start()).expect("folio").refcount();
        assert_eq!(head, 2, "idle plus the mapping's reference");
        let start = Barrier::new(SHUTDOWNS + 2);
        let done = AtomicBool::new(false);
        let taken = std::thread::scope(|s| {
            let shutdowns: Vec<_> = (0..SHUTDOWNS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        dev.close(None)
                    })
                })
                .collect();
            let reserver = s.spawn(|| {
                start.wait();
                let mut taken = 0;
                let mut after_done = 0;
                // Spins until the shutdowns are over, and as long again after, so that a
                // release by a late shutdown is seen.
                while after_done < 10_000 {
                    if done.load(Ordering::Acquire) {
                        after_done += 1;
                    }
                    if space.reserve_range_at(range.start(), LEN, 2 * MIB).is_ok() {
                        taken += 1;
                    }
                    std::hint::spin_loop();
                }
                taken
            });
            start.wait();
            // The shutdowns wait in the pgmap's drain for the mapping's references.
            std::thread::sleep(Duration::from_millis(1));
            drop(m);
            for t in shutdowns {
                t.join().expect("shutdown thread").expect("shutdown");
            }
            // Release pairs with the reserver's Acquire load.
            done.store(true, Ordering::Release);
            reserver.join().expect("reserver")
        });
        assert_eq!(
            taken, 1,
            "round {round}: the device's range was handed out {taken} times"
        );
        assert_eq!(
            dev.pgmap().refs(),
            0,
            "round {round}: liveness references left"
        );
        assert!(!dev.is_live());
        assert!(
            space.release_range(range),
            "round {round}: the reserver's range"
        );
        assert!(!space.release_range(range), "round {round}: released twice");
    }
}

/// Defect: a timed shutdown that gave up while a final one was in progress reopened the gate,
/// so `is_live()` said true (and faults got in) during the final teardown.
#[test]
fn a_timed_shutdown_giving_up_during_a_final_one_leaves_the_device_not_live() {
    let space = DeviceSpace::new();
    let dev = DaxDevice::with_options(
        &space,
        Backing::memfd(4 * MIB).expect("memfd"),
        options(Faults::Auto),
    )
    .expect("device");
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    m.populate(m.addr(), 2 * MIB).expect("populate");
    std::thread::scope(|s| {
        let fin = s.spawn(|| dev.close(None));
        while dev.is_live() {
            std::thread::yield_now();
        }
        let timed = dev.close(Some(Duration::from_millis(20)));
        assert!(
            matches!(timed, Err(DaxError::Pgmap(PgmapError::Busy { .. }))),
            "{timed:?}"
        );
        assert!(!dev.is_live(), "the final teardown is still in progress");
        assert!(
            matches!(
                m.populate(m.addr() + 2 * MIB as usize, 2 * MIB),
                Err(DaxError::TornDown)
            ),
            "a fault got in during a final teardown"
        );
        drop(m);
        fin.join().expect("final shutdown").expect("shutdown");
    });
    assert!(!dev.is_live());
    dev.close(Some(Duration::ZERO)).expect("done already");
}

/// Defect: the handler count had no upper bound (100000 handlers starved the machine). The
/// library refuses counts outside 1 to `MAX_HANDLERS`, and absurd init thread counts, naming
/// the limit, before it starts anything.
#[test]
fn thread_counts_are_bounded_with_an_error_naming_the_limit() {
    let space = DeviceSpace::new();
    let mut none = options(Faults::Auto);
    none.handlers = 0;
    assert!(matches!(none.validate(), Err(DaxError::NoHandlers)));
    for handlers in [DaxOptions::MAX_HANDLERS + 1, 100_000] {
        let mut opts = options(Faults::Auto);
        opts.handlers = handlers;
        let e = DaxDevice::with_options(&space, Backing::memfd(2 * MIB).expect("memfd"), opts)
            .expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("handlers {handlers} "))
                && msg.contains(&format!("use 1 to {}", DaxOptions::MAX_HANDLERS)),
            "{msg}"
        );
        assert_eq!(crate::errno::dax(&e), libc::EINVAL);
    }
    let mut opts = options(Faults::Auto);
    opts.handlers = DaxOptions::MAX_HANDLERS;
    opts.validate().expect("the limit itself is allowed");
    opts.init = InitMode::Async {
        workers: std::num::NonZeroUsize::new(1 << 20).expect("non-zero"),
    };
    let e = opts.validate().expect_err("refused");
    assert!(e.to_string().contains("init threads 1048576 "), "{e}");
    assert_eq!(space.nr_pgmaps(), 0);
}

const IDLE_CHILD: &str = "DEVMAP_IDLE_HANDLERS_CHILD";
const IDLE_HANDLERS: usize = 4;

/// Voluntary context switches (sleeps ended) of every handler thread in this process.
fn handler_wakeups() -> (usize, u64) {
    let mut threads = 0;
    let mut switches = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
        let dir = task.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        // The kernel keeps 15 bytes of "devmap-dax-fault-N".
        if !comm.starts_with("devmap-dax-faul") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).expect("status");
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .expect("voluntary_ctxt_switches")
            .trim()
            .parse::<u64>()
            .expect("a count");
        threads += 1;
        switches += n;
    }
    (threads, switches)
}

/// The child: a device with idle handlers (after one caught touch), their wake-ups counted
/// over a second, then a shutdown with every handler asleep.
#[test]
#[ignore = "the child half of idle_handlers_sleep_until_an_event_or_the_stop"]
fn idle_handlers_child() {
    if std::env::var(IDLE_CHILD).is_err() {
        return;
    }
    let space = DeviceSpace::new();
    let mut opts = options(Faults::Userfaultfd);
    opts.handlers = IDLE_HANDLERS;
    let dev = DaxDevice::with_options(&space, Backing::memfd(4 * MIB).expect("memfd"), opts)
        .expect("device");
    let m = dev.mmap(0, 4 * MIB, true).expect("mmap");
    m.bytes().write(0, b"caught").expect("a caught touch");
    assert_eq!(dev.fault_stats().user_faults, 1);
    std::thread::sleep(Duration::from_millis(100));
    let (threads, before) = handler_wakeups();
    std::thread::sleep(Duration::from_secs(1));
    let (_, after) = handler_wakeups();
    println!("handlers {threads} wakeups {}", after - before);
    drop(m);
    dev.close(None).expect("shutdown");
    assert_eq!(handler_wakeups().0, 0, "handlers left after shutdown");
    println!("shut down");
}

/// Defect: every handler woke every 20 ms to look at its stop flag (50 wake-ups a second
/// each on an idle device). Idle handlers now sleep until an event or the stop; the shutdown
/// still ends (the parent kills a child that hangs).
#[test]
fn idle_handlers_sleep_until_an_event_or_the_stop() {
    let end = run_ignored(
        "dax::device_tests::idle_handlers_child",
        IDLE_CHILD,
        Duration::from_secs(60),
    );
    assert_eq!(end.code, Some(0), "{end:?}");
    let line = end
        .stdout
        .lines()
        .find_map(|l| l.split_once("handlers ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no count: {end:?}"));
    let (threads, wakeups) = line.split_once(" wakeups ").expect("handlers N wakeups M");
    assert_eq!(threads, IDLE_HANDLERS.to_string(), "{end:?}");
    let wakeups: u64 = wakeups.parse().expect("a count");
    assert!(
        wakeups <= IDLE_HANDLERS as u64,
        "{wakeups} wake-ups of {IDLE_HANDLERS} idle handlers in a second"
    );
    assert!(end.stdout.contains("shut down"), "{end:?}");
}
