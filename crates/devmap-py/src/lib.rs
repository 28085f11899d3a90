//! The `devmap` Python module: device-dax devices over memfd, hugetlb and files, their mappings
//! (whose bytes are a writable `memoryview`), pins by user address for DMA registration with
//! their extents, memory failure and poison, and namespaces kept on disk in region files; and
//! `connect()`, a client of a running `devmap serve` (its namespaces mapped and pinned through
//! the service).
//!
//! Object lifetimes follow the library's rules without ever blocking Python for ever:
//!
//! * every device is built in a `DeviceSpace` of its own, which the library device holds (a
//!   handle, not a borrow), so a Python object outlives nothing it refers to, and memory
//!   failure looks the device's pfns up in the device's space;
//! * a `Mapping` and a `Pins` hold their device's `DeviceCell` (an `Arc`), so the library
//!   device is dropped (a drop that waits for its mappings and pins) only once nothing refers
//!   to it, after the mappings and pins it would wait for;
//! * an explicit `close()` refuses (`BusyError`, `BufferError`) instead of waiting for what is
//!   still open.
//!
//! Long operations (building and initialising a device, pinning and faulting large ranges,
//! memory failure, teardown) run with the GIL released (`Python::detach`).

mod cell;
mod client;
mod client_mapping;
mod device;
mod dicts;
mod errors;
mod mapping;
mod pins;
mod region;

use devmap::Order;
use devmap::backing::HugePageSize;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

use crate::errors::invalid;

/// A size argument: an int of bytes, or a string with an optional binary suffix (`"64M"`,
/// `"1G"`: K, M, G, T, P are powers of 1024, as ndctl reads them).
pub(crate) fn size_arg(what: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(s) = value.cast::<PyString>() {
        let text = s.to_str()?;
        return devmap::units::parse_size(text).map_err(|e| invalid(format!("{what} {e}")));
    }
    if value.is_instance_of::<PyInt>() {
        return value.extract::<u64>().map_err(|_| {
            invalid(format!(
                "{what} {value} is not a byte count: it must be from 0 to 2**64 - 1"
            ))
        });
    }
    Err(invalid(format!(
        "{what} must be an int of bytes or a string such as \"64M\", not {}",
        value.get_type().name()?
    )))
}

pub(crate) use devmap::units::format_size;

/// An optional size argument.
pub(crate) fn opt_size_arg(what: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    value
        .filter(|v| !v.is_none())
        .map(|v| size_arg(what, v))
        .transpose()
}

/// An `align` argument in bytes (an int, or a size string such as `"2M"`), defaulting to 2M
/// where a signature says `align = Align::DEFAULT` (shown to Python as `align='2M'`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Align(pub(crate) u64);

impl Align {
    /// 2 MiB, the default align everywhere (as ndctl's for devdax).
    pub(crate) const DEFAULT: Align = Align(2 << 20);

    /// The align as a device align: 4K, 2M or 1G.
    pub(crate) fn device(self) -> PyResult<Order> {
        match self.0 {
            b if b == Order::BASE.bytes() => Ok(Order::BASE),
            b if b == Order::PMD.bytes() => Ok(Order::PMD),
            b if b == Order::PUD.bytes() => Ok(Order::PUD),
            b => Err(invalid(format!(
                "align {} is not a device-dax align: use \"4K\", \"2M\" or \"1G\"",
                format_size(b)
            ))),
        }
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Align {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Align> {
        size_arg("align", &obj).map(Align)
    }
}

/// An option value by name (a layout, init mode, granularity, faults mode, namespace mode or
/// memmap location): the library's `FromStr`, so every front end reads the same names.
pub(crate) fn named_arg<T>(name: &str) -> PyResult<T>
where
    T: std::str::FromStr<Err = devmap::units::UnknownName>,
{
    name.parse::<T>().map_err(|e| invalid(e.to_string()))
}

/// A huge page size by bytes.
pub(crate) fn huge_page_arg(bytes: u64) -> PyResult<HugePageSize> {
    match bytes {
        b if b == Order::PMD.bytes() => Ok(HugePageSize::Size2M),
        b if b == Order::PUD.bytes() => Ok(HugePageSize::Size1G),
        _ => Err(invalid(format!(
            "huge page size {bytes} is not a hugetlb size: use \"2M\" or \"1G\""
        ))),
    }
}

/// Parses a size the way every size argument of this module does: `parse_size("64M")` is
/// `67108864`.
#[pyfunction]
#[pyo3(name = "parse_size")]
fn parse_size_arg(value: &Bound<'_, PyAny>) -> PyResult<u64> {
    size_arg("size", value)
}

/// The `devmap` module.
#[pymodule]
#[pyo3(name = "devmap")]
fn devmap_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PAGE_SIZE", devmap::PAGE_SIZE)?;
    errors::register(m)?;
    m.add_class::<device::Device>()?;
    m.add_class::<mapping::Mapping>()?;
    m.add_class::<pins::Pins>()?;
    m.add_class::<pins::PinnedFolio>()?;
    m.add_class::<pins::Extent>()?;
    m.add_class::<region::Region>()?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::ClientNamespace>()?;
    m.add_class::<client_mapping::ClientMapping>()?;
    m.add_class::<client_mapping::ClientPins>()?;
    m.add_function(wrap_pyfunction!(client::connect, m)?)?;
    m.add_function(wrap_pyfunction!(parse_size_arg, m)?)?;
    m.add_function(wrap_pyfunction!(device::memory_failure_at, m)?)?;
    m.add_function(wrap_pyfunction!(region::estimate, m)?)?;
    Ok(())
}
