//! The module's exceptions and the library's errors mapped onto them. Every exception is a
//! `devmap.Error`, itself an `OSError` whose `errno` is the library's for the error
//! ([`devmap::errno`], what the C ABI returns negated) and whose `strerror` is the library's
//! reason, with its causes. The class follows the errno: `InvalidArgument` for `EINVAL`,
//! `E2BIG` and `EFAULT`, `BusyError` for `EBUSY`, `TornDownError` for `ENXIO`,
//! `PoisonedError` for `EHWPOISON` (`MemoryLost` for bytes a read lost).

use devmap::backing::BackingError;
use devmap::client::ClientError;
use devmap::memory_failure::MfError;
use devmap::namespace::RegionError;
use devmap::{DaxError, GupError};
use pyo3::exceptions::PyBaseException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyTuple, PyType};

/// The exception classes, in Python: multiple inheritance (`InvalidArgument` is a `ValueError`
/// too) is plainer there than through the C API.
const CLASSES: &std::ffi::CStr = cr#"
class Error(OSError):
    """Base class of devmap's errors: an OSError whose errno says what kind of refusal it is
    and whose strerror is the library's reason."""
    __module__ = "devmap"

class InvalidArgument(Error, ValueError):
    """A refused argument (EINVAL; E2BIG for extent limits; EFAULT for an address outside
    every mapping or a nofault pin of a leaf not faulted in): the reason names what would
    work."""
    __module__ = "devmap"

class BusyError(Error):
    """Something is still in use (EBUSY): mappings or pins of a device being closed, a
    region another process manages."""
    __module__ = "devmap"

class TornDownError(Error):
    """The device is being or has been torn down, or the mapping unmapped (ENXIO)."""
    __module__ = "devmap"

class PoisonedError(Error):
    """Poisoned memory: a pin or fault of a poisoned page, a page poisoned already
    (EHWPOISON)."""
    __module__ = "devmap"

class MemoryLost(PoisonedError):
    """Bytes lost to a memory error, reported by Mapping.read_mc instead of a SIGBUS
    (EHWPOISON).
    offset: the first lost byte's offset in the mapping; addr: its user address; length: how
    many bytes are lost there (a page, or a whole leaf at leaf granularity)."""
    __module__ = "devmap"
    offset = None
    addr = None
    length = None
"#;

/// Which exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `devmap.Error`.
    Base,
    /// `devmap.InvalidArgument`.
    Invalid,
    /// `devmap.BusyError`.
    Busy,
    /// `devmap.TornDownError`.
    TornDown,
    /// `devmap.PoisonedError`.
    Poisoned,
    /// `devmap.MemoryLost`.
    MemoryLost,
}

const NAMES: [(Kind, &str); 6] = [
    (Kind::Base, "Error"),
    (Kind::Invalid, "InvalidArgument"),
    (Kind::Busy, "BusyError"),
    (Kind::TornDown, "TornDownError"),
    (Kind::Poisoned, "PoisonedError"),
    (Kind::MemoryLost, "MemoryLost"),
];

/// The classes, once the module is initialised.
static TYPES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

/// Defines the classes and adds them to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let types = TYPES.get_or_try_init(py, || -> PyResult<Vec<Py<PyType>>> {
        let code = PyModule::from_code(py, CLASSES, c"devmap/_errors.py", c"devmap._errors")?;
        NAMES
            .iter()
            .map(|(_, name)| Ok(code.getattr(*name)?.cast_into::<PyType>()?.unbind()))
            .collect()
    })?;
    for ((_, name), ty) in NAMES.iter().zip(types) {
        m.add(*name, ty.bind(py))?;
    }
    Ok(())
}

/// The class of `kind`.
fn class(py: Python<'_>, kind: Kind) -> PyResult<Bound<'_, PyType>> {
    let i = NAMES.iter().position(|(k, _)| *k == kind).unwrap_or(0);
    TYPES
        .get(py)
        .and_then(|t| t.get(i))
        .map(|t| t.bind(py).clone())
        .ok_or_else(|| pyo3::exceptions::PySystemError::new_err("devmap is not initialised"))
}

/// An exception instance of `kind` with `errno` and `message`.
pub(crate) fn instance<'py>(
    py: Python<'py>,
    kind: Kind,
    errno: i32,
    message: &str,
) -> PyResult<Bound<'py, PyAny>> {
    class(py, kind)?.call1((errno, message))
}

