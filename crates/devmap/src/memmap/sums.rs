//! The checksums of a memmap room: how a warm enable tells the descriptors a clean disable
//! wrote from a room damaged since (scrambled bytes, a changed count, a torn write).
//!
//! A room memmap's data compounds are cut into at most [`RoomSums::MAX_UNITS`] *units* of
//! `unit_compounds` whole compounds each (the last may hold fewer), numbered across the
//! pgmap's ranges in order: few enough that the table fits the namespace's info block, which
//! is written with the clean flag in one sealed 4 KiB block. A unit's checksum covers the
//! descriptors a fresh init writes for it (every stored descriptor of its compounds: 512 per
//! 2 MiB compound in Flat, the head alone in Heads), as eight little-endian words each
//! ([`Page::words`](crate::desc::Page::words)), seeded with the unit's number so that a unit's
//! bytes copied to another unit do not match. 0 is never a checksum: it means "unknown" (a
//! room written before checksums existed), which a warm enable treats as damaged.
//!
//! The hash is four independent multiply-rotate lanes over the words (xxHash64's round and
//! final mix), so a disable hashes at memory speed.

use crate::addr::{Pfn, PfnRange};

use super::Memmap;

/// The checksums of a room memmap's units, as a clean disable leaves them in the info block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomSums {
    /// Compounds per unit (the last unit of a range may hold fewer).
    pub unit_compounds: u64,
    /// One checksum per unit, in order; 0 where the unit's checksum is unknown.
    pub sums: Vec<u64>,
}

impl RoomSums {
    /// The most units a room is cut into: what the info block holds.
    pub const MAX_UNITS: usize = 480;
}

/// How a set of memmaps is cut into units.
#[derive(Debug, Clone)]
pub(crate) struct Units {
    /// Compounds per unit.
    compounds: u64,
    /// Per memmap, the global number of its first unit; one more entry holds the total.
    first: Vec<usize>,
}

impl Units {
    /// The units of `maps`: the fewest compounds per unit that keep the total at most
    /// [`RoomSums::MAX_UNITS`].
    pub(crate) fn plan(maps: &[Memmap]) -> Units {
        let compounds: Vec<u64> = maps.iter().map(data_compounds).collect();
        let total: u64 = compounds.iter().sum();
        let max = RoomSums::MAX_UNITS as u64;
        let count = |per: u64| compounds.iter().map(|c| c.div_ceil(per)).sum::<u64>();
        let mut per = total.div_ceil(max).max(1);
        // With several ranges each rounds up on its own; a few more compounds per unit fix it.
        while count(per) > max {
            per += 1;
        }
        let mut first = Vec::with_capacity(maps.len() + 1);
        let mut at = 0usize;
        for c in &compounds {
            first.push(at);
            // At most MAX_UNITS in all, so each fits `usize`.
            at += c.div_ceil(per) as usize;
        }
        first.push(at);
        Units {
            compounds: per,
            first,
        }
    }

    /// Compounds per unit.
    pub(crate) fn unit_compounds(&self) -> u64 {
        self.compounds
    }

    /// Units in all.
    pub(crate) fn len(&self) -> usize {
        self.first.last().copied().unwrap_or(0)
    }

    /// The memmap index and data pfns of unit `i` (`None` past the last).
    pub(crate) fn unit<'m>(&self, maps: &'m [Memmap], i: usize) -> Option<(&'m Memmap, PfnRange)> {
        let r = self
            .first
            .windows(2)
            .position(|w| (w[0]..w[1]).contains(&i))?;
        let memmap = maps.get(r)?;
        let data = memmap.geometry().data_range();
        let pages = self.unit_pages(memmap);
        let start = data.start().add((i - self.first[r]) as u64 * pages);
        let end = start.add(pages).min(data.end());
        Some((memmap, PfnRange::new_unchecked(start, end)))
    }

    /// The global numbers of the units holding data pfns `lo..=hi` of memmap `r` (both in its
    /// data range).
    pub(crate) fn covering(&self, maps: &[Memmap], r: usize, lo: Pfn, hi: Pfn) -> (usize, usize) {
        let data = maps[r].geometry().data_range();
        let pages = self.unit_pages(&maps[r]);
        let idx = |p: Pfn| self.first[r] + (p.offset_from(data.start()) / pages) as usize;
        (idx(lo), idx(hi))
    }

    fn unit_pages(&self, memmap: &Memmap) -> u64 {
        self.compounds * memmap.geometry().shift().nr_pages()
    }
}

fn data_compounds(m: &Memmap) -> u64 {
    let geo = m.geometry();
    geo.data_pages().div_ceil(geo.shift().nr_pages())
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

/// The checksum of the descriptors of data pfns `range` (whole compounds) of `memmap`, as unit
/// `unit`: never 0.
pub(crate) fn unit_sum(memmap: &Memmap, range: PfnRange, unit: u64) -> u64 {
    let mut lanes = [
        unit.wrapping_add(P1).wrapping_add(P2),
        unit.wrapping_add(P2),
        unit,
        unit.wrapping_sub(P1),
    ];
    let mut words = 0u64;
    let step = memmap.geometry().shift().nr_pages();
    let mut head = range.start();
    while head < range.end() {
        for page in memmap.compound_slots(head) {
            for (i, w) in page.words().into_iter().enumerate() {
                let l = &mut lanes[i & 3];
                *l = l
                    .wrapping_add(w.wrapping_mul(P2))
                    .rotate_left(31)
                    .wrapping_mul(P1);
            }
            words += 8;
        }
        head = head.add(step);
    }
    let mut h = lanes[0]
        .rotate_left(1)
        .wrapping_add(lanes[1].rotate_left(7))
        .wrapping_add(lanes[2].rotate_left(12))
        .wrapping_add(lanes[3].rotate_left(18))
        ^ words;
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h.max(1)
}
