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

/// Ask a running service what it holds: its namespaces (how they were enabled, faults served)
/// and its clients (pid, uid, mappings), as JSON.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The service's socket.
    #[arg(long, env = "DEVMAP_SOCKET")]
    socket: PathBuf,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    // Blocked before any thread starts, so every thread inherits the mask and the signals
    // pend for the wait below instead of killing the process with namespaces in use.
    let stop = StopSignals::block().context("cannot block SIGINT, SIGTERM and SIGHUP")?;
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
    println!(
        "devmap serve: {} received; {} client(s) disconnected; disabled cleanly: {}",
        StopSignal::name(signal),
        stopped.clients,
        if stopped.disabled.is_empty() {
            "none".to_string()
        } else {
            stopped.disabled.join(", ")
        }
    );
    Ok(())
}

pub fn status(a: StatusArgs) -> Result<()> {
    let client = Client::connect(&a.socket)?;
    println!("{}", client.status()?);
    Ok(())
}
