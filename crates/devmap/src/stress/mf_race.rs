//! Stress: memory errors racing faults, pins by address, unmaps and teardown on one
//! userfaultfd-backed device-dax device. Four workers map windows, populate leaves and pin
//! ranges by address (holding pins across unmaps); a poisoner reports one error in each of
//! half the leaves, one after another; at the end a final teardown runs under them.
//!
//! The claim checked is devmap's (DESIGN §8: the kernel pins and faults a poisoned device-dax
//! leaf again): once `memory_failure` has returned, no new pin of the poisoned folio and (at
//! `Leaf` granularity) no new fault of its leaf succeeds. The poisoner passes
//! `MfFlags::RECORD_UNMAPPED`, so a leaf no worker has faulted yet is poisoned too. A worker
//! reads which leaves are done before each call, so a success on one of them is a violation.
//! Afterwards every folio is idle (count 1, no pins, no mapcount), every poisoned page is still
//! flagged and in the badblocks list, and nothing hung.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::addr::{Order, PAGE_SIZE};
use crate::backing::Backing;
use crate::dax::{DaxDevice, DaxError, DaxMapping, DaxOptions, Faults, Granularity};
use crate::gup::{ByAddress, GupError, GupFlags, Pages, Pinned};
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::memory_failure::{MfError, MfFlags, memory_failure};
use crate::pgmap::DeviceSpace;
use crate::test_support::Rng;

const LEAF: u64 = 2 << 20;
const LEAVES: u64 = 32;
const WORKERS: usize = 4;
/// Operations each worker does before the teardown may start.
const OPS: usize = 1_500;
const OPS_LIMIT: usize = 200_000;

struct Run<'d> {
    dev: &'d DaxDevice,
    space: &'d DeviceSpace,
    /// Set once `memory_failure` of a page in the leaf has returned.
    done: Vec<AtomicBool>,
    violations: AtomicUsize,
    ops: Vec<AtomicUsize>,
    granularity: Granularity,
}

use super::{dax_gone as gone, dax_may_revive};

/// Whether an error is a refusal because of poison.
fn poisoned(e: &DaxError) -> bool {
    matches!(
        e,
        DaxError::Poisoned { .. } | DaxError::Gup(GupError::Poisoned { .. })
    )
}

impl Run<'_> {
    /// The leaves of `[first, end)` already reported, read before a call.
    fn done_in(&self, first: u64, end: u64) -> bool {
        (first..end).any(|l| self.done[l as usize].load(Ordering::SeqCst))
    }

    /// One operation on `m`; false once the device is gone.
    fn op(&self, m: &DaxMapping, held: &mut Vec<Pinned<Pages, ByAddress>>, rng: &mut Rng) -> bool {
        let leaves_in = m.len() / LEAF;
        let first_leaf = m.offset() / LEAF;
        let l = rng.below(leaves_in);
        let addr = m.addr() + (l * LEAF) as usize;
        match rng.below(3) {
            0 => {
                let before = self.done_in(first_leaf + l, first_leaf + l + 1);
                match m.populate(addr, PAGE_SIZE) {
                    Ok(_) => {
                        if before && self.granularity == Granularity::Leaf {
                            self.violations.fetch_add(1, Ordering::SeqCst);
                        }
                        true
                    }
                    Err(e) if poisoned(&e) => true,
                    Err(e) if gone(&e) => false,
                    Err(e) => panic!("populate: {e}"),
                }
            }
            1 => {
                let n = 1 + rng.below((leaves_in - l) * 512).min(1024);
                let end = first_leaf + l + (n * PAGE_SIZE).div_ceil(LEAF);
                let before = self.done_in(first_leaf + l, end);
                match m.pin_user_pages(addr, n, GupFlags::WRITE) {
                    Ok(p) => {
                        if before {
                            self.violations.fetch_add(1, Ordering::SeqCst);
                        }
                        held.push(p);
                        true
                    }
                    Err(e) if poisoned(&e) => true,
                    Err(e) if gone(&e) => false,
                    Err(e) if dax_may_revive(&e) => true,
                    Err(e) => panic!("pin: {e}"),
                }
            }
            _ => {
                if !held.is_empty() {
                    let p = held.swap_remove(rng.below(held.len() as u64) as usize);
                    p.unpin(rng.below(2) == 0);
                }
                true
            }
        }
    }

    fn worker(&self, t: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut held = Vec::new();
        'outer: loop {
            let first = rng.below(LEAVES);
            let n = 1 + rng.below(LEAVES - first);
            let m = match self.dev.mmap(first * LEAF, n * LEAF, true) {
                Ok(m) => m,
                Err(e) if gone(&e) => break,
                Err(e) => panic!("mmap: {e}"),
            };
            for _ in 0..1 + rng.below(8) {
                let done = self.ops[t].fetch_add(1, Ordering::Relaxed);
                assert!(done < OPS_LIMIT, "worker {t} never saw teardown");
                if !self.op(&m, &mut held, &mut rng) {
                    break 'outer;
                }
                while held.len() > 3 {
                    held.remove(0).unpin(false);
                }
            }
        }
        for p in held {
            p.unpin(false);
        }
    }

    /// Reports an error in page 7 of every other leaf, marking each leaf once it returned.
    fn poisoner(&self) {
        for l in (0..LEAVES).step_by(2) {
            std::thread::sleep(Duration::from_micros(300));
            let pfn = self.dev.pfn_at(l * LEAF + 7 * PAGE_SIZE).expect("pfn");
            match memory_failure(
                self.space,
                pfn,
                MfFlags::ACTION_REQUIRED | MfFlags::RECORD_UNMAPPED,
            ) {
                Ok(_) => self.done[l as usize].store(true, Ordering::SeqCst),
                Err(MfError::NoDevice { .. }) => return,
                Err(e) => panic!("memory_failure: {e}"),
            }
        }
    }
}

