//! The connection to `devmap serve`: [`Client`], a cheap-clone handle whose requests are
//! sent and answered one at a time under its lock, with the notices read on the way, and the
//! service's verbs (list, status, enable, disable, inject-error, and the management verbs:
//! create, destroy and check a namespace, clear its errors); [`ClientError`].

use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::watch::Watcher;
use crate::backing::{BackingError, UffdError};
use crate::errno;
use crate::service::proto::{
    self, CheckNamespace, Checked, ClearErrors, Cleared, CreateNamespace, Created,
    DestroyNamespace, Done, Enable, Enabled, ErrorReply, List, NamespaceEntry, Namespaces, Notice,
    Status, StatusReply, kind,
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
pub(super) struct Conn {
    stream: Arc<UnixStream>,
    rx: Receiver,
    next_id: u32,
    pub(super) watcher: Watcher,
    /// Notices read while waiting for replies, not yet taken.
    notices: Vec<Notice>,
}

/// A connection to the service. Clones share it.
#[derive(Debug, Clone)]
pub struct Client {
    pub(super) conn: Arc<Mutex<Conn>>,
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
    pub(super) fn call<M: WireMessage>(
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
    pub(super) fn ask<M: WireMessage, R: WireMessage>(
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
        Ok(self.listing()?.entries)
    }

    /// Every region the service serves, in its order (`region0`, `region1`, ... in `list`),
    /// and every namespace of each.
    pub fn listing(&self) -> Result<Namespaces, ClientError> {
        self.ask(&List {}, "list")
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

    /// Reports a memory error on `count` pages from byte `offset` of namespace `name`'s data,
    /// as `ndctl inject-error` does: every client mapping the pages loses them (SIGBUS at each
    /// on its next touch) and is told with a notice at its own address.
    pub fn inject_error(
        &self,
        region: Option<&str>,
        name: &str,
        offset: u64,
        count: u64,
    ) -> Result<proto::Injected, ClientError> {
        self.ask(
            &proto::InjectError {
                region: region.unwrap_or_default().into(),
                name: name.into(),
                offset,
                count,
            },
            "inject-error",
        )
    }

    /// Has the service create a namespace (`devmap create-namespace` through it): its name
    /// and raw size, which `m` may leave to the service (empty, 0).
    pub fn create_namespace(&self, m: &CreateNamespace) -> Result<Created, ClientError> {
        self.ask(m, "create-namespace")
    }

    /// Has the service destroy namespace `name`; `force` destroys one left in use by a process
    /// that ended, or whose info block cannot be read. One the service has enabled is refused.
    pub fn destroy_namespace(
        &self,
        region: Option<&str>,
        name: &str,
        force: bool,
    ) -> Result<(), ClientError> {
        let _: Done = self.ask(
            &DestroyNamespace {
                region: region.unwrap_or_default().into(),
                name: name.into(),
                force,
            },
            "destroy-namespace",
        )?;
        Ok(())
    }

    /// Has the service check namespace `name`'s label and info block: what it read, or the
    /// refusal that says what failed.
    pub fn check_namespace(
        &self,
        region: Option<&str>,
        name: &str,
    ) -> Result<Checked, ClientError> {
        self.ask(
            &CheckNamespace {
                region: region.unwrap_or_default().into(),
                name: name.into(),
            },
            "check-namespace",
        )
    }

    /// Has the service clear the bad pages of `len` bytes from byte `offset` of namespace
    /// `name`'s data (through its device when enabled).
    pub fn clear_errors(
        &self,
        region: Option<&str>,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Cleared, ClientError> {
        self.ask(
            &ClearErrors {
                region: region.unwrap_or_default().into(),
                name: name.into(),
                offset,
                len,
            },
            "clear-errors",
        )
    }
}
