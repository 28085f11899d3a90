//! A memmap room damaged on the device between a clean disable and the next enable (issue 17,
//! defect 7): scrambled bytes in one unit, one head's reference count set to 1000, a torn
//! write (half a unit zeroed, or half a unit holding an older session's bytes), and a room
//! written before checksums existed. The warm enable checks nothing up front; the first use of
//! each damaged unit finds the damage and rebuilds the unit as a fresh init writes it, the bad
//! pages replayed; every other unit is adopted untouched; and the next disable writes a room
//! that the enable after it adopts without rebuilding anything.
//!
//! Real files in the temp dir: a 1 GiB namespace at 2M, whose 503 data compounds are cut into
//! 252 units of 2 compounds (at most 480 fit the info block).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::warm_tests::{fresh_memmap, memmap_of, opts};
use super::*;
use crate::addr::Pfn;
use crate::backing::file::TempPath;
use crate::desc::{PageFlags, PageSnapshot};
use crate::gup::GupFlags;
use crate::init::InitMode;
use crate::memmap::DESC_SIZE;
use crate::test_support::Rng;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Pages per 2 MiB compound.
const COMPOUND: u64 = 512;
/// Data pages per unit of the room's checksums.
const UNIT_PAGES: u64 = 2 * COMPOUND;
/// The bad page the first session finds: compound 3, unit 1.
const BAD_PAGE: u64 = 3 * COMPOUND + 17;
/// The unit holding [`BAD_PAGE`], which the enable's badblocks replay uses.
const BAD_UNIT: u64 = BAD_PAGE / UNIT_PAGES;

/// A region with one 1 GiB `--map dev` namespace whose room a clean disable has written.
struct Room {
    path: TempPath,
    region: Region,
    label: Label,
    layout: Layout,
    /// First pfn of the pgmap: the room's descriptor array starts with its descriptor.
    first: Pfn,
    /// First data pfn.
    data: Pfn,
    /// What a fresh init writes, pfn by pfn from `data`.
    fresh: Vec<Option<PageSnapshot>>,
}

impl Room {
    /// Creates the namespace, enables it cold, takes a memory error at [`BAD_PAGE`] and
    /// disables it cleanly.
    fn new(tag: &str, layout: Layout) -> Room {
        let path = TempPath::new(&format!("room-{tag}-{}", layout.name()));
        let mut region = Region::create(&path.0, GIB + 4 * MIB).expect("create");
        region
            .create_namespace(
                "kv",
                GIB,
                2 * MIB,
                NamespaceMode::Devdax,
                MemmapLocation::Dev,
            )
            .expect("kv");
        let label = region.namespace("kv").expect("kv").clone();
        let space = DeviceSpace::new();
        let ns = region
            .enable(&space, "kv", opts(layout, InitMode::Sync))
            .expect("cold enable");
        assert_eq!(ns.path(), EnablePath::Cold);
        let dev = ns.device();
        let first = dev.pgmap().ranges().next().expect("a range").start();
        let data = dev.ranges()[0].start();
        let fresh = fresh_memmap(&ns);
        let bad = dev.pfn_at(BAD_PAGE * PAGE_SIZE).expect("pfn");
        memory_failure(&space, bad, MfFlags::RECORD_UNMAPPED).expect("memory error");
        region.disable(ns).expect("disable");
        let room = Room {
            path,
            region,
            label,
            layout,
            first,
            data,
            fresh,
        };
        // The offsets below are right: the head word on the device is the fresh init's.
        let head = BAD_PAGE / COMPOUND * COMPOUND;
        let mut word = [0u8; 8];
        room.file()
            .read_exact_at(&mut word, room.desc_offset(head) + 8)
            .expect("read");
        let fresh_head = room.fresh[head as usize].expect("a head").head;
        assert_eq!(u64::from_le_bytes(word), fresh_head, "room offsets");
        room
    }

