//! The data path of a client: [`Namespace`] (an opened namespace and the file its bytes live
//! in), [`Mapping`] (a window of it mapped here and attached in the service) and [`Pins`]
//! (pages pinned, with their extents: fast in this process where the service's view vouches
//! for them, else by request; `fast.rs`), and `Client::open`, which makes the first.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use parking_lot::Mutex;

use super::conn::{Client, ClientError};
use super::fast::FastPath;
use super::watch::Window;
use crate::addr::Order;
use crate::backing::{Backing, Mmap, UffdFeatures, Userfaultfd};
use crate::gup::GupFlags;
use crate::service::proto::{
    Done, Injected, Map, Mapped, Open, Opened, Pin, PinReply, ReportError, Unmap, Unpin, WireExtent,
};
use crate::wire::WireError;

impl Client {
    /// Opens the enabled namespace `name` of `region` (or of the one region holding it).
    pub fn open(&self, region: Option<&str>, name: &str) -> Result<Namespace, ClientError> {
        let mut frame = self.call(
            &Open {
                region: region.unwrap_or_default().into(),
                name: name.into(),
            },
            &[],
            "open",
        )?;
        let o: Opened = frame.message()?;
        let [fd] = frame.take_fds::<1>()?;
        let backing = Backing::from_shared(fd, o.file_offset, o.data_bytes)?;
        let align = Order::from_bytes(o.align).map_err(|_| {
            ClientError::Wire(WireError::BadValue {
                field: "align",
                value: o.align,
                expected: "a power of two of at least 4 KiB",
            })
        })?;
        Ok(Namespace {
            client: self.clone(),
            handle: o.ns,
            backing,
            align,
            caught: o.caught,
        })
    }
}

/// A namespace opened through the service.
#[derive(Debug)]
pub struct Namespace {
    client: Client,
    handle: u32,
    backing: Backing,
    align: Order,
    caught: bool,
}

impl Namespace {
    /// Bytes a mapping can cover.
    pub fn size(&self) -> u64 {
        self.backing.len()
    }

    /// The align in bytes: offsets and lengths of mappings are multiples of it.
    pub fn align(&self) -> u64 {
        self.align.bytes()
    }

    /// Whether the service resolves this namespace's first touches (its file is on tmpfs).
    pub fn caught(&self) -> bool {
        self.caught
    }

    /// Maps `len` bytes from `offset` (multiples of the align) shared, at an align-aligned
    /// address, and attaches the window in the service (registered with a userfaultfd of this
    /// process where the service resolves touches, else with every leaf's metadata set now).
    pub fn map(&self, offset: u64, len: u64) -> Result<Mapping, ClientError> {
        let bytes = self.backing.map_shared(offset, len, self.align)?;
        let uffd = if self.caught {
            let u = Userfaultfd::new(UffdFeatures::DEVICE)?;
            u.register(&bytes, self.backing.uffd_modes())?;
            Some(u)
        } else {
            None
        };
        let req = Map {
            ns: self.handle,
            offset,
            len,
            base: bytes.as_ptr().as_ptr() as u64,
            features: uffd.as_ref().map_or(0, |u| u.granted().bits()),
        };
        let mut frame = {
            let fds: Vec<BorrowedFd<'_>> = uffd.iter().map(|u| u.as_fd()).collect();
            self.client.call(&req, &fds, "map")?
        };
        let m: Mapped = frame.message()?;
        let fast = FastPath::adopt(frame.take_fds::<2>()?, &m, offset, len, self.align)?;
        let window = Arc::new(Window {
            bytes,
            uffd: Mutex::new(uffd),
            fast,
        });
        {
            let c = self.client.conn.lock();
            let mut ws = c.watcher.windows.lock();
            ws.retain(|w| w.strong_count() > 0);
            ws.push(Arc::downgrade(&window));
        }
        Ok(Mapping {
            inner: Arc::new(Attached {
                client: self.client.clone(),
                handle: m.mapping,
                window,
            }),
        })
    }
}

/// A window of a namespace mapped in this process and attached in the service. It stays
/// mapped and attached until it is dropped and every [`Pins`] taken in it is unpinned.
#[derive(Debug)]
pub struct Mapping {
    inner: Arc<Attached>,
}

/// What a [`Mapping`] and its pins share; its drop detaches and unmaps.
#[derive(Debug)]
struct Attached {
    client: Client,
    handle: u32,
    window: Arc<Window>,
}

impl Mapping {
    /// The first address.
    pub fn addr(&self) -> usize {
        self.inner.window.bytes.as_ptr().as_ptr() as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.inner.window.bytes.len() as u64
    }

    /// Never true: empty mappings are refused.
    pub fn is_empty(&self) -> bool {
        self.inner.window.bytes.is_empty()
    }

    /// The service's handle of this mapping, as [`Notice::handle`](crate::service::proto::Notice::handle) names it.
    pub fn handle(&self) -> u32 {
        self.inner.handle
    }

