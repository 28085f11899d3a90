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
//!
//! The connection and the service's verbs are `conn.rs`, the watcher `watch.rs`, and opening,
//! mapping and pinning (the data path) `namespace.rs`.

mod conn;
mod fast;
mod namespace;
mod watch;

pub use self::conn::{Client, ClientError};
pub use self::namespace::{Mapping, Namespace, Pins};
