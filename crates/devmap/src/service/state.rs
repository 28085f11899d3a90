//! What the service holds: its regions, the namespaces it has enabled, and every client
//! mapping attached to them. Sessions (one per client connection) call in here; nothing here
//! reads a socket; the management verbs (create, destroy, check, clear errors) are in
//! `manage.rs`.
//!
//! Namespaces of one region are managed independently: whatever changes a namespace (its
//! enable, disable, destroy, clear-errors, check) holds that namespace's operation lock, so
//! operations on one namespace run one at a time and on different namespaces side by side.
//! The region's handle, which owns its label index, is locked only while labels are read or
//! written (a create, a destroy, a lookup), never across an enable or a disable: those run on
//! a handle of their own ([`Region::share`]), so a long memmap init of one namespace holds up
//! no create or destroy of another. Locks are taken in the order: a namespace's operation lock
//! → the region's handle → the enabled table → a namespace's mappings, pins, device and
//! handle; never two namespaces' operation locks at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::error::ServiceError;
use super::notify::Notifier;
use super::proto::{NamespaceEntry, Notice, notice};
use crate::addr::Order;
use crate::dax::{ClientMapping, DaxDevice, DaxOptions, HandlerShare};
use crate::gup::{ByAddress, Folios, Pages, Pinned};
use crate::namespace::{Access, EnablePath, EnabledNamespace, Owner, Region};
use crate::pgmap::DeviceSpace;

mod manage;
#[cfg(all(test, not(loom)))]
mod tests;

/// A client mapping attached to an enabled namespace, and whose it is.
#[derive(Debug)]
pub(super) struct Attached {
    pub(super) session: u64,
    pub(super) pid: u32,
    /// The client's handle of it, and where to tell the client what happens to it.
    pub(super) handle: u32,
    pub(super) notifier: Arc<Notifier>,
    pub(super) mapping: ClientMapping,
}

/// A pin a client holds, in either form.
#[derive(Debug)]
pub(super) enum HeldPin {
    /// One entry per page.
    Pages(Pinned<Pages, ByAddress>),
    /// One entry per folio.
    Folios(Pinned<Folios, ByAddress>),
}

impl HeldPin {
    pub(super) fn nr_pages(&self) -> u64 {
        match self {
            HeldPin::Pages(p) => p.nr_pages(),
            HeldPin::Folios(f) => f.nr_pages(),
        }
    }

    /// Gives the pins back, marking each folio dirty once first if `dirty`.
    pub(super) fn unpin(self, dirty: bool) {
        match self {
            HeldPin::Pages(p) => p.unpin(dirty),
            HeldPin::Folios(f) => f.unpin(dirty),
        }
    }
}

/// A pin attached to an enabled namespace, and whose it is.
#[derive(Debug)]
pub(super) struct AttachedPin {
    pub(super) session: u64,
    pub(super) pid: u32,
    /// The client's handle of it, and where to tell the client what happens to it.
    pub(super) handle: u32,
    pub(super) notifier: Arc<Notifier>,
    pub(super) pin: HeldPin,
}

/// A namespace the service has enabled.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) name: String,
    pub(super) warm: bool,
    /// Who may open it (its label's owner when it was enabled).
    pub(super) owner: Owner,
    /// The enabled namespace; taken out by the disable.
    ns: Mutex<Option<EnabledNamespace>>,
    /// The handle it was enabled through, which its disable goes through.
    handle: Mutex<Region>,
    /// Client mappings by service-wide key.
    pub(super) mappings: Mutex<BTreeMap<u64, Attached>>,
    /// Client pins by service-wide key.
    pub(super) pins: Mutex<BTreeMap<u64, AttachedPin>>,
}

impl Live {
    /// Runs `f` on the device, or refuses if the namespace was disabled meanwhile.
    pub(super) fn with_device<T>(
        &self,
        f: impl FnOnce(&DaxDevice) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let ns = self.ns.lock();
        match ns.as_ref() {
            Some(ns) => f(ns.device()),
            None => Err(ServiceError::NotEnabled {
                name: self.name.clone(),
            }),
        }
    }