    fn file(&self) -> std::fs::File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path.0)
            .expect("open the region file")
    }

    /// Where in the region file the descriptor of data page `page` lies (Heads: its
    /// compound's head).
    fn desc_offset(&self, page: u64) -> u64 {
        let index = self.data.add(page).offset_from(self.first);
        let slot = match self.layout {
            Layout::Flat => index,
            Layout::Heads => index / COMPOUND,
            Layout::Vmemmap => unreachable!("vmemmap has no room"),
        };
        self.label.offset + INFO_BLOCK_BYTES + slot * DESC_SIZE
    }

    /// Descriptors stored per compound.
    fn per_compound(&self) -> u64 {
        match self.layout {
            Layout::Heads => 1,
            _ => COMPOUND,
        }
    }

    /// The bytes of the descriptors of compound `c` in the region file: (offset, length).
    fn compound_bytes(&self, c: u64) -> (u64, usize) {
        (
            self.desc_offset(c * COMPOUND),
            (self.per_compound() * DESC_SIZE) as usize,
        )
    }

    fn read(&self, (at, len): (u64, usize)) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.file()
            .read_exact_at(&mut b, at)
            .expect("read the room");
        b
    }

    fn write(&self, at: u64, bytes: &[u8]) {
        self.file()
            .write_all_at(bytes, at)
            .expect("damage the room");
    }

    fn warm(&mut self, space: &DeviceSpace) -> EnabledNamespace {
        let ns = self
            .region
            .enable(space, "kv", opts(self.layout, InitMode::Sync))
            .expect("enable");
        assert_eq!(ns.path(), EnablePath::Warm, "{:?}", self.layout);
        ns
    }

    /// Every descriptor of `dev` is a fresh init's, exactly, apart from the poison flags of
    /// the compounds holding the pages of `bad`, which are the device's bad pages and poisoned.
    fn assert_fresh(&self, dev: &DaxDevice, bad: &[u64]) {
        let layout = self.layout;
        assert_eq!(
            dev.badblocks(),
            bad.iter()
                .map(|&p| (p * PAGE_SIZE, PAGE_SIZE))
                .collect::<Vec<_>>(),
            "{layout:?}: the bad pages"
        );
        let poison = PageFlags::HWPOISON.union(PageFlags::HAS_HWPOISONED).bits();
        let got = memmap_of(dev);
        assert_eq!(got.len(), self.fresh.len());
        for (i, (g, f)) in got.iter().zip(&self.fresh).enumerate() {
            let (Some(g), Some(f)) = (g, f) else {
                assert_eq!(g.is_some(), f.is_some(), "{layout:?}: descriptor {i}");
                continue;
            };
            let compound = i as u64 / COMPOUND;
            let (mut g, mut f) = (*g, *f);
            if bad.iter().any(|&p| p / COMPOUND == compound) {
                g.flags &= !poison;
                f.flags &= !poison;
            }
            assert_eq!(g, f, "{layout:?}: descriptor of data page {i}");
        }
        for &p in bad {
            let pfn = self.data.add(p);
            assert!(
                dev.pgmap().subpage_poisoned(pfn).expect("lookup"),
                "{layout:?}: bad page {p} poisoned"
            );
        }
    }
}

