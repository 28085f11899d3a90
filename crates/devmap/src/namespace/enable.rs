//! Enabling a namespace of a region: a device-dax device over the namespace's data bytes in
//! the region file, with the bad pages its badblocks list records poisoned again, and its info
//! block marked in use (clean flag cleared, generation bumped) so that a crash is told apart
//! from a clean disable. Disabling persists the device's bad pages and sets the clean flag.
//!
//! The memmap lives in host memory in both `--map mem` and `--map dev` namespaces for now: the
//! on-device memmap (and with it the warm enable that adopts it) is not built yet, so every
//! enable initialises the memmap.

use super::infoblock::{INFO_BLOCK_OFFSET, InfoBlock, InfoFlags};
use super::region::{Access, Region, RegionError};
use super::{Label, NamespaceMode};
use crate::addr::{Order, PAGE_SIZE};
use crate::backing::Backing;
use crate::dax::{DaxDevice, DaxOptions};
use crate::memory_failure::{MfError, MfFlags, memory_failure};
use crate::pgmap::DeviceSpace;

/// A namespace enabled by [`Region::enable`]: its device, until [`Region::disable`].
#[derive(Debug)]
pub struct EnabledNamespace<'s> {
    device: DaxDevice<'s>,
    label: Label,
    /// Whether the info block said the last disable was clean.
    was_clean: bool,
}

impl<'s> EnabledNamespace<'s> {
    /// The device-dax device serving the namespace's data.
    pub fn device(&self) -> &DaxDevice<'s> {
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
}

impl Region {
    /// Enables the device-dax namespace `name`: maps nothing yet, but builds its device over
    /// the data bytes of the region file (`opts.align` is replaced by the namespace's align),
    /// poisons the pages its badblocks list records, and marks its info block in use.
    pub fn enable<'s>(
        &mut self,
        space: &'s DeviceSpace,
        name: &str,
        mut opts: DaxOptions,
    ) -> Result<EnabledNamespace<'s>, RegionError> {
        if self.access() != Access::Manage {
            return Err(RegionError::ReadOnly);
        }
        let label = self.namespace(name)?.clone();
        let ns = label.namespace;
        if ns.mode() != NamespaceMode::Devdax {
            return Err(RegionError::NotDevdax { name: name.into() });
        }
        let block = self.info_block(&label)?;
        let bad = self.badblocks(&label)?;
        let backing = Backing::open_file_window(
            self.path(),
            label.offset + ns.data_offset(),
            ns.data_bytes(),
        )
        .map_err(|e| RegionError::Enable {
            name: name.into(),
            why: e.to_string(),
        })?;
        opts.align = Order::from_bytes(ns.align()).map_err(|e| RegionError::Enable {
            name: name.into(),
            why: e.to_string(),
        })?;
        let device =
            DaxDevice::with_options(space, backing, opts).map_err(|e| RegionError::Enable {
                name: name.into(),
                why: e.to_string(),
            })?;
        for page in bad.pages() {
            let pfn = device
                .pfn_at(page * PAGE_SIZE)
                .ok_or_else(|| RegionError::Enable {
                    name: name.into(),
                    why: format!("bad page {page} is outside the namespace's data"),
                })?;
            match memory_failure(space, pfn, MfFlags::NONE) {
                Ok(_) | Err(MfError::AlreadyPoisoned { .. }) => {}
                Err(e) => {
                    return Err(RegionError::Enable {
                        name: name.into(),
                        why: format!("poisoning bad page {page} again: {e}"),
                    });
                }
            }
        }
        let was_clean = block.flags.contains(InfoFlags::CLEAN);
        tracing::info!(
            namespace = name,
            was_clean,
            bad_pages = bad.pages().count(),
            "namespace: enabled"
        );
        self.rewrite_info_block(&label, block, false)?;
        Ok(EnabledNamespace {
            device,
            label,
            was_clean,
        })
    }

    /// Disables `ns`: records the device's bad pages in the namespace's badblocks list, tears
    /// the device down (its mappings must be gone; pins are waited for), and marks the info
    /// block clean.
    pub fn disable(&mut self, ns: EnabledNamespace<'_>) -> Result<(), RegionError> {
        let EnabledNamespace { device, label, .. } = ns;
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
        device.shutdown(None).map_err(|e| RegionError::Enable {
            name: label.name.clone(),
            why: e.to_string(),
        })?;
        drop(device);
        let block = self.info_block(&label)?;
        self.rewrite_info_block(&label, block, true)
    }

    /// Writes `block` back with the clean flag as given and the next generation.
    fn rewrite_info_block(
        &mut self,
        label: &Label,
        mut block: InfoBlock,
        clean: bool,
    ) -> Result<(), RegionError> {
        block.flags = block.flags.with(InfoFlags::CLEAN, clean);
        block.generation += 1;
        let bytes = block.encode().map_err(|source| RegionError::InfoBlock {
            name: label.name.clone(),
            source,
        })?;
        self.write_bytes(
            &bytes,
            label.offset + INFO_BLOCK_OFFSET,
            "write an info block",
        )
    }
}

#[cfg(test)]
mod tests;
