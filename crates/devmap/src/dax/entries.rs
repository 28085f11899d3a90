//! How the fault path inserts a leaf's page-table entries where the device catches touches
//! (step 6 of a fault, after `DeviceCore::install_leaf`): one `UFFDIO_ZEROPAGE` for a fresh
//! shmem leaf; otherwise the leaf's bytes allocated in the backing and one `UFFDIO_CONTINUE`;
//! the pages of a leaf the zero-ahead pool has ready mapped as they are; poison markers for the
//! poisoned pages of a leaf at `Page` granularity. And where the backing's bytes are allocated:
//! through the side window for a caught hugetlb fault, with `fallocate` elsewhere, and ahead of
//! any fault for the pool (`prepare_ahead`).

use super::DaxError;
use super::device_core::{DeviceCore, MappingCore};
use crate::addr::{Order, PAGE_SIZE};
use crate::backing::{BackingError, UffdError, Userfaultfd};
use crate::folio::FolioRef;

impl DeviceCore {
    /// Inserts the page-table entries of the leaf at byte `rel` of `m`, for a window
    /// registered with the userfaultfd; otherwise the kernel maps the bytes on its own at the
    /// first touch, and there is nothing to do.
    ///
    /// A shmem leaf none of whose pages exist yet is allocated, zeroed and mapped by one
    /// `UFFDIO_ZEROPAGE`. From the first page that exists (the kernel stops there with
    /// `EEXIST`), and for hugetlb, which offers no zeropage, the rest of the leaf is allocated
    /// in the backing (`fallocate`, which keeps existing bytes) and mapped by one
    /// `UFFDIO_CONTINUE`. (`UFFDIO_COPY` from zeros would fill hugetlb too, but when its source
    /// is not yet mapped the kernel takes a second huge page from the pool for the copy, and
    /// it measured no faster.) Entries another fault mapped first are fine. `folio` is the
    /// fault's cursor on the leaf: the poison checks read through it.
    pub(super) fn map_entries(
        &self,
        m: &MappingCore,
        rel: u64,
        folio: &FolioRef<'_>,
    ) -> Result<(), DaxError> {
        let Some(uffd) = m.uffd.as_deref() else {
            return Ok(());
        };
        let leaf = self.align.bytes();
        let head = folio.pfn();
        // Claimed whatever happens next, so the pool never prepares a leaf a fault reached.
        let ready = self.take_ready(m, rel);
        if folio.poisoned_page().is_none() {
            if ready {
                return self.map_ready(uffd, m, rel, leaf);
            }
            return self.map_run(uffd, m, rel, leaf);
        }
        // `Page` granularity (a `Leaf` device refused the fault): the clean runs between the
        // poisoned pages are mapped, each poisoned page gets a poison marker.
        let mut at = 0;
        for bad in self.poisoned_in_leaf(folio)? {
            let off = bad.offset_from(head) * PAGE_SIZE;
            if off > at {
                self.map_run(uffd, m, rel + at, off - at)?;
            }
            uffd.poison(m.base as u64 + rel + off, PAGE_SIZE)?;
            at = off + PAGE_SIZE;
        }
        if at < leaf {
            self.map_run(uffd, m, rel + at, leaf - at)?;
        }
        Ok(())
    }

    /// Maps `len` bytes from byte `rel` of `m`, as `map_entries` describes.
    pub(super) fn map_run(
        &self,
        uffd: &Userfaultfd,
        m: &MappingCore,
        rel: u64,
        len: u64,
    ) -> Result<(), DaxError> {
        let addr = m.base as u64 + rel;
        let mut done = 0;
        if self.backing.page_size() == Order::BASE {
            // Stopped by a page that exists, it wakes only what it filled: the toucher
            // sleeps on until the continue below maps its page.
            let r = uffd.zeropage(addr, len)?;
            if !r.raced {
                return Ok(());
            }
            done = r.bytes;
        }
        self.allocate(m.offset + rel + done, len - done)?;
        uffd.continue_(addr + done, len - done)?;
        Ok(())
    }