/// After `damage` hit unit `unit` of `room`: the warm enable checks nothing up front (but the
/// unit of the bad page, which the badblocks replay uses), the first use of `unit` rebuilds it
/// alone, the memmap is then a fresh init's with the bad page poisoned, the device works, and
/// the next disable leaves a clean room the enable after it adopts without rebuilding.
fn rebuilt_on_first_use(room: &mut Room, unit: u64) {
    let layout = room.layout;
    let unit_descs = 2 * room.per_compound();
    let space = DeviceSpace::new();
    let ns = room.warm(&space);
    let dev = ns.device();
    let pgmap = dev.pgmap();
    let at_enable = u64::from(unit == BAD_UNIT);
    assert_eq!(
        pgmap.rebuilt_room_units(),
        at_enable,
        "{layout:?}: only the badblocks replay used a unit during the enable"
    );
    assert_eq!(pgmap.init_stats().descriptors, at_enable * unit_descs);

    let pfn = room.data.add(unit * UNIT_PAGES + COMPOUND + 5);
    pgmap.descriptor(pfn).expect("first use");
    assert_eq!(
        pgmap.rebuilt_room_units(),
        1,
        "{layout:?}: the damaged unit is found on its first use and rebuilt"
    );
    assert_eq!(
        pgmap.init_stats().descriptors,
        unit_descs,
        "{layout:?}: that unit alone is rebuilt"
    );
    room.assert_fresh(dev, &[BAD_PAGE]);
    assert_eq!(
        pgmap.rebuilt_room_units(),
        1,
        "{layout:?}: every other unit is adopted as it was"
    );

    // The device serves the rebuilt unit: pin and unpin its first leaf, read the data.
    let m = dev.mmap(0, dev.size(), true).expect("mmap");
    let leaf = unit * UNIT_PAGES * PAGE_SIZE;
    m.populate(m.addr() + leaf as usize, 2 * MIB)
        .expect("populate");
    let pins = m
        .pin_user_folios(m.addr() + leaf as usize, COMPOUND, GupFlags::WRITE)
        .expect("pin");
    pins.unpin(true);
    let mut b = [0u8];
    let e = m
        .read_mc(BAD_PAGE * PAGE_SIZE, &mut b)
        .expect_err("the bad page stays bad");
    assert!(matches!(e, DaxError::MemoryLost { .. }), "{e}");
    drop(m);
    room.region.disable(ns).expect("disable");

    let block = room.region.info_block(&room.label).expect("block");
    assert!(block.flags.contains(InfoFlags::CLEAN));
    assert_eq!(
        block.room_sums.as_ref().map(|s| s.sums.len()),
        Some(252),
        "{layout:?}: the clean disable records every unit's checksum"
    );
    let space = DeviceSpace::new();
    let ns = room.warm(&space);
    room.assert_fresh(ns.device(), &[BAD_PAGE]);
    assert_eq!(
        ns.device().pgmap().rebuilt_room_units(),
        0,
        "{layout:?}: the room the disable wrote is whole"
    );
    room.region.disable(ns).expect("disable");
}

#[test]
fn scrambled_bytes_in_one_unit_are_rebuilt_on_first_use() {
    for layout in [Layout::Flat, Layout::Heads] {
        let mut room = Room::new("scrambled", layout);
        let unit = 100;
        let (at, len) = room.compound_bytes(2 * unit);
        let mut rng = Rng::new(0x5c7a);
        let junk: Vec<u8> = (0..2 * len).map(|_| rng.next() as u8).collect();
        room.write(at, &junk);
        rebuilt_on_first_use(&mut room, unit);
    }
}

#[test]
fn a_head_refcount_changed_on_the_device_is_rebuilt_and_its_bad_page_replayed() {
    for layout in [Layout::Flat, Layout::Heads] {
        let mut room = Room::new("refcount", layout);
        // The head of the bad page's compound: word 2 holds the reference count (low half).
        let (at, _) = room.compound_bytes(BAD_PAGE / COMPOUND);
        let mut counts = [0u8; 8];
        room.file()
            .read_exact_at(&mut counts, at + 16)
            .expect("read");
        counts[..4].copy_from_slice(&1000i32.to_le_bytes());
        room.write(at + 16, &counts);
        rebuilt_on_first_use(&mut room, BAD_UNIT);
    }
}

#[test]
fn a_torn_write_that_zeroed_half_a_unit_is_rebuilt_on_first_use() {
    for layout in [Layout::Flat, Layout::Heads] {
        let mut room = Room::new("torn-zero", layout);
        let unit = 50;
        let (at, len) = room.compound_bytes(2 * unit + 1);
        room.write(at, &vec![0u8; len]);
        rebuilt_on_first_use(&mut room, unit);
    }
}

