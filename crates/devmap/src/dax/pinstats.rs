//! Per-device pin accounting ([`DaxDevice::pin_stats`](super::DaxDevice::pin_stats)): what is pinned on a device now, for a
//! caller sizing `RLIMIT_MEMLOCK` or an IOMMU budget.
//!
//! Counted on demand by walking the device's folios and reading each head's pin count, not
//! kept on the pin path: a pin is one atomic update per folio, and a per-device counter
//! would add a second atomic on a line every pinning thread shares. Callers ask for this to
//! size limits, not per pin.

use crate::addr::{PAGE_SIZE, Pfn};
use crate::desc::GUP_PIN_COUNTING_BIAS;

use super::device_core::DeviceCore;

/// What is pinned on one device at one moment (see
/// [`DaxDevice::pin_stats`](super::DaxDevice::pin_stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinStats {
    /// Bytes of the folios with at least one pin, each folio counted once, whole.
    pub pinned_bytes: u64,
    /// Pin references: one per page per pin call, as the kernel counts them (a large folio's
    /// pincount; a small folio's count over `GUP_PIN_COUNTING_BIAS`).
    pub pin_refs: u64,
    /// Bytes counted once per pin reference (`pin_refs` × 4 KiB): what a `RLIMIT_MEMLOCK`
    /// accounting that charges every pin would charge; two overlapping pins count twice.
    pub referenced_bytes: u64,
}

/// The pins on `dev` now (see `DaxDevice::pin_stats`).
pub(super) fn pin_stats(dev: &DeviceCore) -> PinStats {
    let pgmap = &dev.pgmap;
    let step = dev.align.nr_pages();
    let mut stats = PinStats::default();
    for range in dev.ranges.iter().map(|r| r.pfns) {
        let mut pfn = range.start();
        while pfn < range.end() {
            let Ok(folio) = pgmap.folio(pfn) else {
                pfn = pfn.add(step);
                continue;
            };
            let pins = if folio.order().get() > 0 {
                folio.pincount().max(0) as u64
            } else {
                (folio.refcount().max(0) / GUP_PIN_COUNTING_BIAS) as u64
            };
            if pins > 0 {
                stats.pinned_bytes += folio.nr_pages() * PAGE_SIZE;
                stats.pin_refs += pins;
            }
            let next: Pfn = folio.range().end();
            pfn = if next > pfn { next } else { pfn.add(step) };
        }
    }
    stats.referenced_bytes = stats.pin_refs * PAGE_SIZE;
    stats
}
