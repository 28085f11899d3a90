//! The loom model of the zero-ahead pool handing a leaf to its fault (`dax/zero_ahead.rs`):
//! the pool offers the leaf once it has allocated it (`offer`), and each fault that reaches
//! the leaf claims it (`claim`), both one RMW of the leaf's word. Whatever the interleaving,
//! the leaf is handed to at most one fault, and it is counted ready exactly when it waits for
//! a fault that has not come: so the pool's count of ready leaves returns to zero once a fault
//! has come, and a fault the pool lost to never finds the leaf counted.

use crate::dax::zero_ahead::{CLAIMED, READY, claim, offer};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};

/// The bits of the leaf under test sit in the middle of their word, beside another leaf's.
const SHIFT: u32 = 6;

#[test]
fn offer_versus_two_claims() {
    loom::model(|| {
        let word = Arc::new(AtomicU64::new(0));
        // Another leaf's bits in the same word, which neither side may disturb.
        word.fetch_or(READY << 2, Ordering::Relaxed);
        let faults: Vec<_> = (0..2)
            .map(|_| {
                let word = Arc::clone(&word);
                loom::thread::spawn(move || claim(&*word, SHIFT))
            })
            .collect();
        let waiting = offer(&*word, SHIFT);
        let taken: Vec<bool> = faults
            .into_iter()
            .map(|f| f.join().expect("fault thread"))
            .collect();
        let handed = taken.iter().filter(|&&t| t).count();
        assert!(handed <= 1, "a leaf is handed to one fault at most");
        // Counted ready by the pool exactly when a fault took it: every fault came, so none
        // is left waiting, and a leaf a fault claimed first is never counted.
        assert_eq!(waiting, handed == 1);
        let bits = word.load(Ordering::Relaxed);
        assert_eq!((bits >> SHIFT) & (READY | CLAIMED), READY | CLAIMED);
        assert_eq!(
            bits & (0b11 << 2),
            READY << 2,
            "the neighbour's bits are untouched"
        );
    });
}

#[test]
fn a_claim_before_the_offer_keeps_the_leaf_from_being_counted() {
    loom::model(|| {
        let word = Arc::new(AtomicU64::new(0));
        let fault = {
            let word = Arc::clone(&word);
            loom::thread::spawn(move || claim(&*word, 0))
        };
        let taken = fault.join().expect("fault thread");
        assert!(!taken, "nothing was ready");
        assert!(!offer(&*word, 0), "the pool sees the fault came first");
    });
}
