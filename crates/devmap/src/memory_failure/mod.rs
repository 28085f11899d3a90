//! `memory_failure(pfn, flags)` for device memory (`memory_failure_dev_pagemap` in
//! `mm/memory-failure.c`), in the kernel's order and with its results:
//!
//! 1. find the live pgmap holding the pfn (none, or one being torn down: [`MfError::NoDevice`],
//!    the kernel's `-ENXIO`), and refuse a pfn that is not data (`pgmap_pfn_valid`: the
//!    altmap's memmap and reserve, `-ENXIO`) *before* any compound-head lookup (seed 000
//!    patch 1);
//! 2. if the pgmap has a `memory_failure` callback (fsdax: the filesystem that owns the file),
//!    call it first, before anything is flagged: whatever it returns other than
//!    `-EOPNOTSUPP` is the result ([`MfError::Callback`] keeps its errno), and only
//!    `-EOPNOTSUPP` goes on to the generic path;
//! 3. the generic path (`mf_generic_kill_procs`): a folio no fault ever gave a `mapping` is
//!    refused (`dax_lock_folio` fails: [`MfError::NeverMapped`], `-EBUSY`, nothing flagged)
//!    unless the caller passes [`MfFlags::RECORD_UNMAPPED`]; private and coherent memory is
//!    refused ([`MfError::NotHandled`], `-ENXIO`, nothing flagged); then the failed 4 KiB page
//!    is flagged hwpoisoned and the device-dax device behind the pgmap revokes the leaf from
//!    every mapping that has it and tells the owners `kill_proc` would signal
//!    ([`crate::dax::PoisonNotice`]): `BUS_MCEERR_AR` to the current mapping, `AO` to the
//!    early-kill ones (`DaxMapping::set_early_kill`), nothing to the rest, which learn by
//!    SIGBUS when they touch the lost bytes.
//!
//! A page poisoned already goes through step 3 again, as the kernel's device pages do (they
//! never reach `memory_failure`'s `MF_MSG_ALREADY_POISONED`, which is for online pages): every
//! mapping that still has the leaf loses it again and the owners are told again; the result is
//! success.
//!
//! **Current.** The kernel signals `BUS_MCEERR_AR` to `current`, the task whose access met
//! the error. devmap's tasks are mappings (each owner stands for the task that mapped it), and
//! the current one is the mapping holding the address [`memory_failure_at`] is given with
//! [`MfFlags::ACTION_REQUIRED`] (the address a SIGBUS reported, or that the caller's own
//! access met). [`memory_failure`] by pfn names no address, so no mapping is current: as an
//! error a kernel worker handles, only early-kill owners are told. [`MfFlags::TELL_ALL`]
//! restores devmap's older rule (every owner told, `action_required` as passed).
//!
//! Where devmap departs from the kernel on purpose (the exact page flagged, `Page`
//! granularity, no re-fault and no new pin of a poisoned leaf, the device's badblocks list) is
//! DESIGN §8. From step 3 on, pins that existed stay (DMA cannot be revoked) and are reported
//! in [`MfReport::pins`].

mod sigbus;

pub use self::sigbus::{
    SLOTS as SIGBUS_SLOTS, SigbusError, SigbusReportFn, SigbusStats, install_sigbus_handler,
    sigbus_stats,
};

use std::time::{Duration, Instant};

use crate::addr::Pfn;
use crate::dax::{self, ClientMapping, MappingId, PoisonNotice, Recipients, Revocation};
use crate::folio::FolioRef;
use crate::pgmap::{DeviceSpace, MemoryType, Pgmap, PgmapError};

/// `MF_*` flags, and devmap's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MfFlags(u32);

impl MfFlags {
    /// No flags: an error found by a scrub or reported asynchronously (`BUS_MCEERR_AO`).
    pub const NONE: MfFlags = MfFlags(0);
    /// An access met the error (`MF_ACTION_REQUIRED`, `BUS_MCEERR_AR`): with
    /// [`memory_failure_at`], the mapping holding the address is the current one, told with
    /// `BUS_MCEERR_AR`.
    pub const ACTION_REQUIRED: MfFlags = MfFlags(1 << 0);
    /// devmap's own: flag and record the page even if no fault ever gave its folio a
    /// `mapping`, where the kernel's `dax_lock_folio` fails and `memory_failure` is `-EBUSY`
    /// with nothing flagged. For errors known before anything maps the device: the badblocks
    /// replay when a namespace is enabled.
    pub const RECORD_UNMAPPED: MfFlags = MfFlags(1 << 1);
    /// devmap's own: tell every mapping that lost the page, each with `action_required` as
    /// passed, instead of the current and early-kill ones as `kill_proc` does (devmap's rule
    /// before issue 18).
    pub const TELL_ALL: MfFlags = MfFlags(1 << 2);
    /// Every flag.
    pub const ALL: MfFlags =
        MfFlags(Self::ACTION_REQUIRED.0 | Self::RECORD_UNMAPPED.0 | Self::TELL_ALL.0);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: MfFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits, as the pgmap's `memory_failure` callback is given them.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The flags of `bits`, or `None` if any bit is not a flag.
    pub const fn from_bits(bits: u32) -> Option<MfFlags> {
        if bits & !Self::ALL.0 == 0 {
            Some(MfFlags(bits))
        } else {
            None
        }
    }
}

