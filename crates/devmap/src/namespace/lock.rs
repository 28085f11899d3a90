//! The lock that lets one device at a time serve a namespace: an open-file-description
//! (OFD) write lock (`fcntl(F_OFD_SETLK)`) on the bytes of the namespace's info block, taken
//! without waiting by [`Region::enable`](super::Region::enable) before it reads or writes
//! anything of the namespace, and held by the
//! [`EnabledNamespace`](super::EnabledNamespace) until it is disabled or dropped.
//!
//! An OFD lock belongs to one open file description, not to a process: a second enable
//! conflicts with the first whether it runs in another process or in this one (through
//! another region handle, another device space, or the same ones), because each lock is taken
//! through a description of its own, opened for it. It goes away when that description is
//! closed, so a process that dies (even by SIGKILL) releases it, and it never conflicts with the
//! region's `flock` (the two kinds of lock are separate on Linux). Each namespace locks its own
//! byte range, so namespaces of one region are enabled independently.
//!
//! `unsafe` here: the one `fcntl` call (DESIGN §2).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A description of the region file holding the write lock on one namespace's bytes;
/// dropping it closes the description, which releases the lock.
#[derive(Debug)]
pub(super) struct NamespaceLock {
    _description: File,
}

impl NamespaceLock {
    /// Opens the region file at `path` once more (it must still be the file `region` has open)
    /// and takes the write lock on `len` bytes at `start` through that new description,
    /// without waiting: `Ok(None)` when another description (another enable, here or in
    /// another process) holds any of those bytes.
    pub(super) fn try_take(
        region: &File,
        path: &Path,
        start: u64,
        len: u64,
    ) -> io::Result<Option<NamespaceLock>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let (theirs, ours) = (region.metadata()?, file.metadata()?);
        if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
            return Err(io::Error::other(format!(
                "{} is no longer the file this region was opened from (it was replaced): \
                 open the region again",
                path.display()
            )));
        }
        Ok(try_write_lock(&file, start, len)?.then_some(NamespaceLock { _description: file }))
    }
}

/// `fcntl(F_OFD_SETLK)` of a write lock on `len` bytes at `start` of `file`'s description:
/// whether it was taken (false: another description holds a conflicting lock).
fn try_write_lock(file: &File, start: u64, len: u64) -> io::Result<bool> {
    let too_far = |_| io::Error::new(io::ErrorKind::InvalidInput, "lock range past off_t");
    let (start, len) = (
        libc::off_t::try_from(start).map_err(too_far)?,
        libc::off_t::try_from(len).map_err(too_far)?,
    );
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero bytes are a valid
    // value (and `l_pid` must be 0 for an OFD lock); `fcntl` only reads the local struct it is
    // given, during the call, on a descriptor that `file` keeps open for the call.
    let rc = unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = start;
        fl.l_len = len;
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_OFD_SETLK,
            &fl as *const libc::flock,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}
