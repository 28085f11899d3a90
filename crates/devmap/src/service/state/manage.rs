//! The management verbs on what the service holds: creating, destroying and checking a
//! namespace of a served region and clearing its errors, each through the region API the
//! in-process verbs use ([`Region::create_namespace`], [`Region::may_destroy`],
//! [`Region::destroy_namespace`], [`Region::info_block`], [`Region::clear_errors`]; an
//! enabled namespace's errors through its device's `clear_poison`). Each holds the namespace's
//! operation lock, so none runs while the same namespace is enabled or disabled, and the
//! region's handle only for its label reads and writes; a create needs no operation lock (no
//! one operates on a namespace before its label exists, which the create writes last).

use super::{ServiceError, State};
use crate::addr::PAGE_SIZE;
use crate::namespace::{
    InfoFlags, MemmapLocation, NamespaceMode, Owner, Region, RegionError, data_align,
};
use crate::service::proto::{
    CheckNamespace, Checked, ClearErrors, Cleared, CreateNamespace, Created, DestroyNamespace,
};

impl State {
    /// Creates the namespace `m` asks for: the first free name and the largest size that
    /// fits where `m` leaves them out, then its owner when it is not the default.
    pub(in crate::service) fn create_namespace(
        &self,
        m: &CreateNamespace,
    ) -> Result<Created, ServiceError> {
        let served = self.region(&m.region)?;
        let mode: NamespaceMode = m.mode.parse()?;
        let map: MemmapLocation = m.map.parse()?;
        let owner = Owner {
            uid: m.uid,
            gid: m.gid,
            mode: m.perm,
        };
        let region_error = |source| ServiceError::Region {
            path: served.path.clone(),
            source,
        };
        // Checked before anything is written: the owner is set after the create.
        if owner.mode > 0o777 {
            return Err(region_error(RegionError::OwnerMode { mode: owner.mode }));
        }
        let mut r = served.region.lock();
        let name = match m.name.as_str() {
            "" => r.default_name(),
            name => name.to_owned(),
        };
        let size = match m.size {
            0 => largest(&r, m.align).map_err(region_error)?,
            size => size,
        };
        r.create_namespace(&name, size, m.align, mode, map)
            .map_err(region_error)?;
        if owner != Owner::DEFAULT {
            r.set_owner(&name, owner).map_err(region_error)?;
        }
        tracing::info!(region = %served.path.display(), name, size, "serve: namespace created");
        Ok(Created { name, size })
    }

    /// Destroys the namespace `m` names: refused while the service has it enabled, and,
    /// without `force`, when it was left in use or its info block cannot be read.
    pub(in crate::service) fn destroy_namespace(
        &self,
        m: &DestroyNamespace,
    ) -> Result<(), ServiceError> {
        let served = self.find(&m.region, &m.name)?;
        let op = served.op(&m.name);
        let _op = op.lock();
        let live = served.enabled.lock().get(&m.name).cloned();
        if let Some(live) = live {
            return Err(ServiceError::Enabled {
                name: m.name.clone(),
                verb: "destroy",
                pids: live.client_pids(),
            });
        }
        let region_error = |source| ServiceError::Region {
            path: served.path.clone(),
            source,
        };
        let mut r = served.region.lock();
        if !m.force {
            r.may_destroy(&m.name).map_err(region_error)?;
        }
        r.destroy_namespace(&m.name).map_err(region_error)?;
        tracing::info!(region = %served.path.display(), name = m.name, force = m.force, "serve: namespace destroyed");
        Ok(())
    }

    /// Reads and checks the label and info block of the namespace `m` names (the library's
    /// checks: signature, version, checksum, geometry, agreement with the label and the
    /// region), and whether the service has it enabled.
    pub(in crate::service) fn check_namespace(
        &self,
        m: &CheckNamespace,
    ) -> Result<Checked, ServiceError> {
        let served = self.find(&m.region, &m.name)?;
        let op = served.op(&m.name);
        let _op = op.lock();
        let enabled = served.enabled.lock().contains_key(&m.name);
        let region_error = |source| ServiceError::Region {
            path: served.path.clone(),
            source,
        };
        let r = served.region.lock();
        let label = r.namespace(&m.name).map_err(region_error)?;
        let block = r.info_block(label).map_err(region_error)?;
        Ok(Checked {
            generation: block.generation,
            clean: block.flags.contains(InfoFlags::CLEAN),
            memmap_layout: block
                .memmap
                .map_or_else(String::new, |m| m.layout.name().to_owned()),
            memmap_base_pfn: block.memmap.map_or(0, |m| m.base.raw()),
            enabled_by: if enabled { std::process::id() } else { 0 },
        })
    }

    /// Clears the bad pages of the range `m` names: through the device when the service has
    /// the namespace enabled (the pages' poison and every mapping's entries for their leaves
    /// go too; the device writes its list to the region file), else in the badblocks list.
    pub(in crate::service) fn clear_errors(
        &self,
        m: &ClearErrors,
    ) -> Result<Cleared, ServiceError> {
        let served = self.find(&m.region, &m.name)?;
        let op = served.op(&m.name);
        let _op = op.lock();
        let live = served.enabled.lock().get(&m.name).cloned();
        if let Some(live) = live {
            return live.with_device(|d| {
                let pages = |d: &crate::dax::DaxDevice| -> u64 {
                    d.badblocks().iter().map(|&(_, len)| len / PAGE_SIZE).sum()
                };
                let before = pages(d);
                if m.len > 0 {
                    d.clear_poison(m.offset, m.len)?;
                }
                let left = pages(d);
                Ok(Cleared {
                    cleared: before.saturating_sub(left),
                    left,
                })
            });
        }
        let done = served
            .region
            .lock()
            .clear_errors(&m.name, m.offset, m.len)
            .map_err(|source| ServiceError::Region {
                path: served.path.clone(),
                source,
            })?;
        tracing::info!(region = %served.path.display(), name = m.name, cleared = done.cleared, "serve: errors cleared");
        Ok(Cleared {
            cleared: done.cleared,
            left: done.left,
        })
    }
}

/// The largest namespace of `align` that `r` has room for, or why there is none.
fn largest(r: &Region, align: u64) -> Result<u64, RegionError> {
    match r.largest_namespace(align)? {
        0 => {
            let start = data_align(align);
            Err(RegionError::NoSpace {
                size: start,
                align: start,
                largest: r.free_space(start)?.1,
            })
        }
        size => Ok(size),
    }
}
