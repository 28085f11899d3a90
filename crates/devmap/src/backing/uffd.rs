//! A safe userfaultfd: the descriptor ([`Userfaultfd`]), registration of [`Mmap`]s,
//! the events the kernel reports on them ([`UffdEvent`]) and the ioctls that resolve a fault
//! (`UFFDIO_ZEROPAGE`, `UFFDIO_COPY`, `UFFDIO_CONTINUE`, `UFFDIO_POISON`, `UFFDIO_WAKE`).
//! Nothing here decides what a fault means; the device front end does, and calls in here to
//! resolve it.
//!
//! Which modes work on which backing here (kernel 6.18, x86-64):
//!
//! | backing | MISSING | MINOR |
//! |---|---|---|
//! | shmem memfd | `zeropage`, `copy` | `continue_`, `poison` |
//! | hugetlb memfd | caught; resolved by `fallocate` + `continue_` | `continue_`, `poison`, whole huge pages |
//! | file, device-dax | no: registration fails (`EINVAL`) | no |
//!
//! The modes a backing offers are [`Backing::uffd_modes`](super::Backing::uffd_modes).
//!
//! Every resolving call takes a whole range and resolves it in one ioctl. A device's leaf (its
//! `align`: 4 KiB, 2 MiB or 1 GiB) is the unit the fault path works in, so the handler fills the
//! leaf around the faulting address at once: one ioctl for a 2 MiB leaf of a memfd costs less
//! than the kernel's 512 first-touch faults of the same pages, and no other page of the leaf
//! faults again. Ranges must be multiples of the registered mapping's page size (4 KiB for
//! shmem, the huge page size for hugetlb) and lie inside one registered mapping; the kernel
//! answers `ENOENT` for a range that leaves it, surfaced as [`UffdError::NotRegistered`].
//!
//! The descriptor is non-blocking and opened with `UFFD_USER_MODE_ONLY`.
//! [`Userfaultfd::wait_event`] polls with a timeout; [`Userfaultfd::wait_event_or`] sleeps
//! until an event or until a second descriptor (a handler's stop eventfd) is readable, so an
//! idle handler thread never wakes; [`Userfaultfd::waiter`] does the same for one of several
//! threads serving the descriptor, and a fault wakes only one of them. Dropping the descriptor
//! ends every registration, and threads blocked in a fault on it retry the fault without it.
//!
//! This file holds the module's only userfaultfd `unsafe`: the syscall, the ioctls (each with a
//! struct of the kernel's layout from `linux-raw-sys`), and taking ownership of the descriptor a
//! fork event carries.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use linux_raw_sys::general as uapi;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::ioctl::{Opcode, Updater, opcode};
use rustix::mm::UserfaultfdFlags;

use super::uffd_types::{RangeIoctls, Resolved, UffdError, UffdEvent, UffdFeatures};
use super::{Mmap, UffdModes};
use crate::addr::Order;

const GROUP: u8 = uapi::UFFDIO as u8;
const API: Opcode = opcode::read_write::<uapi::uffdio_api>(GROUP, uapi::_UFFDIO_API as u8);
const REGISTER: Opcode =
    opcode::read_write::<uapi::uffdio_register>(GROUP, uapi::_UFFDIO_REGISTER as u8);
// The kernel declares these two `_IOR` although it only reads the range.
const UNREGISTER: Opcode =
    opcode::read::<uapi::uffdio_range>(GROUP, uapi::_UFFDIO_UNREGISTER as u8);
const WAKE: Opcode = opcode::read::<uapi::uffdio_range>(GROUP, uapi::_UFFDIO_WAKE as u8);
const COPY: Opcode = opcode::read_write::<uapi::uffdio_copy>(GROUP, uapi::_UFFDIO_COPY as u8);
const ZEROPAGE: Opcode =
    opcode::read_write::<uapi::uffdio_zeropage>(GROUP, uapi::_UFFDIO_ZEROPAGE as u8);
const CONTINUE: Opcode =
    opcode::read_write::<uapi::uffdio_continue>(GROUP, uapi::_UFFDIO_CONTINUE as u8);
const POISON: Opcode = opcode::read_write::<uapi::uffdio_poison>(GROUP, uapi::_UFFDIO_POISON as u8);

