//! Enabling a namespace of a region: a device-dax device over the namespace's data bytes in
//! the region file, with the bad pages its badblocks list records poisoned again, and its info
//! block marked in use (clean flag cleared, generation bumped) so that a crash is told apart
//! from a clean disable. While it is enabled, each change to the device's bad pages is written
//! to the namespace's badblocks list at once, so a crash loses none; disabling writes the list
//! once more and sets the clean flag.
//!
//! A `--map dev` namespace keeps its memmap in its own bytes, in the room `nd_pfn_init` sets
//! aside between the info block and the data (the Flat and Heads layouts; Vmemmap builds its
//! tables as it runs and stays in host memory). A clean disable leaves that memmap as init
//! wrote it (folio mappings cleared, pins and references back to idle, poison flags kept),
//! writes it back, and records in the info block where it was built: the device's first pfn,
//! the pgmap id its heads name, and the layout. The next enable with the same layout then
//! *adopts* it: it reserves the same pfns, registers the pgmap under the same id, and
//! initialises nothing (a warm enable): each unit of the room is checked against the checksum
//! the clean disable recorded when it is first used, and rebuilt if it does not match (the
//! badblocks replay below then poisons its bad pages again). After a crash (no clean flag),
//! with another layout, or when the pfns or the id are taken in this process's device space,
//! the memmap is initialised in the room as usual (a cold enable): each array's piece reads
//! zero again before init writes it, and the rest of the room is punched.
//!
//! One device at a time serves a namespace: the enable takes the namespace's lock
//! ([`super::lock`]) before it reads or writes anything of it, and a namespace that another
//! enable holds, in this process or another, is refused with nothing written. The lock goes
//! with the [`EnabledNamespace`] and is released after its disable has marked the info block
//! clean (or when it is dropped, after its device).

use super::infoblock::{INFO_BLOCK_OFFSET, InfoBlock, InfoFlags, MemmapRecord};
use super::lock::NamespaceLock;
use super::region::{Access, Region, RegionError};
use super::{INFO_BLOCK_BYTES, Label, MemmapLocation, NamespaceMode};
use crate::addr::{Order, PAGE_SIZE};
use crate::backing::Backing;
use crate::dax::{DaxDevice, DaxError, DaxOptions, Placement};
use crate::desc::PgmapId;
use crate::memmap::{Layout, MemmapRoom};
use crate::memory_failure::{MfFlags, memory_failure};
use crate::pgmap::{DeviceSpace, MemmapPlace, PgmapError};

/// How an enable got its memmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnablePath {
    /// Initialised in host memory (`--map mem`, or the Vmemmap layout).
    Host,
    /// Initialised in the namespace's memmap room.
    Cold,
    /// Adopted from the room as the last clean disable left it: nothing initialised.
    Warm,
}

impl EnablePath {
    /// The lower-case name used in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            EnablePath::Host => "host",
            EnablePath::Cold => "cold",
            EnablePath::Warm => "warm",
        }
    }
}

/// A namespace enabled by [`Region::enable`]: its device, until [`Region::disable`].
#[derive(Debug)]
pub struct EnabledNamespace {
    device: DaxDevice,
    label: Label,
    /// Whether the info block said the last disable was clean.
    was_clean: bool,
    path: EnablePath,
    /// The memmap room, for `--map dev` namespaces whose memmap lives there.
    room: Option<MemmapRoom>,
    /// The namespace's lock. Last, so that a drop releases it after the device is gone.
    lock: NamespaceLock,
}

impl EnabledNamespace {
    /// The device-dax device serving the namespace's data.
    pub fn device(&self) -> &DaxDevice {
        &self.device
    }

    /// The namespace's label.
    pub fn label(&self) -> &Label {
        &self.label
    }

    /// Whether the namespace had been disabled cleanly before this enable (false after a
    /// crash, or on its first enable).
    pub fn was_clean(&self) -> bool {
        self.was_clean
    }

    /// Whether the memmap was adopted (warm), initialised on the device (cold), or
    /// initialised in host memory.
    pub fn path(&self) -> EnablePath {
        self.path
    }
}

/// The pgmap id a namespace's device registers under when its memmap lives on the device: the
/// same in every process, from the namespace's uuid, and far above the ids a space hands out
/// in order.
fn pgmap_id_of(uuid: &[u8; 16]) -> Option<PgmapId> {
    let mut w = [0u8; 8];
    w.copy_from_slice(&uuid[..8]);
    PgmapId::new((u64::from_le_bytes(w) >> 2) | (1 << 61))
}

/// Whether an enable must start over with a cold memmap after `e`: the pfns or the id the
/// record names are taken in this device space.
fn placement_taken(e: &DaxError) -> bool {
    matches!(
        e,
        DaxError::Pgmap(PgmapError::Overlap { .. } | PgmapError::IdTaken { .. })
    )
}

