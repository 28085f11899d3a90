//! The errnos of the C ABI: every library error's comes from [`devmap::errno`] (shared with the
//! Python bindings), negated at the boundary; the ABI's own conditions (NULL pointers, arrays
//! too small, panics) are named here.

pub(crate) use devmap::errno::{addr, backing, dax, gup, mf, namespace, pgmap, region};

/// A client's error: the service's errno for a refusal, else the connection's or the
/// mapping's (`ClientError::errno`).
pub(crate) fn client(e: &devmap::client::ClientError) -> i32 {
    e.errno()
}
use libc::{EBUSY, EFAULT, EINVAL, EIO, ENOSPC};

/// Errnos this crate returns for its own checks (kept here so that every errno is chosen in
/// this module).
pub(crate) mod own {
    /// A null pointer where a pointer is needed.
    pub(crate) const NULL: i32 = super::EFAULT;
    /// A bad argument: an unknown constant, a flag bit not defined, a string not UTF-8.
    pub(crate) const INVALID: i32 = super::EINVAL;
    /// An output array too small for what there is to copy.
    pub(crate) const TOO_SMALL: i32 = super::ENOSPC;
    /// A namespace disabled while mapping or pin handles still hold its device.
    pub(crate) const IN_USE: i32 = super::EBUSY;
    /// A panic caught at the boundary.
    pub(crate) const PANIC: i32 = super::EIO;
    /// An operation on the other form of pin handle (the page list of folio pins).
    pub(crate) const WRONG_FORM: i32 = super::EINVAL;
}
