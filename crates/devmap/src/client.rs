//! A client of `devmap serve`: connect to its socket, list and open namespaces, and map them.
//! [`Client`] is a cheap-clone handle to one connection (requests are sent and answered one at
//! a time under its lock); [`Namespace`] is an opened namespace, holding the file its bytes
//! live in; [`Mapping`] is a window of it mapped in this process at an aligned address, which
//! the service knows of and whose first touches it resolves when the file is on tmpfs (the
//! window is registered with a userfaultfd of this process, passed to the service). Dropping a
//! mapping tells the service, then unmaps.
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

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::addr::Order;
use crate::backing::{Backing, BackingError, Mmap, UffdError, UffdFeatures, Userfaultfd};
use crate::errno;
use crate::service::proto::{
    self, Done, Enable, Enabled, ErrorReply, List, Map, Mapped, NamespaceEntry, Namespaces, Open,
    Opened, Status, StatusReply, Unmap, kind,
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

/// One connection: its socket, its receiver and the next request id.
#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    rx: Receiver,
    next_id: u32,
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
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Client {
            conn: Arc::new(Mutex::new(Conn {
                stream,
                rx: Receiver::new(),
                next_id: 1,
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
        send_frame(&c.stream, M::KIND, id, &encode_payload(req)?, fds)?;
        let Conn { stream, rx, .. } = &mut *c;
        let frame = rx.recv(stream)?;
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
        let window = self.backing.map_shared(offset, len, self.align)?;
        let uffd = if self.caught {
            let u = Userfaultfd::new(UffdFeatures::DEVICE)?;
            u.register(&window, self.backing.uffd_modes())?;
            Some(u)
        } else {
            None
        };
        let req = Map {
            ns: self.handle,
            offset,
            len,
            base: window.as_ptr().as_ptr() as u64,
            features: uffd.as_ref().map_or(0, |u| u.granted().bits()),
        };
        let fds: Vec<BorrowedFd<'_>> = uffd.iter().map(|u| u.as_fd()).collect();
        let frame = self.client.call(&req, &fds, "map")?;
        let m: Mapped = frame.message()?;
        Ok(Mapping {
            client: self.client.clone(),
            handle: m.mapping,
            window,
            _uffd: uffd,
        })
    }
}

/// A window of a namespace mapped in this process and attached in the service.
#[derive(Debug)]
pub struct Mapping {
    client: Client,
    handle: u32,
    window: Mmap,
    /// This process's copy of the userfaultfd the window is registered with.
    _uffd: Option<Userfaultfd>,
}

impl Mapping {
    /// The first address.
    pub fn addr(&self) -> usize {
        self.window.as_ptr().as_ptr() as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.window.len() as u64
    }

    /// Never true: empty mappings are refused.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &Mmap {
        &self.window
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
