//! The userfaultfd wrapper against the running kernel: MISSING and MINOR faults on memfd
//! mappings caught and resolved a whole 2 MiB leaf per ioctl, MINOR on hugetlb, poison seen by
//! a child process, and the refusals. Every wait is bounded: the handler waits with a timeout,
//! the toucher reports over a channel read with a timeout, and the access that must die runs
//! in a child process. An unmap of a registered mapping is read back as its event.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::backing::memfd::reserve::HugePages;
use crate::backing::{Backing, HugePageSize};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const LEAF: u64 = 2 * MIB;
const WAIT: Duration = Duration::from_secs(10);

/// The value of `field` (e.g. "Rss:"), in bytes, for the mapping that starts at `addr`.
fn smaps_field(addr: u64, field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
    let head = format!("{addr:x}-");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&head));
    assert!(lines.next().is_some(), "no mapping at {addr:#x} in smaps");
    for line in lines.take_while(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.ends_with(':'))
    }) {
        let mut words = line.split_whitespace();
        if words.next() == Some(field) {
            return words
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("kB")
                * KIB;
        }
    }
    panic!("no {field} line for the mapping at {addr:#x}");
}

fn base(m: &Mmap) -> u64 {
    m.as_ptr().as_ptr() as u64
}

/// A byte pattern that differs at every offset within 251 bytes.
fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads 16 bytes at `offset` of `m` from another thread; the receiver gets them once the
/// fault the read takes is resolved.
fn touch(m: &Arc<Mmap>, offset: u64) -> mpsc::Receiver<[u8; 16]> {
    let (tx, rx) = mpsc::channel();
    let m = Arc::clone(m);
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        if m.read(offset, &mut buf).is_ok() {
            let _ = tx.send(buf);
        }
    });
    rx
}

/// Waits for the fault a toucher takes and returns its address and whether it was minor.
fn next_fault(uffd: &Userfaultfd) -> (u64, bool) {
    match uffd.wait_event(Some(WAIT)).expect("wait_event") {
        Some(UffdEvent::PageFault { addr, minor, .. }) => (addr, minor),
        other => panic!("expected a page fault within {WAIT:?}, got {other:?}"),
    }
}

#[test]
fn missing_on_memfd_resolves_the_whole_leaf_with_one_copy() {
    let b = Backing::memfd(2 * LEAF).expect("memfd");
    let m = Arc::new(b.map_shared(0, 2 * LEAF, Order::PMD).expect("map"));
    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("userfaultfd");
    let ioctls = uffd.register(&m, UffdModes::MISSING).expect("register");
    assert!(
        ioctls.copy() && ioctls.zeropage() && ioctls.wake(),
        "{ioctls:?}"
    );

    let offset = LEAF + 77 * 4096 + 123;
    let rx = touch(&m, offset);
    let (addr, minor) = next_fault(&uffd);
    assert!(!minor);
    let leaf_start = base(&m) + LEAF;
    assert!(
        (leaf_start..leaf_start + LEAF).contains(&addr),
        "fault at {addr:#x}, touched {:#x}",
        base(&m) + offset
    );
    let leaf = addr & !(LEAF - 1);
    assert_eq!(leaf, leaf_start);
    let src = pattern(LEAF);
    let done = uffd.copy(leaf, &src).expect("copy");
    assert_eq!(
        done,
        Resolved {
            bytes: LEAF,
            raced: false
        }
    );
    let got = rx.recv_timeout(WAIT).expect("the toucher was woken");
    let at = (offset - LEAF) as usize;
    assert_eq!(&got[..], &src[at..at + 16]);
    // One ioctl mapped all 512 pages of the touched leaf and nothing of the other.
    assert_eq!(smaps_field(base(&m), "Rss:"), LEAF);
}

#[test]
fn missing_on_memfd_zeropage_and_a_second_resolver_races() {
    let b = Backing::memfd(LEAF).expect("memfd");
    let m = Arc::new(b.map_shared(0, LEAF, Order::PMD).expect("map"));
    let uffd = Userfaultfd::new(UffdFeatures::MISSING_SHMEM).expect("userfaultfd");
    uffd.register(&m, UffdModes::MISSING).expect("register");
    let rx = touch(&m, 5 * 4096);
    let (addr, _) = next_fault(&uffd);
    let leaf = addr & !(LEAF - 1);
    assert_eq!(leaf, base(&m));
    let done = uffd.zeropage(leaf, LEAF).expect("zeropage");
    assert_eq!(done.bytes, LEAF);
    assert_eq!(rx.recv_timeout(WAIT).expect("woken"), [0u8; 16]);
    // A resolver that lost the race finds the pages there: success, nothing filled.
    let again = uffd.zeropage(leaf, LEAF).expect("second zeropage");
    assert_eq!(
        again,
        Resolved {
            bytes: 0,
            raced: true
        }
    );
    assert_eq!(smaps_field(base(&m), "Rss:"), LEAF);
}

