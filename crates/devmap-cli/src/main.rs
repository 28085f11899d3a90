//! `devmap`: an ndctl-style tool over the devmap library.
//!
//! `estimate` prices a namespace's memmap in every layout without allocating; `enable` builds an
//! emulated namespace in-process, initialises it and reports what it measured. Output is a
//! table for people, or with `--json` an array of objects with raw integers.

#![forbid(unsafe_code)]

mod enable;
mod estimate;
mod gup_test;
mod procfs;
mod shape;
mod units;

use std::io::{self, Write};
use std::num::{IntErrorKind, ParseIntError};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use devmap::addr::format_size;
use serde::Serialize;

use crate::enable::InitArg;
use crate::shape::{LayoutArg, MapArg, ModeArg, Shape};
use crate::units::{human, ms};

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
    Estimate {
        #[command(flatten)]
        ns: NamespaceArgs,
        /// Layout(s) to price.
        #[arg(long, value_enum, default_value = "all")]
        layout: LayoutArg,
    },
    /// Build an emulated namespace in this process, initialise its memmap, and measure it.
    Enable {
        #[command(flatten)]
        ns: NamespaceArgs,
        /// Layout(s) to enable, one after another.
        #[arg(long, value_enum, default_value = "heads")]
        layout: LayoutArg,
        /// How to initialise the memmap.
        #[arg(long, value_enum, default_value = "parallel")]
        init: InitArg,
        /// Threads for --init parallel (the caller included) or async workers
        /// [default: every core].
        #[arg(long, allow_negative_numbers = true, value_parser = count::<usize>)]
        threads: Option<usize>,
        /// With --init async: time N first-touch syncs of one compound each at random offsets
        /// while the background runs.
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count::<u64>)]
        touch: Option<u64>,
        /// With --init async: finish the init with sync_all on the calling thread.
        #[arg(long)]
        sync: bool,
    },
    /// Pin and unpin a whole emulated namespace, like the kernel's gup_test selftest.
    GupTest(GupTestArgs),
}

/// `gup-test`, with the kernel selftest's flags.
#[derive(Debug, Args)]
struct GupTestArgs {
    /// Namespace size in MiB.
    #[arg(short = 'm', default_value_t = 128, allow_negative_numbers = true, value_parser = mib)]
    mb: u64,
    /// Repeats.
    #[arg(short = 'r', default_value_t = 1, allow_negative_numbers = true, value_parser = count::<u32>)]
    repeats: u32,
    /// Pages per call; negative for all at once [default: 512, as the seed's `-n 512`].
    #[arg(short = 'n', default_value_t = 512, allow_negative_numbers = true, value_parser = count::<i64>)]
    pages_per_call: i64,
    /// FOLL_WRITE.
    #[arg(short = 'w')]
    write: bool,
    /// PIN_FAST_BENCHMARK: pin_user_pages_fast.
    #[arg(short = 'a', conflicts_with_all = ["longterm", "gup_fast"])]
    pin_fast: bool,
    /// PIN_LONGTERM_BENCHMARK: pins with FOLL_LONGTERM.
    #[arg(short = 'L', conflicts_with_all = ["gup_fast", "folios"])]
    longterm: bool,
    /// GUP_FAST_BENCHMARK: plain references (the default).
    #[arg(short = 'u', conflicts_with = "folios")]
    gup_fast: bool,
    /// Pin through the folio-range API (one entry per folio).
    #[arg(short = 'F')]
    folios: bool,
    /// Page size of the namespace's folios: 4K, 2M or 1G.
    #[arg(long, default_value = "2M", allow_hyphen_values = true)]
    align: String,
    /// Memmap layout.
    #[arg(long, value_enum, default_value = "heads")]
    layout: LayoutArg,
    /// Namespace mode.
    #[arg(long, value_enum, default_value = "devdax")]
    mode: ModeArg,
    /// Fill entry buffers that an untimed warm-up repeat allocated and faulted in, as the
    /// kernel selftest allocates its `pages[]` before timing (`pin_pages_into`), instead of
    /// letting every call allocate its result inside the timed loop (`pin_pages`).
    #[arg(long)]
    prealloc: bool,
    /// Print a JSON array of objects, one per repeat.
    #[arg(long, short = 'j')]
    json: bool,
}

