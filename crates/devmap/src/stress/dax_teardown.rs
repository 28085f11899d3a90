//! Stress: four threads map windows of one userfaultfd-backed device-dax device, touch them
//! (caught faults), populate leaves, pin by user address in both forms, unpin and unmap,
//! holding pins across unmaps, while a fifth tears the device down twice: first with a
//! timeout while it holds a mapping itself (the teardown must give up and the device must come
//! back), then for good.
//!
//! Caught touches run only until the final teardown begins (a touch after that dies of
//! SIGBUS, which `dax::uffd_tests` checks in a child process); populates and pins run to the
//! end. Afterwards: every folio idle (count 1, no pins, no mapcount), no liveness reference
//! left, no mapping registered, no touch answered with SIGBUS, and no populate that began
//! after the final teardown had closed the device succeeded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::addr::{Order, PAGE_SIZE};
use crate::backing::Backing;
use crate::dax::{DaxDevice, DaxError, DaxMapping, DaxOptions, Faults};
use crate::gup::{ByAddress, Folios, GupFlags, Pages, Pinned};
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::pgmap::{DeviceSpace, PgmapError};
use crate::test_support::Rng;

const LEAF: u64 = 2 << 20;
const LEAVES: u64 = 32;
const WORKERS: usize = 4;
/// Operations every worker does before the first teardown may start, and again between the
/// two teardowns.
const OPS_PER_PHASE: usize = 2_000;
/// A worker that gets this far never saw teardown: the test fails rather than hangs.
const OPS_LIMIT: usize = 200_000;
const MAX_HELD: usize = 4;

enum Held {
    Pages(Pinned<Pages, ByAddress>),
    Folios(Pinned<Folios, ByAddress>),
}

struct Run<'d> {
    dev: &'d DaxDevice,
    /// `true` while caught touches are allowed; the final teardown takes the write side.
    touches: RwLock<bool>,
    ops: Vec<AtomicUsize>,
    /// Populates that began after the final teardown had closed the device and succeeded.
    late_faults: AtomicUsize,
    torn_down_seen: AtomicUsize,
    final_began: AtomicBool,
}

use super::{dax_gone as torn_down, dax_may_revive as may_revive};

