//! The memory-error SIGBUS handler, in child processes (it is installed once per process and
//! some cases end the process): synthetic `BUS_MCEERR_AO` and `BUS_MCEERR_AR` signals, sent
//! by the process to itself with `rt_tgsigqueueinfo`, at addresses inside and outside a
//! device-dax mapping; and a signal delivered while the interrupted thread holds the device
//! registry's lock, which a handler that locked would deadlock on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::addr::{Order, PAGE_SIZE};
use crate::backing::Backing;
use crate::backing::test_child::run_ignored_with;
use crate::dax::{DaxDevice, DaxOptions, Faults, PoisonNotice};
use crate::init::InitMode;
use crate::pgmap::DeviceSpace;

const CHILD: &str = "DEVMAP_SIGBUS_CHILD";
const OFFSET: u64 = (2 << 20) + 3 * PAGE_SIZE;

/// Set by the handler installed before devmap's.
static PREV_CALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn prev_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    PREV_CALLED.store(true, Ordering::SeqCst);
}

/// Installs `prev_handler` as the SIGBUS handler before devmap's.
fn install_prev() {
    // SAFETY: a well-formed sigaction for a handler that only stores to an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = prev_handler;
        sa.sa_sigaction = f as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

/// Sends this thread a SIGBUS with `code`, `si_addr` = `addr` and `si_addr_lsb` = 12.
fn send(code: i32, addr: usize) {
    // The 64-bit siginfo: si_signo, si_errno, si_code at 0, 4, 8; si_addr at 16;
    // si_addr_lsb at 24.
    let mut raw = [0u8; 128];
    raw[0..4].copy_from_slice(&libc::SIGBUS.to_ne_bytes());
    raw[8..12].copy_from_slice(&code.to_ne_bytes());
    raw[16..24].copy_from_slice(&(addr as u64).to_ne_bytes());
    raw[24..26].copy_from_slice(&12i16.to_ne_bytes());
    // SAFETY: rt_tgsigqueueinfo to this thread with a 128-byte siginfo buffer; a process may
    // send itself any si_code.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::gettid(),
            libc::SIGBUS,
            raw.as_ptr(),
        )
    };
    assert_eq!(
        rc,
        0,
        "rt_tgsigqueueinfo: {}",
        std::io::Error::last_os_error()
    );
}

type Reports = Arc<Mutex<Vec<(usize, MfFlags, Result<MfReport, String>)>>>;

fn install_devmap() -> Reports {
    let reports: Reports = Arc::default();
    let sink = Arc::clone(&reports);
    install_sigbus_handler(Box::new(move |addr, flags, r| {
        sink.lock().unwrap_or_else(|e| e.into_inner()).push((
            addr,
            flags,
            r.map_err(|e| e.to_string()),
        ));
    }))
    .expect("install");
    assert!(matches!(
        install_sigbus_handler(Box::new(|_, _, _| {})),
        Err(SigbusError::AlreadyInstalled)
    ));
    reports
}