/// Bytes of one `struct uffd_msg`.
const MSG_LEN: usize = size_of::<uapi::uffd_msg>();
const _: () = assert!(MSG_LEN == 32);

/// What [`Userfaultfd::fill`] does when the kernel stops at a page that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnExist {
    /// Wake the whole range: another resolver filled that page, and a thread still missing a
    /// page after it faults again and is resolved then.
    WakeRange,
    /// Wake nothing more than the kernel woke (the part filled): the caller goes on to fill
    /// the rest, and that call wakes it.
    LeaveToCaller,
}

/// How many times a resolving ioctl is retried while the kernel answers `EAGAIN` without
/// progress (the address space is changing under it: a fork, mremap or unmap in flight).
const MAX_RETRIES: u32 = 10_000;

/// A registered range: its page size, for alignment checks.
#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    len: u64,
    page: Order,
}

/// A userfaultfd descriptor after `UFFDIO_API`. Registrations end when it is dropped.
#[derive(Debug)]
pub struct Userfaultfd {
    fd: OwnedFd,
    granted: UffdFeatures,
    available: UffdFeatures,
    regions: parking_lot::Mutex<Vec<Region>>,
}

impl Userfaultfd {
    /// Opens a non-blocking, close-on-exec userfaultfd for user-mode faults and enables
    /// `features`; the kernel refuses any it does not offer ([`UffdError::Api`]).
    pub fn new(features: UffdFeatures) -> Result<Userfaultfd, UffdError> {
        let fd = create()?;
        let available = match api(&fd, features.0) {
            Ok(available) => UffdFeatures(available),
            Err(e) => {
                // A refused handshake reports no features: ask a second descriptor, for
                // nothing, what the kernel offers.
                let available = create().ok().and_then(|fd| api(&fd, 0).ok());
                return Err(UffdError::Api {
                    requested: features,
                    available: available.map(UffdFeatures),
                    source: e.into(),
                });
            }
        };
        Ok(Userfaultfd {
            fd,
            granted: features,
            available,
            regions: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Adopts a userfaultfd that another process opened, enabled `features` on (its own
    /// `UFFDIO_API`) and registered its own mappings with, then passed here over a Unix socket:
    /// the resolving calls act on that process's address space, and its faults are read here.
    /// Refuses a descriptor that is not a userfaultfd; makes it non-blocking (a flag its owner
    /// shares, and does not need: it only registers). The owner tells which ranges it
    /// registered ([`note_registered`](Self::note_registered)), so that resolving calls are
    /// checked against their page size as for a registration made here.
    ///
    /// Nothing this process maps can be reached through such a descriptor: a userfaultfd acts
    /// on the address space of the process that opened it, and this process never hands its
    /// own out.
    pub fn adopt(fd: OwnedFd, features: UffdFeatures) -> Result<Userfaultfd, UffdError> {
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let found = std::fs::read_link(&link)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("unreadable ({e})"));
        if found != "anon_inode:[userfaultfd]" {
            return Err(UffdError::NotUserfaultfd { found });
        }
        let flags =
            rustix::fs::fcntl_getfl(&fd).map_err(|e| UffdError::Read { source: e.into() })?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| UffdError::Read { source: e.into() })?;
        Ok(Userfaultfd {
            fd,
            granted: features,
            available: features,
            regions: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Records that the owner of an adopted descriptor registered `[start, start + len)`, a
    /// mapping of `page`-sized pages (see [`adopt`](Self::adopt)).
    pub fn note_registered(&self, start: u64, len: u64, page: Order) {
        let mut regions = self.regions.lock();
        regions.retain(|r| r.start + r.len <= start || start + len <= r.start);
        regions.push(Region { start, len, page });
    }

    /// The page size of the registered range holding `addr` (4 KiB if none does).
    pub fn page_size_at(&self, addr: u64) -> Order {
        self.regions
            .lock()
            .iter()
            .find(|r| r.start <= addr && addr - r.start < r.len)
            .map_or(Order::BASE, |r| r.page)
    }

    /// The features enabled on this descriptor (all that were asked for).
    pub fn granted(&self) -> UffdFeatures {
        self.granted
    }

    /// Every feature the kernel offers, as `UFFDIO_API` reported it.
    pub fn available(&self) -> UffdFeatures {
        self.available
    }

    /// Registers the whole of `mapping` in `modes` and returns the resolving ioctls the kernel
    /// allows on it. MISSING needs [`UffdFeatures::MISSING_SHMEM`] (4 KiB mappings) or
    /// [`UffdFeatures::MISSING_HUGETLBFS`] (huge pages) to have been granted, MINOR
    /// [`UffdFeatures::MINOR_SHMEM`] or [`UffdFeatures::MINOR_HUGETLBFS`]. The mapping's page
    /// size is remembered, for the alignment of the ranges resolved in it, until it is
    /// unregistered or another registration covers its addresses.
    pub fn register(&self, mapping: &Mmap, modes: UffdModes) -> Result<RangeIoctls, UffdError> {
        let start = mapping.as_ptr().as_ptr() as u64;
        let len = mapping.len() as u64;
        let page = mapping.page_size();
        let ioctl = "UFFDIO_REGISTER";
        if modes.is_empty() {
            return Err(UffdError::Ioctl {
                ioctl,
                start,
                len,
                source: std::io::Error::other("no mode asked for"),
            });
        }
        let huge = page > Order::BASE;
        if modes.contains(UffdModes::MISSING) {
            let needed = if huge {
                UffdFeatures::MISSING_HUGETLBFS
            } else {
                UffdFeatures::MISSING_SHMEM
            };
            self.need("MISSING registration", needed)?;
        }
        if modes.contains(UffdModes::MINOR) {
            let needed = if huge {
                UffdFeatures::MINOR_HUGETLBFS
            } else {
                UffdFeatures::MINOR_SHMEM
            };
            self.need("MINOR registration", needed)?;
        }
        let mut mode = 0;
        if modes.contains(UffdModes::MISSING) {
            mode |= u64::from(uapi::UFFDIO_REGISTER_MODE_MISSING);
        }
        if modes.contains(UffdModes::MINOR) {
            mode |= u64::from(uapi::UFFDIO_REGISTER_MODE_MINOR);
        }
        let mut reg = uapi::uffdio_register {
            range: uapi::uffdio_range { start, len },
            mode,
            ioctls: 0,
        };
        // SAFETY: `UFFDIO_REGISTER` reads and writes one `struct uffdio_register`. The range
        // is exactly a live `Mmap`, whose bytes are only accessed atomically, so
        // bytes the kernel later places there are no different from another mapping's write;
        // the registration ends when the mapping is unmapped.
        let r = unsafe { rustix::ioctl::ioctl(&self.fd, Updater::<REGISTER, _>::new(&mut reg)) };
        r.map_err(|e| fail(ioctl, start, len, e))?;
        let mut regions = self.regions.lock();
        regions.retain(|r| r.start + r.len <= start || start + len <= r.start);
        regions.push(Region { start, len, page });
        Ok(RangeIoctls(reg.ioctls))
    }

    /// Ends the registration of `mapping`. Threads waiting on a fault in it are woken and
    /// retry the fault without userfaultfd.
    pub fn unregister(&self, mapping: &Mmap) -> Result<(), UffdError> {
        let start = mapping.as_ptr().as_ptr() as u64;
        let len = mapping.len() as u64;
        let mut range = uapi::uffdio_range { start, len };
        // SAFETY: `UFFDIO_UNREGISTER` reads one `struct uffdio_range`.
        let r =
            unsafe { rustix::ioctl::ioctl(&self.fd, Updater::<UNREGISTER, _>::new(&mut range)) };
        r.map_err(|e| fail("UFFDIO_UNREGISTER", start, len, e))?;
        self.regions
            .lock()
            .retain(|r| r.start + r.len <= start || start + len <= r.start);
        Ok(())
    }

    /// Maps zero-filled pages over `[start, start + len)` (MISSING mode) and wakes the
    /// threads waiting on it.
    ///
    /// A page that already exists (`raced`: in a memfd, a page the page cache holds, mapped
    /// here or not) ends the call, and only what it filled is woken: the caller maps the rest
    /// (`UFFDIO_CONTINUE`, which wakes it). Waking the whole range there would send a toucher
    /// whose page is not yet mapped back into a second fault of the same page, and let a
    /// touch return while the rest of its leaf is still being mapped.
    pub fn zeropage(&self, start: u64, len: u64) -> Result<Resolved, UffdError> {
        let ioctl = "UFFDIO_ZEROPAGE";
        self.check(ioctl, start, len)?;
        self.fill(ioctl, start, len, OnExist::LeaveToCaller, |at, rest| {
            let mut z = uapi::uffdio_zeropage {
                range: uapi::uffdio_range {
                    start: at,
                    len: rest,
                },
                mode: 0,
                zeropage: 0,
            };
            // SAFETY: `UFFDIO_ZEROPAGE` reads and writes one `struct uffdio_zeropage`; the
            // kernel fills only pages missing from a range registered through `register`.
            let r = unsafe { rustix::ioctl::ioctl(&self.fd, Updater::<ZEROPAGE, _>::new(&mut z)) };
            (r, z.zeropage)
        })
    }

    /// Copies `src` into the pages of `[start, start + src.len())` (MISSING mode) and wakes
    /// the threads waiting on it.
    pub fn copy(&self, start: u64, src: &[u8]) -> Result<Resolved, UffdError> {
        let ioctl = "UFFDIO_COPY";
        let len = src.len() as u64;
        self.check(ioctl, start, len)?;
        let base = src.as_ptr() as u64;
        self.fill(ioctl, start, len, OnExist::WakeRange, |at, rest| {
            let mut c = uapi::uffdio_copy {
                dst: at,
                src: base + (at - start),
                len: rest,
                mode: 0,
                copy: 0,
            };
            // SAFETY: `UFFDIO_COPY` reads and writes one `struct uffdio_copy`. The source,
            // `[base + (at - start), +rest)`, lies inside `src`, which is borrowed for the
            // call and only read; the destination is filled only where pages are missing in a
            // range registered through `register`.
            let r = unsafe { rustix::ioctl::ioctl(&self.fd, Updater::<COPY, _>::new(&mut c)) };
            (r, c.copy)
        })
    }

    /// Maps the page-cache pages already behind `[start, start + len)` (MINOR mode) and wakes
    /// the threads waiting on it.
    pub fn continue_(&self, start: u64, len: u64) -> Result<Resolved, UffdError> {
        let ioctl = "UFFDIO_CONTINUE";
        self.check(ioctl, start, len)?;
        self.fill(ioctl, start, len, OnExist::WakeRange, |at, rest| {
            let mut c = uapi::uffdio_continue {
                range: uapi::uffdio_range {
                    start: at,
                    len: rest,
                },
                mode: 0,
                mapped: 0,
            };
            // SAFETY: `UFFDIO_CONTINUE` reads and writes one `struct uffdio_continue`; it maps
            // existing page-cache pages into a range registered through `register`.
            let r = unsafe { rustix::ioctl::ioctl(&self.fd, Updater::<CONTINUE, _>::new(&mut c)) };
            (r, c.mapped)
        })
    }

    /// Installs poison markers over `[start, start + len)`: the next access to any of its
    /// pages raises SIGBUS. Needs [`UffdFeatures::POISON`].
    pub fn poison(&self, start: u64, len: u64) -> Result<Resolved, UffdError> {
        let ioctl = "UFFDIO_POISON";
        self.need(ioctl, UffdFeatures::POISON)?;
        self.check(ioctl, start, len)?;
        self.fill(ioctl, start, len, OnExist::WakeRange, |at, rest| {
            let mut p = uapi::uffdio_poison {
                range: uapi::uffdio_range {
                    start: at,
                    len: rest,
                },
                mode: 0,
                updated: 0,
            };
            // SAFETY: `UFFDIO_POISON` reads and writes one `struct uffdio_poison`; it only
            // installs markers where nothing is mapped, in a range registered through
            // `register`, so no byte that Rust code can see changes.
            let r = unsafe { rustix::ioctl::ioctl(&self.fd, Updater::<POISON, _>::new(&mut p)) };
            (r, p.updated)
        })
    }

    /// Wakes the threads waiting on faults in `[start, start + len)` without resolving
    /// anything: they retry the access.
    pub fn wake(&self, start: u64, len: u64) -> Result<(), UffdError> {
        let ioctl = "UFFDIO_WAKE";
        self.check(ioctl, start, len)?;
        let mut range = uapi::uffdio_range { start, len };
        // SAFETY: `UFFDIO_WAKE` reads one `struct uffdio_range` and changes no memory.
        let r = unsafe { rustix::ioctl::ioctl(&self.fd, Updater::<WAKE, _>::new(&mut range)) };
        r.map_err(|e| fail(ioctl, start, len, e))
    }

    /// Reads one event if one is pending; `None` if none is.
    pub fn read_event(&self) -> Result<Option<UffdEvent>, UffdError> {
        let mut buf = [0u8; MSG_LEN];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(MSG_LEN) => return Ok(Some(decode(&buf))),
                Ok(n) => {
                    return Err(UffdError::Read {
                        source: std::io::Error::other(format!(
                            "{n} bytes read, a message is {MSG_LEN}"
                        )),
                    });
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(None),
                Err(e) => return Err(UffdError::Read { source: e.into() }),
            }
        }
    }

    /// Waits for one event, at most `timeout` if given; `None` when the time ran out.
    pub fn wait_event(&self, timeout: Option<Duration>) -> Result<Option<UffdEvent>, UffdError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(event) = self.read_event()? {
                return Ok(Some(event));
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
                None => None,
            };
            let ts = left.map(|l| Timespec {
                tv_sec: i64::try_from(l.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(l.subsec_nanos()),
            });
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(UffdError::Read { source: e.into() }),
            }
        }
    }

    /// Waits without a time limit for one event, or until `stop` is readable (for instance an
    /// eventfd written to stop the caller): `None` then, even if an event is pending. Wakes
    /// only for an event or the stop. Several threads may wait on one descriptor: every event
    /// wakes them all, one reads it and the others wait again.
    pub fn wait_event_or(&self, stop: BorrowedFd<'_>) -> Result<Option<UffdEvent>, UffdError> {
        loop {
            let mut fds = [
                PollFd::new(&self.fd, PollFlags::IN),
                PollFd::new(&stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(UffdError::Read { source: e.into() }),
            }
            if !fds[1].revents().is_empty() {
                return Ok(None);
            }
            let ready = fds[0].revents();
            if ready.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) {
                // Never for a descriptor past `UFFDIO_API`; refused rather than spun on.
                return Err(UffdError::Read {
                    source: std::io::Error::other(format!("poll reported {ready:?}")),
                });
            }
            if !ready.is_empty()
                && let Some(event) = self.read_event()?
            {
                return Ok(Some(event));
            }
        }
    }

    /// A way for one thread to sleep until an event or until `stop` (an eventfd written to
    /// stop the caller) is readable, for a descriptor several threads serve: each waiter is an
    /// epoll instance holding the descriptor with `EPOLLEXCLUSIVE`, so a fault wakes one
    /// waiting thread, not every one ([`wait_event_or`](Self::wait_event_or) wakes them all,
    /// and all but one go back to sleep having found nothing). A thread busy with an event
    /// is not woken in another's place: the kernel passes the wake-up on to the next thread
    /// that is waiting. The stop wakes every waiter. Where the epoll instance cannot be set up
    /// (out of descriptors), the waiter waits as `wait_event_or` does.
    pub fn waiter<'a>(&'a self, stop: BorrowedFd<'a>) -> EventWaiter<'a> {
        let ep = exclusive_epoll(&self.fd, stop)
            .map_err(|e| tracing::warn!(error = %e, "userfaultfd: a waiter waits in poll, woken with every other"))
            .ok();
        EventWaiter {
            uffd: self,
            stop,
            ep,
        }
    }

    /// Refuses a feature that was not granted.
    fn need(&self, what: &'static str, needed: UffdFeatures) -> Result<(), UffdError> {
        if self.granted.contains(needed) {
            Ok(())
        } else {
            Err(UffdError::FeatureNotGranted {
                what,
                needed,
                granted: self.granted,
            })
        }
    }

    /// Refuses empty ranges and ranges not aligned to the page size of the registered mapping
    /// that holds `start` (4 KiB when none does: the kernel then answers `ENOENT`).
    fn check(&self, ioctl: &'static str, start: u64, len: u64) -> Result<(), UffdError> {
        if len == 0 {
            return Err(UffdError::Empty { ioctl, start });
        }
        let page = self
            .regions
            .lock()
            .iter()
            .find(|r| r.start <= start && start - r.start < r.len)
            .map_or(Order::BASE, |r| r.page);
        let unaligned = |what, value| UffdError::Unaligned {
            ioctl,
            what,
            value,
            page,
        };
        if !start.is_multiple_of(page.bytes()) {
            return Err(unaligned("start", start));
        }
        if !len.is_multiple_of(page.bytes()) {
            return Err(unaligned("length", len));
        }
        if start.checked_add(len).is_none() {
            return Err(fail(ioctl, start, len, Errno::OVERFLOW));
        }
        Ok(())
    }

    /// Runs a filling ioctl over `[start, start + len)` until all of it is done. `call(at,
    /// rest)` issues the ioctl for the rest of the range and returns its result and the
    /// count field (bytes done, or a negative errno).
    ///
    /// `EAGAIN` with progress continues after what was done (the kernel woke the threads
    /// waiting on that part); without progress it retries (the address space was changing).
    /// `EEXIST` means a page of the range is already there: the call succeeds with `raced`,
    /// and `on_exist` says whether the whole range is woken.
    fn fill(
        &self,
        ioctl: &'static str,
        start: u64,
        len: u64,
        on_exist: OnExist,
        mut call: impl FnMut(u64, u64) -> (rustix::io::Result<()>, i64),
    ) -> Result<Resolved, UffdError> {
        let mut done = 0u64;
        let mut retries = 0;
        while done < len {
            let (r, count) = call(start + done, len - done);
            let progress = u64::try_from(count).unwrap_or(0).min(len - done);
            done += progress;
            match r {
                Ok(()) => done = len,
                Err(Errno::AGAIN) if progress > 0 => retries = 0,
                Err(Errno::AGAIN) if retries < MAX_RETRIES => {
                    retries += 1;
                    std::thread::yield_now();
                }
                Err(Errno::EXIST) => {
                    if on_exist == OnExist::WakeRange {
                        self.wake(start, len)?;
                    }
                    return Ok(Resolved {
                        bytes: done,
                        raced: true,
                    });
                }
                Err(e) => return Err(fail(ioctl, start + done, len - done, e)),
            }
        }
        Ok(Resolved {
            bytes: done,
            raced: false,
        })
    }
}

/// [`EventWaiter`]'s epoll data for the userfaultfd.
const WAITER_EVENT: u64 = 0;
/// [`EventWaiter`]'s epoll data for the stop descriptor.
const WAITER_STOP: u64 = 1;

/// One thread's wait for the events of a [`Userfaultfd`] that several threads serve
/// ([`Userfaultfd::waiter`]).
#[derive(Debug)]
pub struct EventWaiter<'a> {
    uffd: &'a Userfaultfd,
    stop: BorrowedFd<'a>,
    /// The epoll instance holding both; `None` where it could not be set up.
    ep: Option<OwnedFd>,
}

impl EventWaiter<'_> {
    /// Waits without a time limit for one event, or until the stop descriptor is readable:
    /// `None` then, even if an event is pending. A wake-up that finds the event already read by
    /// another thread waits again.
    pub fn wait(&self) -> Result<Option<UffdEvent>, UffdError> {
        use rustix::event::epoll;
        let Some(ep) = &self.ep else {
            return self.uffd.wait_event_or(self.stop);
        };
        let mut ready = Vec::with_capacity(2);
        loop {
            ready.clear();
            match epoll::wait(ep, rustix::buffer::spare_capacity(&mut ready), None) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(UffdError::Read { source: e.into() }),
            }
            if ready.iter().any(|e| e.data.u64() == WAITER_STOP) {
                return Ok(None);
            }
            if let Some(e) = ready.iter().find(|e| e.data.u64() == WAITER_EVENT) {
                let flags = e.flags;
                if flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
                    // Never for a descriptor past `UFFDIO_API`; refused rather than spun on.
                    return Err(UffdError::Read {
                        source: std::io::Error::other(format!("epoll reported {flags:?}")),
                    });
                }
                if let Some(event) = self.uffd.read_event()? {
                    return Ok(Some(event));
                }
            }
        }
    }
}

