//! What a device keeps about poison, below the procedures that use it: how much of a leaf a
//! memory error takes ([`Granularity`]), what a mapping's owner is told ([`PoisonNotice`],
//! the owner callback slot), where the device's bad-page list goes as it changes (the
//! badblocks sink), and the device's poison lock (devmap's own: the kernel's `dax_lock_folio`
//! takes no lock for device-dax, whose faults do not look for poison).
//!
//! `Leaf` granularity (what the kernel's `unmap_and_kill` takes) takes the whole leaf from
//! every mapping that has it; the next access is caught and the fault path refuses the
//! poisoned leaf, so every page of it raises SIGBUS (the kernel's `dev_dax_huge_fault` maps
//! the leaf again instead: DESIGN §8). `Page` takes only the poisoned page: its entry is zapped and a
//! `UFFDIO_POISON` marker put in its place, and the mapping keeps the rest of the leaf. A
//! device that does not catch touches (files, `/dev/dax`) is always `Leaf`: the leaf is fenced
//! in each mapping (replaced by a mapping of an empty file) and mapped back when the poison is
//! cleared. Revoking and clearing are in `revoke.rs`, `read_mc` with the mapping.
//!
//! Faults hold the poison lock for reading for their whole run, revocation and clearing hold it
//! for writing, so a fault either finishes before the poison is flagged and is then revoked,
//! or starts after and sees it.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use super::MappingId;
use crate::addr::{PAGE_SIZE, Pfn};

/// How much of a leaf a 4 KiB memory error takes from the mappings that use it. The default
/// is `Page`, which applies where it can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// The kernel's: the whole leaf the mapping used is lost (a 4 KiB error under a 1 GiB
    /// mapping takes the GiB).
    Leaf,
    /// Only the poisoned 4 KiB pages are lost; the rest of the leaf is mapped again at 4 KiB
    /// and keeps its data. Needs a backing with 4 KiB pages whose touches the device catches
    /// (a memfd); elsewhere `Leaf` applies.
    #[default]
    Page,
}

impl Granularity {
    /// Every granularity.
    pub const ALL: [Granularity; 2] = [Granularity::Page, Granularity::Leaf];

    /// The lower-case name the front ends use.
    pub const fn name(self) -> &'static str {
        match self {
            Granularity::Page => "page",
            Granularity::Leaf => "leaf",
        }
    }
}

crate::units::named_values!(Granularity, "granularity", ["page", "leaf"]);

/// What one mapping's owner is told about one memory error (the kernel's `kill_proc`
/// arguments: the address, how much is lost around it, and which signal: `BUS_MCEERR_AR` for
/// the mapping whose access met the error, `BUS_MCEERR_AO` for the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoisonNotice {
    /// The mapping.
    pub mapping: MappingId,
    /// The poisoned page's pfn.
    pub pfn: Pfn,
    /// The poisoned page's user address in the mapping.
    pub addr: usize,
    /// log2 of the bytes lost around `addr` (`addr_lsb`): 12 in `Page` mode, the leaf's
    /// shift (21, 30) in `Leaf` mode.
    pub shift: u32,
    /// `BUS_MCEERR_AR` rather than `AO`: this mapping is the current one, whose own access
    /// met the error (`kill_proc` with `MF_ACTION_REQUIRED` and `t == current`); every other
    /// recipient gets `AO`. With [`MfFlags::TELL_ALL`](crate::memory_failure::MfFlags::TELL_ALL),
    /// the caller's `MF_ACTION_REQUIRED` for every mapping.
    pub action_required: bool,
}

impl PoisonNotice {
    /// Bytes lost: `1 << shift`.
    pub fn len(&self) -> u64 {
        1 << self.shift
    }

    /// Never true.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An owner's callback, given each notice for its mapping.
pub type OwnerFn = dyn Fn(&PoisonNotice) + Send + Sync;

/// Told the device's whole badblocks list, as [`DaxDevice::badblocks`] gives it, each time it
/// changes: how a namespace keeps its list on disk as errors arrive.
pub(crate) type BadblocksFn = dyn Fn(&[(u64, u64)]) + Send + Sync;

/// Where a device's badblocks list goes as it changes; calls are serialised, and each is
/// given the list as it is when the call starts, so the last call made has the newest list.
#[derive(Default)]
pub(super) struct BadblocksSink(Mutex<Option<Arc<BadblocksFn>>>);

impl BadblocksSink {
    /// Tells the sink, if there is one, the list of `pages` (the device's bad page offsets).
    pub(super) fn tell(&self, pages: &BTreeSet<u64>) {
        let sink = self.0.lock();
        if let Some(f) = sink.as_ref() {
            f(&merge(pages));
        }
    }

