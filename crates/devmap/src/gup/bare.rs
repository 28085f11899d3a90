//! The physical limit of a folio pin (issue 20): one atomic add on the count word of every
//! folio's head descriptor in a range, then one subtract, and nothing else: no type or poison
//! check, no entry written, no lookup (the heads are found before the clock starts).
//! `gup-test` runs it over the same memmap beside every pin it measures, so a pin's cost reads
//! as a ratio to it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::addr::PfnRange;
use crate::desc::pack_counts;
use crate::pgmap::Pgmap;

use super::batch;
use super::flags::GupError;

/// What one bare loop took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BareLoop {
    /// Folios whose head was touched.
    pub folios: u64,
    /// The adds (what a pin's grab must at least do).
    pub get: Duration,
    /// The subtracts (what an unpin must at least do).
    pub put: Duration,
}

impl Pgmap {
    /// Adds one reference and one pin to the head of every folio of `range` with a single
    /// atomic add each, then takes them back the same way, and times both loops: the floor
    /// under [`pin_folios`](Self::pin_folios) of the same range. The folios must be live (as
    /// for a pin); the counts are as they were when it returns.
    pub fn bare_head_loop(self: &Arc<Self>, range: PfnRange) -> Result<BareLoop, GupError> {
        let _live = self.tryget().ok_or(GupError::TornDown {
            pfn: range.start(),
            may_revive: false,
        })?;
        let words = batch::head_words(self, range)?;
        // One reference and one pin in one add, as a pin's grab takes them in one CAS.
        let one = pack_counts(1, 1);
        let t = Instant::now();
        for w in &words {
            // Acquire, as a grab's successful CAS.
            w.fetch_add(one, Ordering::Acquire);
        }
        let get = t.elapsed();
        let t = Instant::now();
        for w in &words {
            // Release, as an unpin's put: pairs with the next grab's Acquire.
            w.fetch_sub(one, Ordering::Release);
        }
        let put = t.elapsed();
        Ok(BareLoop {
            folios: words.len() as u64,
            get,
            put,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::addr::Order;
    use crate::memmap::Layout;
    use crate::pgmap::MemoryType;

    #[test]
    fn the_bare_loop_touches_every_head_once_and_leaves_the_counts_as_they_were() {
        for (layout, order) in [
            (Layout::Heads, Order::PMD),
            (Layout::Flat, Order::PMD),
            (Layout::Vmemmap, Order::BASE),
        ] {
            let f =
                crate::test_support::fixture(32 << 20, 2 << 20, layout, order, MemoryType::Generic);
            let before: Vec<(i32, i32)> = (0..f.r.len())
                .step_by(order.nr_pages() as usize)
                .map(|i| {
                    let folio = f.p.folio(f.r.start().add(i)).expect("folio");
                    (folio.refcount(), folio.pincount())
                })
                .collect();
            let done = f.p.bare_head_loop(f.r).expect("bare loop");
            assert_eq!(
                done.folios,
                f.r.len() / order.nr_pages(),
                "{layout:?} {order:?}"
            );
            let after: Vec<(i32, i32)> = (0..f.r.len())
                .step_by(order.nr_pages() as usize)
                .map(|i| {
                    let folio = f.p.folio(f.r.start().add(i)).expect("folio");
                    (folio.refcount(), folio.pincount())
                })
                .collect();
            assert_eq!(before, after, "{layout:?} {order:?}");
        }
    }
}
