//! `devmap.connect(socket)`: a client of a running `devmap serve`. `Client` is the connection
//! (list, status, enable, disable, open), `ClientNamespace` a namespace opened through it,
//! whose `map()` makes a `ClientMapping` (in `client_mapping.rs`). Each object holds the
//! library's connection handle, so they may be closed or dropped in any order: the
//! connection ends when the last of them goes. Every request runs with the GIL released.

use std::path::PathBuf;

use devmap::client::{Client as LibClient, Namespace as LibNamespace};
use devmap::service::proto::{NamespaceEntry, notice};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::client_mapping::ClientMapping;
use crate::errors::{self, closed, invalid};

/// Connects to the service listening on the Unix socket `socket` (`devmap serve --socket`).
/// `devmap.Error` (errno ENOENT or ECONNREFUSED) if nothing listens there.
#[pyfunction]
pub(crate) fn connect(py: Python<'_>, socket: PathBuf) -> PyResult<Client> {
    let client = py
        .detach(|| LibClient::connect(&socket))
        .map_err(errors::client)?;
    Ok(Client {
        client: Mutex::new(Some(client)),
        socket,
    })
}

/// A connection to a running `devmap serve`: what it serves (`list()`, `status()`), enabling
/// and disabling its namespaces, and opening them (`open()`). Requests are answered one at a
/// time. `close()` (or leaving a `with` block) lets go of this object's hold on the
/// connection; namespaces, mappings and pins opened through it keep it open until they go.
#[pyclass(module = "devmap", frozen)]
#[derive(Debug)]
pub struct Client {
    client: Mutex<Option<LibClient>>,
    socket: PathBuf,
}

impl Client {
    /// The connection (a cheap clone), or raises if this object is closed.
    fn lib(&self) -> PyResult<LibClient> {
        self.client.lock().clone().ok_or_else(|| closed("client"))
    }
}

/// A namespace entry of `list()` as a dict.
fn entry_dict<'py>(py: Python<'py>, e: &NamespaceEntry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("region", &e.region)?;
    d.set_item("name", &e.name)?;
    d.set_item("size", e.size)?;
    d.set_item("data_bytes", e.data_bytes)?;
    d.set_item("align", e.align)?;
    d.set_item("mode", &e.mode)?;
    d.set_item("enabled", e.enabled)?;
    d.set_item("warm", e.warm)?;
    d.set_item("clients", e.clients)?;
    Ok(d)
}