impl Region {
    /// Enables the device-dax namespace `name`: maps nothing yet, but builds its device over
    /// the data bytes of the region file (`opts.align` is replaced by the namespace's align),
    /// poisons the pages its badblocks list records, and marks its info block in use.
    pub fn enable(
        &mut self,
        space: &DeviceSpace,
        name: &str,
        mut opts: DaxOptions,
    ) -> Result<EnabledNamespace, RegionError> {
        if self.access() != Access::Manage {
            return Err(RegionError::ReadOnly);
        }
        let label = self.namespace(name)?.clone();
        let ns = label.namespace;
        if ns.mode() != NamespaceMode::Devdax {
            return Err(RegionError::NotDevdax { name: name.into() });
        }
        // Before anything of the namespace is read or written: what another device serves
        // stays as it is.
        let lock = self.lock_namespace(&label)?;
        let block = self.info_block(&label)?;
        let bad = self.badblocks(&label)?;
        let fail = |why: String| RegionError::Enable {
            name: name.into(),
            why,
        };
        let file = Backing::open_file(self.path()).map_err(|e| fail(e.to_string()))?;
        let data = || {
            file.window(label.offset + ns.data_offset(), ns.data_bytes())
                .map_err(|e| fail(e.to_string()))
        };
        opts.align = Order::from_bytes(ns.align()).map_err(|e| fail(e.to_string()))?;
        let id = pgmap_id_of(&block.uuid)
            .ok_or_else(|| fail("the namespace's uuid gives no pgmap id".into()))?;
        let room = if ns.map() == MemmapLocation::Dev && opts.layout != Layout::Vmemmap {
            let room_len = ns.data_offset() - INFO_BLOCK_BYTES;
            Some(
                file.window(label.offset + INFO_BLOCK_BYTES, room_len)
                    .map_err(|e| fail(e.to_string()))?,
            )
        } else {
            None
        };
        let was_clean = block.flags.contains(InfoFlags::CLEAN);
        let adoptable = block.memmap.filter(|r| {
            was_clean && room.is_some() && r.layout == opts.layout && r.pgmap_id == id.get()
        });
        // A room written before checksums existed (a 1.1 block) has none: every unit counts
        // as damaged and is rebuilt on first use.
        let sums = block.room_sums.clone().unwrap_or_default();
        let (device, path, room) = match room {
            None => (
                DaxDevice::with_options(space, data()?, opts).map_err(|e| fail(e.to_string()))?,
                EnablePath::Host,
                None,
            ),
            Some(room_backing) => {
                let mut warm = None;
                if let Some(rec) = adoptable {
                    let room = room_backing
                        .window(0, room_backing.len())
                        .and_then(|b| MemmapRoom::new(b, true))
                        .map_err(|e| fail(e.to_string()))?;
                    let place = Placement {
                        base: Some(rec.base),
                        memmap: MemmapPlace {
                            room: Some(&room),
                            adopt: Some(&sums),
                            id: Some(id),
                        },
                    };
                    match DaxDevice::placed(space, data()?, opts.clone(), place) {
                        Ok(d) => warm = Some((d, room)),
                        Err(e) if placement_taken(&e) => {
                            tracing::info!(
                                namespace = name,
                                why = %e,
                                "namespace: cannot adopt its memmap here; cold enable"
                            );
                        }
                        Err(e) => return Err(fail(e.to_string())),
                    }
                }
                match warm {
                    Some((d, room)) => (d, EnablePath::Warm, Some(room)),
                    None => {
                        // In use, durably, before the room changes: a crash from here on
                        // must find the namespace unclean, whatever reached the disk.
                        let mut in_use = block.clone();
                        in_use.memmap = None;
                        in_use.room_sums = None;
                        self.rewrite_info_block(&label, in_use, false, true)?;
                        // Each array's piece of the room is zeroed, its blocks allocated,
                        // as the store takes it; the rest is punched once the store is built.
                        let room = MemmapRoom::new(room_backing, false)
                            .map_err(|e| fail(e.to_string()))?;
                        let place = Placement {
                            base: None,
                            memmap: MemmapPlace {
                                room: Some(&room),
                                adopt: None,
                                id: Some(id),
                            },
                        };
                        let d = DaxDevice::placed(space, data()?, opts, place)
                            .map_err(|e| fail(e.to_string()))?;
                        room.release_rest()
                            .map_err(|e| fail(format!("giving back the unused room: {e}")))?;
                        (d, EnablePath::Cold, Some(room))
                    }
                }
            }
        };
        for page in bad.pages() {
            let pfn = device
                .pfn_at(page * PAGE_SIZE)
                .ok_or_else(|| RegionError::Enable {
                    name: name.into(),
                    why: format!("bad page {page} is outside the namespace's data"),
                })?;
            // Nothing maps the device yet, so no folio has a `mapping`: the kernel's
            // memory_failure would refuse each page (-EBUSY). The replay asks for the page to
            // be flagged and recorded anyway. An adopted memmap keeps its poison flags; the
            // page is handled again as a repeated error is, and the device records it.
            if let Err(e) = memory_failure(space, pfn, MfFlags::RECORD_UNMAPPED) {
                return Err(RegionError::Enable {
                    name: name.into(),
                    why: format!("poisoning bad page {page} again: {e}"),
                });
            }
        }
        device.set_badblocks_sink(std::sync::Arc::new(self.badblocks_writer(&label)?));
        tracing::info!(
            namespace = name,
            was_clean,
            path = path.name(),
            bad_pages = bad.pages().count(),
            "namespace: enabled"
        );
        let mut block = block;
        // In use: the checksums describe the room as the disable leaves it, not as the
        // session changes it.
        block.room_sums = None;
        block.memmap = room.as_ref().map(|_| MemmapRecord {
            base: device.ranges()[0].start(),
            pgmap_id: id.get(),
            layout: device.pgmap().layout(),
        });
        // Not synced: a warm enable's room is copy-on-write, so the backing still holds the
        // clean memmap whatever happens, and a cold enable's in-use mark is already durable.
        // A process that dies leaves this write in the page cache, where the next enable
        // reads it.
        self.rewrite_info_block(&label, block, false, false)?;
        Ok(EnabledNamespace {
            device,
            label,
            was_clean,
            path,
            room,
            lock,
        })
    }

