//! `devmap serve`: the service that owns regions and enabled namespaces for client processes
//! (the library's `service`), in the foreground until SIGINT, SIGTERM or SIGHUP, which disable
//! every namespace cleanly; and `devmap status`, which asks a running service what it holds.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use devmap::client::Client;
use devmap::namespace::{StopSignal, StopSignals};
use devmap::service::{DEFAULT_MAX_CLIENTS, ServeOptions, Service};

/// Serve namespaces of region files to client processes over a Unix socket: enable them
/// (at start with --enable, or on request), resolve the clients' first touches, and disable
/// them cleanly on SIGINT, SIGTERM or SIGHUP (the next start is warm). Prints one line when it
/// accepts clients; `RUST_LOG=info` logs clients and namespaces on stderr.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The socket to listen on (created mode 0660; a stale one is replaced).
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: PathBuf,
    /// A region file to serve (repeat for several).
    #[arg(short = 'r', long = "region", required = true)]
    regions: Vec<PathBuf>,
    /// A namespace to enable at start (repeat for several).
    #[arg(long = "enable")]
    enable: Vec<String>,
    /// Clients at once; the next is refused with a reason.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENTS)]
    max_clients: usize,
}

/// Ask a running service what it holds: its namespaces (how they were enabled, faults served,
/// mappings, pins) and its clients (pid, uid), as JSON, or in Prometheus's text format.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The service's socket.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: PathBuf,
    /// JSON (the default).
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Prometheus's text exposition format, for a node exporter's textfile collector.
    #[arg(long)]
    prometheus: bool,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    // Blocked before any thread starts, so every thread inherits the mask and the signals
    // pend for the wait below instead of killing the process with namespaces in use.
    let stop = StopSignals::block().context("cannot block SIGINT, SIGTERM and SIGHUP")?;
    // Two arenas, not one per session thread ever alive at once: the RSS then settles
    // instead of keeping each arena's high-water mark (DESIGN §9).
    if !devmap::service::limit_malloc_arenas(2) {
        tracing::warn!("serve: malloc did not take M_ARENA_MAX=2");
    }
    let opts = ServeOptions {
        socket: a.socket,
        regions: a.regions,
        enable: a.enable,
        max_clients: a.max_clients,
    };
    let service = Service::start(&opts).context("cannot start the service")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", service.ready_line())?;
        out.flush()?;
    }
    let signal = loop {
        if let Some(s) = stop.wait(Duration::from_secs(3600)) {
            break s;
        }
    };
    let stopped = service.stop().context("cannot stop cleanly")?;
    crate::output::say(&format!(
        "devmap serve: {} received; {} client(s) disconnected; disabled cleanly: {}",
        StopSignal::name(signal),
        stopped.clients,
        if stopped.disabled.is_empty() {
            "none".to_string()
        } else {
            stopped.disabled.join(", ")
        }
    ))?;
    Ok(())
}

/// Report a memory error on pages of a namespace a running service serves, as `ndctl
/// inject-error` does: every client mapping them loses each page (SIGBUS when it touches it)
/// and is told at its own address; the pages are recorded in the namespace's badblocks.
#[derive(Debug, Args)]
pub struct InjectErrorArgs {
    /// The region file.
    #[arg(long, short = 'r')]
    region: PathBuf,
    /// The namespace.
    name: String,
    /// Byte offset in the namespace's data, a multiple of 4K (K/M/G suffixes).
    #[arg(long, short = 'o')]
    offset: String,
    /// Pages (4 KiB each).
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u64,
    /// The service's socket.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: PathBuf,
}