    /// Sends every later list to `sink`.
    pub(super) fn set(&self, sink: Arc<BadblocksFn>) {
        *self.0.lock() = Some(sink);
    }
}

impl std::fmt::Debug for BadblocksSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BadblocksSink({})",
            if self.0.lock().is_some() {
                "set"
            } else {
                "none"
            }
        )
    }
}

/// The device's poison lock (where the kernel has `dax_lock_folio`): faults run inside a read
/// section, revoking and clearing poison inside a write one. A page is flagged poisoned
/// before the write section that revokes it, so a fault's read section either ends
/// before that section (and the fault's mapping is revoked by it) or starts after it (and sees
/// the flag). `loom_tests` checks both orders.
#[derive(Debug, Default)]
pub(super) struct PoisonLock(crate::primitive::RwLock<()>);

impl PoisonLock {
    /// A fault's section.
    pub(super) fn read(&self) -> crate::primitive::RwLockReadGuard<'_, ()> {
        crate::primitive::read(&self.0)
    }

    /// A revocation's or a clearing's section.
    pub(super) fn write(&self) -> crate::primitive::RwLockWriteGuard<'_, ()> {
        crate::primitive::write(&self.0)
    }
}

/// A mapping's owner, if one was named, and whether it is told of errors it has not met
/// (`PR_MCE_KILL_EARLY`).
#[derive(Default)]
pub(super) struct OwnerSlot(Mutex<Owner>);

/// What an [`OwnerSlot`] holds.
#[derive(Default)]
struct Owner {
    callback: Option<Arc<OwnerFn>>,
    early_kill: bool,
}

impl OwnerSlot {
    pub(super) fn set(&self, owner: Arc<OwnerFn>) {
        self.0.lock().callback = Some(owner);
    }

    /// Makes the mapping an early-kill one (`prctl(PR_MCE_KILL, PR_MCE_KILL_SET,
    /// PR_MCE_KILL_EARLY)` for its task), or a late-kill one again (the default, as
    /// `vm.memory_failure_early_kill` is 0).
    pub(super) fn set_early_kill(&self, early: bool) {
        self.0.lock().early_kill = early;
    }

    pub(super) fn early_kill(&self) -> bool {
        self.0.lock().early_kill
    }

    /// The owner and its early-kill setting, read together.
    pub(super) fn snapshot(&self) -> (Option<Arc<OwnerFn>>, bool) {
        let o = self.0.lock();
        (o.callback.clone(), o.early_kill)
    }
}

impl std::fmt::Debug for OwnerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = self.0.lock();
        write!(
            f,
            "OwnerSlot({}, {})",
            if o.callback.is_some() { "set" } else { "none" },
            if o.early_kill { "early" } else { "late" }
        )
    }
}

/// Page offsets as merged (byte offset, length) ranges.
pub(super) fn merge(pages: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((start, len)) if *start + *len == p * PAGE_SIZE => *len += PAGE_SIZE,
            _ => out.push((p * PAGE_SIZE, PAGE_SIZE)),
        }
    }
    out
}

/// The poison lock against a fault: whatever the interleaving, a leaf is never left mapped
/// once its page is flagged and the revocation has run.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::PoisonLock;
    use crate::primitive::{AtomicBool, Ordering};
    use loom::sync::Arc;

    #[test]
    fn loom_poison_lock_no_mapping_of_a_poisoned_leaf_survives() {
        loom::model(|| {
            let lock = Arc::new(PoisonLock::default());
            let poisoned = Arc::new(AtomicBool::new(false));
            let mapped = Arc::new(AtomicBool::new(false));
            let fault = {
                let (lock, poisoned, mapped) = (
                    Arc::clone(&lock),
                    Arc::clone(&poisoned),
                    Arc::clone(&mapped),
                );
                loom::thread::spawn(move || {
                    let _read = lock.read();
                    // The fault path's poison check, then its insert.
                    if !poisoned.load(Ordering::Relaxed) {
                        mapped.store(true, Ordering::Relaxed);
                    }
                })
            };
            // memory_failure: the flag (a Relaxed descriptor write), then the revocation.
            poisoned.store(true, Ordering::Relaxed);
            {
                let _write = lock.write();
                mapped.store(false, Ordering::Relaxed);
            }
            fault.join().expect("fault");
            assert!(
                !mapped.load(Ordering::Relaxed),
                "a poisoned leaf stayed mapped"
            );
        });
    }
}