    /// Claims the leaf at byte `rel` of `m` from the zero-ahead pool, and says whether the
    /// pool had it ready for this fault to map.
    pub(super) fn take_ready(&self, m: &MappingCore, rel: u64) -> bool {
        self.zero_ahead
            .as_ref()
            .is_some_and(|pool| pool.take((m.offset + rel) / self.align.bytes()))
    }

    /// Maps the `len` bytes from byte `rel` of `m`, leaves the zero-ahead pool allocated: one
    /// `UFFDIO_CONTINUE`. Should a page of them have left the backing since, the rest is
    /// allocated from there and mapped as `map_run` would; a page already mapped here (a
    /// touch of it, caught meanwhile, had it mapped) is stepped over.
    pub(super) fn map_ready(
        &self,
        uffd: &Userfaultfd,
        m: &MappingCore,
        rel: u64,
        len: u64,
    ) -> Result<(), DaxError> {
        let addr = m.base as u64 + rel;
        let page = self.backing.page_size().bytes();
        let mut at = 0;
        let mut allocated_from = None;
        while at < len {
            match uffd.continue_(addr + at, len - at) {
                Ok(r) if !r.raced => return Ok(()),
                Ok(r) => at += r.bytes + page,
                Err(UffdError::Ioctl { start, source, .. })
                    if source.raw_os_error() == Some(rustix::io::Errno::FAULT.raw_os_error())
                        && allocated_from != Some(start) =>
                {
                    // Allocated once from each place it stopped: a second stop there is an
                    // error, not a loop.
                    at = start - addr;
                    self.allocate(m.offset + rel + at, len - at)?;
                    allocated_from = Some(start);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Allocates `[offset, offset + len)` in the backing ahead of any fault, for the zero-ahead
    /// pool, keeping bytes that exist and leaving new pages zeroed: a hugetlb backing with
    /// `fallocate`, which takes no lock of the process's address space (only the inode lock,
    /// which no fault takes, and each page's fault mutex); a memfd through the side window
    /// (`MADV_POPULATE_WRITE`), since shmem's `fallocate` leaves its pages to be cleared by the
    /// fault that maps them. Populating holds the address-space lock while it clears, and the
    /// pool's back-to-back populates of hugetlb leaves kept a thread that mapped memory
    /// waiting up to 6–16 ms (and every fault that needed that lock queued behind it); with
    /// `fallocate`, at most 0.3–1.1 ms (BENCHMARKS.md).
    pub(super) fn prepare_ahead(&self, offset: u64, len: u64) -> Result<(), BackingError> {
        match &self.side {
            Some(side) if self.backing.page_size() == Order::BASE => {
                side.populate_write(offset, len)
            }
            _ => self.backing.allocate(offset, len),
        }
    }

    /// Whether [`prepare_ahead`](Self::prepare_ahead) clears its pages under a lock that
    /// faults of other leaves may wait for: hugetlb's fault mutexes are a table hashed by file
    /// and index, `8 × possible CPUs` of them (16 on two CPUs), which `fallocate` takes for each
    /// page it fills. A shmem page is cleared under its own folio's lock.
    pub(super) fn prepare_holds_fault_mutex(&self) -> bool {
        self.backing.page_size() > Order::BASE
    }

    /// Allocates `[offset, offset + len)` in the backing, keeping bytes that exist. A hugetlb
    /// backing is faulted in through the side window, where a fault holds only the hugetlb
    /// fault mutex of its own page, so concurrent faults of different leaves allocate and
    /// zero their pages at once; `fallocate` holds the inode lock throughout and would
    /// serialise them. The side window keeps the entry (see [`DeviceCore::side`]).
    /// Elsewhere, `fallocate`.
    pub(super) fn allocate(&self, offset: u64, len: u64) -> Result<(), DaxError> {
        match &self.side {
            Some(side) if self.backing.page_size() > Order::BASE => {
                side.populate_write(offset, len)?;
            }
            _ => self.backing.allocate(offset, len)?,
        }
        Ok(())
    }
}
