//! What `devmap status` shows (DESIGN §9): the service, each enabled namespace (how it was
//! enabled, faults served with their resolve-time percentiles, client mappings, pins by
//! request and fast pins) and each client (pid, uid, the namespaces it maps, its mapped and
//! pinned bytes, its pin counts), built from the state on each `Status` request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::state::{Live, State};
use super::{ClientEntry, Shared};
use crate::addr::PAGE_SIZE;

/// The whole status.
#[derive(Debug, Serialize)]
struct Status {
    pid: u32,
    socket: String,
    uptime_s: f64,
    /// Threads handling clients' faults, over every client: one waits per client descriptor,
    /// and a client whose threads fault at once gets more, up to its share of the cores.
    client_fault_handlers: usize,
    clients: Vec<ClientStatus>,
    namespaces: Vec<NamespaceStatus>,
}

/// One client.
#[derive(Debug, Serialize)]
struct ClientStatus {
    pid: u32,
    uid: u32,
    /// Notices dropped because the client's socket was full.
    notices_lost: u64,
    #[serde(flatten)]
    usage: Usage,
}

/// What one client holds, over every namespace.
#[derive(Debug, Default, Serialize)]
struct Usage {
    /// The namespaces it maps or pins, by name.
    namespaces: BTreeSet<String>,
    mappings: u64,
    mapped_bytes: u64,
    /// Pins by request, and the bytes they cover.
    pins: u64,
    pinned_bytes: u64,
    /// Fast pins (§9.5), as the client counts them.
    fast_pins: u64,
    fast_pinned_bytes: u64,
}

/// One enabled namespace.
#[derive(Debug, Serialize)]
struct NamespaceStatus {
    region: String,
    name: String,
    /// "warm" or "cold".
    enable: &'static str,
    /// Pins by request clients hold, and the bytes they cover.
    pins: usize,
    pinned_bytes: u64,
    /// Fast pins clients count in their mappings' ledgers (§9.5; as the clients write them).
    fast_pins: u64,
    fast_pinned_bytes: u64,
    /// Touches caught and resolved (or answered with SIGBUS) for its mappings.
    client_faults: u64,
    /// How long resolving one took in the service, from its event to the last ioctl.
    resolve_p50_ns: u64,
    resolve_p99_ns: u64,
    leaves_mapped: u64,
    sigbus: u64,
    mappings: Vec<MappingStatus>,
}

/// One client mapping.
#[derive(Debug, Serialize)]
struct MappingStatus {
    pid: u32,
    /// The client's address.
    addr: usize,
    offset: u64,
    len: u64,
    /// Fast pins the client counts in this mapping's ledger, and the bytes they cover.
    fast_pins: u64,
    fast_pinned_bytes: u64,
}

/// `devmap status --json`.
pub(super) fn json(shared: &Shared) -> Vec<u8> {
    let mut usage: BTreeMap<u64, Usage> = BTreeMap::new();
    let namespaces = namespaces(&shared.state, &mut usage);
    let clients = shared
        .clients
        .lock()
        .iter()
        .map(|(session, c): (&u64, &ClientEntry)| ClientStatus {
            pid: c.pid,
            uid: c.uid,
            notices_lost: c.notifier.lost(),
            usage: usage.remove(session).unwrap_or_default(),
        })
        .collect();
    let s = Status {
        pid: std::process::id(),
        socket: shared.socket.display().to_string(),
        uptime_s: shared.started.elapsed().as_secs_f64(),
        client_fault_handlers: shared.state.handlers.handlers(),
        clients,
        namespaces,
    };
    serde_json::to_vec_pretty(&s).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}").into_bytes())
}

/// Every enabled namespace's status; adds what each session holds to `usage`.
fn namespaces(state: &State, usage: &mut BTreeMap<u64, Usage>) -> Vec<NamespaceStatus> {
    let mut out = Vec::new();
    for (region, live) in state.enabled() {
        out.push(namespace(&region.display().to_string(), &live, usage));
    }
    out
}

fn namespace(region: &str, live: &Arc<Live>, usage: &mut BTreeMap<u64, Usage>) -> NamespaceStatus {
    let stats = live.with_device(|d| Ok(d.fault_stats())).ok();
    let mut mappings = Vec::new();
    for a in live.mappings.lock().values() {
        let fast = a.mapping.fast_pins();
        let m = MappingStatus {
            pid: a.pid,
            addr: a.mapping.addr(),
            offset: a.mapping.offset(),
            len: a.mapping.len(),
            fast_pins: fast.pins,
            fast_pinned_bytes: fast.pages.saturating_mul(PAGE_SIZE),
        };
        let u = usage.entry(a.session).or_default();
        u.namespaces.insert(live.name.clone());
        u.mappings += 1;
        u.mapped_bytes = u.mapped_bytes.saturating_add(m.len);
        u.fast_pins = u.fast_pins.saturating_add(m.fast_pins);
        u.fast_pinned_bytes = u.fast_pinned_bytes.saturating_add(m.fast_pinned_bytes);
        mappings.push(m);
    }
    let (mut pins, mut pinned_bytes) = (0, 0);
    for p in live.pins.lock().values() {
        let bytes = p.pin.nr_pages() * PAGE_SIZE;
        pins += 1;
        pinned_bytes += bytes;
        let u = usage.entry(p.session).or_default();
        u.namespaces.insert(live.name.clone());
        u.pins += 1;
        u.pinned_bytes += bytes;
    }
    let sum = |f: fn(&MappingStatus) -> u64| mappings.iter().map(f).fold(0, u64::saturating_add);
    NamespaceStatus {
        region: region.to_string(),
        name: live.name.clone(),
        enable: if live.warm { "warm" } else { "cold" },
        pins,
        pinned_bytes,
        fast_pins: sum(|m| m.fast_pins),
        fast_pinned_bytes: sum(|m| m.fast_pinned_bytes),
        client_faults: stats.map_or(0, |s| s.user_faults),
        resolve_p50_ns: stats.map_or(0, |s| s.resolve_p50_ns),
        resolve_p99_ns: stats.map_or(0, |s| s.resolve_p99_ns),
        leaves_mapped: stats.map_or(0, |s| s.leaves_mapped),
        sigbus: stats.map_or(0, |s| s.sigbus),
        mappings,
    }
}
