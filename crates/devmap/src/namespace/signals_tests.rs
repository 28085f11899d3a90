//! Stop signals sent to the test's own thread (`raise`), so that the other test threads, which
//! have them unblocked, never see them.

use std::time::Duration;

use super::*;

/// Whether `sig` is blocked in this thread.
fn blocked(sig: i32) -> bool {
    let mut cur = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the local set; pthread_sigmask with a null new set only
    // writes the current mask into it.
    unsafe {
        libc::sigemptyset(cur.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), cur.as_mut_ptr());
        libc::sigismember(cur.as_ptr(), sig) == 1
    }
}

#[test]
fn a_blocked_stop_signal_is_taken_by_wait_and_the_mask_restored_on_drop() {
    for sig in StopSignal::ALL {
        assert!(!blocked(sig.number()), "{} blocked before", sig.name());
        let stop = StopSignals::block().expect("block");
        assert!(blocked(sig.number()));
        assert_eq!(stop.wait(Duration::ZERO), None, "nothing pending yet");
        // SAFETY: raise sends to this thread, where the signal is blocked: it pends.
        assert_eq!(unsafe { libc::raise(sig.number()) }, 0);
        assert_eq!(stop.wait(Duration::from_secs(60)), Some(sig));
        assert_eq!(stop.wait(Duration::ZERO), None, "taken, not left pending");
        drop(stop);
        assert!(
            !blocked(sig.number()),
            "{} still blocked after drop",
            sig.name()
        );
    }
}

#[test]
fn a_thread_started_after_block_inherits_the_mask() {
    let stop = StopSignals::block().expect("block");
    let inherited = std::thread::spawn(|| blocked(libc::SIGTERM))
        .join()
        .expect("join");
    drop(stop);
    assert!(inherited);
}

#[test]
fn wait_returns_none_at_its_deadline() {
    let stop = StopSignals::block().expect("block");
    assert_eq!(stop.wait(Duration::from_millis(5)), None);
}
