//! The module's exceptions and the library's errors mapped onto them. Every exception is a
//! `devmap.Error`, itself an `OSError` whose `errno` says what kind of refusal it is (`EINVAL`,
//! `EBUSY`, `ENXIO`, `EHWPOISON`, `EIO`, or what the system said) and whose `strerror` is the
//! library's reason, with its causes.

use std::error::Error as StdError;

use devmap::backing::BackingError;
use devmap::gup::GupError;
use devmap::memory_failure::MfError;
use devmap::namespace::RegionError;
use devmap::{DaxError, FolioError, PgmapError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyType};

/// The exception classes, in Python: multiple inheritance (`InvalidArgument` is a `ValueError`
/// too) is plainer there than through the C API.
const CLASSES: &std::ffi::CStr = cr#"
class Error(OSError):
    """Base class of devmap's errors: an OSError whose errno says what kind of refusal it is
    and whose strerror is the library's reason."""
    __module__ = "devmap"

class InvalidArgument(Error, ValueError):
    """A refused argument (EINVAL): a bad size, align, offset or name; the reason names a
    value that would work."""
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
    """Bytes lost to a memory error, reported by Mapping.read_mc instead of a SIGBUS (EIO).
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

/// The errno values used here (Linux's).
pub(crate) mod libc_errno {
    /// No such file or directory.
    pub(crate) const ENOENT: i32 = 2;
    /// Argument list too long (here: more extents needed than allowed).
    pub(crate) const E2BIG: i32 = 7;
    /// I/O error.
    pub(crate) const EIO: i32 = 5;
    /// No such device or address.
    pub(crate) const ENXIO: i32 = 6;
    /// Bad address.
    pub(crate) const EFAULT: i32 = 14;
    /// Device or resource busy.
    pub(crate) const EBUSY: i32 = 16;
    /// File exists.
    pub(crate) const EEXIST: i32 = 17;
    /// Invalid argument.
    pub(crate) const EINVAL: i32 = 22;
    /// No space left on device.
    pub(crate) const ENOSPC: i32 = 28;
    /// Read-only file system.
    pub(crate) const EROFS: i32 = 30;
    /// Structure needs cleaning.
    pub(crate) const EUCLEAN: i32 = 117;
    /// Memory page has hardware error.
    pub(crate) const EHWPOISON: i32 = 133;
}

use libc_errno::*;

/// The error's message followed by its causes ("a: b: c"), skipping a cause the message
/// already shows.
pub(crate) fn reason(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// The errno of the first system error in `e`'s chain.
fn os_errno(e: &(dyn StdError + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && let Some(n) = io.raw_os_error()
        {
            return Some(n);
        }
        cur = c.source();
    }
    None
}

/// `kind` and `errno` for a pgmap error.
fn pgmap_kind(e: &PgmapError) -> (Kind, i32) {
    match e {
        PgmapError::Busy { .. } => (Kind::Busy, EBUSY),
        PgmapError::NotRegistered => (Kind::TornDown, ENXIO),
        PgmapError::BadRequest { .. } | PgmapError::SpaceExhausted { .. } => {
            (Kind::Invalid, EINVAL)
        }
        _ => (Kind::Base, EIO),
    }
}

/// `kind` and `errno` for a backing error.
fn backing_kind(e: &BackingError) -> (Kind, i32) {
    match e {
        BackingError::Empty
        | BackingError::TooSmall { .. }
        | BackingError::TooLarge { .. }
        | BackingError::Unaligned { .. }
        | BackingError::BadAlign { .. }
        | BackingError::OutOfRange { .. }
        | BackingError::WrongFileType { .. } => (Kind::Invalid, EINVAL),
        other => (Kind::Base, os_errno(other).unwrap_or(EIO)),
    }
}

/// `kind` and `errno` for a pin error.
fn gup_kind(e: &GupError) -> (Kind, i32) {
    match e {
        GupError::Poisoned { .. } => (Kind::Poisoned, EHWPOISON),
        GupError::TornDown { .. } | GupError::NoPgmap { .. } => (Kind::TornDown, ENXIO),
        GupError::Empty | GupError::TooManyEntries { .. } => (Kind::Invalid, EINVAL),
        _ => (Kind::Base, EFAULT),
    }
}

/// `kind` and `errno` for a folio error.
fn folio_kind(e: &FolioError) -> (Kind, i32) {
    match e {
        FolioError::TornDown { .. } => (Kind::TornDown, ENXIO),
        _ => (Kind::Base, EIO),
    }
}

/// A device-dax error as a Python exception.
pub(crate) fn dax(e: DaxError) -> PyErr {
    let (kind, errno) = match &e {
        DaxError::BackingUnaligned { .. }
        | DaxError::PageTooLarge { .. }
        | DaxError::NotShared
        | DaxError::Unaligned { .. }
        | DaxError::Empty
        | DaxError::OutOfRange { .. }
        | DaxError::FaultTooSmall { .. }
        | DaxError::NotInMapping { .. }
        | DaxError::LeafStraddles { .. }
        | DaxError::NoUserfaultfd { .. }
        | DaxError::RangeSizes { .. } => (Kind::Invalid, EINVAL),
        DaxError::TornDown | DaxError::Unmapped { .. } => (Kind::TornDown, ENXIO),
        DaxError::Poisoned { .. } => (Kind::Poisoned, EHWPOISON),
        DaxError::MemoryLost { .. } => (Kind::MemoryLost, EIO),
        DaxError::NotFaulted { .. } => (Kind::Base, EFAULT),
        DaxError::ExtentCap { .. } => (Kind::Invalid, EINVAL),
        DaxError::ExtentCount { .. } => (Kind::Invalid, E2BIG),
        DaxError::Pgmap(p) => pgmap_kind(p),
        DaxError::Backing(b) => backing_kind(b),
        DaxError::Folio(f) => folio_kind(f),
        DaxError::Gup(g) => gup_kind(g),
        other => (Kind::Base, os_errno(other).unwrap_or(EIO)),
    };
    error(kind, errno, reason(&e))
}

/// A backing error as a Python exception.
pub(crate) fn backing(e: BackingError) -> PyErr {
    let (kind, errno) = backing_kind(&e);
    error(kind, errno, reason(&e))
}

/// A memory-failure error as a Python exception.
pub(crate) fn mf(e: MfError) -> PyErr {
    let (kind, errno) = match &e {
        MfError::NoDevice { .. } => (Kind::TornDown, ENXIO),
        MfError::NotData { .. } | MfError::NotMapped { .. } => (Kind::Invalid, EINVAL),
        MfError::AlreadyPoisoned { .. } => (Kind::Poisoned, EHWPOISON),
        MfError::Pgmap(p) => pgmap_kind(p),
        _ => (Kind::Base, EIO),
    };
    error(kind, errno, reason(&e))
}

/// A region error as a Python exception.
pub(crate) fn region(e: RegionError) -> PyErr {
    let (kind, errno) = match &e {
        RegionError::Busy { .. } => (Kind::Busy, EBUSY),
        RegionError::TooSmall { .. }
        | RegionError::BadName { .. }
        | RegionError::Namespace(_)
        | RegionError::NotDevdax { .. } => (Kind::Invalid, EINVAL),
        RegionError::NameTaken { .. } => (Kind::Base, EEXIST),
        RegionError::NotFound { .. } => (Kind::Base, ENOENT),
        RegionError::NoSpace { .. } | RegionError::Full => (Kind::Base, ENOSPC),
        RegionError::ReadOnly => (Kind::Base, EROFS),
        RegionError::Io { source, .. } => (Kind::Base, source.raw_os_error().unwrap_or(EIO)),
        RegionError::Labels { .. }
        | RegionError::SizeMismatch { .. }
        | RegionError::InfoBlock { .. }
        | RegionError::Badblocks { .. }
        | RegionError::Label(_) => (Kind::Base, EUCLEAN),
        _ => (Kind::Base, EIO),
    };
    error(kind, errno, reason(&e))
}
