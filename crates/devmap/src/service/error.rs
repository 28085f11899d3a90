//! Why the service refuses: [`ServiceError`], with the errno a client is told.

use std::path::PathBuf;

use crate::backing::UffdError;
use crate::dax::DaxError;
use crate::errno;
use crate::gup::GupError;
use crate::memory_failure::MfError;
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
    /// A request that must name its region, to a service serving several.
    #[error("name the region: the service serves {} ({})", served.len(), served.join(", "))]
    RegionNeeded {
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
    /// A management request (create, destroy, enable, disable or check a namespace, clear
    /// or inject errors) from a client that is neither root nor the service's own user.
    #[error(
        "uid {uid} may not {verb} through this service: managing its namespaces is for root \
         and for uid {service_uid}, the service's own; run the command as one of them (a \
         client of another uid may open the namespaces its owner lets it)"
    )]
    NotPermitted {
        /// What was asked (`create-namespace`, ...).
        verb: &'static str,
        /// The client's uid.
        uid: u32,
        /// The service's effective uid.
        service_uid: u32,
    },
    /// A change the service refuses while it has the namespace enabled (a destroy).
    #[error(
        "namespace {name:?} is enabled by this service{}: disable it first (devmap \
         disable-namespace --socket{}), then {verb} it",
        if pids.is_empty() { String::new() } else {
            format!(" and mapped by client pid{} {}", if pids.len() == 1 { "" } else { "s" },
                pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
        },
        if pids.is_empty() { "" } else { ", with --force to take their mappings" }
    )]
    Enabled {
        /// The namespace.
        name: String,
        /// What was asked (`destroy`).
        verb: &'static str,
        /// The clients mapping or pinning it.
        pids: Vec<u32>,
    },
    /// A namespace mode or memmap location no namespace has.
    #[error(transparent)]
    UnknownName(#[from] crate::units::UnknownName),
    /// A handle the client never got, or gave back.
    #[error("no {what} with handle {handle} in this connection")]
    UnknownHandle {
        /// "namespace" or "mapping".
        what: &'static str,
        /// The handle.
        handle: u32,
    },
    /// An injection that is empty, off a page boundary, or past the namespace's data.
    #[error(
        "cannot inject {count} page(s) at offset {offset}: give a 4 KiB-aligned offset inside \
         the namespace's data and a count of at least 1 that stays inside it"
    )]
    BadInjection {
        /// As asked.
        offset: u64,
        /// As asked.
        count: u64,
    },
    /// The memory failure was refused.
    #[error(transparent)]
    MemoryFailure(#[from] MfError),
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
            ServiceError::NoRegion
            | ServiceError::AmbiguousNamespace { .. }
            | ServiceError::RegionNeeded { .. }
            | ServiceError::UnknownName(_) => EINVAL,
            ServiceError::Region { source, .. } => errno::region(source),
            ServiceError::UnknownRegion { .. } | ServiceError::UnknownNamespace { .. } => ENOENT,
            ServiceError::NotEnabled { .. } => ENXIO,
            ServiceError::InUse { .. } | ServiceError::Enabled { .. } => EBUSY,
            ServiceError::Denied { .. } | ServiceError::NotPermitted { .. } => EACCES,
            ServiceError::UnknownHandle { .. } => EBADF,
            ServiceError::BadAddress { .. } => EFAULT,
            ServiceError::BadPinFlags { .. } | ServiceError::BadInjection { .. } => EINVAL,
            ServiceError::MemoryFailure(e) => errno::mf(e),
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