#[pymethods]
impl Client {
    /// The socket this client connected to.
    #[getter]
    fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.client.lock().is_none()
    }

    /// Every namespace of every region the service serves, as dicts (region, name, size,
    /// data_bytes, align, mode, enabled, warm, clients).
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let c = self.lib()?;
        let entries = py.detach(|| c.list()).map_err(errors::client)?;
        entries.iter().map(|e| entry_dict(py, e)).collect()
    }

    /// What the service holds, parsed from its JSON: its pid and socket, its clients, and per
    /// enabled namespace its mappings (pid, address), pins and faults served.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.lib()?;
        let json = py.detach(|| c.status()).map_err(errors::client)?;
        py.import("json")?.call_method1("loads", (json,))
    }

    /// What the service told this client without its asking, oldest first, as dicts: `what`
    /// ("mapping_revoked", "pin_dropped" or "memory_lost"), `handle` (a mapping's or pins'
    /// `handle`), `addr` (this process's address), `len`, `pfn`.
    fn notices<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let c = self.lib()?;
        let notices = py.detach(|| c.notices()).map_err(errors::client)?;
        notices
            .iter()
            .map(|n| {
                let d = PyDict::new(py);
                let what = match n.what {
                    notice::MAPPING_REVOKED => "mapping_revoked",
                    notice::PIN_DROPPED => "pin_dropped",
                    notice::MEMORY_LOST => "memory_lost",
                    _ => "unknown",
                };
                d.set_item("what", what)?;
                d.set_item("handle", n.handle)?;
                d.set_item("addr", n.addr)?;
                d.set_item("len", n.len)?;
                d.set_item("pfn", n.pfn)?;
                Ok(d)
            })
            .collect()
    }

    /// Reports a memory error on `count` pages from byte `offset` of namespace `name`'s data,
    /// as `ndctl inject-error` does: every client mapping the pages loses them and is told.
    /// Returns a dict: pages, revoked (mappings that lost a page), told, elapsed_ns.
    #[pyo3(signature = (name, offset, count = 1, region = None))]
    fn inject_error<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        offset: &Bound<'py, PyAny>,
        count: u64,
        region: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let c = self.lib()?;
        let offset = crate::size_arg("offset", offset)?;
        let done = py
            .detach(|| c.inject_error(region, name, offset, count))
            .map_err(errors::client)?;
        crate::client_mapping::injected(py, &done)
    }

    /// Enables namespace `name` (of `region`, or of the one served region holding it);
    /// returns whether the enable was warm. One enabled already is left as it is.
    #[pyo3(signature = (name, region = None))]
    fn enable(&self, py: Python<'_>, name: &str, region: Option<&str>) -> PyResult<bool> {
        let c = self.lib()?;
        py.detach(|| c.enable(region, name)).map_err(errors::client)
    }

    /// Disables namespace `name`: BusyError naming the pids while clients map or pin it,
    /// unless `force`, which takes their mappings and pins first.
    #[pyo3(signature = (name, region = None, force = false))]
    fn disable(
        &self,
        py: Python<'_>,
        name: &str,
        region: Option<&str>,
        force: bool,
    ) -> PyResult<()> {
        let c = self.lib()?;
        py.detach(|| c.disable(region, name, force))
            .map_err(errors::client)
    }

    /// Opens the enabled namespace `name` (of `region`, or of the one served region holding
    /// it): the service passes the file its bytes live in; `map()` maps them.
    #[pyo3(signature = (name, region = None))]
    fn open(&self, py: Python<'_>, name: &str, region: Option<&str>) -> PyResult<ClientNamespace> {
        let c = self.lib()?;
        let ns = py.detach(|| c.open(region, name)).map_err(errors::client)?;
        Ok(ClientNamespace {
            name: name.to_owned(),
            size: ns.size(),
            align: ns.align(),
            caught: ns.caught(),
            ns: RwLock::new(Some(ns)),
        })
    }

    /// Lets go of this object's hold on the connection. Closing twice does nothing.
    fn close(&self, py: Python<'_>) {
        let c = self.client.lock().take();
        py.detach(move || drop(c));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<devmap.Client socket={:?}{}>",
            self.socket.display().to_string(),
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// A namespace opened through the service: `map(offset, length)` maps a window of it.
#[pyclass(module = "devmap", frozen)]
#[derive(Debug)]
pub struct ClientNamespace {
    ns: RwLock<Option<LibNamespace>>,
    name: String,
    size: u64,
    align: u64,
    caught: bool,
}

#[pymethods]
impl ClientNamespace {
    /// The namespace's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Bytes a mapping can cover.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// The align in bytes: offsets and lengths of mappings are multiples of it.
    #[getter]
    fn align(&self) -> u64 {
        self.align
    }

    /// Whether the service resolves first touches (the region is on tmpfs); else every
    /// leaf's metadata is set when a window is mapped.
    #[getter]
    fn caught(&self) -> bool {
        self.caught
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.ns.read().is_none()
    }

    /// Maps `length` bytes from `offset` (multiples of the align; by default the whole
    /// namespace), shared with every other client's mapping of the same bytes, at an address
    /// aligned to the align.
    #[pyo3(signature = (offset = None, length = None))]
    fn map(
        &self,
        py: Python<'_>,
        offset: Option<&Bound<'_, PyAny>>,
        length: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ClientMapping> {
        let offset = crate::opt_size_arg("offset", offset)?.unwrap_or(0);
        let length = match crate::opt_size_arg("length", length)? {
            Some(l) => l,
            None => self.size.checked_sub(offset).ok_or_else(|| {
                invalid(format!(
                    "offset {offset} is past the end of the namespace ({} bytes)",
                    self.size
                ))
            })?,
        };
        let m = py
            .detach(|| self.ns.read().as_ref().map(|ns| ns.map(offset, length)))
            .ok_or_else(|| closed("namespace"))?
            .map_err(errors::client)?;
        Ok(ClientMapping::new(m, offset))
    }

    /// Lets go of the namespace (its mappings stay). Closing twice does nothing.
    fn close(&self, py: Python<'_>) {
        let ns = self.ns.write().take();
        py.detach(move || drop(ns));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<devmap.ClientNamespace {:?} size={} align={}{}>",
            self.name,
            self.size,
            self.align,
            if self.closed() { " closed" } else { "" }
        )
    }
}
