//! [`SharedWords`]: an array of 64-bit atomics in a sealed memfd, mapped `MAP_SHARED` by two
//! processes: what `devmap serve` and a client share about one client mapping (DESIGN §9.5).
//!
//! The creator picks who may write. A [`Writer::Creator`] file is sealed with
//! `F_SEAL_FUTURE_WRITE` once the creator has mapped it, so the other process can map it
//! read-only and nothing else: the creator may trust what it reads back. A [`Writer::Both`]
//! file is writable by both; its reader treats every word as untrusted input. Either way the
//! size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), so neither side can truncate
//! the file under the other's mapping and make its next load raise SIGBUS. The other side
//! checks the seals and the size before it maps ([`SharedWords::open`]).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use super::BackingError;
use crate::addr::PAGE_SIZE;

/// Who writes the words of a [`SharedWords`] file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Only the process that created it; the other maps it read-only.
    Creator,
    /// Both processes.
    Both,
}

/// The seals every shared-words file carries: its size is fixed for good.
const SIZE_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// `len` 64-bit words in a sealed memfd, mapped shared; unmapped on drop.
#[derive(Debug)]
pub struct SharedWords {
    ptr: NonNull<AtomicU64>,
    len: usize,
    map_len: usize,
    /// The file, kept so that it can be passed on (the creator's side only).
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is owned by this value alone and is only ever accessed through
// `&[AtomicU64]` (atomic operations), so moving or sharing it between threads is sound.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

/// Bytes of a file holding `len` words: whole pages, at least one.
fn file_len(len: usize) -> Result<usize, BackingError> {
    len.checked_mul(8)
        .map(|b| b.max(1).next_multiple_of(PAGE_SIZE as usize))
        .ok_or(BackingError::TooLarge {
            len: len as u64 * 8,
        })
}

impl SharedWords {
    /// Creates a file of `len` zeroed words named `name` (as `/proc/PID/fd` shows it), maps it
    /// read-write and seals it for `writer`. [`fd`](Self::fd) is what to pass on.
    pub fn create(name: &str, len: usize, writer: Writer) -> Result<SharedWords, BackingError> {
        let bytes = file_len(len)?;
        let fail = |source: std::io::Error| BackingError::Create {
            backing: format!("shared-words memfd {name:?}"),
            len: bytes as u64,
            source,
        };
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(|e| fail(e.into()))?;
        rustix::fs::ftruncate(&fd, bytes as u64).map_err(|e| fail(e.into()))?;
        let mut words = map(fd.as_fd(), len, bytes, true).map_err(fail)?;
        let seals = match writer {
            Writer::Creator => SIZE_SEALS | SealFlags::FUTURE_WRITE,
            Writer::Both => SIZE_SEALS,
        };
        rustix::fs::fcntl_add_seals(&fd, seals).map_err(|e| fail(e.into()))?;
        words.fd = Some(fd);
        Ok(words)
    }

    /// Maps a file another process created for `len` words: read-write if `writable`, else
    /// read-only. Refuses a file whose size is not sealed or is shorter than `len` words, and,
    /// if `writable`, one sealed against writes.
    pub fn open(fd: OwnedFd, len: usize, writable: bool) -> Result<SharedWords, BackingError> {
        let bytes = file_len(len)?;
        let bad = |why: String| BackingError::SharedWords { why };
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|e| bad(format!("cannot read the seals of the file passed: {e}")))?;
        if !seals.contains(SIZE_SEALS) {
            return Err(bad(format!(
                "the file passed has seals {seals:?}, not its size sealed (SHRINK | GROW | SEAL)"
            )));
        }
        if writable && seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
            return Err(bad(
                "the file passed is sealed against writes, and is written here".into(),
            ));
        }
        let st =
            rustix::fs::fstat(&fd).map_err(|e| bad(format!("cannot stat the file passed: {e}")))?;
        if (st.st_size as u64) < bytes as u64 {
            return Err(bad(format!(
                "the file passed holds {} bytes, fewer than the {bytes} that {len} words need",
                st.st_size
            )));
        }
        map(fd.as_fd(), len, bytes, writable)
            .map_err(|e| bad(format!("cannot map the file passed: {e}")))
    }

    /// The file, on the creator's side: pass it to the other process.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// The words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is the start of a live shared mapping of at least `len * 8` bytes,
        // page-aligned (so aligned for `AtomicU64`), owned by `self` and unmapped only on
        // drop, so the slice cannot outlive it. Every bit pattern is a valid `AtomicU64` and
        // the words are only ever accessed atomically, here and in the other process, so
        // shared references to them break no aliasing rule. A read-only mapping is only
        // loaded from: atomic loads of native width from read-only memory are permitted
        // (`std::sync::atomic`, "Atomic accesses to read-only memory"), and the file's size
        // is sealed, so no load can fault.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

