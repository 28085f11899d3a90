//! `devmap serve` (DESIGN §9): one process owns the regions and the enabled namespaces, and
//! client processes map them through it, as every process with permission maps a kernel
//! device-dax node. A client connects to the service's Unix socket, opens a namespace (it
//! receives the file holding the bytes), maps it itself at an aligned address, registers the
//! window with a userfaultfd of its own and passes that descriptor: the service then runs
//! every first touch through the same fault path as in-process mappings (sync, metadata,
//! reference and mapcount, the leaf's bit, the reverse map with the client's address) and maps
//! the whole leaf in the client with one ioctl. A client that ends, however it ends, loses its
//! mappings: its session detaches them when its socket closes.
//!
//! [`Service::start`] opens the regions (holding their locks), enables the namespaces asked
//! for, binds the socket (mode 0660) and accepts clients on a thread of its own, one thread
//! per client; [`Service::stop`] stops accepting, ends every session, detaches every client
//! mapping and disables every namespace cleanly, so the next start is warm. The messages are
//! in [`proto`]; the transport under them is [`crate::wire`].

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::wire::{PeerCredentials, peer_credentials};

use self::session::Peer;
use self::state::State;

mod error;
mod notify;
pub mod proto;
mod session;
mod state;
mod status;

pub use self::error::ServiceError;

/// Returns the free memory of every malloc arena to the system (`malloc_trim(0)`).
fn trim_malloc() {
    // SAFETY: `malloc_trim` takes an integer and only releases memory malloc holds free; it
    // is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas for this process at `n` (`mallopt(M_ARENA_MAX)`). glibc gives
/// each new thread an arena of its own, up to eight per core, and keeps what each one freed:
/// a service whose session threads come and go with its clients grows by an arena per thread
/// that ever ran at once, and its RSS no longer tells a leak from a high-water mark. `devmap
/// serve` calls it with 2 before it starts. Returns whether glibc took the setting.
pub fn limit_malloc_arenas(n: u32) -> bool {
    let n = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
    // SAFETY: `mallopt` takes two integers and changes only malloc's tuning; it is safe to
    // call from any thread at any time.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

/// The default `--max-clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// How long a reply may wait for a client to read: past it, the client is disconnected.
pub const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What [`Service::start`] needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The socket path (created; a stale socket nobody answers on is replaced).
    pub socket: PathBuf,
    /// The region files, opened for management.
    pub regions: Vec<PathBuf>,
    /// Namespaces to enable at start.
    pub enable: Vec<String>,
    /// Clients at once; the next one is refused with a reason.
    pub max_clients: usize,
}

/// A connected client: who it is (`devmap status` shows it), what tells it notices, and its
/// socket (shut down by the stop).
#[derive(Debug, Clone)]
struct ClientEntry {
    pid: u32,
    uid: u32,
    notifier: Arc<notify::Notifier>,
    stream: Arc<UnixStream>,
}

/// What sessions and the accept thread share.
#[derive(Debug)]
struct Shared {
    state: State,
    socket: PathBuf,
    clients: Mutex<BTreeMap<u64, ClientEntry>>,
    sessions: Mutex<Vec<JoinHandle<()>>>,
    next_session: AtomicU64,
    stopping: AtomicBool,
    max_clients: usize,
    started: std::time::Instant,
}

/// A running service.
#[derive(Debug)]
pub struct Service {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    listener: Arc<UnixListener>,
    /// What the start enabled: name and whether warm.
    enabled: Vec<(String, bool)>,
}

/// What a stop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Clients connected when it began.
    pub clients: usize,
    /// Namespaces disabled cleanly.
    pub disabled: Vec<String>,
}

impl Service {
    /// Opens the regions, enables `opts.enable`, binds the socket and starts accepting.
    pub fn start(opts: &ServeOptions) -> Result<Service, ServiceError> {
        // Before the regions are opened: a running service holds them, and its socket is the
        // clearer reason.
        if UnixStream::connect(&opts.socket).is_ok() {
            return Err(ServiceError::SocketInUse {
                path: opts.socket.clone(),
            });
        }
        let state = State::open(&opts.regions)?;
        let mut enabled = Vec::new();
        for name in &opts.enable {
            let (live, _) = state.enable("", name)?;
            enabled.push((name.clone(), live.warm));
        }
        let listener = bind(&opts.socket)?;
        let shared = Arc::new(Shared {
            state,
            socket: opts.socket.clone(),
            clients: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(Vec::new()),
            next_session: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            max_clients: opts.max_clients.max(1),
            started: std::time::Instant::now(),
        });
        let listener = Arc::new(listener);
        let accept = {
            let (shared, listener) = (Arc::clone(&shared), Arc::clone(&listener));
            std::thread::Builder::new()
                .name("devmap-serve-accept".into())
                .spawn(move || accept_loop(&shared, &listener))
                .map_err(|source| ServiceError::Io {
                    what: "start the accept thread",
                    source,
                })?
        };
        Ok(Service {
            shared,
            accept: Some(accept),
            listener,
            enabled,
        })
    }