impl Run<'_> {
    /// A random window: (device offset, length).
    fn window(rng: &mut Rng) -> (u64, u64) {
        let first = rng.below(LEAVES);
        let n = 1 + rng.below(LEAVES - first);
        (first * LEAF, n * LEAF)
    }

    /// A random page range inside `m`: (address, pages).
    fn pages(m: &DaxMapping, rng: &mut Rng) -> (usize, u64) {
        let total = m.len() / PAGE_SIZE;
        let first = rng.below(total);
        let n = 1 + rng.below((total - first).min(2048));
        (m.addr() + (first * PAGE_SIZE) as usize, n)
    }

    /// One operation on `m`; false once the device is going away.
    fn op(&self, m: &DaxMapping, held: &mut Vec<Held>, rng: &mut Rng) -> bool {
        let (addr, n) = Self::pages(m, rng);
        let rel = (addr - m.addr()) as u64;
        match rng.below(5) {
            0 => {
                let allowed = self.touches.read();
                if *allowed {
                    let v = [rng.next() as u8];
                    m.bytes().write(rel, &v).expect("a caught touch");
                    let mut got = [0u8];
                    m.bytes().read(rel, &mut got).expect("read back");
                }
                true
            }
            1 => {
                let closed = self.final_began.load(Ordering::SeqCst) && !self.dev.is_live();
                match m.populate(addr, PAGE_SIZE) {
                    Ok(_) => {
                        if closed {
                            self.late_faults.fetch_add(1, Ordering::Relaxed);
                        }
                        // The leaf's entries are mapped: touching it cannot fault.
                        m.bytes().write(rel, &[7]).expect("a populated leaf");
                        true
                    }
                    Err(e) if torn_down(&e) => false,
                    Err(e) => panic!("populate: {e}"),
                }
            }
            2 | 3 => {
                let flags = if rng.below(2) == 0 {
                    GupFlags::WRITE
                } else {
                    GupFlags::NONE
                };
                let r = if rng.below(2) == 0 {
                    m.pin_user_pages(addr, n, flags).map(Held::Pages)
                } else {
                    m.pin_user_folios(addr, n, flags).map(Held::Folios)
                };
                match r {
                    Ok(h) => {
                        held.push(h);
                        true
                    }
                    Err(e) if torn_down(&e) => false,
                    Err(e) if may_revive(&e) => true,
                    Err(e) => panic!("pin by address: {e}"),
                }
            }
            _ => {
                if !held.is_empty() {
                    let h = held.swap_remove(rng.below(held.len() as u64) as usize);
                    release(h, rng.below(2) == 0);
                }
                true
            }
        }
    }

    fn worker(&self, t: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut held: Vec<Held> = Vec::new();
        'outer: loop {
            let (offset, len) = Self::window(&mut rng);
            let m = match self.dev.mmap(offset, len, true) {
                Ok(m) => m,
                Err(e) if torn_down(&e) => break,
                Err(e) => panic!("mmap: {e}"),
            };
            for _ in 0..1 + rng.below(8) {
                let done = self.ops[t].fetch_add(1, Ordering::Relaxed);
                assert!(done < OPS_LIMIT, "worker {t} never saw teardown");
                if !self.op(&m, &mut held, &mut rng) {
                    break 'outer;
                }
                while held.len() > MAX_HELD {
                    release(held.remove(0), false);
                }
            }
            // Pins outlive the mapping.
        }
        self.torn_down_seen.fetch_add(1, Ordering::Relaxed);
        for h in held.drain(..) {
            release(h, false);
        }
    }

    fn wait_for_ops(&self, at_least: usize) {
        while self
            .ops
            .iter()
            .any(|o| o.load(Ordering::Relaxed) < at_least)
        {
            assert_eq!(
                self.torn_down_seen.load(Ordering::Relaxed),
                0,
                "a worker stopped early"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn release(h: Held, dirty: bool) {
    match h {
        Held::Pages(p) => p.unpin(dirty),
        Held::Folios(f) => f.unpin(dirty),
    }
}

#[test]
fn touches_pins_and_unmaps_race_teardown() {
    let space = DeviceSpace::new();
    let mut opts = DaxOptions::new(Order::PMD);
    opts.layout = Layout::Vmemmap;
    opts.init = InitMode::async_default();
    opts.faults = Faults::Userfaultfd;
    let backing = Backing::memfd(LEAVES * LEAF).expect("memfd");
    let dev = DaxDevice::with_options(&space, backing, opts).expect("device");
    let pgmap = std::sync::Arc::clone(dev.pgmap());
    let data = dev.ranges()[0];
    let run = Run {
        dev: &dev,
        touches: RwLock::new(true),
        ops: (0..WORKERS).map(|_| AtomicUsize::new(0)).collect(),
        late_faults: AtomicUsize::new(0),
        torn_down_seen: AtomicUsize::new(0),
        final_began: AtomicBool::new(false),
    };
    std::thread::scope(|s| {
        for t in 0..WORKERS {
            let run = &run;
            s.spawn(move || run.worker(t, 0xda0 + t as u64));
        }
        let run = &run;
        s.spawn(move || {
            // A timed teardown while this thread holds a mapping: it must give up, and the
            // device must serve faults again afterwards.
            let mine = run.dev.mmap(0, LEAF, true).expect("mmap");
            run.wait_for_ops(OPS_PER_PHASE);
            let e = run
                .dev
                .close(Some(Duration::from_millis(20)))
                .expect_err("a mapping is live");
            assert!(matches!(e, DaxError::Pgmap(PgmapError::Busy { .. })), "{e}");
            assert!(run.dev.is_live());
            drop(mine);
            run.wait_for_ops(2 * OPS_PER_PHASE);

            // The final teardown: no caught touch from here on.
            *run.touches.write() = false;
            run.final_began.store(true, Ordering::SeqCst);
            run.dev.close(None).expect("teardown");
        });
    });

    assert_eq!(run.torn_down_seen.load(Ordering::Relaxed), WORKERS);
    assert_eq!(
        run.late_faults.load(Ordering::Relaxed),
        0,
        "a fault resolved after teardown"
    );
    let stats = dev.fault_stats();
    assert_eq!(stats.sigbus, 0, "{stats:?}");
    assert!(
        stats.user_faults > 0 && stats.leaves_mapped > 0,
        "{stats:?}"
    );
    assert_eq!(dev.nr_mappings(), 0);
    assert_eq!(pgmap.refs(), 0, "no liveness reference left");
    assert_eq!(space.nr_pgmaps(), 0);

    let (m, synced) = pgmap.audit(0).expect("range 0");
    for i in 0..LEAVES {
        let head = data.start().add(i * (LEAF / PAGE_SIZE));
        let f = m.folio(&synced, head).expect("audit");
        assert_eq!(
            (f.refcount(), f.pincount(), f.mapcount()),
            (1, 0, 0),
            "folio {i} is not back at idle"
        );
    }
}