fn wait_reports(reports: &Reports, n: usize) -> Vec<(usize, MfFlags, Result<MfReport, String>)> {
    for _ in 0..500 {
        let got = reports.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if got.len() >= n {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no report from the service thread");
}

#[test]
#[ignore = "the child half of the SIGBUS handler tests, which run it"]
fn sigbus_child() {
    let Ok(case) = std::env::var(CHILD) else {
        return;
    };
    let space = DeviceSpace::new();
    let mut opts = DaxOptions::new(Order::PMD);
    opts.init = InitMode::Sync;
    opts.faults = Faults::Userfaultfd;
    let dev = DaxDevice::with_options(&space, Backing::memfd(8 << 20).expect("memfd"), opts)
        .expect("device");
    let m = dev.mmap(0, 8 << 20, true).expect("mmap");
    m.bytes().write(OFFSET, b"x").expect("fault the leaf in");
    let told: Arc<Mutex<Vec<PoisonNotice>>> = Arc::default();
    let sink = Arc::clone(&told);
    m.set_owner(Arc::new(move |n: &PoisonNotice| {
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(*n)
    }));
    // An AR at an address of the mapping makes it current, told whatever its setting; an AO
    // reaches an early-kill owner only (`kill_proc`).
    m.set_early_kill(case == "ao-inside");
    let inside = m.addr() + OFFSET as usize;
    let outside = &case as *const String as usize;
    let pfn = dev.pfn_at(OFFSET).expect("pfn");
    if case == "ar-default" {
        // The Rust runtime has its own SIGBUS handler (for stack overflows); this case wants
        // the default action behind devmap's.
        // SAFETY: resets SIGBUS to its default action with a well-formed sigaction.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    } else {
        install_prev();
    }
    let reports = install_devmap();
    match case.as_str() {
        "ao-inside" | "ar-inside" => {
            let ar = case == "ar-inside";
            send(
                if ar {
                    libc::BUS_MCEERR_AR
                } else {
                    libc::BUS_MCEERR_AO
                },
                inside,
            );
            let got = wait_reports(&reports, 1);
            let (addr, flags, r) = &got[0];
            assert_eq!(*addr, inside);
            assert_eq!(flags.contains(MfFlags::ACTION_REQUIRED), ar);
            let r = r.as_ref().expect("memory_failure ran");
            assert_eq!(r.pfn, pfn);
            assert!(dev.pgmap().subpage_poisoned(pfn).expect("lookup"));
            let told = told.lock().unwrap_or_else(|e| e.into_inner()).clone();
            assert_eq!(told.len(), 1);
            assert_eq!((told[0].addr, told[0].action_required), (inside, ar));
            assert_eq!(
                PREV_CALLED.load(Ordering::SeqCst),
                ar,
                "AR goes on, AO stops here"
            );
            let s = sigbus_stats();
            assert_eq!((s.recorded, s.chained, s.handled), (1, u64::from(ar), 1));
        }
        "ao-outside" | "ar-outside" => {
            let code = if case == "ao-outside" {
                libc::BUS_MCEERR_AO
            } else {
                libc::BUS_MCEERR_AR
            };
            send(code, outside);
            assert!(PREV_CALLED.load(Ordering::SeqCst), "not devmap's: chained");
            send(libc::BUS_ADRERR, inside);
            std::thread::sleep(Duration::from_millis(50));
            let s = sigbus_stats();
            assert_eq!(
                (s.recorded, s.chained),
                (0, 2),
                "a plain SIGBUS is chained too"
            );
            assert!(reports.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
            assert!(!dev.pgmap().subpage_poisoned(pfn).expect("lookup"));
        }
        "locked" => {
            let guard = crate::dax::hold_registry();
            send(libc::BUS_MCEERR_AO, inside);
            println!("the handler returned while the registry was held");
            drop(guard);
            let got = wait_reports(&reports, 1);
            assert!(got[0].2.is_ok(), "{:?}", got[0]);
        }
        "ar-default" => {
            println!("sending");
            send(libc::BUS_MCEERR_AR, inside);
            println!("survived an AR with the default action");
            std::process::exit(3);
        }
        other => panic!("unknown case {other}"),
    }
    println!("case {case} ok");
}

fn run(case: &str) -> crate::backing::test_child::ChildEnd {
    run_ignored_with(
        "memory_failure::sigbus::tests::sigbus_child",
        CHILD,
        case,
        Duration::from_secs(30),
    )
}

#[test]
fn an_ao_at_a_devmap_address_runs_memory_failure_and_stops_there() {
    let end = run("ao-inside");
    assert!(end.stdout.contains("case ao-inside ok"), "{end:?}");
}

#[test]
fn an_ar_at_a_devmap_address_runs_memory_failure_and_goes_on_to_the_previous_handler() {
    let end = run("ar-inside");
    assert!(end.stdout.contains("case ar-inside ok"), "{end:?}");
}

#[test]
fn signals_at_other_addresses_go_to_the_previous_handler() {
    for case in ["ao-outside", "ar-outside"] {
        let end = run(case);
        assert!(end.stdout.contains(&format!("case {case} ok")), "{end:?}");
    }
}

#[test]
fn an_ar_with_the_default_action_kills_the_process() {
    let end = run("ar-default");
    assert!(end.stdout.contains("sending"), "{end:?}");
    assert_eq!(end.signal, Some(libc::SIGBUS), "{end:?}");
}

#[test]
fn the_handler_takes_no_lock_the_service_thread_takes() {
    let end = run("locked");
    assert!(
        end.stdout
            .contains("the handler returned while the registry was held"),
        "{end:?}"
    );
    assert!(end.stdout.contains("case locked ok"), "{end:?}");
}