    /// The one line printed when the service accepts clients.
    pub fn ready_line(&self) -> String {
        let enabled: Vec<String> = self
            .enabled
            .iter()
            .map(|(n, warm)| format!("{n} ({})", if *warm { "warm" } else { "cold" }))
            .collect();
        format!(
            "devmap serve: ready on {} (pid {}; regions: {}; enabled: {})",
            self.shared.socket.display(),
            std::process::id(),
            self.shared
                .state
                .regions
                .iter()
                .map(|r| r.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if enabled.is_empty() {
                "none".into()
            } else {
                enabled.join(", ")
            }
        )
    }

    /// Stops: no new client, every session ended (their sockets shut down, so a client's next
    /// call fails), every client mapping detached, every namespace disabled cleanly, the
    /// socket file removed.
    pub fn stop(mut self) -> Result<Stopped, ServiceError> {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept thread out of `accept` (Linux: EINVAL once shut down).
        let _ = rustix::net::shutdown(&*self.listener, rustix::net::Shutdown::Both);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let clients: Vec<Arc<UnixStream>> = shared
            .clients
            .lock()
            .values()
            .map(|c| Arc::clone(&c.stream))
            .collect();
        for c in &clients {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let sessions = std::mem::take(&mut *shared.sessions.lock());
        for t in sessions {
            let _ = t.join();
        }
        let (disabled, failed) = shared.state.disable_all();
        let _ = std::fs::remove_file(&shared.socket);
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(Stopped {
            clients: clients.len(),
            disabled,
        })
    }
}

/// Binds `path` with mode 0660, replacing a stale socket file nobody answers on and refusing
/// one a running service holds.
fn bind(path: &Path) -> Result<UnixListener, ServiceError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServiceError::SocketInUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|source| ServiceError::Io {
            what: "remove the stale socket file",
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ServiceError::Io {
        what: "bind the socket",
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|source| {
        ServiceError::Io {
            what: "set the socket's mode to 0660",
            source,
        }
    })?;
    Ok(listener)
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                tracing::warn!(error = %e, "serve: accept failed");
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let creds = match peer_credentials(&stream) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "serve: no peer credentials; refused");
                continue;
            }
        };
        if shared.clients.lock().len() >= shared.max_clients {
            refuse(
                &stream,
                &ServiceError::TooManyClients {
                    max: shared.max_clients,
                },
            );
            continue;
        }
        let session = shared.next_session.fetch_add(1, Ordering::Relaxed);
        // A client that stops reading its replies is disconnected rather than holding its
        // session thread in a send for ever.
        if let Err(e) = stream.set_write_timeout(Some(REPLY_TIMEOUT)) {
            tracing::warn!(error = %e, "serve: cannot set a reply timeout; refused");
            continue;
        }
        let stream = Arc::new(stream);
        let notifier = Arc::new(notify::Notifier::new(Arc::clone(&stream)));
        let peer = peer_of(session, creds);
        shared.clients.lock().insert(
            session,
            ClientEntry {
                pid: peer.pid,
                uid: peer.uid,
                notifier: Arc::clone(&notifier),
                stream: Arc::clone(&stream),
            },
        );
        tracing::info!(pid = peer.pid, uid = peer.uid, "serve: client connected");
        let for_thread = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("devmap-serve-{}", peer.pid))
            .spawn(move || {
                let status = || status::json(&for_thread);
                session::run(&for_thread.state, &stream, &notifier, peer, &status);
                let idle = {
                    let mut clients = for_thread.clients.lock();
                    clients.remove(&session);
                    clients.is_empty()
                };
                // The last client gone: give the heap the sessions freed back to the system,
                // so an idle service's RSS is what it holds, not its busiest moment's.
                if idle {
                    trim_malloc();
                }
            });
        match spawned {
            Ok(t) => {
                let mut sessions = shared.sessions.lock();
                sessions.retain(|t| !t.is_finished());
                sessions.push(t);
            }
            Err(e) => {
                shared.clients.lock().remove(&session);
                tracing::error!(error = %e, "serve: cannot start a session thread");
            }
        }
    }
}

fn peer_of(session: u64, c: PeerCredentials) -> Peer {
    Peer {
        session,
        pid: c.pid.unwrap_or(0),
        uid: c.uid,
        gid: c.gid,
    }
}

/// Tells a client it is refused (best effort: it may be gone) and drops the connection.
fn refuse(stream: &UnixStream, e: &ServiceError) {
    let reply = proto::ErrorReply {
        errno: e.errno(),
        reason: e.to_string(),
    };
    let _ = stream.set_write_timeout(Some(std::time::Duration::from_millis(100)));
    let _ = crate::wire::send_message(stream, 0, &reply, &[]);
}
