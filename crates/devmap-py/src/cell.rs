//! What a Python object shares with the objects made from it: a device's cell (the library
//! device, or an enabled namespace with its region, held by the `Device`, its `Mapping`s and
//! its `Pins`) and a region's cell (held by the `Region` and the devices of the namespaces
//! enabled from it). Below every pyclass module, so that each of them depends on this one and
//! none on another for what it holds.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use devmap::namespace::{EnabledNamespace, Region as LibRegion};
use devmap::{DaxDevice, Layout};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;

use crate::errors::{self, closed};

/// What a device object holds: a device of its own, or an enabled namespace of a region (whose
/// close disables it, writing its bad pages to disk).
#[derive(Debug)]
pub(crate) enum Held {
    /// A device over a backing.
    Device(DaxDevice),
    /// A namespace enabled from a region, with the region to disable it in.
    /// (Boxed: an enabled namespace carries its label and region path.)
    Namespace(Box<EnabledNamespace>, Arc<RegionCell>),
}

impl Held {
    /// The device.
    pub(crate) fn device(&self) -> &DaxDevice {
        match self {
            Held::Device(d) => d,
            Held::Namespace(ns, _) => ns.device(),
        }
    }
}

/// A device shared by its Python object, its mappings and its pins: `None` once closed. The
/// library device holds its own space and borrows nothing, and its drop (which waits
/// for every mapping and pin of it) runs when the last of these lets go, after the mappings
/// and pins it would wait for are gone, since they hold this cell.
#[derive(Debug)]
pub(crate) struct DeviceCell {
    pub(crate) held: RwLock<Option<Held>>,
    /// How it was built, for `repr` and the properties.
    pub(crate) layout: Layout,
    pub(crate) init: &'static str,
}

impl DeviceCell {
    /// Runs `f` on the device with the GIL released, the device's lock taken and given back
    /// inside: `None` if the device is closed. Never hold one of this module's locks while
    /// waiting for the GIL: a thread holding the GIL may be waiting for that lock.
    pub(crate) fn detached<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&DaxDevice) -> T + Send,
    ) -> PyResult<T> {
        py.detach(|| self.held.read().as_ref().map(|h| f(h.device())))
            .ok_or_else(|| closed("device"))
    }

    /// Runs `f` on the device, or raises if it is closed (with the GIL held: `f` must be quick
    /// and must not release the GIL).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&DaxDevice) -> PyResult<T>) -> PyResult<T> {
        let held = self.held.read();
        let held = held.as_ref().ok_or_else(|| closed("device"))?;
        f(held.device())
    }
}

impl Drop for DeviceCell {
    /// A namespace device nobody closed is disabled here, once its mappings and pins (which
    /// hold this cell) are gone, so that its bad pages still reach the disk and its region
    /// can be closed.
    fn drop(&mut self) {
        if let Some(Held::Namespace(ns, region)) = self.held.get_mut().take() {
            Python::attach(|py| {
                if let Err(e) = region.disable(py, *ns) {
                    e.write_unraisable(py, None);
                }
            });
        }
    }
}

/// A region shared by its Python object and the devices of the namespaces enabled from it.
#[derive(Debug)]
pub(crate) struct RegionCell {
    pub(crate) region: Mutex<Option<LibRegion>>,
    pub(crate) path: PathBuf,
    /// Namespaces enabled and not yet disabled.
    pub(crate) enabled: AtomicUsize,
}

impl RegionCell {
    /// Runs `f` on the open region with the GIL released, the region's lock taken and given
    /// back inside (never held while waiting for the GIL); raises if the region is closed.
    pub(crate) fn detached<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut LibRegion) -> T + Send,
    ) -> PyResult<T> {
        py.detach(|| self.region.lock().as_mut().map(f))
            .ok_or_else(|| closed("region"))
    }

    /// Runs `f` on the open region, or raises if it is closed (with the GIL held: `f` must be
    /// quick and must not release the GIL).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut LibRegion) -> PyResult<T>) -> PyResult<T> {
        let mut region = self.region.lock();
        let region = region.as_mut().ok_or_else(|| closed("region"))?;
        f(region)
    }

    /// Disables an enabled namespace (its device torn down): its bad pages go to disk and its
    /// info block is marked clean.
    pub(crate) fn disable(&self, py: Python<'_>, ns: EnabledNamespace) -> PyResult<()> {
        self.enabled.fetch_sub(1, Ordering::SeqCst);
        self.detached(py, |r| r.disable(ns))?
            .map_err(errors::region)
    }
}
