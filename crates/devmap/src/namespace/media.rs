//! A namespace's bad pages as its region records them: reading and replacing its badblocks
//! list ([`super::badblocks`] is the format), `clear-errors` on a namespace no device serves
//! ([`Region::clear_errors`]: an enabled one is cleared through its device,
//! [`crate::dax::DaxDevice::clear_poison`]), and the writer that keeps an enabled namespace's
//! list on disk as its device's list changes.

use std::os::unix::fs::FileExt;

use super::badblocks::{BADBLOCKS_LEN, BADBLOCKS_OFFSET, Badblocks, BadblocksError};
use super::label::Label;
use super::region::{Access, Region, RegionError};
use crate::addr::PAGE_SIZE;

/// What a [`Region::clear_errors`] did, in 4 KiB pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClearedErrors {
    /// Bad pages the range held, dropped from the list.
    pub cleared: u64,
    /// Bad pages the namespace has left.
    pub left: u64,
}

impl Region {
    /// The namespace's badblocks list (empty if it never had an error).
    pub fn badblocks(&self, label: &Label) -> Result<Badblocks, RegionError> {
        let buf = self.read_at(
            BADBLOCKS_LEN,
            label.offset + BADBLOCKS_OFFSET,
            "read a badblocks list",
        )?;
        Badblocks::decode(&buf).map_err(|source| RegionError::Badblocks {
            name: label.name.clone(),
            source,
        })
    }

    /// Records `pages` (page offsets from the start of the namespace's data) as the
    /// namespace's bad pages, replacing the list: what memory failure adds to and
    /// `clear-errors` removes from.
    pub fn set_badblocks(
        &mut self,
        label: &Label,
        pages: impl IntoIterator<Item = u64>,
    ) -> Result<Badblocks, RegionError> {
        if self.access != Access::Manage {
            return Err(RegionError::ReadOnly);
        }
        let data_pages = label.namespace.data_bytes() / crate::addr::PAGE_SIZE;
        let generation = self.badblocks(label)?.generation + 1;
        let list = Badblocks::from_pages(pages, generation);
        if let Some(p) = list.pages().find(|p| *p >= data_pages) {
            return Err(RegionError::Badblocks {
                name: label.name.clone(),
                source: BadblocksError::Invalid {
                    why: format!("page {p} is past the namespace's {data_pages} data pages"),
                },
            });
        }
        let bytes = list.encode().map_err(|source| RegionError::Badblocks {
            name: label.name.clone(),
            source,
        })?;
        self.write_at(
            &bytes,
            label.offset + BADBLOCKS_OFFSET,
            "write a badblocks list",
            true,
        )?;
        Ok(list)
    }

    /// What keeps `label`'s badblocks list on disk while the namespace is enabled: given the
    /// device's list (byte ranges from the start of the data) each time it changes, it writes
    /// it, synced, through its own handle of the region file, so that a bad page found in a
    /// session survives the session's crash. A write that fails is logged; the clean disable
    /// writes the list again.
    pub(super) fn badblocks_writer(
        &self,
        label: &Label,
    ) -> Result<impl Fn(&[(u64, u64)]) + Send + Sync + 'static, RegionError> {
        let file = self.file().try_clone().map_err(|source| RegionError::Io {
            path: self.path.clone(),
            what: "open the region again for its badblocks",
            source,
        })?;
        let generation = std::sync::atomic::AtomicU64::new(self.badblocks(label)?.generation);
        let (at, name) = (label.offset + BADBLOCKS_OFFSET, label.name.clone());
        Ok(move |ranges: &[(u64, u64)]| {
            let page = crate::addr::PAGE_SIZE;
            let pages = ranges
                .iter()
                .flat_map(|&(offset, len)| offset / page..(offset + len) / page);
            // Relaxed: the device serialises the calls; the counter only numbers them.
            let next = generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let written = Badblocks::from_pages(pages, next)
                .encode()
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    file.write_all_at(&bytes, at)
                        .and_then(|()| file.sync_data())
                        .map_err(|e| e.to_string())
                });
            if let Err(why) = written {
                tracing::warn!(namespace = %name, %why, "namespace: cannot write its badblocks list");
            }
        })
    }

    /// Drops the bad pages of `[offset, offset + len)` (bytes from the start of the data,
    /// multiples of 4 KiB inside it) from the list of the namespace `name`: `ndctl
    /// clear-errors`, once the bytes were rewritten or discarded. For a namespace no device
    /// serves: one that is enabled, here or in another process, is refused (its lock is held)
    /// and is cleared through its device instead, which also clears the pages' poison.
    pub fn clear_errors(
        &mut self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<ClearedErrors, RegionError> {
        if self.access != Access::Manage {
            return Err(RegionError::ReadOnly);
        }
        let label = self.namespace(name)?.clone();
        let data = label.namespace.data_bytes();
        let inside = offset.checked_add(len).is_some_and(|end| end <= data);
        if !offset.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) || !inside {
            return Err(RegionError::ClearRange {
                name: name.into(),
                offset,
                len,
                data,
            });
        }
        // Held until the list is written: no enable replays a list half changed.
        let _lock = self.lock_namespace(&label)?;
        let list = self.badblocks(&label)?;
        let (first, end) = (offset / PAGE_SIZE, (offset + len) / PAGE_SIZE);
        let before = list.pages().count() as u64;
        let left: Vec<u64> = list.pages().filter(|p| !(first..end).contains(p)).collect();
        let left_n = left.len() as u64;
        self.set_badblocks(&label, left)?;
        Ok(ClearedErrors {
            cleared: before - left_n,
            left: left_n,
        })
    }
}