    /// The mapped bytes. Once the service is gone, every access raises SIGBUS.
    pub fn bytes(&self) -> &Mmap {
        &self.inner.window.bytes
    }

    /// Reports a memory error this process met at its address `addr` of this mapping (a
    /// `BUS_MCEERR_AR` SIGBUS; from a thread, not the signal handler): the service handles it
    /// as `memory_failure` with this mapping current, so every client that maps the page loses
    /// it and is told (this one too, with a `MEMORY_LOST` notice at `addr`'s page).
    pub fn report_memory_error(&self, addr: usize) -> Result<Injected, ClientError> {
        self.inner.client.ask(
            &ReportError {
                mapping: self.inner.handle,
                addr: addr as u64,
            },
            "report a memory error",
        )
    }

    /// Pins `nr_pages` pages from `addr` (inside this mapping), as `pin_user_pages_fast`
    /// would: where the service's view of this mapping vouches for every leaf of the range
    /// (faulted, no poisoned page, not revoked), in this process with no request (§9.5);
    /// otherwise by request, the service faulting in leaves not yet faulted unless `flags` has
    /// [`GupFlags::NOFAULT`]. `folios` has a pin by request held one entry per folio in the
    /// service. The pin lasts until [`Pins::unpin`], its drop, or this client's end, and keeps
    /// the mapping attached until then.
    pub fn pin(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
        folios: bool,
    ) -> Result<Pins, ClientError> {
        if let Some(fast) = &self.inner.window.fast
            && let Some(extent) = fast.try_pin(self.addr(), addr, nr_pages)
        {
            return Ok(Pins {
                mapping: Arc::clone(&self.inner),
                handle: None,
                nr_pages,
                extents: vec![extent],
                unpinned: false,
            });
        }
        self.pin_by_request(addr, nr_pages, flags, folios)
    }

    /// As [`pin`](Self::pin), always by request: the service pins the pages in its memmap.
    pub fn pin_by_request(
        &self,
        addr: usize,
        nr_pages: u64,
        flags: GupFlags,
        folios: bool,
    ) -> Result<Pins, ClientError> {
        let bits = [
            (GupFlags::WRITE, 1),
            (GupFlags::LONGTERM, 2),
            (GupFlags::NOFAULT, 4),
        ]
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .fold(0u32, |b, (_, bit)| b | bit);
        let r: PinReply = self.inner.client.ask(
            &Pin {
                mapping: self.inner.handle,
                addr: addr as u64,
                nr_pages,
                flags: bits,
                folios,
            },
            "pin",
        )?;
        Ok(Pins {
            mapping: Arc::clone(&self.inner),
            handle: Some(r.pin),
            nr_pages: r.nr_pages,
            extents: r.extents,
            unpinned: false,
        })
    }
}

/// Pages pinned for this client: what to register for DMA.
#[derive(Debug)]
pub struct Pins {
    mapping: Arc<Attached>,
    /// The service's handle of a pin by request; none for a fast pin.
    handle: Option<u32>,
    nr_pages: u64,
    extents: Vec<WireExtent>,
    unpinned: bool,
}

impl Pins {
    /// Pages pinned.
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// The service's handle of these pins, as [`Notice::handle`](crate::service::proto::Notice::handle)
    /// names it; 0 for a fast pin, which the service names by its mapping's address (§9.5).
    pub fn handle(&self) -> u32 {
        self.handle.unwrap_or(0)
    }

    /// Whether the pin was taken in this process, without a request (§9.5).
    pub fn is_fast(&self) -> bool {
        self.handle.is_none()
    }

    /// The fewest extents covering exactly the pinned bytes, in address order: client
    /// address, namespace offset and pfn run on through each.
    pub fn extents(&self) -> &[WireExtent] {
        &self.extents
    }

    /// Gives the pins back, marking each folio dirty once first if `dirty` (device-dax folios
    /// have no writeback: the service records the mark for a pin by request only).
    pub fn unpin(mut self, dirty: bool) -> Result<(), ClientError> {
        self.unpinned = true;
        self.give_back(dirty)
    }

    fn give_back(&self, dirty: bool) -> Result<(), ClientError> {
        match (self.handle, &self.mapping.window.fast) {
            (Some(pin), _) => {
                let _: Done = self.mapping.client.ask(&Unpin { pin, dirty }, "unpin")?;
            }
            (None, Some(fast)) => fast.give_back(self.nr_pages),
            (None, None) => {}
        }
        Ok(())
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if !self.unpinned {
            let _ = self.give_back(false);
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // The service forgets the mapping first, as the kernel closes a VMA after unmapping
        // it; a service gone meanwhile has forgotten it already.
        let _ = self.client.ask::<Unmap, Done>(
            &Unmap {
                mapping: self.handle,
            },
            "unmap",
        );
    }
}
