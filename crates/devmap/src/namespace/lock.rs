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
/// dropping it unlocks those bytes and closes the description.
///
/// The unlock is explicit because closing our descriptor does not end the lock while another
/// descriptor refers to the same description: a child another thread of this process has just
/// forked holds copies of every descriptor until it execs (close-on-exec closes them there),
/// and would keep the namespace locked for that moment after the disable. An unlock through
/// the description releases it for every descriptor that shares it.
#[derive(Debug)]
pub(super) struct NamespaceLock {
    description: File,
    start: u64,
    len: u64,
}

impl Drop for NamespaceLock {
    fn drop(&mut self) {
        // Failure leaves the lock to the close that follows, which releases it as before.
        let _ = set_lock(&self.description, libc::F_UNLCK, self.start, self.len);
    }
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
        let taken = set_lock(&file, libc::F_WRLCK, start, len)?;
        Ok(taken.then_some(NamespaceLock {
            description: file,
            start,
            len,
        }))
    }
}

/// `fcntl(F_OFD_SETLK)` of a lock of `kind` (`F_WRLCK`, or `F_UNLCK` to release) on `len`
/// bytes at `start` of `file`'s description: whether it was set (false: another description
/// holds a conflicting lock).
fn set_lock(file: &File, kind: libc::c_int, start: u64, len: u64) -> io::Result<bool> {
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
        fl.l_type = kind as libc::c_short;
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::backing::file::TempPath;

    #[test]
    fn a_dropped_lock_is_released_while_a_copy_of_its_descriptor_lives() {
        // What a child forked by another thread holds until it execs: a copy of the
        // descriptor, sharing the description. The drop unlocks through the description, so
        // the next enable is not refused for that moment.
        let path = TempPath::new("ns-lock-copy");
        let region = File::create(&path.0).expect("create");
        region.set_len(1 << 20).expect("size");
        let lock = NamespaceLock::try_take(&region, &path.0, 8192, 4096)
            .expect("lock")
            .expect("free");
        assert!(
            NamespaceLock::try_take(&region, &path.0, 8192, 4096)
                .expect("try")
                .is_none(),
            "held"
        );
        let copy = lock.description.try_clone().expect("dup");
        drop(lock);
        let again = NamespaceLock::try_take(&region, &path.0, 8192, 4096).expect("try");
        assert!(again.is_some(), "still locked through the copy");
        drop(copy);
    }
}
