//! Memfd backings: shmem (4 KiB pages, sparse, userfaultfd MISSING and MINOR) and hugetlb
//! (2 MiB or 1 GiB pages, userfaultfd MISSING and MINOR), and the kernel's huge page pool counts, read
//! from sysfs so callers can see whether a hugetlb backing will map before they try.

use std::path::{Path, PathBuf};

use rustix::fs::MemfdFlags;

use super::{Backing, BackingError, BackingKind, Bytes, UffdModes, round_up};
use crate::addr::Order;

/// Where the kernel lists its huge page pools, one directory per size.
pub(super) const HUGEPAGES_SYSFS: &str = "/sys/kernel/mm/hugepages";

/// A huge page size the kernel can back a hugetlb memfd with on x86-64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HugePageSize {
    /// 2 MiB pages (PMD leaves).
    Size2M,
    /// 1 GiB pages (PUD leaves).
    Size1G,
}

impl HugePageSize {
    /// The page size as an order of base pages.
    pub const fn order(self) -> Order {
        match self {
            HugePageSize::Size2M => Order::PMD,
            HugePageSize::Size1G => Order::PUD,
        }
    }

    /// The pool's directory name under `/sys/kernel/mm/hugepages`.
    fn sysfs_dir(self) -> String {
        format!("hugepages-{}kB", self.order().bytes() / 1024)
    }

    fn memfd_flag(self) -> MemfdFlags {
        match self {
            HugePageSize::Size2M => MemfdFlags::HUGE_2MB,
            HugePageSize::Size1G => MemfdFlags::HUGE_1GB,
        }
    }
}

/// How many huge pages of one size the kernel's pool holds, and how many are not yet used or
/// reserved by a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugePageCounts {
    /// `nr_hugepages`: pages in the pool.
    pub total: u64,
    /// `free_hugepages`: pages neither faulted in nor reserved by a shared mapping.
    pub free: u64,
}

/// The kernel's pool of huge pages of `size`, read from
/// `/sys/kernel/mm/hugepages/hugepages-<size>kB/{nr_hugepages,free_hugepages}`.
pub fn huge_pages(size: HugePageSize) -> Result<HugePageCounts, BackingError> {
    huge_pages_in(Path::new(HUGEPAGES_SYSFS), size)
}

/// [`huge_pages`] under another sysfs directory.
pub(super) fn huge_pages_in(
    root: &Path,
    size: HugePageSize,
) -> Result<HugePageCounts, BackingError> {
    let dir = root.join(size.sysfs_dir());
    Ok(HugePageCounts {
        total: read_u64(&dir.join("nr_hugepages"))?,
        free: read_u64(&dir.join("free_hugepages"))?,
    })
}

