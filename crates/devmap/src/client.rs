//! A client of `devmap serve`: connect to its socket, list and open namespaces, and map them.
//! [`Client`] is a cheap-clone handle to one connection (requests are sent and answered one at
//! a time under its lock); [`Namespace`] is an opened namespace, holding the file its bytes
//! live in; [`Mapping`] is a window of it mapped in this process at an aligned address, which
//! the service knows of and whose first touches it resolves when the file is on tmpfs (the
//! window is registered with a userfaultfd of this process, passed to the service). Dropping a
//! mapping tells the service, then unmaps.
//!
//! When the service goes away (it stopped, or died), a touch of a leaf it has not mapped yet
//! would wait forever for an answer. So each connection has a watcher thread, asleep in `poll`
//! on the socket's hangup: on it, every mapping of the connection is fenced (its whole window
//! replaced by a mapping of an empty file, so every access raises SIGBUS, as an access to a
//! torn-down device-dax device's mapping does) and its userfaultfd closed, which wakes a touch
//! already waiting into that SIGBUS.
//!
//! ```no_run
//! use devmap::client::Client;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("/run/devmap.sock")?;
//! let ns = client.open(None, "kv")?;
//! let m = ns.map(0, ns.align())?;
//! m.bytes().write(0, b"shared with every client")?;
//! # Ok(())
//! # }
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::addr::Order;
use crate::backing::{Backing, BackingError, Mmap, UffdError, UffdFeatures, Userfaultfd};
use crate::errno;
use crate::gup::GupFlags;
use crate::service::proto::{
    self, Done, Enable, Enabled, ErrorReply, List, Map, Mapped, NamespaceEntry, Namespaces, Notice,
    Open, Opened, Pin, PinReply, Status, StatusReply, Unmap, Unpin, WireExtent, kind,
};
use crate::wire::{Frame, Receiver, WireError, WireMessage, encode_payload, send_frame};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error("cannot connect to the devmap service at {}: {source} (is `devmap serve --socket {}` running?)", path.display(), path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The service refused the request.
    #[error("the service refused: {reason}")]
    Refused {
        /// Its errno.
        errno: i32,
        /// Its reason.
        reason: String,
    },
    /// The service answered with a reply this request does not take.
    #[error("the service answered a {asked} request with frame kind {got:#06x}")]
    UnexpectedReply {
        /// The request.
        asked: &'static str,
        /// The reply's kind.
        got: u16,
    },
    /// The connection failed or a message was malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Mapping the namespace's file failed.
    #[error(transparent)]
    Backing(#[from] BackingError),
    /// Registering the window with a userfaultfd failed.
    #[error(transparent)]
    Uffd(#[from] UffdError),
}

impl ClientError {
    /// The kernel-style errno: the service's for a refusal.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Connect { source, .. } => errno::io(source, libc::ECONNREFUSED),
            ClientError::Refused { errno, .. } => *errno,
            ClientError::UnexpectedReply { .. } => libc::EPROTO,
            ClientError::Wire(e) => errno::wire(e),
            ClientError::Backing(e) => errno::backing(e),
            ClientError::Uffd(e) => errno::uffd(e),
        }
    }
}

/// One connection: its socket, its receiver, the next request id and its watcher.
#[derive(Debug)]
struct Conn {
    stream: Arc<UnixStream>,
    rx: Receiver,
    next_id: u32,
    watcher: Watcher,
    /// Notices read while waiting for replies, not yet taken.
    notices: Vec<Notice>,
}

/// What a mapping shares with its connection's watcher: the window and this process's copy of
/// the userfaultfd it is registered with.
#[derive(Debug)]
struct Window {
    bytes: Mmap,
    uffd: Mutex<Option<Userfaultfd>>,
}

impl Window {
    /// The service is gone: fence the window and close the userfaultfd (see the module doc).
    fn lose(&self) {
        if let Err(e) = self.bytes.fence(0, self.bytes.len() as u64) {
            tracing::error!(error = %e, "client: cannot fence a mapping of a lost service");
        }
        drop(self.uffd.lock().take());
    }
}

/// The mappings a watcher fences.
type Windows = Mutex<Vec<Weak<Window>>>;

