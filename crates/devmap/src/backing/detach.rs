//! Taking a range's page-table entries out of a mapping in one step, and tearing them down
//! later, off the caller's path: how memory failure revokes a leaf that a memfd emulates with
//! 512 4 KiB entries (a 2 MiB leaf) without paying for each page while the caller waits.
//!
//! `MADV_DONTNEED` of such a leaf costs 50–100 µs per mapping, nearly all of it per page:
//! each page's rmap count, reference, accessed bit (which moves it on the LRU), dirty bit and
//! memcg statistics. The kernel's own device-dax leaf is one PMD entry and costs none of that.
//! [`Detached::take`] moves the range's entries out with `mremap(MREMAP_DONTUNMAP)` instead,
//! to an address the kernel picks: the entries move one by one without a look at their pages
//! (the kernel does not move whole page tables out of a VMA registered with a userfaultfd
//! that did not ask for remap events), the range is flushed from the TLB, and the mapping's
//! range stays in place, mapping the same bytes of the same file with the same userfaultfd
//! registration and holding no entry: the state `MADV_DONTNEED` leaves, in 5–10 µs. The
//! per-page work is still owed by the moved entries: [`Detached::release`] hands them to one
//! reaper thread per process, which zaps each range (`MADV_DONTNEED`, under that VMA's own
//! lock, so the process's mmap lock is not held through the zap) and unmaps it, off the
//! caller's path. [`drain`] waits until everything released before it is gone.
//!
//! Nothing moved out is reachable from outside this module: its addresses are never handed
//! out, and the bytes stay in the backing, where the mapping reaches them again once its
//! entries are mapped anew.

use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender, SyncSender};

use super::{BackingError, Mmap};

/// Entries taken out of mappings by [`Detached::take`], each range at an address the kernel
/// chose, owned here. Dropping it zaps them and unmaps their ranges, in the caller's thread;
/// [`Detached::release`] does that on the reaper.
#[derive(Debug, Default)]
pub struct Detached {
    /// (address, length) of each range moved out.
    moved: Vec<(usize, usize)>,
}

impl Detached {
    /// Holds nothing yet.
    pub fn new() -> Detached {
        Detached::default()
    }

    /// Moves the entries of `[offset, offset + len)` of `from` (inside the mapping, page
    /// aligned) out to an address the kernel picks (`mremap` with `MREMAP_DONTUNMAP`). The
    /// range stays mapped, to the same bytes with the same userfaultfd registration, and holds
    /// no entry: the next touch faults (or is caught) as after `MADV_DONTNEED`. Fails, leaving
    /// `from` as it was, when the range is not inside one VMA (the kernel moves within one),
    /// or on kernels before 5.13 (no `MREMAP_DONTUNMAP` for shared mappings): the caller zaps
    /// instead.
    pub fn take(&mut self, from: &Mmap, offset: u64, len: u64) -> Result<(), BackingError> {
        let (start, n) = from.sub_range(offset, len)?;
        self.moved.reserve(1);
        // SAFETY: `[start, start + n)` lies inside `from`'s shared mapping, which `from` owns.
        // `MREMAP_DONTUNMAP` leaves it mapped to the same bytes and only moves its entries, as
        // `MADV_DONTNEED` drops them: a later access through it reads the backing's same bytes
        // or faults, and every access through `Mmap` is atomic. The entries go to a range the
        // kernel picks among unmapped addresses, so no Rust object lies there. The call is a
        // raw `syscall` because `MREMAP_DONTUNMAP` takes the new-address argument (null:
        // anywhere) and `rustix::mm::mremap`, like glibc's `mremap` without `MREMAP_FIXED`,
        // does not pass one (glibc's call failed with EINVAL here).
        let to = unsafe {
            libc::syscall(
                libc::SYS_mremap,
                from.as_ptr().as_ptr().add(start),
                n,
                n,
                libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP,
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if to == -1 {
            let e = std::io::Error::last_os_error();
            return Err(from.fail(offset, len, "mremap(MREMAP_DONTUNMAP)", e));
        }
        self.moved.push((to as usize, n));
        Ok(())
    }

    /// Ranges taken so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.moved.len()
    }

    /// Where range `i` went, for tests to look at.
    #[cfg(test)]
    pub(crate) fn moved_to(&self, i: usize) -> usize {
        self.moved[i].0
    }

    /// Whether no range was taken.
    pub fn is_empty(&self) -> bool {
        self.moved.is_empty()
    }

    /// Hands what was taken to the reaper thread, which zaps and unmaps it (or does that here
    /// if the reaper cannot be started).
    pub fn release(self) {
        if self.is_empty() {
            return;
        }
        match reaper() {
            Some(tx) => {
                if let Err(mpsc::SendError(Job::Reap(d))) = tx.send(Job::Reap(self)) {
                    drop(d);
                }
            }
            None => drop(self),
        }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        for &(at, len) in &self.moved {
            // SAFETY: `[at, at + len)` is a range `take` moved out: a shared mapping of a
            // backing that only this value knows of and nothing references. Zapping it first
            // (under its own VMA lock) keeps the per-page work out of `munmap`, which holds
            // the process's mmap lock; neither changes a byte anyone sees.
            unsafe {
                let _ = rustix::mm::madvise(
                    at as *mut std::ffi::c_void,
                    len,
                    rustix::mm::Advice::LinuxDontNeed,
                );
                let _ = rustix::mm::munmap(at as *mut std::ffi::c_void, len);
            }
        }
    }
}

/// What the reaper is sent.
enum Job {
    /// Tear this down.
    Reap(Detached),
    /// Answer once everything sent before is torn down.
    Barrier(SyncSender<()>),
}

/// The reaper thread's queue, started on first use; `None` if the thread could not start, or
/// in a child forked after it started (which has the queue but not the thread).
fn reaper() -> Option<&'static Sender<Job>> {
    static REAPER: OnceLock<Option<(u32, Sender<Job>)>> = OnceLock::new();
    let (pid, tx) = REAPER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("devmap-reaper".into())
                .spawn(move || {
                    batch();
                    for job in rx {
                        match job {
                            Job::Reap(d) => drop(d),
                            Job::Barrier(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                })
                .map_err(|e| tracing::warn!(error = %e, "cannot start the reaper thread: detached entries are torn down in place"))
                .ok()
                .map(|_| (std::process::id(), tx))
        })
        .as_ref()?;
    (*pid == std::process::id()).then_some(tx)
}

/// Makes the calling thread `SCHED_BATCH`: it keeps its fair share of the CPU, but waking it
/// never preempts the thread that woke it. Without this, handing entries to the reaper can
/// put it on the releasing thread's CPU at once, and memory failure waits out a zap it was
/// meant not to wait for (seen: a quarter of single-error runs took 250 µs more).
fn batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` for the call's duration; pid 0 is the calling
    // thread, whose policy alone changes.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "the reaper stays SCHED_OTHER");
    }
}

/// Starts the reaper thread if it is not running, so that the first [`Detached::release`]
/// does not wait for a thread to start.
pub fn start() {
    let _ = reaper();
}

/// Waits until every [`Detached`] released before this call is torn down and unmapped.
pub fn drain() {
    let Some(tx) = reaper() else {
        return;
    };
    let (done, wait) = mpsc::sync_channel(1);
    if tx.send(Job::Barrier(done)).is_ok() {
        let _ = wait.recv();
    }
}
