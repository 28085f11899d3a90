//! File backings: an existing regular file opened read-write, or a new sparse one, on any
//! filesystem, and whether its mount says DAX (read from `/proc/self/mountinfo`, the only
//! place the kernel states it; `statfs` gives the filesystem type, not its mount options).
//!
//! The page size is 4 KiB whatever `st_blksize` says: the page cache maps file pages at base
//! size, and on a DAX mount the kernel uses 2 MiB leaves only where the mapping's address and
//! the file's blocks are both aligned, which the caller asks for through
//! [`Backing::map_shared`]'s alignment, not through the page size. A file on tmpfs is shmem,
//! and its mappings can be registered with userfaultfd (MISSING and MINOR, as a memfd's);
//! a file on a disk filesystem has no userfaultfd mode: faults on it are driven by the caller.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::{Backing, BackingError, BackingKind, UffdModes};
use crate::addr::Order;

/// The userfaultfd modes a mapping of `file` can be registered in: MISSING and MINOR on tmpfs
/// (shmem, as a memfd), none elsewhere (the kernel refuses file mappings that are not shmem or
/// hugetlbfs, and hugetlbfs files cannot be written with `pwrite`, which regions need).
fn file_uffd_modes(file: &std::fs::File) -> UffdModes {
    /// `TMPFS_MAGIC` from `linux/magic.h`.
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    match rustix::fs::fstatfs(file) {
        Ok(st) if st.f_type as u64 == TMPFS_MAGIC => UffdModes::MISSING | UffdModes::MINOR,
        _ => UffdModes::NONE,
    }
}

/// What the mount a file lives on says about DAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaxMount {
    /// Mounted `dax` or `dax=always`: file pages are the device's memory, no page cache.
    Always,
    /// Mounted `dax=inode`: DAX is chosen per file (`FS_XFLAG_DAX`), not known from the mount.
    PerInode,
    /// Mounted without DAX: the page cache sits in front of the file.
    Never,
    /// The mount could not be found in `/proc/self/mountinfo`.
    Unknown,
}

impl Backing {
    /// An existing regular file of at least 4 KiB, opened read-write; its length is its size.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Backing, BackingError> {
        let path = path.as_ref();
        let open = |source| BackingError::Open {
            backing: "file",
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open)?;
        let meta = file.metadata().map_err(open)?;
        if !meta.file_type().is_file() {
            return Err(BackingError::WrongFileType {
                path: path.to_path_buf(),
                found: describe(meta.file_type()),
                wanted: "a regular file",
            });
        }
        let kind = BackingKind::File {
            path: path.to_path_buf(),
            dax: dax_mount(meta.dev()),
        };
        if meta.len() < Order::BASE.bytes() {
            return Err(BackingError::TooSmall {
                backing: kind.to_string(),
                len: meta.len(),
                page: Order::BASE,
            });
        }
        Ok(Backing {
            base: 0,
            len: meta.len(),
            page: Order::BASE,
            uffd: file_uffd_modes(&file),
            kind,
            fd: file.into(),
        })
    }

    /// `len` bytes from file offset `base` of a file another process shared (its descriptor
    /// received over a Unix socket, with [`Backing::share`]'s `base`): how a client of
    /// `devmap serve` maps a namespace. The descriptor must be a regular file (a region file
    /// or a memfd) holding the whole window; `base` and `len` multiples of 4 KiB, `len` not 0.
    pub fn from_shared(
        fd: std::os::fd::OwnedFd,
        base: u64,
        len: u64,
    ) -> Result<Backing, BackingError> {
        let file = std::fs::File::from(fd);
        let path = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ))
        .unwrap_or_else(|_| "a shared descriptor".into());
        let open = |source| BackingError::Open {
            backing: "shared file",
            path: path.clone(),
            source,
        };
        let meta = file.metadata().map_err(open)?;
        if !meta.file_type().is_file() {
            return Err(BackingError::WrongFileType {
                path,
                found: describe(meta.file_type()),
                wanted: "a regular file",
            });
        }
        let whole = Backing {
            base: 0,
            len: meta.len(),
            page: Order::BASE,
            uffd: file_uffd_modes(&file),
            kind: BackingKind::File {
                path: path.clone(),
                dax: dax_mount(meta.dev()),
            },
            fd: file.into(),
        };
        whole.window(base, len)
    }

    /// `len` bytes of the regular file at `path` from byte `offset` (both multiples of 4 KiB,
    /// inside the file), as a backing of its own: byte 0 of the backing is byte `offset` of
    /// the file. How a namespace's data is served from its region file.
    pub fn open_file_window(
        path: impl AsRef<Path>,
        offset: u64,
        len: u64,
    ) -> Result<Backing, BackingError> {
        Backing::open_file(path)?.window(offset, len)
    }

    /// `len` bytes of this backing from byte `offset` (both multiples of its page size,
    /// inside it), as a backing of its own over the same file (its descriptor duplicated):
    /// byte 0 of the window is byte `offset` of this backing.
    pub fn window(&self, offset: u64, len: u64) -> Result<Backing, BackingError> {
        let page = self.page;
        let whole = self;
        for (what, value) in [("offset", offset), ("length", len)] {
            if !value.is_multiple_of(page.bytes()) {
                return Err(BackingError::Unaligned {
                    what,
                    value,
                    page,
                    backing: whole.kind.to_string(),
                });
            }
        }
        if len == 0 {
            return Err(BackingError::Empty);
        }
        if offset.checked_add(len).is_none_or(|end| end > whole.len) {
            return Err(BackingError::OutOfRange {
                offset,
                len,
                end: whole.len,
            });
        }
        let fd = self.fd.try_clone().map_err(|source| BackingError::Open {
            backing: "file window",
            path: std::path::PathBuf::from(self.kind.to_string()),
            source,
        })?;
        Ok(Backing {
            fd,
            base: self.base + offset,
            len,
            page,
            uffd: self.uffd,
            kind: self.kind.clone(),
        })
    }

    /// A new sparse regular file of `len` bytes (a multiple of 4 KiB); refused if `path`
    /// exists.
    pub fn create_file(path: impl AsRef<Path>, len: u64) -> Result<Backing, BackingError> {
        let path = path.as_ref();
        let kind = BackingKind::File {
            path: path.to_path_buf(),
            dax: DaxMount::Unknown,
        };
        super::memfd::check_len(len, Order::BASE, &kind)?;
        let create = |source| BackingError::Create {
            backing: kind.to_string(),
            len,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(create)?;
        if let Err(e) = file.set_len(len) {
            let _ = std::fs::remove_file(path);
            return Err(create(e));
        }
        drop(file);
        Backing::open_file(path)
    }
}