/// Parses a count (`-r`, `-n`, `--threads`, `--touch`) with a message that says what a count
/// looks like: the standard library's is "invalid digit found in string", and without
/// `allow_negative_numbers` clap takes `-1` for an unknown flag.
fn count<T: FromStr<Err = ParseIntError>>(text: &str) -> Result<T, String> {
    text.parse().map_err(|e: ParseIntError| match e.kind() {
        IntErrorKind::PosOverflow => format!("{text} is too large"),
        IntErrorKind::NegOverflow => format!("{text} is too small"),
        _ if text
            .strip_prefix('-')
            .is_some_and(|t| t.parse::<T>().is_ok()) =>
        {
            "must not be negative".to_owned()
        }
        _ => "not a whole number: give digits only, without a suffix, sign or fraction".to_owned(),
    })
}

/// Parses `-m`, a count of MiB; a size with a suffix gets the count it means.
fn mib(text: &str) -> Result<u64, String> {
    count(text).map_err(|e| match shape::parse_size(text) {
        Ok(bytes) if bytes > 0 && bytes % (1 << 20) == 0 => {
            format!("-m counts MiB: did you mean -m {}?", bytes >> 20)
        }
        _ => e,
    })
}

/// What every namespace command takes.
#[derive(Debug, Args)]
struct NamespaceArgs {
    /// Namespace size, with K/M/G/T suffixes in powers of 1024 (e.g. 128G).
    #[arg(long, short = 's', allow_hyphen_values = true)]
    size: String,
    /// Page size of the namespace's folios: 4K, 2M or 1G.
    #[arg(long, short = 'a', default_value = "2M", allow_hyphen_values = true)]
    align: String,
    /// Where the memmap lives: host memory, or the device itself (an altmap).
    #[arg(long, short = 'M', value_enum, default_value = "mem")]
    map: MapArg,
    /// Namespace mode.
    #[arg(long, short = 'm', value_enum, default_value = "devdax")]
    mode: ModeArg,
    /// Print a JSON array of objects with raw integers.
    #[arg(long, short = 'j')]
    json: bool,
}

impl NamespaceArgs {
    fn shape(&self) -> Result<Shape> {
        Shape::new(&self.size, &self.align, self.mode, self.map)
    }
}