/// An epoll instance holding `uffd` with `EPOLLEXCLUSIVE` and `stop` without it.
fn exclusive_epoll(uffd: &OwnedFd, stop: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    use rustix::event::epoll;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &ep,
        uffd,
        epoll::EventData::new_u64(WAITER_EVENT),
        epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE,
    )?;
    epoll::add(
        &ep,
        stop,
        epoll::EventData::new_u64(WAITER_STOP),
        epoll::EventFlags::IN,
    )?;
    Ok(ep)
}

impl AsFd for Userfaultfd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A non-blocking, close-on-exec userfaultfd for user-mode faults, before `UFFDIO_API`.
fn create() -> Result<OwnedFd, UffdError> {
    let flags = UserfaultfdFlags::CLOEXEC
        | UserfaultfdFlags::NONBLOCK
        | UserfaultfdFlags::from_bits_retain(uapi::UFFD_USER_MODE_ONLY);
    // SAFETY: the syscall only creates a descriptor; the memory it can later change is
    // limited to mappings registered through `Userfaultfd::register`, which takes
    // `Mmap`s.
    unsafe { rustix::mm::userfaultfd(flags) }.map_err(|e| UffdError::Create { source: e.into() })
}

/// The `UFFDIO_API` handshake (once per descriptor) enabling `features`; returns every
/// feature the kernel offers.
fn api(fd: &OwnedFd, features: u64) -> Result<u64, Errno> {
    let mut api = uapi::uffdio_api {
        api: u64::from(uapi::UFFD_API),
        features,
        ioctls: 0,
    };
    // SAFETY: `UFFDIO_API` reads and writes one `struct uffdio_api`, the type given.
    unsafe { rustix::ioctl::ioctl(fd, Updater::<API, _>::new(&mut api)) }?;
    Ok(api.features)
}