/// An error of `kind` with `errno` and `message`, ready to raise.
pub(crate) fn error(kind: Kind, errno: i32, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| match instance(py, kind, errno, &message) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    })
}

/// `InvalidArgument` with `message`.
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    error(Kind::Invalid, libc_errno::EINVAL, message)
}

/// The error a closed object's methods raise.
pub(crate) fn closed(what: &str) -> PyErr {
    error(
        Kind::TornDown,
        libc_errno::ENXIO,
        format!("this {what} is closed"),
    )
}

/// `err`, raised by an `__exit__` whose arguments `exc` (type, value, traceback) carry the
/// exception already propagating out of the `with` block, chained to it as Python's
/// `raise err from value` would (`__cause__` and `__context__`), so the traceback shows both:
/// a device's `BusyError` then names the mapping's `BufferError` that left the mapping open.
pub(crate) fn chained(py: Python<'_>, err: PyErr, exc: &Bound<'_, PyTuple>) -> PyErr {
    let Ok(value) = exc.get_item(1) else {
        return err;
    };
    if let Ok(value) = value.cast_into::<PyBaseException>() {
        // The same object as cause and context: what `raise ... from` sets.
        let _ = err.value(py).setattr("__context__", &value);
        err.set_cause(py, Some(PyErr::from_value(value.into_any())));
    }
    err
}

/// The errno values used here (Linux's).
pub(crate) mod libc_errno {
    /// Argument list too long (here: more extents needed than allowed).
    pub(crate) const E2BIG: i32 = 7;
    /// No such device or address.
    pub(crate) const ENXIO: i32 = 6;
    /// Bad address.
    pub(crate) const EFAULT: i32 = 14;
    /// Device or resource busy.
    pub(crate) const EBUSY: i32 = 16;
    /// Invalid argument.
    pub(crate) const EINVAL: i32 = 22;
    /// Memory page has hardware error.
    pub(crate) const EHWPOISON: i32 = 133;
    /// Structure needs cleaning (an unreadable on-disk block).
    pub(crate) const EUCLEAN: i32 = 117;
}

use libc_errno::*;

pub(crate) use devmap::units::describe as reason;

/// The exception class of a library error with `errno`: the library's errno
/// ([`devmap::errno`], the C ABI's too) decides it, so both bindings say the same.
fn kind_of(errno: i32) -> Kind {
    match errno {
        EINVAL | E2BIG | EFAULT => Kind::Invalid,
        EBUSY => Kind::Busy,
        ENXIO => Kind::TornDown,
        EHWPOISON => Kind::Poisoned,
        _ => Kind::Base,
    }
}

/// A device-dax error as a Python exception.
pub(crate) fn dax(e: DaxError) -> PyErr {
    let errno = devmap::errno::dax(&e);
    let kind = match &e {
        DaxError::MemoryLost { .. } => Kind::MemoryLost,
        _ => kind_of(errno),
    };
    error(kind, errno, reason(&e))
}

/// A pin error (extents of a pin) as a Python exception.
pub(crate) fn gup(e: GupError) -> PyErr {
    let errno = devmap::errno::gup(&e);
    error(kind_of(errno), errno, reason(&e))
}

/// A backing error as a Python exception.
pub(crate) fn backing(e: BackingError) -> PyErr {
    let errno = devmap::errno::backing(&e);
    error(kind_of(errno), errno, reason(&e))
}

/// A memory-failure error as a Python exception.
pub(crate) fn mf(e: MfError) -> PyErr {
    let errno = devmap::errno::mf(&e);
    error(kind_of(errno), errno, reason(&e))
}

/// A region error as a Python exception.
pub(crate) fn region(e: RegionError) -> PyErr {
    let errno = devmap::errno::region(&e);
    error(kind_of(errno), errno, reason(&e))
}

/// A client's error (a refusal by the service, the connection, mapping the namespace's file)
/// as a Python exception: the class by its errno, the service's reason kept.
pub(crate) fn client(e: ClientError) -> PyErr {
    let errno = e.errno();
    error(kind_of(errno), errno, reason(&e))
}