/// A mapping of a one-leaf memfd whose pages are already in the page cache, written through
/// another mapping (now gone), and the bytes written.
fn leaf_in_the_page_cache() -> (Arc<Mmap>, Vec<u8>) {
    let b = Backing::memfd(LEAF).expect("memfd");
    let m = Arc::new(b.map_shared(0, LEAF, Order::PMD).expect("map"));
    let filler = b.map_shared(0, LEAF, Order::PMD).expect("second map");
    let src = pattern(LEAF);
    filler.write(0, &src).expect("fill the page cache");
    (m, src)
}

#[test]
fn minor_on_memfd_continues_the_leaf_over_the_page_cache() {
    let (m, src) = leaf_in_the_page_cache();

    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("userfaultfd");
    let ioctls = uffd.register(&m, UffdModes::MINOR).expect("register");
    assert!(ioctls.continue_(), "{ioctls:?}");
    let offset = 300 * 4096 + 9;
    let rx = touch(&m, offset);
    let (addr, minor) = next_fault(&uffd);
    assert!(minor, "a page in the page cache faults as minor");
    let leaf = addr & !(LEAF - 1);
    assert_eq!(leaf, base(&m));
    assert_eq!(uffd.continue_(leaf, LEAF).expect("continue").bytes, LEAF);
    let got = rx.recv_timeout(WAIT).expect("woken");
    assert_eq!(&got[..], &src[offset as usize..offset as usize + 16]);
    assert_eq!(smaps_field(base(&m), "Rss:"), LEAF);
}

/// A zeropage that stops at a page the page cache holds (a leaf written through another
/// mapping) wakes nobody: the toucher stays asleep until the `UFFDIO_CONTINUE` that maps its
/// page, instead of waking at once, faulting on the same page again and, once its page is
/// in, running on while the rest of its leaf is still being mapped.
#[test]
fn a_zeropage_stopped_by_the_page_cache_leaves_the_toucher_asleep() {
    let (m, src) = leaf_in_the_page_cache();

    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("userfaultfd");
    uffd.register(&m, UffdModes::MISSING | UffdModes::MINOR)
        .expect("register");
    let offset = 200 * 4096;
    let rx = touch(&m, offset);
    let (addr, minor) = next_fault(&uffd);
    assert!(minor, "a page in the page cache faults as minor");
    let leaf = addr & !(LEAF - 1);
    let zeroed = uffd.zeropage(leaf, LEAF).expect("zeropage");
    assert_eq!(
        zeroed,
        Resolved {
            bytes: 0,
            raced: true
        }
    );
    // Woken, the toucher would fault on its page again at once.
    let again = uffd
        .wait_event(Some(Duration::from_millis(200)))
        .expect("wait_event");
    assert!(
        again.is_none(),
        "the toucher was woken before its page was mapped: {again:?}"
    );
    assert!(
        rx.try_recv().is_err(),
        "the read returned with its page unmapped"
    );
    assert_eq!(uffd.continue_(leaf, LEAF).expect("continue").bytes, LEAF);
    let got = rx.recv_timeout(WAIT).expect("woken");
    assert_eq!(&got[..], &src[offset as usize..offset as usize + 16]);
}