    /// The pids of the clients with a mapping or a pin of this namespace, each once.
    pub(super) fn client_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.mappings.lock().values().map(|a| a.pid).collect();
        pids.extend(self.pins.lock().values().map(|p| p.pid));
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// A region the service was started with.
#[derive(Debug)]
pub(super) struct Served {
    pub(super) path: PathBuf,
    /// The path with every link resolved, which a request may name instead.
    canonical: Option<PathBuf>,
    /// The handle that owns the label index (and holds the region's lock).
    region: Mutex<Region>,
    enabled: Mutex<BTreeMap<String, Arc<Live>>>,
    /// The operation lock of each namespace name an operation holds or waits for.
    ops: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
}

impl Served {
    /// The operation lock of the namespace `name` (to lock: one operation at a time on it).
    fn op(&self, name: &str) -> Arc<Mutex<()>> {
        let mut ops = self.ops.lock();
        // Locks nobody holds or waits for go (the table holds their only reference), so the
        // table stays as small as the operations under way, whatever names requests carry.
        ops.retain(|n, lock| n == name || Arc::strong_count(lock) > 1);
        Arc::clone(ops.entry(name.to_owned()).or_default())
    }
}

/// Everything the service holds.
#[derive(Debug)]
pub(super) struct State {
    pub(super) space: DeviceSpace,
    pub(super) regions: Vec<Served>,
    /// The cores the fault handlers of every client's descriptors share.
    pub(super) handlers: HandlerShare,
    next_key: AtomicU64,
}

impl State {
    /// Opens every region for management (each region file's lock is held while served).
    pub(super) fn open(paths: &[PathBuf]) -> Result<State, ServiceError> {
        if paths.is_empty() {
            return Err(ServiceError::NoRegion);
        }
        let mut regions = Vec::with_capacity(paths.len());
        for path in paths {
            let region =
                Region::open(path, Access::Manage).map_err(|source| ServiceError::Region {
                    path: path.clone(),
                    source,
                })?;
            regions.push(Served {
                path: path.clone(),
                canonical: std::fs::canonicalize(path).ok(),
                region: Mutex::new(region),
                enabled: Mutex::new(BTreeMap::new()),
                ops: Mutex::new(BTreeMap::new()),
            });
        }
        Ok(State {
            space: DeviceSpace::new(),
            regions,
            handlers: HandlerShare::per_core(),
            next_key: AtomicU64::new(1),
        })
    }

    /// A fresh service-wide mapping key.
    pub(super) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// The region `region` names (its path as the service was given it, or that path with
    /// every link resolved), or, when `region` is empty, the one region the service serves.
    fn region(&self, region: &str) -> Result<&Served, ServiceError> {
        if region.is_empty() {
            return match self.regions.as_slice() {
                [one] => Ok(one),
                _ => Err(ServiceError::RegionNeeded {
                    served: self.paths(),
                }),
            };
        }
        let canonical = std::fs::canonicalize(region).ok();
        self.regions
            .iter()
            .find(|r| {
                r.path.as_os_str() == region || (canonical.is_some() && r.canonical == canonical)
            })
            .ok_or_else(|| ServiceError::UnknownRegion {
                region: region.into(),
                served: self.paths(),
            })
    }

    /// The region `region` names, or the one region holding a namespace `name` when
    /// `region` is empty.
    fn find(&self, region: &str, name: &str) -> Result<&Served, ServiceError> {
        if !region.is_empty() {
            return self.region(region);
        }
        let holding: Vec<&Served> = self
            .regions
            .iter()
            .filter(|r| r.region.lock().namespace(name).is_ok())
            .collect();
        match holding.as_slice() {
            [one] => Ok(one),
            [] => Err(ServiceError::UnknownNamespace {
                name: name.into(),
                served: self.paths(),
            }),
            _ => Err(ServiceError::AmbiguousNamespace {
                name: name.into(),
                regions: holding
                    .iter()
                    .map(|r| r.path.display().to_string())
                    .collect(),
            }),
        }
    }

