//! Mappings of a device that live in another process: what `devmap serve` keeps for each
//! client mapping. The client maps the backing's bytes itself (the service passes it the
//! file), registers its mapping with a userfaultfd of its own and passes that descriptor; the
//! device then runs the same fault path as for its own mappings (sync, `dax_set_mapping`,
//! reference and mapcount, the leaf's bit) and maps each caught leaf in the client with one
//! ioctl on the client's descriptor, as Firecracker's external page-fault handler does.
//! Where touches cannot be caught (a region file on a disk filesystem), the metadata of every
//! leaf is set when the mapping is attached, so the reverse map is complete either way.
//!
//! [`ClientFaults`] are the handlers of one client descriptor: threads that sleep on it and
//! on a stop eventfd, one woken per fault, each sending its fault to the device whose mapping
//! holds the address (one descriptor may serve mappings of several devices); there are as many
//! as the client keeps busy at once, up to one per core. [`ClientMapping`] is the
//! device's side of one client mapping; dropping it forgets the mapping as an unmap would.
//! Client addresses are never entered into this process's address tables
//! (`is_devmap_address`, `memory_failure_at`): they are another address space's.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

use super::device::DaxDevice;
use super::device_core::{DeviceCore, FastPinFiles, MappingCore, Window};
use super::leaves::LeafBits;
use super::pin_view::{FastPins, PinLedger, PinView};
use super::poison::{Granularity, OwnerFn, OwnerSlot};
use super::vma::{Populated, Vma};
use super::{DaxError, DaxOptions, MappingId};
use crate::backing::{UffdEvent, Userfaultfd};
use crate::gup::{ByAddress, Folios, GupFlags, Pages, Pinned};

/// The mappings one client descriptor catches, by client base address.
type Table = Mutex<BTreeMap<usize, (Arc<DeviceCore>, Arc<MappingCore>)>>;

/// The handlers of one client's userfaultfd: read the client's fault events and run each
/// through the fault path of the device whose mapping holds the address. Stopped and joined
/// when dropped.
///
/// One handler waits at first. Whenever a handler takes an event and no other is left
/// waiting, it starts one more, up to this descriptor's part of its [`HandlerShare`]: for a
/// service, one handler per core divided among the client descriptors it serves at that
/// moment, at least one each. So a client whose threads touch new leaves at once gets as
/// many handlers as it keeps busy while it has the cores to itself, and its touches do not
/// queue behind one another (the kernel would fault them in parallel); many clients at once
/// get one each, rather than more handlers than cores sharing them unevenly (BENCHMARKS.md).
/// A share that shrinks as clients arrive does not stop handlers already started. Each
/// waits in its own [`Userfaultfd::waiter`], so a fault wakes one.
#[derive(Debug)]
pub struct ClientFaults {
    shared: Arc<Shared>,
}

/// The cores that the fault handlers of a service's client descriptors share: each descriptor
/// started with it may grow to an equal share of them ([`ClientFaults`]). Clones share the
/// count.
#[derive(Debug, Clone)]
pub struct HandlerShare {
    /// Descriptors started with this share and not yet dropped.
    live: Arc<AtomicUsize>,
    /// Their handler threads, started and not yet joined.
    threads: Arc<AtomicUsize>,
    /// Handlers to divide among them.
    cores: usize,
}

impl HandlerShare {
    /// `cores` handlers to divide (at least one each).
    pub fn new(cores: usize) -> HandlerShare {
        HandlerShare {
            live: Arc::default(),
            threads: Arc::default(),
            cores,
        }
    }

    /// Handler threads running for the descriptors started with this share (`devmap status`
    /// shows them).
    pub fn handlers(&self) -> usize {
        // Relaxed: a figure to show; nothing is read through it.
        self.threads.load(Ordering::Relaxed)
    }

    /// One handler per core ([`DaxOptions::default_handlers`]).
    pub fn per_core() -> HandlerShare {
        HandlerShare::new(DaxOptions::default_handlers())
    }

    /// One descriptor's share now: at least one handler.
    fn each(&self) -> usize {
        // Relaxed: a count read only to size the share; nothing is published through it.
        (self.cores / self.live.load(Ordering::Relaxed).max(1)).max(1)
    }
}

/// What the handlers of one client descriptor share.
#[derive(Debug)]
struct Shared {
    uffd: Arc<Userfaultfd>,
    table: Arc<Table>,
    stop: OwnedFd,
    /// Handlers asleep in their waiter, or about to be.
    idle: AtomicUsize,
    /// The cores this descriptor's handlers share with other descriptors'.
    share: HandlerShare,
    /// The handlers' threads; `None` once the drop has taken them, after which none starts.
    threads: Mutex<Option<Vec<JoinHandle<()>>>>,
}