/// A connection's watcher thread and the eventfd that stops it.
#[derive(Debug)]
struct Watcher {
    windows: Arc<Windows>,
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(stream: &Arc<UnixStream>) -> std::io::Result<Watcher> {
        let stop = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let windows: Arc<Windows> = Arc::default();
        let thread = {
            let (stream, stop, windows) =
                (Arc::clone(stream), Arc::clone(&stop), Arc::clone(&windows));
            std::thread::Builder::new()
                .name("devmap-client-watch".into())
                .spawn(move || watch(&stream, &stop, &windows))?
        };
        Ok(Watcher {
            windows,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The eventfd stays readable, so the thread sees the stop wherever it is.
        if rustix::io::write(&*self.stop, &1u64.to_ne_bytes()).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

/// Sleeps until the service hangs up (or the stop): then fences every live window.
fn watch(stream: &UnixStream, stop: &OwnedFd, windows: &Windows) {
    use rustix::event::{PollFd, PollFlags, poll};
    loop {
        let mut fds = [
            PollFd::new(stream, PollFlags::RDHUP),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "client: cannot watch the service's socket");
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
        if fds[0].revents().intersects(gone) {
            tracing::warn!("client: the service hung up; fencing every mapping");
            for w in windows.lock().iter().filter_map(Weak::upgrade) {
                w.lose();
            }
            return;
        }
    }
}

/// A connection to the service. Clones share it.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Arc<Mutex<Conn>>,
}

impl Client {
    /// Connects to the service listening on `socket`.
    pub fn connect(socket: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = socket.as_ref();
        let connect = |source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let stream = Arc::new(UnixStream::connect(path).map_err(connect)?);
        let watcher = Watcher::start(&stream).map_err(connect)?;
        Ok(Client {
            conn: Arc::new(Mutex::new(Conn {
                stream,
                rx: Receiver::new(),
                next_id: 1,
                watcher,
                notices: Vec::new(),
            })),
        })
    }

    /// Sends `req` (with `fds`) and waits for its reply frame; a refusal becomes
    /// [`ClientError::Refused`].
    fn call<M: WireMessage>(
        &self,
        req: &M,
        fds: &[BorrowedFd<'_>],
        asked: &'static str,
    ) -> Result<Frame, ClientError> {
        let mut c = self.conn.lock();
        let id = c.next_id;
        c.next_id = c.next_id.wrapping_add(1);
        let sent = send_frame(&c.stream, M::KIND, id, &encode_payload(req)?, fds);
        let Conn {
            stream,
            rx,
            notices,
            ..
        } = &mut *c;
        let stream = &**stream;
        let frame = match sent {
            Ok(()) => loop {
                let f = rx.recv(stream)?;
                if f.kind() != kind::NOTICE {
                    break f;
                }
                notices.push(f.message()?);
            },
            // The service may have answered and hung up before this request arrived (a refusal
            // at connect: too many clients): its answer is the reason, if it is there.
            Err(e) => match rx.recv(stream) {
                Ok(f) if f.kind() == kind::ERROR => f,
                _ => return Err(e.into()),
            },
        };
        if frame.kind() == kind::ERROR {
            let e: ErrorReply = frame.message()?;
            return Err(ClientError::Refused {
                errno: e.errno,
                reason: e.reason,
            });
        }
        if frame.request_id() != id {
            return Err(ClientError::UnexpectedReply {
                asked,
                got: frame.kind(),
            });
        }
        Ok(frame)
    }

    /// Sends `req` and decodes its reply of kind `R`.
    fn ask<M: WireMessage, R: WireMessage>(
        &self,
        req: &M,
        asked: &'static str,
    ) -> Result<R, ClientError> {
        let frame = self.call(req, &[], asked)?;
        if frame.kind() != R::KIND {
            return Err(ClientError::UnexpectedReply {
                asked,
                got: frame.kind(),
            });
        }
        Ok(frame.message()?)
    }

    /// What the service told this client without its asking since the last call (mappings
    /// taken by a forced disable, pins dropped, memory lost), oldest first: those read while
    /// waiting for replies, and any waiting on the socket now (read without blocking).
    pub fn notices(&self) -> Result<Vec<Notice>, ClientError> {
        let mut c = self.conn.lock();
        let Conn {
            stream,
            rx,
            notices,
            ..
        } = &mut *c;
        let stream = &**stream;
        stream
            .set_nonblocking(true)
            .map_err(|source| WireError::Io {
                op: "set the socket non-blocking",
                source,
            })?;
        let read = loop {
            match rx.recv(stream) {
                Ok(f) if f.kind() == kind::NOTICE => match f.message() {
                    Ok(n) => notices.push(n),
                    Err(e) => break Err(e),
                },
                Ok(f) => {
                    break Err(WireError::WrongKind {
                        expected: kind::NOTICE,
                        got: f.kind(),
                    });
                }
                Err(WireError::WouldBlock { .. }) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let restored = stream.set_nonblocking(false);
        read?;
        restored.map_err(|source| WireError::Io {
            op: "set the socket blocking again",
            source,
        })?;
        Ok(std::mem::take(notices))
    }

    /// Every namespace of every region the service serves.
    pub fn list(&self) -> Result<Vec<NamespaceEntry>, ClientError> {
        let n: Namespaces = self.ask(&List {}, "list")?;
        Ok(n.entries)
    }

    /// What the service holds, as its JSON.
    pub fn status(&self) -> Result<String, ClientError> {
        let s: StatusReply = self.ask(&Status {}, "status")?;
        String::from_utf8(s.json).map_err(|e| {
            ClientError::Wire(WireError::BadUtf8 {
                field: "json",
                source: e.utf8_error(),
            })
        })
    }

    /// Enables namespace `name` of `region` (or of the one region holding it); whether the
    /// enable was warm. A namespace enabled already is left as it is.
    pub fn enable(&self, region: Option<&str>, name: &str) -> Result<bool, ClientError> {
        let e: Enabled = self.ask(
            &Enable {
                region: region.unwrap_or_default().into(),
                name: name.into(),
            },
            "enable",
        )?;
        Ok(e.warm)
    }

    /// Disables namespace `name`; with `force`, mappings clients hold are taken from them.
    pub fn disable(
        &self,
        region: Option<&str>,
        name: &str,
        force: bool,
    ) -> Result<(), ClientError> {
        let _: Done = self.ask(
            &proto::Disable {
                region: region.unwrap_or_default().into(),
                name: name.into(),
                force,
            },
            "disable",
        )?;
        Ok(())
    }

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

    /// The service's handle of this mapping, as [`Notice::handle`] names it.
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

    /// The service's handle of these pins, as [`Notice::handle`] names it.
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
