//! One client connection: reads its requests in order, answers each (a reply of the request's
//! kind or an [`ErrorReply`]), and when the client ends detaches everything the client held.
//! The end is seen either way it shows: the socket closing (the client closed it, exited or
//! was killed and no other process holds it), or the client's process exiting (its pidfd
//! turns readable), which also ends a session whose socket a forked child still holds. A malformed
//! request whose frame boundary survived gets an error and the connection goes on; one that
//! lost it (bad magic, a truncated frame, misplaced descriptors) ends the connection.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::error::ServiceError;
use super::notify::Notifier;
use super::proto::{
    self, Done, Enable, Enabled, ErrorReply, Injected, List, Map, Mapped, Namespaces, Notice, Open,
    Opened, Pin, PinReply, Status, StatusReply, Unmap, Unpin, WireExtent, kind,
};
use super::state::{Attached, AttachedPin, HeldPin, Live, State};
use crate::backing::{UffdFeatures, Userfaultfd};
use crate::dax::{ClientFaults, ClientMapping, ClientWindow, PoisonNotice};
use crate::gup::{Extent, ExtentLimits, GupFlags};
use crate::memory_failure::{MfFlags, memory_failure, memory_failure_in_client};
use crate::wire::{Frame, Receiver, WireError, WireMessage};

/// What the service knows of a connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peer {
    pub(super) session: u64,
    pub(super) pid: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// A client's state while it is connected.
struct Session<'s> {
    state: &'s State,
    peer: Peer,
    notifier: &'s Arc<Notifier>,
    /// Opened namespaces by handle.
    opened: BTreeMap<u32, Arc<Live>>,
    next_handle: u32,
    /// The client's mappings by handle: the namespace and the service-wide key.
    mappings: BTreeMap<u32, (Arc<Live>, u64)>,
    /// The client's pins by handle, likewise.
    pins: BTreeMap<u32, (Arc<Live>, u64)>,
    /// The handlers of the userfaultfds the client passed, kept until it ends: a touch of a
    /// mapping detached under it (a forced disable) is then answered with SIGBUS.
    faults: Vec<ClientFaults>,
    /// Status of the whole service, for `Status` requests.
    status: &'s (dyn Fn() -> Vec<u8> + Sync),
}

