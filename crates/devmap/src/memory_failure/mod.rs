//! `memory_failure(pfn, flags)` for device memory (`memory_failure_dev_pagemap` in
//! `mm/memory-failure.c`), in the kernel's order:
//!
//! 1. find the live pgmap holding the pfn (none, or one being torn down: [`MfError::NoDevice`],
//!    the kernel's `-ENXIO`), and refuse a pfn that is not data (`pgmap_pfn_valid`: the
//!    altmap's memmap and reserve) *before* any compound-head lookup (seed 000 patch 1);
//! 2. flag exactly the failed 4 KiB page hwpoisoned, in every layout (a page already flagged is
//!    [`MfError::AlreadyPoisoned`], the kernel's `-EHWPOISON`);
//! 3. if the pgmap has a `memory_failure` callback (fsdax: the filesystem that owns the
//!    file), call it, and the generic path does not run unless it declines; otherwise the
//!    generic path (`mf_generic_kill_procs`): the device-dax device behind the pgmap revokes
//!    the leaf from every mapping that has it and tells each mapping's owner
//!    ([`crate::dax::PoisonNotice`]).
//!
//! From then on new faults and new pins of the poisoned page fail; pins that existed stay (DMA
//! cannot be revoked) and are reported in [`MfReport::pins`].

mod sigbus;

pub use self::sigbus::{
    SLOTS as SIGBUS_SLOTS, SigbusError, SigbusReportFn, SigbusStats, install_sigbus_handler,
    sigbus_stats,
};

use std::time::{Duration, Instant};

use crate::addr::Pfn;
use crate::dax::{self, PoisonNotice};
use crate::folio::FolioRef;
use crate::pgmap::{DeviceSpace, Pgmap, PgmapError};

/// `MF_*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MfFlags(u32);

impl MfFlags {
    /// No flags: an error found by a scrub or reported asynchronously (`BUS_MCEERR_AO`).
    pub const NONE: MfFlags = MfFlags(0);
    /// An access met the error (`MF_ACTION_REQUIRED`, `BUS_MCEERR_AR`).
    pub const ACTION_REQUIRED: MfFlags = MfFlags(1 << 0);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: MfFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for MfFlags {
    type Output = MfFlags;

    fn bitor(self, rhs: MfFlags) -> MfFlags {
        MfFlags(self.0 | rhs.0)
    }
}

/// Why `memory_failure` did nothing (or stopped). The page is flagged only if the error comes
/// after step 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MfError {
    /// No live pgmap holds the pfn (`-ENXIO`): it is not device memory, or its device is
    /// being torn down.
    #[error("pfn {pfn} is not device memory of a live pgmap")]
    NoDevice {
        /// The pfn.
        pfn: Pfn,
    },
    /// The pfn holds the pgmap's own memmap or reserve, not data (`pgmap_pfn_valid`).
    #[error("pfn {pfn} holds its device's memmap (altmap), not data: nothing maps it")]
    NotData {
        /// The pfn.
        pfn: Pfn,
    },
    /// An address that no live device-dax mapping holds.
    #[error("address {addr:#x} is not in a device-dax mapping")]
    NotMapped {
        /// The address.
        addr: usize,
    },
    /// The page was poisoned already (`-EHWPOISON`); nothing more was done.
    #[error("pfn {pfn} is already poisoned")]
    AlreadyPoisoned {
        /// The pfn.
        pfn: Pfn,
    },
    /// The memmap refused (the pfn's descriptors could not be synced or looked up).
    #[error(transparent)]
    Pgmap(#[from] PgmapError),
}

/// Who handled an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandledBy {
    /// The pgmap's `memory_failure` callback.
    Callback,
    /// The generic path: mappings revoked through the device's rmap.
    Generic,
}

/// What `memory_failure` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfReport {
    /// The failed page.
    pub pfn: Pfn,
    /// The head of its folio.
    pub head: Pfn,
    /// Who handled it.
    pub handled_by: HandledBy,
    /// One per mapping that had the leaf, in mapping order: what its owner was told.
    pub notices: Vec<PoisonNotice>,
    /// Pins on the folio when the error was handled: they stay (DMA cannot be revoked).
    pub pins: u32,
    /// From the call until every mapping was revoked and every owner told.
    pub elapsed: Duration,
}

/// Handles a memory error in the 4 KiB page `pfn` of `space`, as the module documentation
/// describes.
pub fn memory_failure(space: &DeviceSpace, pfn: Pfn, flags: MfFlags) -> Result<MfReport, MfError> {
    let start = Instant::now();
    let pgmap = space
        .get_dev_pagemap(pfn)
        .ok_or(MfError::NoDevice { pfn })?;
    handle(&pgmap, pfn, flags, start)
}

/// Handles a memory error at user address `addr` of a live device-dax mapping (an error the
/// kernel reported by address, as a SIGBUS does), as [`memory_failure`] does for its pfn.
pub fn memory_failure_at(addr: usize, flags: MfFlags) -> Result<MfReport, MfError> {
    let start = Instant::now();
    let (pgmap, pfn) = dax::locate(addr).ok_or(MfError::NotMapped { addr })?;
    let live = pgmap.tryget().ok_or(MfError::NoDevice { pfn })?;
    handle(&live, pfn, flags, start)
}

/// Steps 1 (the data check) to 3 on a pgmap found live.
fn handle(pgmap: &Pgmap, pfn: Pfn, flags: MfFlags, start: Instant) -> Result<MfReport, MfError> {
    if !pgmap.pfn_valid(pfn) {
        return Err(MfError::NotData { pfn });
    }
    // The one lookup of the page: its folio, through which it is checked and flagged.
    let cursor = FolioRef::at(pgmap, pfn)?;
    if cursor.subpage_poisoned(pfn)? {
        return Err(MfError::AlreadyPoisoned { pfn });
    }
    cursor.poison_subpage(pfn)?;
    // Poisoning flags the page and its head and never reshapes the folio.
    let folio = cursor.folio();
    let (head, pins) = (folio.pfn(), folio.pincount().max(0) as u32);
    let action_required = flags.contains(MfFlags::ACTION_REQUIRED);
    if let Some(cb) = pgmap.ops().memory_failure.clone()
        && cb(pfn, u64::from(flags.0))
    {
        return Ok(MfReport {
            pfn,
            head,
            handled_by: HandledBy::Callback,
            notices: Vec::new(),
            pins,
            elapsed: start.elapsed(),
        });
    }
    let notices = dax::revoke(pgmap, pfn, folio.mapping(), action_required).unwrap_or_default();
    tracing::info!(
        %pfn,
        %head,
        mappings = notices.len(),
        pins,
        elapsed_ns = start.elapsed().as_nanos() as u64,
        "memory_failure: revoked and told"
    );
    Ok(MfReport {
        pfn,
        head,
        handled_by: HandledBy::Generic,
        notices,
        pins,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod dax_tests;
#[cfg(test)]
mod tests;
