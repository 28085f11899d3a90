//! Who is told of a memory error on a device-dax device, as the kernel's `collect_procs`
//! (with `force_early`, as `mf_generic_kill_procs` calls it) and `kill_proc` choose: the current
//! mapping, whose own access met the error, gets `BUS_MCEERR_AR`; early-kill mappings get
//! `AO`; the others are not told (they learn by SIGBUS when they touch). devmap's `TELL_ALL`
//! tells every mapping that lost the page. A second error on a page goes through the generic
//! path again and succeeds, as the kernel's device pages never reach `MF_MSG_ALREADY_POISONED`.

use std::sync::Arc;

use parking_lot::Mutex;

use super::dax_tests::{BAD, LEAF, device, fill_and_fault, rel, three};
use super::*;
use crate::addr::PAGE_SIZE;
use crate::dax::{DaxDevice, DaxMapping, Granularity};

type Log = Arc<Mutex<Vec<PoisonNotice>>>;

/// Three mappings of the device's second leaf, faulted, each with an owner keeping what it is
/// told; `early[i]` makes mapping `i` early-kill.
fn mapped(dev: &DaxDevice, early: [bool; 3]) -> ([DaxMapping; 3], [Log; 3]) {
    let maps = three(dev);
    let logs: [Log; 3] = Default::default();
    for ((m, log), early) in maps.iter().zip(&logs).zip(early) {
        let log = Arc::clone(log);
        m.set_owner(Arc::new(move |n: &PoisonNotice| log.lock().push(*n)));
        m.set_early_kill(early);
        assert_eq!(m.early_kill(), early);
    }
    fill_and_fault(&maps);
    (maps, logs)
}

/// (mapping, `action_required`) of each notice.
fn who(notices: &[PoisonNotice]) -> Vec<(MappingId, bool)> {
    notices
        .iter()
        .map(|n| (n.mapping, n.action_required))
        .collect()
}

/// Takes what each owner was told since the last call.
fn drain(logs: &[Log; 3]) -> [Vec<(MappingId, bool)>; 3] {
    logs.each_ref()
        .map(|l| who(&std::mem::take(&mut *l.lock())))
}

#[test]
fn kill_proc_sends_ar_only_to_current_and_ao_only_to_early_kill_owners() {
    let space = DeviceSpace::new();
    let dev = device(&space, Granularity::Page);
    // Mapping 1 is early-kill; 0 and 2 are late (the default).
    let (maps, logs) = mapped(&dev, [false, true, false]);
    let ids = maps.each_ref().map(|m| m.id());
    let every: Vec<_> = ids.to_vec();

    // An access through mapping 0 met the error: mapping 0 is current.
    let addr = maps[0].addr() + rel(&maps[0], BAD) as usize;
    let r = memory_failure_at(addr, MfFlags::ACTION_REQUIRED).expect("by address");
    assert_eq!(
        r.revoked.iter().map(|n| n.mapping).collect::<Vec<_>>(),
        every,
        "every mapping loses the page"
    );
    assert_eq!(who(&r.notices), vec![(ids[0], true), (ids[1], false)]);
    assert_eq!(r.notices[0].addr, addr);
    assert_eq!(
        drain(&logs),
        [vec![(ids[0], true)], vec![(ids[1], false)], vec![]],
        "AR to current, AO to the early-kill owner, nothing to the late one"
    );

    // By pfn, no mapping is current, even with MF_ACTION_REQUIRED: as an error a kernel
    // worker handles, only the early-kill owner hears of it.
    let pfn = dev.pfn_at(LEAF + 9 * PAGE_SIZE).expect("pfn");
    let r = memory_failure(&space, pfn, MfFlags::ACTION_REQUIRED).expect("by pfn");
    assert_eq!(r.revoked.len(), 3);
    assert_eq!(who(&r.notices), vec![(ids[1], false)]);
    assert_eq!(drain(&logs), [vec![], vec![(ids[1], false)], vec![]]);

    // An AO report at an address of mapping 2 names no current mapping either.
    let at = LEAF + 11 * PAGE_SIZE;
    let addr = maps[2].addr() + rel(&maps[2], at) as usize;
    let r = memory_failure_at(addr, MfFlags::NONE).expect("AO by address");
    assert_eq!(who(&r.notices), vec![(ids[1], false)]);
    assert_eq!(drain(&logs), [vec![], vec![(ids[1], false)], vec![]]);
}

#[test]
fn tell_all_tells_every_owner_with_the_callers_action_required() {
    let space = DeviceSpace::new();
    let dev = device(&space, Granularity::Page);
    let (maps, logs) = mapped(&dev, [false; 3]);
    let ids = maps.each_ref().map(|m| m.id());
    for (page, flags, ar) in [
        (3u64, MfFlags::TELL_ALL | MfFlags::ACTION_REQUIRED, true),
        (4, MfFlags::TELL_ALL, false),
    ] {
        let pfn = dev.pfn_at(LEAF + page * PAGE_SIZE).expect("pfn");
        let r = memory_failure(&space, pfn, flags).expect("told all");
        assert_eq!(r.notices, r.revoked, "{flags:?}");
        let want = ids.map(|id| vec![(id, ar)]);
        assert_eq!(drain(&logs), want, "{flags:?}");
    }
}

/// `memory_failure` never gets to `TestSetPageHWPoison` for a device page, so a second error
/// is not `MF_MSG_ALREADY_POISONED` (`-EHWPOISON`, nothing done): `mf_generic_kill_procs` runs
/// again, unmapping and signalling whoever still maps the page, and returns 0.
#[test]
fn device_pages_never_reach_already_poisoned_a_second_error_revokes_and_tells_again() {
    // Page granularity: the mappings keep the leaf, lose the page again, are told again.
    let space = DeviceSpace::new();
    let dev = device(&space, Granularity::Page);
    let (maps, logs) = mapped(&dev, [true; 3]);
    let ids = maps.each_ref().map(|m| m.id());
    let pfn = dev.pfn_at(BAD).expect("pfn");
    for n in 0..2 {
        let r = memory_failure(&space, pfn, MfFlags::NONE).expect("0, each time");
        assert_eq!(r.revoked.len(), 3, "error {n}");
        assert_eq!(drain(&logs), ids.map(|id| vec![(id, false)]), "error {n}");
    }
    assert_eq!(dev.badblocks(), vec![(BAD, PAGE_SIZE)]);
    let mut b = [0u8];
    maps[1]
        .read_mc(rel(&maps[1], LEAF), &mut b)
        .expect("the rest of the leaf still reads");

    // Leaf granularity: the first error took the leaf, which devmap does not fault again, so
    // nothing is revoked the second time; the current mapping is told all the same (its
    // access met the error), with what it lost.
    let space = DeviceSpace::new();
    let dev = device(&space, Granularity::Leaf);
    let (maps, logs) = mapped(&dev, [false; 3]);
    let pfn = dev.pfn_at(BAD).expect("pfn");
    let r = memory_failure(&space, pfn, MfFlags::NONE).expect("first");
    assert_eq!((r.revoked.len(), r.notices.len()), (3, 0));
    let addr = maps[2].addr() + rel(&maps[2], BAD) as usize;
    let r = memory_failure_at(addr, MfFlags::ACTION_REQUIRED).expect("second: 0");
    assert!(r.revoked.is_empty(), "no mapping has the leaf any more");
    assert_eq!(who(&r.notices), vec![(maps[2].id(), true)]);
    assert_eq!((r.notices[0].addr, r.notices[0].shift), (addr, 21));
    assert_eq!(drain(&logs), [vec![], vec![], vec![(maps[2].id(), true)]]);
}
