//! `devmap`: an ndctl-style tool over the devmap library.
//!
//! `estimate` prices a namespace's memmap in every layout without allocating; `enable` builds an
//! emulated namespace in-process, initialises it and reports what it measured; `gup-test` runs
//! the kernel's gup_test selftest against one; `touch-test` times first touches of a device-dax
//! device over a real backing against the kernel's own first touches; `inject-error` poisons a
//! page of a device-dax device mapped several times and checks what each mapping is told,
//! loses and keeps. `create-region` makes a region file, and ndctl's namespace verbs work on
//! it: `create-namespace`, `list`, `destroy-namespace`, and `check-namespace`, which validates
//! a namespace's label and info block; `clear-errors` clears a namespace's media errors.
//! `report` runs the measurements of `estimate`, `enable`,
//! `gup-test` and `inject-error` and prints each figure beside the kernel's or a seed's, with
//! the command that reproduces it (and `--svg` draws them). Each command is a module of `cmd`
//! (its arguments, validation, rows and columns); `args` holds the arguments several commands share, `output`
//! the table and JSON printing, `units` size parsing and formatting, `procfs` what `/proc`
//! says, `threads` work shared among threads. This file is the command enum and the dispatch.
//! Output is a table for people, or with `--json` an array of objects with raw integers; the
//! region verbs print JSON always, as ndctl does.

#![forbid(unsafe_code)]

mod args;
mod cmd;
mod output;
mod procfs;
mod threads;
mod units;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Page metadata (struct page / folio) for device memory, in userspace.
#[derive(Debug, Parser)]
#[command(name = "devmap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Price a namespace's memmap in each layout, without allocating anything.
    Estimate(cmd::estimate::EstimateArgs),
    /// Build an emulated namespace in this process, initialise its memmap, and measure it.
    Enable(cmd::enable::EnableArgs),
    /// Pin and unpin a whole emulated namespace, like the kernel's gup_test selftest.
    GupTest(cmd::gup::GupTestArgs),
    /// Touch every leaf of a device over a memfd, hugetlb memfd or file from several threads,
    /// and compare the first-touch latency with the kernel's own on a plain mapping.
    TouchTest(cmd::touch::TouchTestArgs),
    /// Inject a memory error into a device-dax device with several mappings, and check what
    /// each mapping is told, loses and keeps, and that clearing the poison gives it all back.
    InjectError(cmd::inject::InjectErrorArgs),
    /// Create a region: a sparse file to hold namespaces. ndctl has no such verb (its regions
    /// are the hardware's persistent memory); devmap's live in a file.
    CreateRegion(cmd::region::CreateRegionArgs),
    /// Create a namespace in a region, and print it as JSON.
    CreateNamespace(cmd::namespaces::CreateNamespaceArgs),
    /// List a region's namespaces (-N, the default) and the region itself (-R) as JSON.
    /// Read-only: works while another process manages the region.
    List(cmd::list::ListArgs),
    /// Destroy a namespace of a region: its label, then its info block.
    DestroyNamespace(cmd::namespaces::DestroyNamespaceArgs),
    /// Enable a devdax namespace in this process (adopting the memmap a clean disable left on
    /// the device, or initialising one), print how and how fast as JSON, hold it --hold
    /// seconds, and disable it cleanly. Ctrl-C, SIGTERM or SIGHUP end the hold early: the
    /// namespace is disabled cleanly, the result printed (naming the signal), and the exit 0.
    EnableNamespace(cmd::enabling::EnableNamespaceArgs),
    /// Disable a namespace left enabled by a process that died: rebuild its memmap and mark it
    /// clean, so that the next enable is warm. A namespace a live process has enabled is that
    /// process's to disable.
    DisableNamespace(cmd::enabling::DisableNamespaceArgs),
    /// Check a namespace's label and info block, and print what was checked as JSON.
    CheckNamespace(cmd::namespaces::CheckNamespaceArgs),
    /// Clear a namespace's media errors once its bytes are good again (as `ndctl clear-errors`).
    ClearErrors(cmd::media::ClearErrorsArgs),
    /// Run the benchmarks and print our figures beside the kernel's and the seeds', with the
    /// command behind each; --svg also draws them.
    Report(cmd::report::ReportArgs),
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Estimate(a) => cmd::estimate::run(a),
        Command::Enable(a) => cmd::enable::run(a),
        Command::GupTest(a) => cmd::gup::run(a),
        Command::TouchTest(a) => cmd::touch::run(a),
        Command::InjectError(a) => cmd::inject::run(a),
        Command::CreateRegion(a) => cmd::region::run(a),
        Command::CreateNamespace(a) => cmd::namespaces::create(a),
        Command::List(a) => cmd::list::run(a),
        Command::DestroyNamespace(a) => cmd::namespaces::destroy(a),
        Command::CheckNamespace(a) => cmd::namespaces::check(a),
        Command::EnableNamespace(a) => cmd::enabling::enable(a),
        Command::DisableNamespace(a) => cmd::enabling::disable(a),
        Command::ClearErrors(a) => cmd::media::clear(a),
        Command::Report(a) => cmd::report::run(a),
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