    /// Disables `ns`: records the device's bad pages in the namespace's badblocks list, tears
    /// the device down (its mappings must be gone; pins are waited for), and marks the info
    /// block clean. A memmap kept on the device is first finished (background init waited
    /// for), its folio mappings cleared, and, after the teardown, written back, so that the
    /// next enable can adopt it.
    pub fn disable(&mut self, ns: EnabledNamespace) -> Result<(), RegionError> {
        // The lock is bound first so that it is dropped last, after the device, on every
        // return; it is released by hand after the clean mark below.
        let EnabledNamespace {
            lock,
            device,
            label,
            room,
            ..
        } = ns;
        let fail = |why: String| RegionError::Enable {
            name: label.name.clone(),
            why,
        };
        if device.nr_mappings() > 0 {
            return Err(RegionError::Enable {
                name: label.name.clone(),
                why: format!(
                    "{} mappings are still open: drop them before disabling",
                    device.nr_mappings()
                ),
            });
        }
        let pages: Vec<u64> = device
            .badblocks()
            .iter()
            .flat_map(|&(offset, len)| offset / PAGE_SIZE..(offset + len) / PAGE_SIZE)
            .collect();
        self.set_badblocks(&label, pages)?;
        if room.is_some() {
            device
                .pgmap()
                .sync_all()
                .map_err(|e| fail(format!("finishing the memmap: {e}")))?;
            device
                .forget_folio_mappings()
                .map_err(|e| fail(format!("clearing folio mappings: {e}")))?;
        }
        device.close(None).map_err(|e| fail(e.to_string()))?;
        // After the teardown nothing changes a descriptor: the room's checksums now are
        // those of what is written back below.
        let sums = room.as_ref().map(|_| device.pgmap().room_sums());
        drop(device);
        if let Some(room) = &room {
            // The in-use mark a warm enable left unsynced must be on the disk before the room
            // changes there: a power loss while the room is written back must find the
            // namespace unclean, not adopt a half-written memmap.
            self.sync_data("sync the in-use mark")?;
            let copied = room
                .write_back()
                .map_err(|e| fail(format!("writing the memmap back: {e}")))?;
            tracing::debug!(namespace = %label.name, copied, "namespace: memmap written back");
        }
        let mut block = self.info_block(&label)?;
        block.room_sums = sums.filter(|_| block.memmap.is_some());
        self.rewrite_info_block(&label, block, true, true)?;
        drop(lock);
        Ok(())
    }

    /// Writes `block` back with the clean flag as given and the next generation, synced to
    /// the disk if `durable`.
    fn rewrite_info_block(
        &mut self,
        label: &Label,
        mut block: InfoBlock,
        clean: bool,
        durable: bool,
    ) -> Result<(), RegionError> {
        block.flags = block.flags.with(InfoFlags::CLEAN, clean);
        block.generation += 1;
        let bytes = block.encode().map_err(|source| RegionError::InfoBlock {
            name: label.name.clone(),
            source,
        })?;
        self.write_bytes_synced(
            &bytes,
            label.offset + INFO_BLOCK_OFFSET,
            "write an info block",
            durable,
        )
    }
}

#[cfg(all(test, not(loom)))]
mod cold_tests;
#[cfg(all(test, not(loom)))]
mod lock_tests;
#[cfg(all(test, not(loom)))]
mod room_tests;
#[cfg(test)]
mod tests;
#[cfg(all(test, not(loom)))]
mod warm_tests;