/// The error for a refused ioctl: `ENOENT` means the range leaves the registered mapping.
fn fail(ioctl: &'static str, start: u64, len: u64, e: Errno) -> UffdError {
    if e == Errno::NOENT {
        UffdError::NotRegistered { ioctl, start, len }
    } else {
        UffdError::Ioctl {
            ioctl,
            start,
            len,
            source: e.into(),
        }
    }
}

/// Decodes one `struct uffd_msg`: `event` at byte 0, the union from byte 8.
fn decode(msg: &[u8; MSG_LEN]) -> UffdEvent {
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&msg[8 + 8 * i..16 + 8 * i]);
        u64::from_ne_bytes(b)
    };
    let event = msg[0];
    match u32::from(event) {
        uapi::UFFD_EVENT_PAGEFAULT => {
            let flags = word(0);
            UffdEvent::PageFault {
                addr: word(1),
                write: flags & u64::from(uapi::UFFD_PAGEFAULT_FLAG_WRITE) != 0,
                minor: flags & u64::from(uapi::UFFD_PAGEFAULT_FLAG_MINOR) != 0,
            }
        }
        uapi::UFFD_EVENT_REMOVE => UffdEvent::Remove {
            start: word(0),
            end: word(1),
        },
        uapi::UFFD_EVENT_UNMAP => UffdEvent::Unmap {
            start: word(0),
            end: word(1),
        },
        uapi::UFFD_EVENT_REMAP => UffdEvent::Remap {
            from: word(0),
            to: word(1),
            len: word(2),
        },
        uapi::UFFD_EVENT_FORK => {
            let mut b = [0u8; 4];
            b.copy_from_slice(&msg[8..12]);
            let raw = u32::from_ne_bytes(b) as RawFd;
            // SAFETY: the kernel installed this descriptor in our table for this event alone
            // and nothing else refers to it; the event takes ownership and closes it on drop.
            let child = unsafe { OwnedFd::from_raw_fd(raw) };
            UffdEvent::Fork { child }
        }
        _ => UffdEvent::Unknown(event),
    }
}

#[cfg(test)]
#[path = "uffd_tests.rs"]
mod tests;