/// Half a unit as an older session left it: that session had a second bad page there, which a
/// later session cleared. The older bytes still flag it poisoned.
#[test]
fn a_torn_write_holding_an_older_session_is_rebuilt_on_first_use() {
    const SECOND: u64 = 9 * COMPOUND + 300;
    for layout in [Layout::Flat, Layout::Heads] {
        let mut room = Room::new("torn-old", layout);
        let unit = SECOND / UNIT_PAGES;
        let space = DeviceSpace::new();
        let ns = room.warm(&space);
        let pfn = ns.device().pfn_at(SECOND * PAGE_SIZE).expect("pfn");
        memory_failure(&space, pfn, MfFlags::RECORD_UNMAPPED).expect("a second error");
        room.region.disable(ns).expect("disable");
        let older = room.read(room.compound_bytes(SECOND / COMPOUND));

        let space = DeviceSpace::new();
        let ns = room.warm(&space);
        assert_eq!(
            ns.device()
                .clear_poison(SECOND * PAGE_SIZE, PAGE_SIZE)
                .expect("clear"),
            1
        );
        room.assert_fresh(ns.device(), &[BAD_PAGE]);
        room.region.disable(ns).expect("disable");
        assert_ne!(
            room.read(room.compound_bytes(SECOND / COMPOUND)),
            older,
            "{layout:?}: the clear reached the room"
        );

        let (at, _) = room.compound_bytes(SECOND / COMPOUND);
        room.write(at, &older);
        rebuilt_on_first_use(&mut room, unit);
    }
}

/// A room written before checksums existed (info block 1.1) is not trusted: each unit is
/// rebuilt on first use, so damage there goes too; the next disable records checksums.
#[test]
fn a_room_without_checksums_is_rebuilt_unit_by_unit_on_first_use() {
    for layout in [Layout::Flat, Layout::Heads] {
        let mut room = Room::new("v1.1", layout);
        let mut block = room.region.info_block(&room.label).expect("block");
        assert!(block.room_sums.is_some());
        block.room_sums = None;
        room.region
            .rewrite_info_block(&room.label, block, true, true)
            .expect("write a 1.1 block");
        let (at, len) = room.compound_bytes(14);
        room.write(at, &vec![0xa5; len]);

        let space = DeviceSpace::new();
        let ns = room.warm(&space);
        let pgmap = ns.device().pgmap();
        assert_eq!(
            pgmap.rebuilt_room_units(),
            1,
            "{layout:?}: the replay's unit, nothing else up front"
        );
        room.assert_fresh(ns.device(), &[BAD_PAGE]);
        assert_eq!(
            pgmap.rebuilt_room_units(),
            252,
            "{layout:?}: every unit rebuilt on its first use"
        );
        room.region.disable(ns).expect("disable");

        let block = room.region.info_block(&room.label).expect("block");
        assert!(block.room_sums.is_some(), "{layout:?}: checksums now");
        let space = DeviceSpace::new();
        let ns = room.warm(&space);
        room.assert_fresh(ns.device(), &[BAD_PAGE]);
        assert_eq!(ns.device().pgmap().rebuilt_room_units(), 0);
        room.region.disable(ns).expect("disable");
    }
}

/// Threads that first use one damaged unit together: one checks and rebuilds it, the others
/// wait for it, and none sees a descriptor of it before the rebuild is complete.
#[test]
fn threads_that_first_use_a_damaged_unit_together_see_it_rebuilt_once() {
    let mut room = Room::new("together", Layout::Flat);
    let unit = 60;
    let (at, len) = room.compound_bytes(2 * unit);
    room.write(at, &vec![0x5a; 2 * len]);
    let space = DeviceSpace::new();
    let ns = room.warm(&space);
    let pgmap = ns.device().pgmap();
    let first = unit * UNIT_PAGES;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let room = &room;
            s.spawn(move || {
                // Each thread starts at another page of the unit and walks all of it.
                for k in 0..UNIT_PAGES {
                    let page = first + (t * 301 + k) % UNIT_PAGES;
                    let got = pgmap
                        .descriptor(room.data.add(page))
                        .expect("lookup")
                        .map(|p| p.snapshot());
                    assert_eq!(got, room.fresh[page as usize], "data page {page}");
                }
            });
        }
    });
    assert_eq!(pgmap.rebuilt_room_units(), 1, "rebuilt once");
    assert_eq!(pgmap.init_stats().descriptors, UNIT_PAGES);
    room.region.disable(ns).expect("disable");
}
