//! The data path of a client: [`Namespace`] (an opened namespace and the file its bytes live
//! in), [`Mapping`] (a window of it mapped here and attached in the service) and [`Pins`]
//! (pages pinned in the service, with their extents), and `Client::open`, which makes the first.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use parking_lot::Mutex;

use super::conn::{Client, ClientError};
use super::watch::Window;
use crate::addr::Order;
use crate::backing::{Backing, Mmap, UffdFeatures, Userfaultfd};
use crate::gup::GupFlags;
use crate::service::proto::{
    Done, Map, Mapped, Open, Opened, Pin, PinReply, Unmap, Unpin, WireExtent,
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
        let frame = {
            let fds: Vec<BorrowedFd<'_>> = uffd.iter().map(|u| u.as_fd()).collect();
            self.client.call(&req, &fds, "map")?
        };
        let m: Mapped = frame.message()?;
        let window = Arc::new(Window {
            bytes,
            uffd: Mutex::new(uffd),
        });
        {
            let c = self.client.conn.lock();
            let mut ws = c.watcher.windows.lock();
            ws.retain(|w| w.strong_count() > 0);
            ws.push(Arc::downgrade(&window));
        }
        Ok(Mapping {
            client: self.client.clone(),
            handle: m.mapping,
            window,
        })
    }
}

/// A window of a namespace mapped in this process and attached in the service.
#[derive(Debug)]
pub struct Mapping {
    client: Client,
    handle: u32,
    window: Arc<Window>,
}

impl Mapping {
    /// The first address.
    pub fn addr(&self) -> usize {
        self.window.bytes.as_ptr().as_ptr() as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.window.bytes.len() as u64
    }

    /// Never true: empty mappings are refused.
    pub fn is_empty(&self) -> bool {
        self.window.bytes.is_empty()
    }

    /// The service's handle of this mapping, as [`Notice::handle`](crate::service::proto::Notice::handle) names it.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The mapped bytes. Once the service is gone, every access raises SIGBUS.
    pub fn bytes(&self) -> &Mmap {
        &self.window.bytes
    }

    /// Pins `nr_pages` pages from `addr` (inside this mapping) in the service, as
    /// `pin_user_pages_fast` would (leaves not yet faulted are faulted first unless `flags`
    /// has [`GupFlags::NOFAULT`]); `folios` has the service hold them one entry per folio.
    /// The pin lasts until [`Pins::unpin`], its drop, or this client's end.
    pub fn pin(
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
        let r: PinReply = self.client.ask(
            &Pin {
                mapping: self.handle,
                addr: addr as u64,
                nr_pages,
                flags: bits,
                folios,
            },
            "pin",
        )?;
        Ok(Pins {
            client: self.client.clone(),
            handle: r.pin,
            nr_pages: r.nr_pages,
            extents: r.extents,
            unpinned: false,
        })
    }
}

/// Pages pinned in the service for this client: what to register for DMA.
#[derive(Debug)]
pub struct Pins {
    client: Client,
    handle: u32,
    nr_pages: u64,
    extents: Vec<WireExtent>,
    unpinned: bool,
}

impl Pins {
    /// Pages pinned.
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// The service's handle of these pins, as [`Notice::handle`](crate::service::proto::Notice::handle) names it.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The fewest extents covering exactly the pinned bytes, in address order: client
    /// address, namespace offset and pfn run on through each.
    pub fn extents(&self) -> &[WireExtent] {
        &self.extents
    }

    /// Gives the pins back, marking each folio dirty once first if `dirty`.
    pub fn unpin(mut self, dirty: bool) -> Result<(), ClientError> {
        self.unpinned = true;
        let _: Done = self.client.ask(
            &Unpin {
                pin: self.handle,
                dirty,
            },
            "unpin",
        )?;
        Ok(())
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if !self.unpinned {
            let _ = self.client.ask::<Unpin, Done>(
                &Unpin {
                    pin: self.handle,
                    dirty: false,
                },
                "unpin",
            );
        }
    }
}

impl Drop for Mapping {
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
