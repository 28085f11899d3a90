//! Why the service refuses: [`ServiceError`], with the errno a client is told.

use std::path::PathBuf;

use crate::backing::UffdError;
use crate::dax::DaxError;
use crate::errno;
use crate::gup::GupError;
use crate::namespace::{Owner, RegionError};
use crate::wire::WireError;

/// Why the service refused something; a client is told its [`errno`](ServiceError::errno)
/// and its message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Started with no region.
    #[error("no region to serve: give at least one --region FILE")]
    NoRegion,
    /// A region refused (opening, enabling, disabling).
    #[error("region {}: {source}", path.display())]
    Region {
        /// The region file.
        path: PathBuf,
        /// Why.
        #[source]
        source: RegionError,
    },
    /// A request named a region the service does not serve.
    #[error("region {region:?} is not served here; served: {}", served.join(", "))]
    UnknownRegion {
        /// As asked.
        region: String,
        /// What is served.
        served: Vec<String>,
    },
    /// No served region holds a namespace of that name.
    #[error("no served region has a namespace {name:?} (regions: {})", served.join(", "))]
    UnknownNamespace {
        /// As asked.
        name: String,
        /// What is served.
        served: Vec<String>,
    },
    /// Several served regions hold a namespace of that name.
    #[error("namespace {name:?} is in several regions ({}): name the region", regions.join(", "))]
    AmbiguousNamespace {
        /// As asked.
        name: String,
        /// The regions holding one.
        regions: Vec<String>,
    },
    /// The namespace is not enabled (enable it first: `devmap enable-namespace`, or
    /// `--enable` at start).
    #[error(
        "namespace {name:?} is not enabled: enable it first (devmap enable-namespace, or serve --enable)"
    )]
    NotEnabled {
        /// The namespace.
        name: String,
    },
    /// A disable while clients map the namespace.
    #[error(
        "namespace {name:?} is mapped by client pid{} {}: unmap them first, or disable with --force, which takes the mappings from them",
        if pids.len() == 1 { "" } else { "s" },
        pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    )]
    InUse {
        /// The namespace.
        name: String,
        /// The clients' pids.
        pids: Vec<u32>,
    },
    /// The client may not open the namespace.
    #[error(
        "uid {uid} may not open namespace {name:?} ({owner}): it needs read and write; the \
         namespace's owner sets that with devmap create-namespace --uid --gid --mode"
    )]
    Denied {
        /// The namespace.
        name: String,
        /// The client's uid.
        uid: u32,
        /// Who may.
        owner: Owner,
    },
    /// A handle the client never got, or gave back.
    #[error("no {what} with handle {handle} in this connection")]
    UnknownHandle {
        /// "namespace" or "mapping".
        what: &'static str,
        /// The handle.
        handle: u32,
    },
    /// Pin flags with bits that mean nothing.
    #[error("pin flags {flags:#x} have unknown bits: use 1 (write), 2 (long-term), 4 (no fault)")]
    BadPinFlags {
        /// As sent.
        flags: u32,
    },
    /// The pin was refused.
    #[error(transparent)]
    Gup(#[from] GupError),
    /// A client address that does not fit this machine's addresses.
    #[error("address {base:#x} is not an address of this machine")]
    BadAddress {
        /// As sent.
        base: u64,
    },
    /// The socket path is taken by something that answers.
    #[error("{} is the socket of a running service: stop it first, or use another --socket", path.display())]
    SocketInUse {
        /// The socket.
        path: PathBuf,
    },
    /// Too many clients.
    #[error("the service already has {max} clients (--max-clients {max})")]
    TooManyClients {
        /// The limit.
        max: usize,
    },
    /// A system call failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The device refused (a mapping's window, a fault).
    #[error(transparent)]
    Dax(#[from] DaxError),
    /// The client's userfaultfd was refused.
    #[error(transparent)]
    Uffd(#[from] UffdError),
    /// A malformed request.
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl ServiceError {
    /// The kernel-style errno a reply carries.
    pub fn errno(&self) -> i32 {
        use libc::{EACCES, EADDRINUSE, EBADF, EBUSY, EFAULT, EINVAL, EIO, ENOENT, ENXIO, EUSERS};
        match self {
            ServiceError::NoRegion | ServiceError::AmbiguousNamespace { .. } => EINVAL,
            ServiceError::Region { source, .. } => errno::region(source),
            ServiceError::UnknownRegion { .. } | ServiceError::UnknownNamespace { .. } => ENOENT,
            ServiceError::NotEnabled { .. } => ENXIO,
            ServiceError::InUse { .. } => EBUSY,
            ServiceError::Denied { .. } => EACCES,
            ServiceError::UnknownHandle { .. } => EBADF,
            ServiceError::BadAddress { .. } => EFAULT,
            ServiceError::BadPinFlags { .. } => EINVAL,
            ServiceError::Gup(e) => errno::gup(e),
            ServiceError::SocketInUse { .. } => EADDRINUSE,
            ServiceError::TooManyClients { .. } => EUSERS,
            ServiceError::Io { source, .. } => errno::io(source, EIO),
            ServiceError::Dax(e) => errno::dax(e),
            ServiceError::Uffd(e) => errno::uffd(e),
            ServiceError::Wire(e) => errno::wire(e),
        }
    }
}