/// A decimal number alone on its line, as sysfs writes one.
pub(super) fn read_u64(path: &Path) -> Result<u64, BackingError> {
    let sysfs = |source| BackingError::Sysfs {
        path: PathBuf::from(path),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(sysfs)?;
    text.trim().parse().map_err(|_| {
        sysfs(std::io::Error::other(format!(
            "{:?} is not a decimal number",
            text.trim()
        )))
    })
}

impl Backing {
    /// A shmem memfd of `len` bytes (a multiple of 4 KiB). It is sparse: pages are allocated
    /// on first touch, so a 1 TiB backing costs nothing until written.
    pub fn memfd(len: u64) -> Result<Backing, BackingError> {
        let kind = BackingKind::Memfd;
        check_len(len, Order::BASE, &kind)?;
        let fd = create(&kind, len, MemfdFlags::CLOEXEC)?;
        Ok(Backing {
            base: 0,
            fd,
            len,
            page: Order::BASE,
            uffd: UffdModes::MISSING | UffdModes::MINOR,
            kind,
        })
    }

    /// A hugetlb memfd of `len` bytes, which must be a multiple of the huge page size. Its
    /// pages come from the kernel's pool (see [`huge_pages`]); they are reserved when a window
    /// is mapped, so [`Backing::map_shared`] is where a short pool shows.
    pub fn hugetlb(len: u64, size: HugePageSize) -> Result<Backing, BackingError> {
        let kind = BackingKind::Hugetlb(size);
        check_len(len, size.order(), &kind)?;
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB | size.memfd_flag();
        let fd = create(&kind, len, flags)?;
        Ok(Backing {
            base: 0,
            fd,
            len,
            page: size.order(),
            uffd: UffdModes::MISSING | UffdModes::MINOR,
            kind,
        })
    }
}

/// Refuses empty lengths and lengths that are not a multiple of `page`, naming one that is.
pub(super) fn check_len(len: u64, page: Order, kind: &BackingKind) -> Result<(), BackingError> {
    if len == 0 {
        return Err(BackingError::Empty);
    }
    if !len.is_multiple_of(page.bytes()) {
        return Err(BackingError::Unaligned {
            what: "length",
            value: len,
            page,
            backing: kind.to_string(),
        });
    }
    Ok(())
}

/// `memfd_create` then `ftruncate` to `len`.
fn create(
    kind: &BackingKind,
    len: u64,
    flags: MemfdFlags,
) -> Result<std::os::fd::OwnedFd, BackingError> {
    let err = |e: rustix::io::Errno| BackingError::Create {
        backing: kind.to_string(),
        len,
        source: e.into(),
    };
    let fd = rustix::fs::memfd_create("devmap", flags).map_err(err)?;
    rustix::fs::ftruncate(&fd, len).map_err(err)?;
    Ok(fd)
}

/// What a failed hugetlb mapping can be blamed on: the pool's free pages, if readable.
pub(super) fn pool_hint(size: HugePageSize, len: u64) -> String {
    let page = size.order().bytes();
    match huge_pages(size) {
        Ok(c) => format!(
            " (it needs {} free {} pages; the pool has {} free of {})",
            round_up(len, size.order()) / page,
            Bytes(page),
            c.free,
            c.total
        ),
        Err(_) => String::new(),
    }
}

/// Huge pages reserved for a test, given back on drop.
#[cfg(test)]
pub(crate) mod reserve {
    use std::sync::{Mutex, MutexGuard, PoisonError};

    use super::*;

    /// Serialises the tests that use the pool, so that one's reservation is not another's.
    static POOL: Mutex<()> = Mutex::new(());

    /// At least `n` free huge pages of one size, for as long as this lives; the pages added to
    /// the pool to get there are taken out again on drop.
    pub(crate) struct HugePages {
        size: HugePageSize,
        added: u64,
        _pool: MutexGuard<'static, ()>,
    }

    impl HugePages {
        /// Makes sure `n` pages of `size` are free, growing the pool (as root) if needed.
        /// `Err` says why not, for the test to print before skipping.
        pub(crate) fn reserve(size: HugePageSize, n: u64) -> Result<HugePages, String> {
            let guard = POOL.lock().unwrap_or_else(PoisonError::into_inner);
            let before = huge_pages(size).map_err(|e| e.to_string())?;
            let mut pages = HugePages {
                size,
                added: 0,
                _pool: guard,
            };
            if before.free >= n {
                return Ok(pages);
            }
            let want = before.total + (n - before.free);
            write_total(size, want)?;
            let after = huge_pages(size).map_err(|e| e.to_string())?;
            pages.added = after.total.saturating_sub(before.total);
            if after.free < n {
                return Err(format!(
                    "asked the kernel for {want} {} pages, it has {} of which {} free \
                     (memory too fragmented or too small)",
                    Bytes(size.order().bytes()),
                    after.total,
                    after.free
                ));
            }
            Ok(pages)
        }
    }

    fn write_total(size: HugePageSize, total: u64) -> Result<(), String> {
        let path = Path::new(HUGEPAGES_SYSFS)
            .join(size.sysfs_dir())
            .join("nr_hugepages");
        std::fs::write(&path, total.to_string()).map_err(|e| {
            format!(
                "cannot write {total} to {} (root needed): {e}",
                path.display()
            )
        })
    }

    impl Drop for HugePages {
        fn drop(&mut self) {
            if self.added == 0 {
                return;
            }
            if let Ok(now) = huge_pages(self.size) {
                let _ = write_total(self.size, now.total.saturating_sub(self.added));
            }
        }
    }
}