fn describe(ty: std::fs::FileType) -> &'static str {
    if ty.is_dir() {
        "a directory"
    } else if ty.is_char_device() {
        "a character device"
    } else if ty.is_block_device() {
        "a block device"
    } else if ty.is_fifo() {
        "a fifo"
    } else if ty.is_socket() {
        "a socket"
    } else if ty.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// What the mount of device `dev` (a file's `st_dev`) says about DAX.
fn dax_mount(dev: u64) -> DaxMount {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => dax_in_mountinfo(&text, rustix::fs::major(dev), rustix::fs::minor(dev)),
        Err(_) => DaxMount::Unknown,
    }
}

/// Finds the mount of `major:minor` in a `mountinfo` text and reads its DAX option. A line is
/// `id parent major:minor root mountpoint mount-options [optional fields] - fstype source
/// super-options`; ext4 and xfs state DAX in the super options, so both option lists are read.
pub(super) fn dax_in_mountinfo(text: &str, major: u32, minor: u32) -> DaxMount {
    let dev = format!("{major}:{minor}");
    for line in text.lines() {
        let mut fields = line.split(' ');
        if fields.nth(2) != Some(dev.as_str()) {
            continue;
        }
        let mount_opts = fields.nth(2).unwrap_or("");
        let super_opts = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split(' ').nth(2))
            .unwrap_or("");
        let mut found = DaxMount::Never;
        for opt in mount_opts.split(',').chain(super_opts.split(',')) {
            match opt {
                "dax" | "dax=always" => return DaxMount::Always,
                "dax=inode" => found = DaxMount::PerInode,
                _ => {}
            }
        }
        return found;
    }
    DaxMount::Unknown
}

/// A fresh path in the temporary directory for a test's file; removed on drop.
#[cfg(test)]
pub(crate) struct TempPath(pub(crate) std::path::PathBuf);

#[cfg(test)]
impl TempPath {
    pub(crate) fn new(tag: &str) -> TempPath {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("devmap-{tag}-{}-{n}", std::process::id()));
        // Anything already there was left by a dead process that had this pid (a test child
        // that died of SIGBUS, as some must, runs no destructor): a live pid is ours alone.
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    /// A path on tmpfs (`/dev/shm`), where file mappings can be registered with userfaultfd.
    pub(crate) fn on_tmpfs(tag: &str) -> TempPath {
        let t = TempPath::new(tag);
        let name =
            t.0.file_name()
                .map(std::ffi::OsStr::to_owned)
                .unwrap_or_default();
        let shm = std::path::Path::new("/dev/shm");
        let on_tmpfs = rustix::fs::statfs(shm).is_ok_and(|st| st.f_type as u64 == 0x0102_1994);
        assert!(on_tmpfs, "these tests need /dev/shm mounted as tmpfs");
        let path = shm.join(name);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }
}

#[cfg(test)]
impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}
