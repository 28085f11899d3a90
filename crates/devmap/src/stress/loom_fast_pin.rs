//! The loom model of a client's fast pin racing the service's revocation of its mapping
//! (DESIGN §9.5, `dax/pin_view.rs`): the client adds its pin to the ledger's count unless the
//! count's revoked bit is set; the service sets the bit and reads the count in one RMW.
//! Whatever the interleaving, the revocation counts exactly the pins that succeed (so a
//! forced disable tells the client what it dropped), none succeeds after it, and a pin that
//! backs out leaves the ledger as it found it.

use crate::dax::pin_view::{Word, give_back, revoke, take};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};

/// loom's atomics as the protocol's words, with the orderings the real ones use.
impl Word for AtomicU64 {
    fn fetch_add(&self, v: u64) -> u64 {
        AtomicU64::fetch_add(self, v, Ordering::AcqRel)
    }
    fn fetch_sub(&self, v: u64) -> u64 {
        AtomicU64::fetch_sub(self, v, Ordering::AcqRel)
    }
    fn fetch_or(&self, v: u64) -> u64 {
        AtomicU64::fetch_or(self, v, Ordering::AcqRel)
    }
    fn get(&self) -> u64 {
        self.load(Ordering::Acquire)
    }
}

const REVOKED: u64 = 1 << 63;

struct Ledger {
    pins: AtomicU64,
    pages: AtomicU64,
}

fn ledger() -> Arc<Ledger> {
    Arc::new(Ledger {
        pins: AtomicU64::new(0),
        pages: AtomicU64::new(0),
    })
}

#[test]
fn fast_pin_versus_revocation() {
    loom::model(|| {
        let l = ledger();
        let client = {
            let l = Arc::clone(&l);
            loom::thread::spawn(move || {
                let pinned = take(&l.pins, &l.pages, 512, || true);
                if pinned {
                    give_back(&l.pins, &l.pages, 512);
                }
                pinned
            })
        };
        let seen = revoke(&l.pins);
        let pinned = client.join().expect("client thread");
        assert!(seen <= 1);
        // A pin counted by the revocation was taken; one taken after it was refused.
        assert!(
            seen == 0 || pinned,
            "the revocation counted a pin that never was"
        );
        assert_eq!(
            l.pins.load(Ordering::Acquire),
            REVOKED,
            "every count given back"
        );
        assert_eq!(l.pages.load(Ordering::Acquire), 0);
        // After the revocation, no pin succeeds.
        assert!(!take(&l.pins, &l.pages, 1, || true));
    });
}

#[test]
fn fast_pins_of_two_threads_versus_revocation() {
    loom::model(|| {
        let l = ledger();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let l = Arc::clone(&l);
                loom::thread::spawn(move || take(&l.pins, &l.pages, 1, || true))
            })
            .collect();
        let seen = revoke(&l.pins);
        let won = threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .filter(|&p| p)
            .count() as u64;
        assert_eq!(
            seen, won,
            "the revocation counts exactly the pins that succeed"
        );
        assert_eq!(l.pins.load(Ordering::Acquire) & !REVOKED, won);
        assert_eq!(l.pages.load(Ordering::Acquire), won);
    });
}