    /// The served regions' paths, in the service's order.
    pub(super) fn paths(&self) -> Vec<String> {
        self.regions
            .iter()
            .map(|r| r.path.display().to_string())
            .collect()
    }

    /// Enables `name` (or finds it enabled): its live entry, and whether this call enabled it.
    pub(super) fn enable(
        &self,
        region: &str,
        name: &str,
    ) -> Result<(Arc<Live>, bool), ServiceError> {
        let served = self.find(region, name)?;
        let op = served.op(name);
        let _op = op.lock();
        if let Some(live) = served.enabled.lock().get(name) {
            return Ok((Arc::clone(live), false));
        }
        let region_error = |source| ServiceError::Region {
            path: served.path.clone(),
            source,
        };
        // The region's handle only for the copy: the enable (a memmap init may take a while)
        // runs on a handle of its own.
        let mut handle = served.region.lock().share().map_err(region_error)?;
        let ns = handle
            .enable(&self.space, name, DaxOptions::new(Order::PMD))
            .map_err(region_error)?;
        let live = Arc::new(Live {
            name: name.into(),
            warm: ns.path() == EnablePath::Warm,
            owner: ns.label().owner,
            ns: Mutex::new(Some(ns)),
            handle: Mutex::new(handle),
            mappings: Mutex::new(BTreeMap::new()),
            pins: Mutex::new(BTreeMap::new()),
        });
        served.enabled.lock().insert(name.into(), Arc::clone(&live));
        tracing::info!(region = %served.path.display(), name, warm = live.warm, "serve: enabled");
        Ok((live, true))
    }

    /// The enabled namespace `name`.
    pub(super) fn live(&self, region: &str, name: &str) -> Result<Arc<Live>, ServiceError> {
        let served = self.find(region, name)?;
        let enabled = served.enabled.lock();
        enabled
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::NotEnabled { name: name.into() })
    }

    /// Disables `name`: refused while clients map it unless `force`, which detaches their
    /// mappings first (their next touch of a leaf not yet faulted gets SIGBUS).
    pub(super) fn disable(
        &self,
        region: &str,
        name: &str,
        force: bool,
    ) -> Result<(), ServiceError> {
        let served = self.find(region, name)?;
        let op = served.op(name);
        let _op = op.lock();
        let live = {
            let mut enabled = served.enabled.lock();
            let live = enabled
                .get(name)
                .cloned()
                .ok_or_else(|| ServiceError::NotEnabled { name: name.into() })?;
            let pids = live.client_pids();
            if !pids.is_empty() && !force {
                return Err(ServiceError::InUse {
                    name: name.into(),
                    pids,
                });
            }
            // Gone from the table first: nobody opens it from here on.
            enabled.remove(name);
            live
        };
        // Pins first (DMA outlives a mapping; the device's teardown waits for both); each
        // client is told what it lost.
        let unpinned = std::mem::take(&mut *live.pins.lock());
        for p in unpinned.into_values() {
            let n = Notice {
                what: notice::PIN_DROPPED,
                handle: p.handle,
                addr: 0,
                len: p.pin.nr_pages() * crate::addr::PAGE_SIZE,
                pfn: 0,
            };
            drop(p.pin);
            p.notifier.notice(&n);
        }
        let detached = std::mem::take(&mut *live.mappings.lock());
        for a in detached.into_values() {
            // The fast pins the client holds in the mapping go with it: told as one notice,
            // handle 0, at the mapping's address.
            let fast = a.mapping.revoke_fast_pins();
            if fast.pins > 0 {
                a.notifier.notice(&Notice {
                    what: notice::PIN_DROPPED,
                    handle: 0,
                    addr: a.mapping.addr() as u64,
                    len: fast.pages.saturating_mul(crate::addr::PAGE_SIZE),
                    pfn: 0,
                });
            }
            let n = Notice {
                what: notice::MAPPING_REVOKED,
                handle: a.handle,
                addr: a.mapping.addr() as u64,
                len: a.mapping.len(),
                pfn: 0,
            };
            drop(a.mapping);
            a.notifier.notice(&n);
        }
        let ns = live.ns.lock().take();
        if let Some(ns) = ns {
            live.handle
                .lock()
                .disable(ns)
                .map_err(|source| ServiceError::Region {
                    path: served.path.clone(),
                    source,
                })?;
        }
        tracing::info!(region = %served.path.display(), name, force, "serve: disabled");
        Ok(())
    }