/// Serves one client until it ends or the stream is lost; then detaches what it held.
pub(super) fn run(
    state: &State,
    stream: &UnixStream,
    notifier: &Arc<Notifier>,
    peer: Peer,
    status: &(dyn Fn() -> Vec<u8> + Sync),
) {
    let mut s = Session {
        state,
        peer,
        notifier,
        opened: BTreeMap::new(),
        next_handle: 1,
        mappings: BTreeMap::new(),
        pins: BTreeMap::new(),
        faults: Vec::new(),
        status,
    };
    let mut rx = Receiver::new();
    let pidfd = rustix::process::Pid::from_raw(peer.pid as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    loop {
        // With nothing buffered, wait for the next request or the client's exit.
        if !rx.in_frame()
            && let Some(pidfd) = &pidfd
            && client_exited(stream, pidfd)
        {
            tracing::debug!(pid = peer.pid, "serve: client process exited");
            break;
        }
        let frame = match rx.recv(stream) {
            Ok(f) => f,
            Err(WireError::PeerClosed) => break,
            Err(e) => {
                tracing::debug!(pid = peer.pid, error = %e, "serve: client stream lost");
                break;
            }
        };
        let id = frame.request_id();
        let sent = match s.handle(frame) {
            Ok(reply) => reply.send(notifier, id),
            Err(e) => {
                let reply = ErrorReply {
                    errno: e.errno(),
                    reason: e.to_string(),
                };
                crate::wire::encode_payload(&reply)
                    .and_then(|p| notifier.send(ErrorReply::KIND, id, &p, &[]))
            }
        };
        if let Err(e) = sent {
            tracing::debug!(pid = peer.pid, error = %e, "serve: cannot answer a client");
            break;
        }
    }
    let detached = state.detach_session(peer.session);
    drop(s.pins);
    // The mappings are gone from the devices; only now stop their fault handlers.
    drop(s.faults);
    tracing::info!(pid = peer.pid, detached, "serve: client ended");
}

/// The groups of process `pid`: its gid and its supplementary groups (`/proc/PID/status`), as
/// `generic_permission` checks them; its gid alone if the process cannot be read.
fn groups_of(pid: u32, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        && let Some(line) = status.lines().find(|l| l.starts_with("Groups:"))
    {
        groups.extend(
            line["Groups:".len()..]
                .split_whitespace()
                .filter_map(|g| g.parse::<u32>().ok()),
        );
    }
    groups
}

/// Sleeps until `stream` has something to read (or hung up) or the client's process exits;
/// whether it exited.
fn client_exited(stream: &UnixStream, pidfd: &std::os::fd::OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    loop {
        let mut fds = [
            PollFd::new(stream, PollFlags::IN | PollFlags::RDHUP),
            PollFd::new(pidfd, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {
                if !fds[0].revents().is_empty() {
                    return false;
                }
                if !fds[1].revents().is_empty() {
                    return true;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            // Cannot wait on both: fall back to the socket alone.
            Err(_) => return false,
        }
    }
}

/// A reply ready to send: its payload, kind and the descriptors to pass with it (closed here
/// once sent: the client has its own copies).
struct Reply {
    kind: u16,
    payload: Vec<u8>,
    fds: Vec<std::os::fd::OwnedFd>,
}

impl Reply {
    fn of<M: WireMessage>(m: &M) -> Result<Reply, ServiceError> {
        Ok(Reply {
            kind: M::KIND,
            payload: crate::wire::encode_payload(m)?,
            fds: Vec::new(),
        })
    }

    fn send(self, to: &Notifier, id: u32) -> Result<(), WireError> {
        let fds: Vec<_> = self.fds.iter().map(|f| f.as_fd()).collect();
        to.send(self.kind, id, &self.payload, &fds)
    }
}

impl Session<'_> {
    fn handle(&mut self, mut frame: Frame) -> Result<Reply, ServiceError> {
        match frame.kind() {
            kind::LIST => {
                frame.message::<List>()?;
                Reply::of(&Namespaces {
                    entries: self.state.list(),
                    regions: self.state.paths(),
                })
            }
            kind::OPEN => {
                let m: Open = frame.message()?;
                self.open(&m)
            }
            kind::MAP => {
                let m: Map = frame.message()?;
                self.map(&m, &mut frame)
            }
            kind::UNMAP => {
                let m: Unmap = frame.message()?;
                let (live, key) =
                    self.mappings
                        .remove(&m.mapping)
                        .ok_or(ServiceError::UnknownHandle {
                            what: "mapping",
                            handle: m.mapping,
                        })?;
                // Gone already if a forced disable took it.
                let gone = live.mappings.lock().remove(&key);
                drop(gone);
                Reply::of(&Done {})
            }
            kind::PIN => {
                let m: Pin = frame.message()?;
                self.pin(&m)
            }
            kind::UNPIN => {
                let m: Unpin = frame.message()?;
                let (live, key) = self
                    .pins
                    .remove(&m.pin)
                    .ok_or(ServiceError::UnknownHandle {
                        what: "pin",
                        handle: m.pin,
                    })?;
                // Gone already if a forced disable took it.
                let gone = live.pins.lock().remove(&key);
                if let Some(p) = gone {
                    p.pin.unpin(m.dirty);
                }
                Reply::of(&Done {})
            }
            kind::INJECT_ERROR => {
                let m: proto::InjectError = frame.message()?;
                self.manager("inject errors into a namespace")?;
                self.inject(&m)
            }
            kind::REPORT_ERROR => {
                let m: proto::ReportError = frame.message()?;
                self.report(&m)
            }
            kind::STATUS => {
                frame.message::<Status>()?;
                Reply::of(&StatusReply {
                    json: (self.status)(),
                })
            }
            kind::ENABLE => {
                let m: Enable = frame.message()?;
                self.manager("enable a namespace")?;
                let (live, _) = self.state.enable(&m.region, &m.name)?;
                Reply::of(&Enabled { warm: live.warm })
            }
            kind::DISABLE => {
                let m: proto::Disable = frame.message()?;
                self.manager("disable a namespace")?;
                self.state.disable(&m.region, &m.name, m.force)?;
                Reply::of(&Done {})
            }
            kind::CREATE_NAMESPACE => {
                let m: proto::CreateNamespace = frame.message()?;
                self.manager("create a namespace")?;
                Reply::of(&self.state.create_namespace(&m)?)
            }
            kind::DESTROY_NAMESPACE => {
                let m: proto::DestroyNamespace = frame.message()?;
                self.manager("destroy a namespace")?;
                self.state.destroy_namespace(&m)?;
                Reply::of(&Done {})
            }
            kind::CHECK_NAMESPACE => {
                let m: proto::CheckNamespace = frame.message()?;
                self.manager("check a namespace")?;
                Reply::of(&self.state.check_namespace(&m)?)
            }
            kind::CLEAR_ERRORS => {
                let m: proto::ClearErrors = frame.message()?;
                self.manager("clear a namespace's errors")?;
                Reply::of(&self.state.clear_errors(&m)?)
            }
            other => Err(WireError::UnknownKind { kind: other }.into()),
        }
    }

    /// Refuses a management request (`verb`) from a client that is neither root nor the
    /// service's own user: the service manages the regions as its user, so such a client
    /// could otherwise destroy or disable what it could not touch itself.
    fn manager(&self, verb: &'static str) -> Result<(), ServiceError> {
        let service_uid = rustix::process::geteuid().as_raw();
        match self.peer.uid {
            0 => Ok(()),
            uid if uid == service_uid => Ok(()),
            uid => Err(ServiceError::NotPermitted {
                verb,
                uid,
                service_uid,
            }),
        }
    }

    fn open(&mut self, m: &Open) -> Result<Reply, ServiceError> {
        let live = self.state.live(&m.region, &m.name)?;
        let groups = groups_of(self.peer.pid, self.peer.gid);
        if !live.owner.permits(self.peer.uid, &groups) {
            return Err(ServiceError::Denied {
                name: m.name.clone(),
                uid: self.peer.uid,
                owner: live.owner,
            });
        }
        let (opened, fd) = live.with_device(|d| {
            let (fd, base) = d.backing().share();
            let fd = fd.try_clone_to_owned().map_err(|source| ServiceError::Io {
                what: "duplicate the namespace's descriptor",
                source,
            })?;
            Ok((
                Opened {
                    ns: self.next_handle,
                    data_bytes: d.size(),
                    align: d.align().bytes(),
                    file_offset: base,
                    caught: d.catches_touches(),
                },
                fd,
            ))
        })?;
        self.opened.insert(self.next_handle, live);
        self.next_handle += 1;
        let mut reply = Reply::of(&opened)?;
        reply.fds.push(fd);
        Ok(reply)
    }

    fn map(&mut self, m: &Map, frame: &mut Frame) -> Result<Reply, ServiceError> {
        let live = self
            .opened
            .get(&m.ns)
            .cloned()
            .ok_or(ServiceError::UnknownHandle {
                what: "namespace",
                handle: m.ns,
            })?;
        let faults = if m.features != 0 {
            let [fd] = frame.take_fds::<1>()?;
            let uffd = Userfaultfd::adopt(fd, UffdFeatures::from_bits(m.features))?;
            Some(ClientFaults::start(uffd, &self.state.handlers)?)
        } else {
            frame.take_fds::<0>()?;
            None
        };
        let base =
            usize::try_from(m.base).map_err(|_| ServiceError::BadAddress { base: m.base })?;
        let window = ClientWindow {
            offset: m.offset,
            len: m.len,
            base,
            pid: self.peer.pid,
        };
        let mapping =
            live.with_device(|d| Ok(ClientMapping::attach(d, window, faults.as_ref())?))?;
        let key = self.state.next_key();
        let handle = self.next_handle;
        self.next_handle += 1;
        // The client's copies of the fast-pin files, taken before the mapping is filed away.
        let first_pfn = mapping.first_pfn().map_or(proto::NO_PFN, |p| p.raw());
        let fast_fds = match mapping.fast_pin_files() {
            (Some(view), Some(ledger)) => [view, ledger]
                .iter()
                .map(|f| f.try_clone_to_owned())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| ServiceError::Io {
                    what: "duplicate a mapping's fast-pin files",
                    source,
                })?,
            _ => Vec::new(),
        };
        // A client runs no SIGBUS handler here: it hears of every error under its mapping
        // (early kill), as a notice at its own address.
        mapping.set_early_kill(true);
        let notifier = Arc::clone(self.notifier);
        mapping.set_owner(Arc::new(move |n: &PoisonNotice| {
            notifier.notice(&Notice {
                what: proto::notice::MEMORY_LOST,
                handle,
                addr: n.addr as u64,
                len: n.len(),
                pfn: n.pfn.raw(),
            });
        }));
        live.mappings.lock().insert(
            key,
            Attached {
                session: self.peer.session,
                pid: self.peer.pid,
                handle,
                notifier: Arc::clone(self.notifier),
                mapping,
            },
        );
        self.mappings.insert(handle, (live, key));
        if let Some(f) = faults {
            self.faults.push(f);
        }
        let mut reply = Reply::of(&Mapped {
            mapping: handle,
            first_pfn,
        })?;
        reply.fds = fast_fds;
        Ok(reply)
    }

    fn inject(&mut self, m: &proto::InjectError) -> Result<Reply, ServiceError> {
        let live = self.state.live(&m.region, &m.name)?;
        let bad = || ServiceError::BadInjection {
            offset: m.offset,
            count: m.count,
        };
        if m.count == 0 || !m.offset.is_multiple_of(crate::addr::PAGE_SIZE) {
            return Err(bad());
        }
        let pfns = live.with_device(|d| {
            (0..m.count)
                .map(|i| {
                    let at = m
                        .offset
                        .saturating_add(i.saturating_mul(crate::addr::PAGE_SIZE));
                    d.pfn_at(at).ok_or_else(bad)
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let start = std::time::Instant::now();
        let mut done = Injected {
            pages: 0,
            revoked: 0,
            told: 0,
            elapsed_ns: 0,
        };
        for pfn in pfns {
            let r = memory_failure(&self.state.space, pfn, MfFlags::RECORD_UNMAPPED)?;
            done.pages += 1;
            done.revoked += r.revoked.len() as u32;
            done.told += r.notices.len() as u32;
        }
        done.elapsed_ns = start.elapsed().as_nanos() as u64;
        Reply::of(&done)
    }

    /// A memory error the client met in its own mapping: `memory_failure` with that mapping
    /// current (`BUS_MCEERR_AR` to it, `AO` to every other client mapping the page). No
    /// management right is needed: a client reports only what it maps.
    fn report(&mut self, m: &proto::ReportError) -> Result<Reply, ServiceError> {
        let (live, key) =
            self.mappings
                .get(&m.mapping)
                .cloned()
                .ok_or(ServiceError::UnknownHandle {
                    what: "mapping",
                    handle: m.mapping,
                })?;
        let addr =
            usize::try_from(m.addr).map_err(|_| ServiceError::BadAddress { base: m.addr })?;
        let start = std::time::Instant::now();
        let r = {
            let mappings = live.mappings.lock();
            let attached = mappings.get(&key).ok_or(ServiceError::UnknownHandle {
                what: "mapping (taken by a forced disable)",
                handle: m.mapping,
            })?;
            memory_failure_in_client(
                &self.state.space,
                &attached.mapping,
                addr,
                MfFlags::ACTION_REQUIRED,
            )?
        };
        Reply::of(&Injected {
            pages: 1,
            revoked: r.revoked.len() as u32,
            told: r.notices.len() as u32,
            elapsed_ns: start.elapsed().as_nanos() as u64,
        })
    }

    fn pin(&mut self, m: &Pin) -> Result<Reply, ServiceError> {
        let (live, key) =
            self.mappings
                .get(&m.mapping)
                .cloned()
                .ok_or(ServiceError::UnknownHandle {
                    what: "mapping",
                    handle: m.mapping,
                })?;
        let flags = pin_flags(m.flags)?;
        let addr =
            usize::try_from(m.addr).map_err(|_| ServiceError::BadAddress { base: m.addr })?;
        // The extents, at most what one reply carries; the pin is given back on any refusal.
        let limits = ExtentLimits {
            max_extents: Some(proto::MAX_EXTENTS),
            max_bytes: None,
        };
        let (pin, extents) = {
            let mappings = live.mappings.lock();
            let attached = mappings.get(&key).ok_or(ServiceError::UnknownHandle {
                what: "mapping (taken by a forced disable)",
                handle: m.mapping,
            })?;
            let mapping = &attached.mapping;
            if m.folios {
                let p = mapping.pin_user_folios(addr, m.nr_pages, flags)?;
                let e = p.extents(limits)?;
                (HeldPin::Folios(p), e)
            } else {
                let p = mapping.pin_user_pages(addr, m.nr_pages, flags)?;
                let e = p.extents(limits)?;
                (HeldPin::Pages(p), e)
            }
        };
        let nr_pages = pin.nr_pages();
        let pin_key = self.state.next_key();
        let handle = self.next_handle;
        self.next_handle += 1;
        live.pins.lock().insert(
            pin_key,
            AttachedPin {
                session: self.peer.session,
                pid: self.peer.pid,
                handle,
                notifier: Arc::clone(self.notifier),
                pin,
            },
        );
        self.pins.insert(handle, (live, pin_key));
        Reply::of(&PinReply {
            pin: handle,
            nr_pages,
            extents: extents.iter().map(wire_extent).collect(),
        })
    }
}

/// The library's flags from the `DEVMAP_PIN_*` bits a client sends.
fn pin_flags(bits: u32) -> Result<GupFlags, ServiceError> {
    let known = [
        (1, GupFlags::WRITE),
        (2, GupFlags::LONGTERM),
        (4, GupFlags::NOFAULT),
    ];
    let mut flags = GupFlags::NONE;
    let mut left = bits;
    for (bit, f) in known {
        if bits & bit != 0 {
            flags = flags | f;
            left &= !bit;
        }
    }
    match left {
        0 => Ok(flags),
        _ => Err(ServiceError::BadPinFlags { flags: bits }),
    }
}

fn wire_extent(e: &Extent) -> WireExtent {
    WireExtent {
        addr: e.addr as u64,
        offset: e.offset,
        pfn: e.pfn.raw(),
        len: e.len,
    }
}