impl std::ops::BitOr for MfFlags {
    type Output = MfFlags;

    fn bitor(self, rhs: MfFlags) -> MfFlags {
        MfFlags(self.0 | rhs.0)
    }
}

/// Why `memory_failure` did nothing (or stopped). Nothing is flagged by any of them.
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
    /// The pfn holds the pgmap's own memmap or reserve, not data (`pgmap_pfn_valid`,
    /// `-ENXIO`).
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
    /// The pgmap's `memory_failure` callback returned an error other than `-EOPNOTSUPP`,
    /// which is the result as it is (`memory_failure_dev_pagemap`).
    #[error(
        "the pgmap's memory_failure callback failed for pfn {pfn}: {} (errno {errno})",
        std::io::Error::from_raw_os_error(*errno)
    )]
    Callback {
        /// The pfn.
        pfn: Pfn,
        /// The positive errno the callback returned.
        errno: i32,
    },
    /// No fault ever gave the page's folio a `mapping`, so nothing can have mapped it: the
    /// kernel's `dax_lock_folio` fails and `mf_generic_kill_procs` is `-EBUSY`.
    #[error(
        "pfn {pfn} is in a folio nothing has mapped (dax_lock_folio fails): nothing was flagged; \
         MfFlags::RECORD_UNMAPPED flags and records it anyway"
    )]
    NeverMapped {
        /// The pfn.
        pfn: Pfn,
    },
    /// Private and coherent memory: the kernel handles no error in them yet
    /// (`mf_generic_kill_procs`, `-ENXIO`).
    #[error("pfn {pfn} is {memory_type:?} device memory, whose memory errors are not handled")]
    NotHandled {
        /// The pfn.
        pfn: Pfn,
        /// The pgmap's memory type.
        memory_type: MemoryType,
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
    /// One per mapping that had the leaf and lost it (the poisoned page at `Page` granularity,
    /// the leaf at `Leaf`), in mapping order; `action_required` is set only for the current
    /// mapping's. Empty when the callback handled the error.
    pub revoked: Vec<PoisonNotice>,
    /// What each owner chosen as `kill_proc` chooses was told, in mapping order: the current
    /// mapping (`BUS_MCEERR_AR`) and the early-kill ones (`AO`), or every mapping that lost
    /// the page with [`MfFlags::TELL_ALL`].
    pub notices: Vec<PoisonNotice>,
    /// Pins on the folio when the error was handled: they stay (DMA cannot be revoked).
    pub pins: u32,
    /// From the call until every mapping was revoked and every owner told.
    pub elapsed: Duration,
}

/// Handles a memory error in the 4 KiB page `pfn` of `space`, as the module documentation
/// describes. No mapping is current: only early-kill owners are told (or every owner, with
/// [`MfFlags::TELL_ALL`]).
pub fn memory_failure(space: &DeviceSpace, pfn: Pfn, flags: MfFlags) -> Result<MfReport, MfError> {
    let start = Instant::now();
    let pgmap = space
        .get_dev_pagemap(pfn)
        .ok_or(MfError::NoDevice { pfn })?;
    handle(&pgmap, pfn, flags, None, start)
}

/// Handles a memory error at user address `addr` of a live device-dax mapping (an error the
/// kernel reported by address, as a SIGBUS does), as [`memory_failure`] does for its pfn.
/// With [`MfFlags::ACTION_REQUIRED`] the mapping holding `addr` is the current one: its owner
/// is told with `BUS_MCEERR_AR`, whether or not it is early-kill.
pub fn memory_failure_at(addr: usize, flags: MfFlags) -> Result<MfReport, MfError> {
    let start = Instant::now();
    let found = dax::locate(addr).ok_or(MfError::NotMapped { addr })?;
    let live = found
        .pgmap
        .tryget()
        .ok_or(MfError::NoDevice { pfn: found.pfn })?;
    let current = flags
        .contains(MfFlags::ACTION_REQUIRED)
        .then_some(found.mapping);
    handle(&live, found.pfn, flags, current, start)
}