/// Maps the first `bytes` of `fd`, shared, read-write or read-only.
fn map(
    fd: BorrowedFd<'_>,
    len: usize,
    bytes: usize,
    writable: bool,
) -> Result<SharedWords, std::io::Error> {
    let prot = match writable {
        true => ProtFlags::READ | ProtFlags::WRITE,
        false => ProtFlags::READ,
    };
    // SAFETY: a new shared mapping at an address the kernel picks aliases no Rust object; the
    // file is at least `bytes` long and its size is (or is about to be) sealed.
    let p =
        unsafe { rustix::mm::mmap(std::ptr::null_mut(), bytes, prot, MapFlags::SHARED, fd, 0) }?;
    let ptr = NonNull::new(p.cast::<AtomicU64>())
        .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
    Ok(SharedWords {
        ptr,
        len,
        map_len: bytes,
        fd: None,
    })
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours alone; no slice of it outlives `&self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn dup(w: &SharedWords) -> OwnedFd {
        w.fd().expect("creator").try_clone_to_owned().expect("dup")
    }

    #[test]
    fn words_written_by_the_creator_are_read_through_the_other_mapping() {
        let w = SharedWords::create("test", 1000, Writer::Creator).expect("create");
        let r = SharedWords::open(dup(&w), 1000, false).expect("open read-only");
        w.words()[999].store(7, Ordering::SeqCst);
        assert_eq!(r.words()[999].load(Ordering::SeqCst), 7);
    }

    #[test]
    fn a_creator_only_file_cannot_be_mapped_writable_nor_resized() {
        let w = SharedWords::create("test", 8, Writer::Creator).expect("create");
        let e = SharedWords::open(dup(&w), 8, true).expect_err("write-sealed");
        assert!(e.to_string().contains("sealed against writes"), "{e}");
        let fd = dup(&w);
        assert!(rustix::fs::ftruncate(&fd, 0).is_err(), "shrink is sealed");
        // A writable mapping of it is refused by the kernel too (F_SEAL_FUTURE_WRITE).
        let e = map(fd.as_fd(), 8, PAGE_SIZE as usize, true).expect_err("kernel refuses");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        // The creator's own mapping still writes.
        w.words()[0].store(1, Ordering::SeqCst);
    }

    #[test]
    fn a_file_both_write_is_shared_both_ways() {
        let w = SharedWords::create("test", 2, Writer::Both).expect("create");
        let r = SharedWords::open(dup(&w), 2, true).expect("open writable");
        r.words()[1].fetch_add(3, Ordering::SeqCst);
        assert_eq!(w.words()[1].load(Ordering::SeqCst), 3);
    }

    #[test]
    fn an_unsealed_or_short_file_is_refused_with_the_reason() {
        let fd = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 4096).expect("size");
        let e = SharedWords::open(fd, 8, false).expect_err("unsealed");
        assert!(e.to_string().contains("not its size sealed"), "{e}");
        let w = SharedWords::create("test", 8, Writer::Both).expect("create");
        let e = SharedWords::open(dup(&w), 100_000, false).expect_err("short");
        assert!(e.to_string().contains("fewer than"), "{e}");
    }
}