fn race(granularity: Granularity, seed: u64) {
    let space = DeviceSpace::new();
    let mut opts = DaxOptions::new(Order::PMD);
    opts.layout = Layout::Vmemmap;
    opts.init = InitMode::async_default();
    opts.faults = Faults::Userfaultfd;
    opts.granularity = granularity;
    opts.handlers = 2;
    let dev = DaxDevice::with_options(&space, Backing::memfd(LEAVES * LEAF).expect("memfd"), opts)
        .expect("device");
    let pgmap = std::sync::Arc::clone(dev.pgmap());
    let data = dev.ranges()[0];
    let run = Run {
        dev: &dev,
        space: &space,
        done: (0..LEAVES).map(|_| AtomicBool::new(false)).collect(),
        violations: AtomicUsize::new(0),
        ops: (0..WORKERS).map(|_| AtomicUsize::new(0)).collect(),
        granularity,
    };
    std::thread::scope(|s| {
        for t in 0..WORKERS {
            let run = &run;
            s.spawn(move || run.worker(t, seed + t as u64));
        }
        let poisoner = s.spawn(|| run.poisoner());
        let run = &run;
        s.spawn(move || {
            while run.ops.iter().any(|o| o.load(Ordering::Relaxed) < OPS) {
                std::thread::sleep(Duration::from_millis(1));
            }
            poisoner.join().expect("poisoner");
            run.dev.close(None).expect("teardown");
        });
    });

    assert_eq!(run.violations.load(Ordering::SeqCst), 0, "{granularity:?}");
    assert_eq!(pgmap.refs(), 0);
    let (m, synced) = pgmap.audit(0).expect("range 0");
    let mut bad = 0;
    for l in 0..LEAVES {
        let head = data.start().add(l * (LEAF / PAGE_SIZE));
        let f = m.folio(&synced, head).expect("audit");
        assert_eq!(
            (f.refcount(), f.pincount(), f.mapcount()),
            (1, 0, 0),
            "{granularity:?}: folio {l} is not idle"
        );
        if run.done[l as usize].load(Ordering::SeqCst) {
            assert!(f.is_poisoned(), "{granularity:?}: leaf {l} lost its poison");
            bad += 1;
        }
    }
    assert_eq!(dev.badblocks().len(), bad, "one bad page per reported leaf");
    assert!(bad > 0, "{granularity:?}: the poisoner ran");
}

#[test]
fn memory_errors_race_faults_pins_unmaps_and_teardown_leaf_granularity() {
    race(Granularity::Leaf, 0x4ea);
}

#[test]
fn memory_errors_race_faults_pins_unmaps_and_teardown_page_granularity() {
    race(Granularity::Page, 0x9a6e);
}