/// Voluntary context switches of thread `tid` of this process so far.
fn sleeps_of(tid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

/// Several threads serving one descriptor, each through its own waiter: a fault wakes one of
/// them. Woken all at once (as `wait_event_or`'s `poll` wakes them), every thread would sleep
/// again after each fault, four sleeps per fault here; one wakes, one sleeps.
#[test]
fn a_fault_wakes_one_of_the_waiting_threads() {
    const WAITERS: usize = 4;
    const FAULTS: u64 = 24;
    let b = Backing::memfd(LEAF).expect("memfd");
    let m = b.map_shared(0, LEAF, Order::BASE).expect("map");
    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("userfaultfd");
    uffd.register(&m, UffdModes::MISSING).expect("register");
    let stop = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
    let (tids_tx, tids) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..WAITERS {
            let (uffd, stop, tids_tx) = (&uffd, &stop, tids_tx.clone());
            s.spawn(move || {
                let waiter = uffd.waiter(stop.as_fd());
                tids_tx
                    .send(rustix::thread::gettid().as_raw_nonzero().get())
                    .expect("send");
                while let Some(event) = waiter.wait().expect("wait") {
                    if let UffdEvent::PageFault { addr, .. } = event {
                        uffd.zeropage(addr & !4095, 4096).expect("zeropage");
                    }
                }
            });
        }
        let tids: Vec<i32> = tids.iter().take(WAITERS).collect();
        // Until every waiter is asleep in epoll_wait.
        std::thread::sleep(Duration::from_millis(100));
        let before: u64 = tids.iter().map(|&t| sleeps_of(t)).sum();
        for page in 0..FAULTS {
            let mut byte = [1u8];
            m.read(page * 4096, &mut byte).expect("touch");
            assert_eq!(byte, [0]);
        }
        std::thread::sleep(Duration::from_millis(100));
        let slept: u64 = tids.iter().map(|&t| sleeps_of(t)).sum::<u64>() - before;
        rustix::io::write(&stop, &1u64.to_ne_bytes()).expect("stop");
        assert!(
            slept < 2 * FAULTS,
            "{slept} sleeps of {WAITERS} waiters for {FAULTS} faults: more than one woke per fault"
        );
    });
}

#[test]
fn minor_on_hugetlb_2m_continues_one_huge_page() {
    let _pages = match HugePages::reserve(HugePageSize::Size2M, 1) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping minor_on_hugetlb_2m_continues_one_huge_page: {why}");
            return;
        }
    };
    let b = Backing::hugetlb(LEAF, HugePageSize::Size2M).expect("hugetlb memfd");
    let m = Arc::new(b.map_shared(0, LEAF, Order::PMD).expect("map"));
    let filler = b.map_shared(0, LEAF, Order::PMD).expect("second map");
    let src = pattern(LEAF);
    filler.write(0, &src).expect("fill the huge page");
    drop(filler);

    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("userfaultfd");
    let ioctls = uffd.register(&m, UffdModes::MINOR).expect("register");
    assert!(ioctls.continue_(), "{ioctls:?}");
    // A huge page is resolved whole or not at all: a 4 KiB range is refused.
    let e = uffd
        .continue_(base(&m), 4096)
        .expect_err("4 KiB of a 2 MiB page");
    assert!(
        matches!(e, UffdError::Unaligned { what: "length", .. }),
        "{e}"
    );

    let offset = MIB + 4096 * 3 + 1;
    let rx = touch(&m, offset);
    let (addr, minor) = next_fault(&uffd);
    assert!(minor);
    let leaf = addr & !(LEAF - 1);
    assert_eq!(leaf, base(&m));
    assert_eq!(uffd.continue_(leaf, LEAF).expect("continue").bytes, LEAF);
    let got = rx.recv_timeout(WAIT).expect("woken");
    assert_eq!(&got[..], &src[offset as usize..offset as usize + 16]);
    assert_eq!(smaps_field(base(&m), "KernelPageSize:"), LEAF);
    // The one mapper of the page: the kernel counts it as private.
    let hugetlb =
        smaps_field(base(&m), "Shared_Hugetlb:") + smaps_field(base(&m), "Private_Hugetlb:");
    assert_eq!(hugetlb, LEAF);
}

/// Set in the child process of `poison_kills_the_reader_with_sigbus`.
const POISON_CHILD: &str = "DEVMAP_UFFD_POISON_CHILD";

/// The child's half of `poison_kills_the_reader_with_sigbus`: poisons a page and reads it,
/// which must kill the process. Ignored, so that only the parent runs it (with `--ignored`).
#[test]
#[ignore = "the child half of poison_kills_the_reader_with_sigbus, which runs it"]
fn poison_child() {
    if std::env::var_os(POISON_CHILD).is_none() {
        return;
    }
    let b = Backing::memfd(LEAF).expect("memfd");
    let m = b.map_shared(0, LEAF, Order::PMD).expect("map");
    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("userfaultfd");
    let ioctls = uffd.register(&m, UffdModes::MINOR).expect("register");
    assert!(ioctls.poison(), "{ioctls:?}");
    let page = base(&m) + 4096 * 10;
    assert_eq!(uffd.poison(page, 4096).expect("poison").bytes, 4096);
    println!("poisoned {page:#x}");
    let mut buf = [0u8; 1];
    let r = m.read(4096 * 10, &mut buf);
    println!("read returned {r:?} {buf:?}");
    std::process::exit(3);
}