impl ClientFaults {
    /// Starts the handler of `uffd`, a client's descriptor adopted with
    /// [`Userfaultfd::adopt`]; its handlers grow to at most its part of `share`.
    pub fn start(uffd: Userfaultfd, share: &HandlerShare) -> Result<ClientFaults, DaxError> {
        let stop = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| DaxError::Handler { source: e.into() })?;
        let shared = Arc::new(Shared {
            uffd: Arc::new(uffd),
            table: Arc::default(),
            stop,
            idle: AtomicUsize::new(0),
            share: share.clone(),
            threads: Mutex::new(Some(Vec::new())),
        });
        // Relaxed: a count read only to size each descriptor's share of handlers.
        share.live.fetch_add(1, Ordering::Relaxed);
        let faults = ClientFaults { shared };
        Shared::spawn(&faults.shared).map_err(|source| DaxError::Handler { source })?;
        Ok(faults)
    }

    /// The client's descriptor.
    pub fn uffd(&self) -> &Userfaultfd {
        &self.shared.uffd
    }

    /// How many handler threads serve the descriptor now.
    pub fn handlers(&self) -> usize {
        self.shared.threads.lock().as_ref().map_or(0, Vec::len)
    }
}

impl Shared {
    /// Starts one more handler, unless the descriptor has its share or is being dropped.
    /// Counted idle before it starts, so that the handler that started it does not start
    /// another for the same shortage.
    fn spawn(this: &Arc<Shared>) -> std::io::Result<()> {
        let mut threads = this.threads.lock();
        let Some(threads) = threads.as_mut() else {
            return Ok(());
        };
        if threads.len() >= this.share.each() {
            return Ok(());
        }
        // Relaxed: a count of sleepers, read only to decide whether to start one; nothing
        // is published through it.
        this.idle.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(this);
        match std::thread::Builder::new()
            .name("devmap-client-fault".into())
            .spawn(move || shared.serve())
        {
            Ok(t) => {
                threads.push(t);
                // Relaxed: a figure to show.
                this.share.threads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                this.idle.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// One handler: sleeps until a fault event or the stop. A fault at an address no
    /// attached mapping holds (detached while the client still maps it) is answered with
    /// SIGBUS, never left waiting.
    fn serve(self: &Arc<Shared>) {
        let waiter = self.uffd.waiter(self.stop.as_fd());
        loop {
            let addr = match waiter.wait() {
                Ok(Some(UffdEvent::PageFault { addr, .. })) => addr,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            };
            // Relaxed: a count read only to decide whether to start a handler.
            if self.idle.fetch_sub(1, Ordering::Relaxed) == 1
                && let Err(e) = Shared::spawn(self)
            {
                tracing::warn!(error = %e, "dax: cannot start another client fault handler");
            }
            self.fault(addr);
            self.idle.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs the client's fault at `addr` through the fault path of the device whose mapping
    /// holds it, or answers it with SIGBUS.
    fn fault(&self, addr: u64) {
        let found = {
            let t = self.table.lock();
            t.range(..=addr as usize)
                .next_back()
                .filter(|(base, (_, m))| (addr as usize) < **base + m.len as usize)
                .map(|(_, (d, m))| (Arc::clone(d), Arc::clone(m)))
        };
        match found {
            Some((dev, m)) => dev.caught_touch(&m, addr),
            None => {
                // Detached (its client lost it: a disable, a revoke): SIGBUS, as a touch of a
                // torn-down device's mapping gets.
                let page = self.uffd.page_size_at(addr).bytes();
                let at = addr - addr % page;
                if self.uffd.poison(at, page).is_err() {
                    let _ = self.uffd.wake(at, page);
                }
            }
        }
    }
}

impl Drop for ClientFaults {
    fn drop(&mut self) {
        // As `Handler::stop`: the eventfd stays readable, so every handler sees it whether it
        // is asleep now or gets to its wait later. Taking the threads under the lock stops
        // any handler from starting another after this.
        self.shared.share.live.fetch_sub(1, Ordering::Relaxed);
        let threads = self.shared.threads.lock().take().unwrap_or_default();
        if let Err(e) = rustix::io::write(&self.shared.stop, &1u64.to_ne_bytes()) {
            tracing::error!(error = %e, "dax: cannot wake the client fault handlers to stop them");
            return;
        }
        let started = threads.len();
        for t in threads {
            let _ = t.join();
        }
        // Relaxed: a figure to show.
        self.shared
            .share
            .threads
            .fetch_sub(started, Ordering::Relaxed);
    }
}

/// A client's request to map device bytes: `len` bytes from device offset `offset`, mapped
/// by process `pid` at its address `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientWindow {
    /// Device byte offset of the first byte (a multiple of the align).
    pub offset: u64,
    /// Length in bytes (a multiple of the align).
    pub len: u64,
    /// The client's address of the first byte (a multiple of the align).
    pub base: usize,
    /// The client's process id.
    pub pid: u32,
}

/// The device's side of a mapping in a client process: what the fault path, the reverse map
/// and the pins know of it. Dropping it forgets the mapping as an unmap would (its leaves'
/// references and mapcounts are given back); the client's own page tables are the client's.
#[derive(Debug)]
pub struct ClientMapping {
    dev: Arc<DeviceCore>,
    core: Arc<MappingCore>,
    /// The handler table the mapping is entered in, if its touches are caught.
    table: Option<Arc<Table>>,
}

impl ClientMapping {
    /// Attaches `window`, which the client has mapped `MAP_SHARED` from the device's backing
    /// (`check_vma`'s rules: offset and length multiples of the align and inside the device;
    /// the base aligned too, as `dax_get_unmapped_area` would place it). With `faults`, the
    /// client has registered the window with that handler's descriptor, and its touches are
    /// resolved as they come; without, the metadata of every leaf is faulted in now, as for a
    /// mapping of a device that does not catch touches (`DaxOptions::populate_on_map`).
    pub fn attach(
        device: &DaxDevice,
        window: ClientWindow,
        faults: Option<&ClientFaults>,
    ) -> Result<ClientMapping, DaxError> {
        let dev = &device.dev;
        dev.check_window(window.offset, window.len)?;
        let align = dev.align;
        if !(window.base as u64).is_multiple_of(align.bytes()) {
            return Err(DaxError::Unaligned {
                what: "address",
                value: window.base as u64,
                align,
            });
        }
        let fits = usize::try_from(window.len)
            .ok()
            .and_then(|len| window.base.checked_add(len))
            .is_some();
        if !fits {
            return Err(DaxError::ClientWindow {
                base: window.base,
                len: window.len,
            });
        }
        let inside = dev.gate.enter().ok_or(DaxError::TornDown)?;
        let live = dev.pgmap.tryget().ok_or(DaxError::TornDown)?;
        drop(inside);
        let nr_leaves = window.len / align.bytes();
        let fast = FastPinFiles {
            view: PinView::create(nr_leaves)?,
            ledger: PinLedger::create()?,
        };
        let uffd = faults.map(|f| {
            f.shared
                .uffd
                .note_registered(window.base as u64, window.len, dev.backing.page_size());
            Arc::clone(&f.shared.uffd)
        });
        let core = Arc::new(MappingCore {
            id: MappingId(dev.next_mapping.fetch_add(1, Ordering::Relaxed)),
            offset: window.offset,
            base: window.base,
            len: window.len,
            live: RwLock::new(true),
            leaves: Mutex::new(BTreeMap::new()),
            bits: LeafBits::new(nr_leaves),
            uffd,
            owner: OwnerSlot::default(),
            _listed: None,
            window: Window::Client { pid: window.pid },
            _live: live,
            fast: Some(fast),
        });
        dev.add_mapping(&core);
        let table = faults.map(|f| {
            f.shared
                .table
                .lock()
                .insert(window.base, (Arc::clone(dev), Arc::clone(&core)));
            Arc::clone(&f.shared.table)
        });
        let mapping = ClientMapping {
            dev: Arc::clone(dev),
            core,
            table,
        };
        if mapping.table.is_none() && dev.populate_on_map {
            // On failure the mapping's drop gives back what was faulted.
            mapping.vma().populate_all()?;
        }
        Ok(mapping)
    }

    fn vma(&self) -> Vma<'_> {
        Vma {
            dev: &self.dev,
            core: &self.core,
        }
    }

    /// The mapping's id in its device's registry.
    pub fn id(&self) -> MappingId {
        self.core.id
    }

    /// The client's address of the first byte.
    pub fn addr(&self) -> usize {
        self.core.base
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> u64 {
        self.core.len
    }

    /// Never true: empty mappings are refused.
    pub fn is_empty(&self) -> bool {
        self.core.len == 0
    }

    /// The device offset the mapping starts at.
    pub fn offset(&self) -> u64 {
        self.core.offset
    }

    /// The client's process id.
    pub fn pid(&self) -> u32 {
        match self.core.window {
            Window::Client { pid } => pid,
            Window::Local(_) => std::process::id(),
        }
    }

    /// The files the client maps for fast pins: the [`PinView`] (pass it; the client maps it
    /// read-only) and the [`PinLedger`].
    pub fn fast_pin_files(&self) -> (Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>) {
        match &self.core.fast {
            Some(f) => (f.view.fd(), f.ledger.fd()),
            None => (None, None),
        }
    }

    /// The fast pins the client counts in this mapping's ledger now.
    pub fn fast_pins(&self) -> FastPins {
        self.core
            .fast
            .as_ref()
            .map_or_else(FastPins::default, |f| f.ledger.read())
    }

    /// Revokes the client's fast pins in this mapping (each later one fails and asks the
    /// service) and returns what the ledger counts then: the pins a forced disable drops.
    pub fn revoke_fast_pins(&self) -> FastPins {
        match &self.core.fast {
            Some(f) => {
                f.ledger.revoke();
                f.ledger.read()
            }
            None => FastPins::default(),
        }
    }

    /// The pfn of the page at the client's address `addr`, if the mapping holds it.
    pub fn pfn_at(&self, addr: usize) -> Option<crate::addr::Pfn> {
        let rel = addr.checked_sub(self.core.base)? as u64;
        (rel < self.core.len)
            .then(|| {
                self.dev
                    .pgoff_to_pfn((self.core.offset + rel) / crate::addr::PAGE_SIZE, 1)
            })
            .flatten()
    }

    /// The pfn of the mapping's first byte, if its pfns run on unbroken to its end (always,
    /// for a device of one range): what a client adds its page offset to, to name the pfn
    /// of a page it pinned fast.
    pub fn first_pfn(&self) -> Option<crate::addr::Pfn> {
        self.dev.pgoff_to_pfn(
            self.core.offset / crate::addr::PAGE_SIZE,
            self.core.len / crate::addr::PAGE_SIZE,
        )
    }

    /// Whether the leaf holding the client address `addr` is faulted in.
    pub fn is_faulted(&self, addr: usize) -> bool {
        self.vma().is_faulted(addr)
    }

    /// Faults in every leaf that the client range `addr..addr + len` touches (see
    /// [`DaxMapping::populate`](super::DaxMapping::populate)).
    pub fn populate(&self, addr: usize, len: u64) -> Result<Populated, DaxError> {
        self.vma().populate(addr, len)
    }

    /// Pins by client address, one entry per page (see
    /// [`DaxMapping::pin_user_pages`](super::DaxMapping::pin_user_pages)); the entries' user
    /// addresses are the client's.
    pub fn pin_user_pages(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
    ) -> Result<Pinned<Pages, ByAddress>, DaxError> {
        self.vma().pin_user_pages(addr, nr_pages, flags)
    }

    /// Pins by client address, one entry per folio (see
    /// [`DaxMapping::pin_user_folios`](super::DaxMapping::pin_user_folios)).
    pub fn pin_user_folios(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
    ) -> Result<Pinned<Folios, ByAddress>, DaxError> {
        self.vma().pin_user_folios(addr, nr_pages, flags)
    }

    /// Names who is told when memory under this mapping fails; the notice carries the
    /// client's address (see [`DaxMapping::set_owner`](super::DaxMapping::set_owner)).
    pub fn set_owner(&self, owner: Arc<OwnerFn>) {
        self.core.owner.set(owner);
    }

    /// Makes the owner hear of errors in this mapping's leaves the client's own accesses have
    /// not met (`BUS_MCEERR_AO`, `PR_MCE_KILL_EARLY`; see
    /// [`DaxMapping::set_early_kill`](super::DaxMapping::set_early_kill)). A client is never
    /// the current task of a memory failure the service handles, so this is how its owner is
    /// told at all.
    pub fn set_early_kill(&self, early: bool) {
        self.core.owner.set_early_kill(early);
    }

    /// The granularity a memory error under this mapping takes.
    pub fn granularity(&self) -> Granularity {
        self.dev.effective_granularity()
    }
}

impl Drop for ClientMapping {
    fn drop(&mut self) {
        if let Some(table) = &self.table {
            table.lock().remove(&self.core.base);
        }
        self.dev.unmap(&self.core);
    }
}