/// Handles a memory error a client process met at its address `addr` of `mapping` (a client
/// of `devmap serve` reports its SIGBUS), as [`memory_failure_at`] does in this process: with
/// [`MfFlags::ACTION_REQUIRED`] the client's mapping is the current one.
pub fn memory_failure_in_client(
    space: &DeviceSpace,
    mapping: &ClientMapping,
    addr: usize,
    flags: MfFlags,
) -> Result<MfReport, MfError> {
    let start = Instant::now();
    let pfn = mapping.pfn_at(addr).ok_or(MfError::NotMapped { addr })?;
    let pgmap = space
        .get_dev_pagemap(pfn)
        .ok_or(MfError::NoDevice { pfn })?;
    let current = flags
        .contains(MfFlags::ACTION_REQUIRED)
        .then_some(mapping.id());
    handle(&pgmap, pfn, flags, current, start)
}

/// Steps 1 (the data check) to 3 on a pgmap found live; `current` is the mapping whose access
/// met the error, if any.
fn handle(
    pgmap: &Pgmap,
    pfn: Pfn,
    flags: MfFlags,
    current: Option<MappingId>,
    start: Instant,
) -> Result<MfReport, MfError> {
    if !pgmap.pfn_valid(pfn) {
        return Err(MfError::NotData { pfn });
    }
    if let Some(cb) = pgmap.ops().memory_failure.clone() {
        match cb(pfn, 1, flags.bits()) {
            Ok(()) => return Ok(by_callback(pgmap, pfn, start)),
            Err(libc::EOPNOTSUPP) => {}
            Err(errno) => return Err(MfError::Callback { pfn, errno }),
        }
    }
    generic(pgmap, pfn, flags, current, start)
}

/// The report of an error the callback handled: the folio as the memmap gives it after the
/// callback (the pfn itself, unpinned, if it cannot), nothing revoked here.
fn by_callback(pgmap: &Pgmap, pfn: Pfn, start: Instant) -> MfReport {
    let (head, pins) = FolioRef::at(pgmap, pfn)
        .map(|c| (c.folio().pfn(), c.folio().pincount().max(0) as u32))
        .unwrap_or((pfn, 0));
    MfReport {
        pfn,
        head,
        handled_by: HandledBy::Callback,
        revoked: Vec::new(),
        notices: Vec::new(),
        pins,
        elapsed: start.elapsed(),
    }
}

/// Step 3, `mf_generic_kill_procs`.
fn generic(
    pgmap: &Pgmap,
    pfn: Pfn,
    flags: MfFlags,
    current: Option<MappingId>,
    start: Instant,
) -> Result<MfReport, MfError> {
    // The one lookup of the page: its folio, through which it is checked and flagged.
    let cursor = FolioRef::at(pgmap, pfn)?;
    let folio = cursor.folio();
    let (head, mapping) = (folio.pfn(), folio.mapping());
    // dax_lock_folio: no `mapping`, no lock, and -EBUSY.
    if mapping == 0 && !flags.contains(MfFlags::RECORD_UNMAPPED) {
        return Err(MfError::NeverMapped { pfn });
    }
    let memory_type = pgmap.memory_type();
    if matches!(memory_type, MemoryType::Private | MemoryType::Coherent) {
        return Err(MfError::NotHandled { pfn, memory_type });
    }
    // Flagged again if it was: a repeated error is handled as a first one.
    cursor.poison_subpage(pfn)?;
    let pins = folio.pincount().max(0) as u32;
    let to = Recipients {
        current,
        tell_all: flags.contains(MfFlags::TELL_ALL),
        action_required: flags.contains(MfFlags::ACTION_REQUIRED),
    };
    let Revocation { revoked, told } = dax::revoke(pgmap, pfn, mapping, to).unwrap_or_default();
    tracing::info!(
        %pfn,
        %head,
        mappings = revoked.len(),
        told = told.len(),
        pins,
        elapsed_ns = start.elapsed().as_nanos() as u64,
        "memory_failure: revoked and told"
    );
    Ok(MfReport {
        pfn,
        head,
        handled_by: HandledBy::Generic,
        revoked,
        notices: told,
        pins,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod dax_tests;
#[cfg(test)]
mod kill_tests;
#[cfg(test)]
mod tests;