/// Writes `text` and a newline to stdout and flushes it, failing with an error where
/// `println!` would panic: when the reader has gone (`| head`) or the disk is full.
fn say(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Whether `e` comes from writing to a pipe whose reader has gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

fn print<T: Serialize>(
    json: bool,
    rows: &[T],
    table: impl Fn(&T) -> Vec<(&'static str, String)>,
) -> Result<()> {
    if json {
        return say(&serde_json::to_string_pretty(rows)?);
    }
    let cells: Vec<Vec<(&str, String)>> = rows.iter().map(table).collect();
    let Some(first) = cells.first() else {
        return Ok(());
    };
    let widths: Vec<usize> = (0..first.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].1.len())
                .chain([first[i].0.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<&str>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut text = line(first.iter().map(|c| c.0).collect());
    for r in &cells {
        text.push('\n');
        text.push_str(&line(r.iter().map(|c| c.1.as_str()).collect()));
    }
    say(&text)
}

fn gup_test(a: GupTestArgs) -> Result<()> {
    if a.mb == 0 {
        anyhow::bail!("-m {} is not a usable size in MiB: try -m 16384", a.mb);
    }
    let size =
        a.mb.checked_mul(1 << 20)
            .filter(|s| *s <= shape::MAX_SIZE)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "-m {} MiB is larger than the largest namespace, {}: did you mean -m {}?",
                    a.mb,
                    format_size(shape::MAX_SIZE),
                    shape::MAX_SIZE >> 20
                )
            })?;
    let align = shape::parse_align(&a.align, a.mode)?;
    if align >= 1 << 20 && size % align != 0 {
        let mb = align >> 20;
        let down = a.mb / mb * mb;
        let hint = if down == 0 {
            format!("-m {}", down + mb)
        } else {
            format!("-m {down} or -m {}", down + mb)
        };
        anyhow::bail!(
            "-m {} MiB is not a multiple of align {}: did you mean {hint}?",
            a.mb,
            format_size(align)
        );
    }
    let shape = Shape::new(&size.to_string(), &a.align, a.mode, MapArg::Mem)?;
    let layout = match a.layout.layouts().as_slice() {
        [one] => *one,
        _ => anyhow::bail!("gup-test runs one layout: choose --layout flat, vmemmap or heads"),
    };
    if a.repeats == 0 {
        anyhow::bail!("-r must be at least 1");
    }
    if a.longterm && a.mode == ModeArg::Fsdax {
        anyhow::bail!(
            "-L pins with FOLL_LONGTERM, and FsDax memory cannot be pinned long-term: use -a, \
             or -L with --mode devdax"
        );
    }
    let mode = if a.folios {
        gup_test::Mode::PinFolios
    } else if a.pin_fast {
        gup_test::Mode::PinFast
    } else if a.longterm {
        gup_test::Mode::PinLongterm
    } else {
        gup_test::Mode::GupFast
    };
    let plan = gup_test::Plan {
        shape,
        layout,
        mode,
        repeats: a.repeats,
        pages_per_call: gup_test::pages_per_call(a.pages_per_call)?,
        write: a.write,
        reuse_buffers: a.prealloc,
    };
    gup_test::check_budget(&plan)?;
    // Lines go out as each repeat ends, as the selftest prints them, so a long -r shows
    // progress and holds nothing; JSON is one array at the end.
    let mut rows = Vec::new();
    gup_test::run(&plan, |r| {
        if a.json {
            rows.push(r);
            Ok(())
        } else {
            say(&gup_test::line(&r))
        }
    })?;
    if a.json {
        say(&serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::GupTest(a) => gup_test(a),
        Command::Estimate { ns, layout } => {
            let shape = ns.shape()?;
            let rows = estimate::run(&shape, &layout.layouts())?;
            print(ns.json, &rows, |r| {
                vec![
                    ("layout", r.layout.to_owned()),
                    ("size", format_size(r.size)),
                    ("align", format_size(r.align)),
                    ("map", r.map.to_owned()),
                    ("metadata (DRAM)", human(r.metadata_bytes)),
                    ("on device", human(r.device_bytes)),
                    (
                        "descriptors initialised",
                        r.descriptors_initialized.to_string(),
                    ),
                ]
            })
        }
        Command::Enable {
            ns,
            layout,
            init,
            threads,
            touch,
            sync,
        } => {
            let shape = ns.shape()?;
            let plan = enable::AsyncPlan {
                touches: touch,
                sync_all: sync,
            };
            let mode = enable::init_mode(init, threads, plan)?;
            let rows = layout
                .layouts()
                .into_iter()
                .map(|l| enable::run_one(&shape, l, mode, plan))
                .collect::<Result<Vec<_>>>()?;
            print(ns.json, &rows, |r| {
                vec![
                    ("layout", r.layout.to_owned()),
                    ("size", format_size(r.size)),
                    ("init", format!("{} x{}", r.init, r.threads)),
                    ("metadata", human(r.metadata_bytes)),
                    ("rss", human(r.rss_bytes)),
                    ("of it on device", human(r.device_rss_bytes)),
                    ("descriptors", r.descriptors_initialized.to_string()),
                    ("ready", ms(r.ready_ns)),
                    ("full init", ms(r.full_init_ns)),
                    ("memset", ms(r.memset_ns)),
                    (
                        "touch p50/p99/max",
                        match (r.touch_p50_ns, r.touch_p99_ns, r.touch_max_ns) {
                            (Some(a), Some(b), Some(c)) => {
                                format!("{}/{}/{} us", a / 1000, b / 1000, c / 1000)
                            }
                            _ => "-".to_owned(),
                        },
                    ),
                ]
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader took what it wanted (`devmap gup-test -r 1000 | head -3`): stop quietly,
        // as tools killed by SIGPIPE do, without the exit status that would fail `pipefail`.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devmap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
