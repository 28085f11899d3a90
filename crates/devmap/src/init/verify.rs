//! Verifying an adopted memmap room on first use, unit by unit, the way asynchronous init
//! claims its sub-ranges: a warm enable checks nothing up front, and the first `sync` that
//! reaches a unit (a fault, a pin, a memory error, the badblocks replay) checks that unit's
//! descriptors against the checksum the last clean disable wrote (`memmap::sums`) before any
//! of them is handed out. A unit that does not match (scrambled or torn bytes, a count changed
//! on the device), or whose checksum is unknown (a room written before checksums existed), is
//! rebuilt as a fresh init writes it; the enable replays the namespace's bad pages after the
//! device exists, so a rebuilt unit's bad pages are poisoned again on top of the rebuild.
//!
//! Each unit is one sub-range of one piece in the claim protocol (`claim::SubRanges`, with no
//! workers): exactly one thread checks (and if need be rebuilds) a unit, and every other
//! thread that needs it sleeps until that is done. A unit is DONE once checked: those are the
//! units this session may have changed, whose checksums the next disable recomputes; the
//! others keep the checksum they came with.

use super::claim::{Pieces, Stopped, SubRanges};
use super::{InitTarget, init_span};
use crate::addr::Pfn;
use crate::memmap::{Memmap, RoomSums, Units, unit_sum};
use crate::primitive::{AtomicU64, Ordering};

/// The first-use verification of an adopted room.
#[derive(Debug)]
pub(super) struct Verify {
    units: Units,
    /// The checksum of each unit as the last clean disable left it; 0 where unknown.
    expected: Box<[u64]>,
    /// One state word per unit: DONE once checked (and rebuilt if it had to be).
    subs: SubRanges,
    rebuilt_units: AtomicU64,
    rebuilt_descs: AtomicU64,
}

impl Verify {
    /// The verification of `maps` against `stored`: checksums cut for another unit size or
    /// count (or none at all) count as unknown, so every unit is rebuilt on first use.
    pub(super) fn new(maps: &[Memmap], stored: &RoomSums) -> Verify {
        let units = Units::plan(maps);
        let n = units.len();
        let fits = stored.unit_compounds == units.unit_compounds() && stored.sums.len() == n;
        if !fits {
            tracing::info!(
                stored_units = stored.sums.len(),
                units = n,
                "memmap: the adopted room has no checksums for its units; each is rebuilt on \
                 first use"
            );
        }
        let expected = if fits {
            stored.sums.clone().into_boxed_slice()
        } else {
            vec![0; n].into_boxed_slice()
        };
        Verify {
            units,
            expected,
            subs: SubRanges::new(n, 0),
            rebuilt_units: AtomicU64::new(0),
            rebuilt_descs: AtomicU64::new(0),
        }
    }

    /// Checks (and rebuilds where damaged) every unit holding data pfns `lo..=hi` of memmap
    /// `r`, on this thread or by waiting for the thread already at it.
    pub(super) fn sync(
        &self,
        maps: &[Memmap],
        target: InitTarget,
        r: usize,
        lo: Pfn,
        hi: Pfn,
    ) -> Result<(), Stopped> {
        if self.subs.all_done() {
            return Ok(());
        }
        let (first, last) = self.units.covering(maps, r, lo, hi);
        let pieces = UnitPieces {
            verify: self,
            maps,
            target,
        };
        self.subs.sync(first, last, &pieces)
    }

    /// Refuses later syncs (teardown).
    pub(super) fn stop(&self) {
        self.subs.stop();
    }

    /// Descriptors rebuilt so far (units found damaged or without a checksum).
    pub(super) fn rebuilt_descriptors(&self) -> u64 {
        // Relaxed: a tally.
        self.rebuilt_descs.load(Ordering::Relaxed)
    }

    /// Units rebuilt so far.
    pub(super) fn rebuilt_units(&self) -> u64 {
        // Relaxed: a tally.
        self.rebuilt_units.load(Ordering::Relaxed)
    }

    /// The checksums the room's units have now, for the disable to record: recomputed for
    /// every unit this session checked (it may have changed them), kept for the others
    /// (nothing reached their descriptors; unknown stays unknown). Call once nothing changes
    /// the descriptors any more (after teardown).
    pub(super) fn sums(&self, maps: &[Memmap]) -> RoomSums {
        let mut sums = self.expected.to_vec();
        for (i, s) in sums.iter_mut().enumerate() {
            if self.subs.is_done(i, &Checked)
                && let Some((memmap, range)) = self.units.unit(maps, i)
            {
                *s = unit_sum(memmap, range, i as u64);
            }
        }
        RoomSums {
            unit_compounds: self.units.unit_compounds(),
            sums,
        }
    }
}

/// The checksums of every unit of `maps` (a memmap initialised in its room this session).
pub(super) fn all_sums(maps: &[Memmap]) -> RoomSums {
    let units = Units::plan(maps);
    let sums = (0..units.len())
        .filter_map(|i| units.unit(maps, i).map(|(m, r)| unit_sum(m, r, i as u64)))
        .collect();
    RoomSums {
        unit_compounds: units.unit_compounds(),
        sums,
    }
}

/// The state of a unit, as the claim protocol counts it, for reading whether it is DONE.
struct Checked;

impl Pieces for Checked {
    fn count(&self, _unit: usize) -> u32 {
        1
    }

    fn init(&self, _unit: usize, _piece: u32) {}
}

/// The units of a verification, as the claim protocol sees them: one piece each.
struct UnitPieces<'a> {
    verify: &'a Verify,
    maps: &'a [Memmap],
    target: InitTarget,
}

impl Pieces for UnitPieces<'_> {
    fn count(&self, _unit: usize) -> u32 {
        1
    }

    fn init(&self, i: usize, _piece: u32) {
        let v = self.verify;
        let Some((memmap, range)) = v.units.unit(self.maps, i) else {
            return;
        };
        let want = v.expected.get(i).copied().unwrap_or(0);
        if want != 0 {
            let got = unit_sum(memmap, range, i as u64);
            if got == want {
                return;
            }
            tracing::warn!(
                unit = i,
                pfns = ?range,
                stored = format_args!("{want:#018x}"),
                computed = format_args!("{got:#018x}"),
                "memmap: a unit of the adopted room does not match its checksum (damaged or \
                 torn on the device); rebuilt as a fresh init, bad pages replayed"
            );
        }
        let n = init_span(memmap, range, self.target);
        // Relaxed: tallies, read by `stats` and tests.
        v.rebuilt_descs.fetch_add(n, Ordering::Relaxed);
        v.rebuilt_units.fetch_add(1, Ordering::Relaxed);
    }
}
