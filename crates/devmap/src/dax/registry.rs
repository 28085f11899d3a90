//! The process's registry of device-dax devices, by the address space each writes into
//! `folio->mapping` and by the user addresses of their mappings: how memory failure finds the
//! device behind a failed folio (pfn → `folio.mapping` → device, as the kernel's
//! `mf_generic_kill_procs` goes from the folio's mapping to its `i_mmap`) and the device
//! behind a user address (`memory_failure_at`), each with one keyed lookup instead of a scan
//! of every device and every mapping. A pgmap's device is found by the pgmap's identity too
//! (the kernel's `container_of(pgmap, struct dev_dax, pgmap)`), for a page no mapping ever
//! named, whose error must still reach the device's bad pages.
//!
//! Entries hold `Weak` references and leave the registry when their guard drops: a device's
//! [`Listed`] with its `DeviceCore`, a mapping's [`MappingListed`] with its core, before the
//! window is unmapped.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::MappingId;
use super::device_core::DeviceCore;
use crate::addr::{PAGE_SIZE, Pfn};
use crate::pgmap::Pgmap;

/// A mapping's entry: where it ends, its first device byte, its id and its device.
#[derive(Debug)]
struct MappingEntry {
    end: usize,
    offset: u64,
    id: MappingId,
    device: Weak<DeviceCore>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Devices by address space (the value of `folio->mapping` their faults write).
    by_address_space: BTreeMap<u64, Weak<DeviceCore>>,
    /// Devices by their pgmap's address (one pgmap per device).
    by_pgmap: BTreeMap<usize, Weak<DeviceCore>>,
    /// Live mappings by first user address; they never overlap.
    by_address: BTreeMap<usize, MappingEntry>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    by_address_space: BTreeMap::new(),
    by_pgmap: BTreeMap::new(),
    by_address: BTreeMap::new(),
});

fn pgmap_key(pgmap: &Pgmap) -> usize {
    std::ptr::from_ref(pgmap) as usize
}

/// A device's entries; removed when dropped (with the device's `DeviceCore`).
#[derive(Debug)]
pub(super) struct Listed {
    address_space: u64,
    pgmap: usize,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut r = REGISTRY.lock();
        r.by_address_space.remove(&self.address_space);
        r.by_pgmap.remove(&self.pgmap);
    }
}

/// Lists a new device under its address space and its pgmap. The caller keeps the returned
/// guard in the device (see `DeviceCore::listed`), so the entries go with it.
pub(super) fn list_device(dev: &Arc<DeviceCore>) -> Listed {
    let mut r = REGISTRY.lock();
    r.by_address_space
        .insert(dev.address_space, Arc::downgrade(dev));
    let pgmap = pgmap_key(&dev.pgmap);
    r.by_pgmap.insert(pgmap, Arc::downgrade(dev));
    Listed {
        address_space: dev.address_space,
        pgmap,
    }
}

/// A mapping's entry; removed when dropped, before the mapping's window is unmapped.
#[derive(Debug)]
pub(super) struct MappingListed {
    base: usize,
}

impl Drop for MappingListed {
    fn drop(&mut self) {
        REGISTRY.lock().by_address.remove(&self.base);
    }
}

/// Lists mapping `id`, of device bytes `[offset, offset + len)`, at user address `base`.
pub(super) fn list_mapping(
    dev: &Arc<DeviceCore>,
    id: MappingId,
    base: usize,
    len: u64,
    offset: u64,
) -> MappingListed {
    REGISTRY.lock().by_address.insert(
        base,
        MappingEntry {
            end: base.saturating_add(len as usize),
            offset,
            id,
            device: Arc::downgrade(dev),
        },
    );
    MappingListed { base }
}

/// The device whose faults write `address_space` into `folio->mapping`, if it is alive.
pub(super) fn device_by_address_space(address_space: u64) -> Option<Arc<DeviceCore>> {
    REGISTRY
        .lock()
        .by_address_space
        .get(&address_space)
        .and_then(Weak::upgrade)
}

/// The device whose pgmap is `pgmap`, if it is alive.
pub(super) fn device_by_pgmap(pgmap: &Pgmap) -> Option<Arc<DeviceCore>> {
    REGISTRY
        .lock()
        .by_pgmap
        .get(&pgmap_key(pgmap))
        .and_then(Weak::upgrade)
}

/// What is behind a user address of a live device-dax mapping.
#[derive(Debug)]
pub(crate) struct Located {
    /// The device's pgmap.
    pub(crate) pgmap: Arc<Pgmap>,
    /// The 4 KiB page at the address.
    pub(crate) pfn: Pfn,
    /// The mapping whose range holds the address.
    pub(crate) mapping: MappingId,
}

/// The pgmap, pfn and mapping behind user address `addr` of a live device-dax mapping, if it
/// is one: the one mapping whose range holds it, found by address.
pub(crate) fn locate(addr: usize) -> Option<Located> {
    let (device, byte, mapping) = {
        let r = REGISTRY.lock();
        let (&base, m) = r.by_address.range(..=addr).next_back()?;
        if addr >= m.end {
            return None;
        }
        (m.device.upgrade()?, m.offset + (addr - base) as u64, m.id)
    };
    let pfn = device.pgoff_to_pfn(byte / PAGE_SIZE, 1)?;
    Some(Located {
        pgmap: Arc::clone(&device.pgmap),
        pfn,
        mapping,
    })
}

/// Holds the registry (for a test showing the memory-error signal handler never takes it).
#[cfg(test)]
pub(crate) fn hold_registry() -> impl Sized {
    REGISTRY.lock()
}