#[test]
fn poison_kills_the_reader_with_sigbus() {
    let end = crate::backing::test_child::run_ignored(
        "backing::uffd::tests::poison_child",
        POISON_CHILD,
        WAIT,
    );
    assert!(
        end.stdout.contains("poisoned"),
        "the child failed before the read: {end:?}"
    );
    assert_eq!(
        end.signal,
        Some(7),
        "the read of a poisoned page must die of SIGBUS: {end:?}"
    );
}

#[test]
fn unaligned_and_empty_ranges_are_refused_naming_an_aligned_value() {
    let b = Backing::memfd(LEAF).expect("memfd");
    let m = b.map_shared(0, LEAF, Order::PMD).expect("map");
    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("userfaultfd");
    uffd.register(&m, UffdModes::MISSING | UffdModes::MINOR)
        .expect("register");
    let start = base(&m);

    let e = uffd
        .zeropage(start + 100, 4096)
        .expect_err("unaligned start");
    assert!(matches!(e, UffdError::Unaligned { what: "start", value, .. } if value == start + 100));
    assert!(e.to_string().contains(&format!("use {start:#x}")), "{e}");

    let e = uffd.continue_(start, 4097).expect_err("unaligned length");
    assert!(
        matches!(e, UffdError::Unaligned { what: "length", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("use 0x1000"), "{e}");

    let e = uffd.copy(start, &[0u8; 10]).expect_err("short copy");
    assert!(e.to_string().contains("use 0x0"), "{e}");

    let e = uffd.wake(start, 0).expect_err("empty");
    assert!(matches!(e, UffdError::Empty { .. }), "{e}");
    // Nothing was mapped by the refused calls.
    assert_eq!(smaps_field(start, "Rss:"), 0);
}

#[test]
fn ranges_outside_the_registration_are_not_registered_errors() {
    let b = Backing::memfd(2 * LEAF).expect("memfd");
    let registered = b.map_shared(0, LEAF, Order::PMD).expect("map");
    let other = b.map_shared(LEAF, LEAF, Order::PMD).expect("map");
    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("userfaultfd");
    uffd.register(&registered, UffdModes::MISSING)
        .expect("register");

    let e = uffd.zeropage(base(&other), LEAF).expect_err("unregistered");
    assert!(
        matches!(e, UffdError::NotRegistered { ioctl: "UFFDIO_ZEROPAGE", start, .. } if start == base(&other)),
        "{e}"
    );
    // Running past the end of the registered mapping is refused whole.
    let last = base(&registered) + LEAF - 4096;
    let e = uffd.zeropage(last, 2 * 4096).expect_err("past the end");
    assert!(matches!(e, UffdError::NotRegistered { .. }), "{e}");
    assert!(
        e.to_string().contains("not inside one mapping registered"),
        "{e}"
    );

    // After unregistering, the range is refused the same way.
    uffd.unregister(&registered).expect("unregister");
    let e = uffd
        .zeropage(base(&registered), 4096)
        .expect_err("unregistered");
    assert!(matches!(e, UffdError::NotRegistered { .. }), "{e}");
}

#[test]
fn features_not_granted_are_refused() {
    let b = Backing::memfd(LEAF).expect("memfd");
    let m = b.map_shared(0, LEAF, Order::PMD).expect("map");
    let uffd = Userfaultfd::new(UffdFeatures::MISSING_SHMEM).expect("userfaultfd");
    assert_eq!(uffd.granted(), UffdFeatures::MISSING_SHMEM);
    assert!(uffd.available().contains(UffdFeatures::DEVICE), "{uffd:?}");

    let e = uffd.register(&m, UffdModes::MINOR).expect_err("MINOR");
    assert!(
        matches!(e, UffdError::FeatureNotGranted { needed, .. } if needed == UffdFeatures::MINOR_SHMEM),
        "{e}"
    );
    let minor_only = Userfaultfd::new(UffdFeatures::MINOR_SHMEM).expect("userfaultfd");
    let e = minor_only
        .register(&m, UffdModes::MISSING)
        .expect_err("MISSING");
    assert!(
        matches!(
            e,
            UffdError::FeatureNotGranted {
                what: "MISSING registration",
                ..
            }
        ),
        "{e}"
    );
    drop(minor_only);
    uffd.register(&m, UffdModes::MISSING).expect("MISSING");
    let e = uffd.poison(base(&m), 4096).expect_err("poison");
    assert!(
        matches!(
            e,
            UffdError::FeatureNotGranted {
                what: "UFFDIO_POISON",
                ..
            }
        ),
        "{e}"
    );

    // A feature bit the kernel does not know is refused by UFFDIO_API.
    let e = Userfaultfd::new(UffdFeatures::from_bits(1 << 62)).expect_err("unknown feature");
    match &e {
        UffdError::Api {
            available: Some(available),
            ..
        } => assert!(available.contains(UffdFeatures::DEVICE), "{available:?}"),
        other => panic!("expected UFFDIO_API's refusal with what it offers: {other:?}"),
    }
}

#[test]
fn an_unmap_of_a_registered_mapping_is_reported() {
    let b = Backing::memfd(LEAF).expect("memfd");
    let m = b.map_shared(0, LEAF, Order::PMD).expect("map");
    let uffd =
        Userfaultfd::new(UffdFeatures::DEVICE | UffdFeatures::EVENT_UNMAP).expect("userfaultfd");
    uffd.register(&m, UffdModes::MISSING).expect("register");
    let (start, end) = (base(&m), base(&m) + LEAF);
    // munmap waits until the handler has read the event, so it runs on another thread.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(m);
        let _ = tx.send(());
    });
    match uffd.wait_event(Some(WAIT)).expect("wait_event") {
        Some(UffdEvent::Unmap { start: s, end: e }) => assert_eq!((s, e), (start, end)),
        other => panic!("expected the unmap of [{start:#x}, {end:#x}), got {other:?}"),
    }
    rx.recv_timeout(WAIT).expect("munmap returned");
}