pub fn inject_error(a: InjectErrorArgs) -> Result<()> {
    let offset =
        devmap::units::parse_size(&a.offset).map_err(|e| anyhow::anyhow!("--offset: {e}"))?;
    let client = Client::connect(&a.socket)?;
    let region = std::fs::canonicalize(&a.region).unwrap_or_else(|_| a.region.clone());
    let done = client
        .inject_error(
            Some(&region.display().to_string()),
            &a.name,
            offset,
            a.count,
        )
        .with_context(|| format!("cannot inject an error into namespace {:?}", a.name))?;
    let v = serde_json::json!({
        "name": a.name,
        "offset": offset,
        "pages": done.pages,
        "mappings_revoked": done.revoked,
        "owners_told": done.told,
        "elapsed_ns": done.elapsed_ns,
    });
    crate::output::say(&serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

pub fn status(a: StatusArgs) -> Result<()> {
    let client = Client::connect(&a.socket)?;
    let json = client.status()?;
    if !a.prometheus {
        return crate::output::say(&json);
    }
    let v: serde_json::Value =
        serde_json::from_str(&json).context("the service's status is not JSON")?;
    crate::output::say(prometheus(&v).trim_end())?;
    Ok(())
}

/// The status as Prometheus's text exposition format: one gauge or counter per figure, the
/// namespace's region and name (or the client's pid) as labels.
fn prometheus(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let num = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0);
    let clients = v["clients"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP devmap_clients Clients connected.\n# TYPE devmap_clients gauge"
    );
    let _ = writeln!(out, "devmap_clients {}", clients.len());
    let _ = writeln!(
        out,
        "# HELP devmap_client_fault_handlers Threads handling clients' faults.\n\
         # TYPE devmap_client_fault_handlers gauge\n\
         devmap_client_fault_handlers {}",
        num(&v["client_fault_handlers"])
    );
    let _ = writeln!(
        out,
        "# HELP devmap_client_notices_lost_total Notices dropped because the client's socket was full.\n\
         # TYPE devmap_client_notices_lost_total counter"
    );
    for c in &clients {
        let _ = writeln!(
            out,
            "devmap_client_notices_lost_total{{pid=\"{}\"}} {}",
            c["pid"],
            num(&c["notices_lost"])
        );
    }
    for (name, help) in [
        ("mapped_bytes", "Bytes a client maps."),
        ("pinned_bytes", "Bytes a client pinned by request."),
        ("fast_pinned_bytes", "Bytes a client pinned fast."),
    ] {
        let metric = format!("devmap_client_{name}");
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for c in &clients {
            let _ = writeln!(out, "{metric}{{pid=\"{}\"}} {}", c["pid"], num(&c[name]));
        }
    }
    let metrics = [
        (
            "client_faults",
            "counter",
            "Client touches caught and answered.",
        ),
        (
            "leaves_mapped",
            "counter",
            "Leaves faulted in, by any path.",
        ),
        ("sigbus", "counter", "Caught touches answered with SIGBUS."),
        ("pins", "gauge", "Pins by request clients hold."),
        ("pinned_bytes", "gauge", "Bytes pinned by request."),
        (
            "fast_pins",
            "gauge",
            "Fast pins clients count in their ledgers.",
        ),
        ("fast_pinned_bytes", "gauge", "Bytes pinned fast."),
        (
            "resolve_p50_ns",
            "gauge",
            "Median time to resolve a caught touch, in nanoseconds.",
        ),
        (
            "resolve_p99_ns",
            "gauge",
            "99th percentile time to resolve a caught touch, in nanoseconds.",
        ),
    ];
    let namespaces = v["namespaces"].as_array().cloned().unwrap_or_default();
    for (name, kind, help) in metrics {
        let metric = match kind {
            "counter" => format!("devmap_namespace_{name}_total"),
            _ => format!("devmap_namespace_{name}"),
        };
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for ns in &namespaces {
            let _ = writeln!(
                out,
                "{metric}{{region={},name={}}} {}",
                ns["region"],
                ns["name"],
                num(&ns[name])
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP devmap_namespace_mappings Client mappings.\n# TYPE devmap_namespace_mappings gauge"
    );
    for ns in &namespaces {
        let n = ns["mappings"].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "devmap_namespace_mappings{{region={},name={}}} {n}",
            ns["region"], ns["name"]
        );
    }
    out
}