    /// Disables every enabled namespace, detaching every client mapping: the shutdown.
    /// Returns the namespaces disabled and the first failure, if any (the rest still run).
    pub(super) fn disable_all(&self) -> (Vec<String>, Option<ServiceError>) {
        let mut done = Vec::new();
        let mut first = None;
        for served in &self.regions {
            let names: Vec<String> = served.enabled.lock().keys().cloned().collect();
            let path = served.path.display().to_string();
            for name in names {
                match self.disable(&path, &name, true) {
                    Ok(()) => done.push(name),
                    Err(e) => {
                        tracing::error!(name, error = %e, "serve: disable at shutdown failed");
                        first.get_or_insert(e);
                    }
                }
            }
        }
        (done, first)
    }

    /// Unpins every pin and detaches every mapping `session` holds (its client ended).
    pub(super) fn detach_session(&self, session: u64) -> usize {
        let mut n = 0;
        for served in &self.regions {
            let lives: Vec<Arc<Live>> = served.enabled.lock().values().cloned().collect();
            for live in lives {
                let unpinned: Vec<AttachedPin> = {
                    let mut p = live.pins.lock();
                    let keys: Vec<u64> = p
                        .iter()
                        .filter(|(_, a)| a.session == session)
                        .map(|(k, _)| *k)
                        .collect();
                    keys.iter().filter_map(|k| p.remove(k)).collect()
                };
                drop(unpinned);
                let gone: Vec<Attached> = {
                    let mut m = live.mappings.lock();
                    let keys: Vec<u64> = m
                        .iter()
                        .filter(|(_, a)| a.session == session)
                        .map(|(k, _)| *k)
                        .collect();
                    keys.iter().filter_map(|k| m.remove(k)).collect()
                };
                n += gone.len();
            }
        }
        n
    }

    /// Every namespace of every region, regions in order.
    pub(super) fn list(&self) -> Vec<NamespaceEntry> {
        let mut out = Vec::new();
        for served in &self.regions {
            let r = served.region.lock();
            let enabled = served.enabled.lock();
            for label in r.namespaces() {
                let live = enabled.get(&label.name);
                out.push(NamespaceEntry {
                    region: served.path.display().to_string(),
                    name: label.name.clone(),
                    size: label.namespace.size(),
                    data_bytes: label.namespace.data_bytes(),
                    align: label.namespace.align(),
                    mode: label.namespace.mode().to_string(),
                    enabled: live.is_some(),
                    warm: live.is_some_and(|l| l.warm),
                    clients: live.map_or(0, |l| l.client_pids().len() as u32),
                });
            }
        }
        out
    }

    /// Every enabled namespace: its region's path and what the service keeps of it.
    pub(super) fn enabled(&self) -> Vec<(&Path, Arc<Live>)> {
        let mut out = Vec::new();
        for served in &self.regions {
            let enabled = served.enabled.lock();
            out.extend(
                enabled
                    .values()
                    .map(|l| (served.path.as_path(), Arc::clone(l))),
            );
        }
        out
    }
}