#[test]
fn a_wait_with_nothing_pending_times_out() {
    let uffd = Userfaultfd::new(UffdFeatures::NONE).expect("userfaultfd");
    assert!(uffd.read_event().expect("read").is_none());
    let t = Instant::now();
    assert!(
        uffd.wait_event(Some(Duration::from_millis(30)))
            .expect("wait")
            .is_none()
    );
    assert!(t.elapsed() >= Duration::from_millis(30));
}

#[test]
fn messages_decode_at_the_kernel_offsets() {
    let mut msg = [0u8; MSG_LEN];
    msg[0] = uapi::UFFD_EVENT_PAGEFAULT as u8;
    let flags = u64::from(uapi::UFFD_PAGEFAULT_FLAG_WRITE | uapi::UFFD_PAGEFAULT_FLAG_MINOR);
    msg[8..16].copy_from_slice(&flags.to_ne_bytes());
    msg[16..24].copy_from_slice(&0x7f00_0020_0000u64.to_ne_bytes());
    assert!(matches!(
        decode(&msg),
        UffdEvent::PageFault {
            addr: 0x7f00_0020_0000,
            write: true,
            minor: true
        }
    ));

    let mut msg = [0u8; MSG_LEN];
    msg[0] = uapi::UFFD_EVENT_REMAP as u8;
    for (i, v) in [1u64, 2, 3].into_iter().enumerate() {
        msg[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_ne_bytes());
    }
    assert!(matches!(
        decode(&msg),
        UffdEvent::Remap {
            from: 1,
            to: 2,
            len: 3
        }
    ));

    let mut msg = [0u8; MSG_LEN];
    msg[0] = uapi::UFFD_EVENT_UNMAP as u8;
    msg[8..16].copy_from_slice(&5u64.to_ne_bytes());
    msg[16..24].copy_from_slice(&9u64.to_ne_bytes());
    assert!(matches!(
        decode(&msg),
        UffdEvent::Unmap { start: 5, end: 9 }
    ));
    msg[0] = uapi::UFFD_EVENT_REMOVE as u8;
    assert!(matches!(
        decode(&msg),
        UffdEvent::Remove { start: 5, end: 9 }
    ));
    msg[0] = 0xee;
    assert!(matches!(decode(&msg), UffdEvent::Unknown(0xee)));
}
