//! `devmap`: an ndctl-style tool over the devmap library, with two kinds of command.
//!
//! The ndctl verbs (`ndctl/`) work on region files: `create-region` makes one; then
//! `create-namespace`, `list`, `destroy-namespace`, `check-namespace` (validates a namespace's
//! label and info block), `enable-namespace` and `disable-namespace`, and `clear-errors`
//! (clears a namespace's media errors). They print JSON with ndctl's field names, as ndctl
//! does, and take the same output flags (`--json`, `-u`).
//!
//! The measurement commands (`measure/`) build test devices in this process and report what
//! they measured, beside the kernel's figures where there is one: `estimate` prices a
//! namespace's memmap in every layout without allocating; `enable` builds an emulated
//! namespace and initialises it; `gup-test` runs the kernel's gup_test selftest against one;
//! `touch-test` times first touches of a device over a real backing against the kernel's own;
//! `poison-test` poisons a page of a device mapped several times and checks what each mapping
//! is told, loses and keeps; `client-test` measures a client of a running `devmap serve`;
//! `report` runs them all and prints each figure with the command
//! that reproduces it (`--svg` draws them). They print a table, or with `--json` an array of
//! objects with raw integers.
//!
//! `serve` runs the service that serves namespaces to client processes (`devmap serve`), and
//! `status` asks it what it holds.
//!
//! Each command is a module (its arguments, validation, rows and columns); `args` holds the
//! arguments several commands share, `output` the table and JSON printing, `units` durations
//! and the library's sizes, `procfs` what `/proc` says, `threads` work shared among threads.
//! This file is the command enum and the dispatch.

#![forbid(unsafe_code)]

mod args;
mod measure;
mod ndctl;
mod output;
mod procfs;
mod serve;
mod threads;
mod units;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Page metadata (struct page / folio) for device memory, in userspace.
#[derive(Debug, Parser)]
#[command(
    name = "devmap",
    version,
    about,
    after_help = "The commands from create-region to clear-errors are ndctl's verbs over region files \
                  (ndctl's JSON; destroy-namespace and clear-errors a line, or with --json the \
                  namespace's object); from estimate on, they measure test devices built in \
                  this process (a table, or --json)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // The ndctl verbs, over region files.
    /// Create a region: a sparse file to hold namespaces. ndctl has no such verb (its regions
    /// are the hardware's persistent memory); devmap's live in a file.
    CreateRegion(ndctl::region::CreateRegionArgs),
    /// Create a namespace in a region, and print it as JSON (one object, as ndctl's).
    CreateNamespace(ndctl::namespaces::CreateNamespaceArgs),
    /// List a region's namespaces (-N, the default) and the region itself (-R) as JSON, as
    /// `ndctl list` prints them. Read-only: works while another process manages the region.
    List(ndctl::list::ListArgs),
    /// Destroy a namespace of a region: its label, then its info block. Says so in a line, or
    /// with --json prints the namespace's object.
    DestroyNamespace(ndctl::namespaces::DestroyNamespaceArgs),
    /// Enable a devdax namespace in this process (adopting the memmap a clean disable left on
    /// the device, or initialising one), print how and how fast as JSON, hold it --hold
    /// seconds, and disable it cleanly. Ctrl-C, SIGTERM or SIGHUP end the hold early: the
    /// namespace is disabled cleanly, the result printed (naming the signal), and the exit 0.
    EnableNamespace(ndctl::enable_disable::EnableNamespaceArgs),
    /// Disable a namespace left enabled by a process that died: rebuild its memmap and mark it
    /// clean, so that the next enable is warm. A namespace a live process has enabled is that
    /// process's to disable.
    DisableNamespace(ndctl::enable_disable::DisableNamespaceArgs),
    /// Check a namespace's label and info block, and print the namespace's object with what was
    /// checked as JSON.
    CheckNamespace(ndctl::check::CheckNamespaceArgs),
    /// Clear a namespace's media errors once its bytes are good again (as `ndctl clear-errors`).
    /// Says how many in a line, or with --json prints the namespace's object.
    ClearErrors(ndctl::media::ClearErrorsArgs),
    // The service, and what it holds.
    Serve(serve::ServeArgs),
    Status(serve::StatusArgs),
    InjectError(serve::InjectErrorArgs),
    // The measurement commands, over test devices built in this process.
    /// Price a namespace's memmap in each layout, without allocating anything.
    Estimate(measure::estimate::EstimateArgs),
    /// Build an emulated namespace in this process, initialise its memmap, and measure it.
    Enable(measure::enable::EnableArgs),
    /// Pin and unpin a whole emulated namespace, like the kernel's gup_test selftest.
    GupTest(measure::gup::GupTestArgs),
    /// Touch every leaf of a device over a memfd, hugetlb memfd or file from several threads,
    /// and compare the first-touch latency with the kernel's own on a plain mapping.
    TouchTest(measure::touch::TouchTestArgs),
    /// Inject a memory error into a test device with several mappings (ndctl's inject-error
    /// targets a namespace; this, a device built for the test), and check what
    /// each mapping is told, loses and keeps, and that clearing the poison gives it all back.
    PoisonTest(measure::poison::PoisonTestArgs),
    ClientTest(measure::client::ClientTestArgs),
    /// Run the benchmarks and print our figures beside the kernel's and the seeds', with the
    /// command behind each; --svg also draws them.
    Report(measure::report::ReportArgs),
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Estimate(a) => measure::estimate::run(a),
        Command::Enable(a) => measure::enable::run(a),
        Command::GupTest(a) => measure::gup::run(a),
        Command::TouchTest(a) => measure::touch::run(a),
        Command::PoisonTest(a) => measure::poison::run(a),
        Command::ClientTest(a) => measure::client::run(a),
        Command::CreateRegion(a) => ndctl::region::run(a),
        Command::CreateNamespace(a) => ndctl::namespaces::create(a),
        Command::List(a) => ndctl::list::run(a),
        Command::DestroyNamespace(a) => ndctl::namespaces::destroy(a),
        Command::CheckNamespace(a) => ndctl::check::check(a),
        Command::EnableNamespace(a) => ndctl::enable_disable::enable(a),
        Command::DisableNamespace(a) => ndctl::enable_disable::disable(a),
        Command::ClearErrors(a) => ndctl::media::clear(a),
        Command::Report(a) => measure::report::run(a),
        Command::Serve(a) => serve::serve(a),
        Command::Status(a) => serve::status(a),
        Command::InjectError(a) => serve::inject_error(a),
    }
}

fn main() -> ExitCode {
    // `RUST_LOG=info` (or `debug`, or `devmap=debug`) turns on the library's tracing, on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader took what it wanted (`devmap gup-test -r 1000 | head -3`): stop quietly,
        // as tools killed by SIGPIPE do, without the exit status that would fail `pipefail`.
        Err(e) if output::broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devmap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
