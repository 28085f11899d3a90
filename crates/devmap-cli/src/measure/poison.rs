//! `devmap poison-test`: a memory error injected into a device-dax test device built for the
//! run (ndctl's `inject-error` targets a namespace; this does not), and what it takes from the
//! device's mappings. This module
//! owns the command's arguments, the row it prints and that row's columns; `checks` turns the
//! arguments into a plan (size, align, backing, the poisoned pages, mappings, readers, and
//! whether the machine can hold the run); `scenario` builds the device, runs the error through
//! `memory_failure`, has the readers count what is lost and check what is not, and clears it.
//!
//! Per granularity asked (`--granularity both`: `page`, then `leaf`, one row each): a fresh
//! device over a fresh backing, `--mappings` mappings of all of it, each with an early-kill
//! owner callback (`PR_MCE_KILL_EARLY`: told of errors no access of its own met) that counts
//! the notices it is given; a known pattern written through the first mapping;
//! `--readers` threads reading every byte of every mapping back through
//! [`DaxMapping::read_mc`](devmap::dax::DaxMapping::read_mc) (a read that reports lost bytes
//! instead of dying of SIGBUS) and checking the pattern; `memory_failure` on the pfn of each
//! poisoned page; the same reads again, counting the bytes refused and checking every byte
//! still read; then the poison cleared, the poisoned pages rewritten, and every byte of every
//! mapping read and checked once more. Every mapping must be told of each lost unit (a page,
//! or a leaf at `Leaf` granularity) exactly once and lose exactly those bytes: anything else
//! fails the run, naming what differed.

mod checks;
mod scenario;

use anyhow::Result;
use clap::{Args, ValueEnum};
use devmap::dax::Granularity;
use devmap::memory_failure::HandledBy;
use serde::Serialize;

use crate::args::count;
use crate::output::{self, Cells};
use crate::units::{format_size, human, nanos};

/// `poison-test`'s arguments.
#[derive(Debug, Args)]
pub struct PoisonTestArgs {
    /// Device size, with K/M/G/T suffixes in powers of 1024 (e.g. 64M); a multiple of --align.
    #[arg(long, short = 's', default_value = "64M", allow_hyphen_values = true)]
    size: String,
    /// Leaf size of the device (its folios and faults): 4K, 2M or 1G.
    #[arg(long, short = 'a', default_value = "2M", allow_hyphen_values = true)]
    align: String,
    /// Where the device's bytes live.
    #[arg(long, value_enum, default_value = "memfd")]
    backing: BackingArg,
    /// Mappings of the whole device, each with an owner told of what it loses.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = count::<usize>)]
    mappings: usize,
    /// What an error takes from the mappings: its 4 KiB page, its whole leaf, or each in turn
    /// (one row each). The device applies leaf where page cannot hold (a hugetlb backing).
    #[arg(long, value_enum, default_value = "both")]
    granularity: GranularityArg,
    /// Device byte offset of the (first) page to poison, a multiple of 4K inside the device
    /// [default: the 8th page of the second leaf, 2M+28K at --align 2M].
    #[arg(long, allow_hyphen_values = true)]
    offset: Option<String>,
    /// Errors to inject, at consecutive 4 KiB pages from --offset.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = count::<u64>)]
    count: u64,
    /// Threads reading every byte of every mapping back, each a contiguous share.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = count::<usize>)]
    readers: usize,
    /// Report the errors as met by an access (MF_ACTION_REQUIRED) rather than found by a scrub.
    #[arg(long)]
    action_required: bool,
    /// Print a JSON array of objects with raw integers (bytes, nanoseconds, counts).
    #[arg(long, short = 'j')]
    json: bool,
}

/// `--backing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackingArg {
    /// A shmem memfd (4 KiB pages; page granularity holds).
    Memfd,
    /// A hugetlb memfd with pages of --align (2M or 1G) from the kernel's pool; an error
    /// always takes the whole leaf.
    Hugetlb,
}

impl BackingArg {
    /// The `--backing` name.
    fn name(self) -> &'static str {
        match self {
            BackingArg::Memfd => "memfd",
            BackingArg::Hugetlb => "hugetlb",
        }
    }
}

/// `--granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GranularityArg {
    /// Only the poisoned 4 KiB page is lost.
    Page,
    /// The whole leaf holding it is lost (the kernel's way).
    Leaf,
    /// Page, then leaf: one row each.
    Both,
}

impl GranularityArg {
    /// The granularities this argument names, in run order.
    fn granularities(self) -> Vec<Granularity> {
        match self {
            GranularityArg::Page => vec![Granularity::Page],
            GranularityArg::Leaf => vec![Granularity::Leaf],
            GranularityArg::Both => vec![Granularity::Page, Granularity::Leaf],
        }
    }
}

/// A granularity's name in rows.
fn granularity_name(g: Granularity) -> &'static str {
    match g {
        Granularity::Page => "page",
        Granularity::Leaf => "leaf",
    }
}

/// Who handled an error, in rows.
fn handled_name(h: HandledBy) -> &'static str {
    match h {
        HandledBy::Callback => "callback",
        HandledBy::Generic => "generic",
    }
}

/// The most threads `--readers` may ask for, as `touch-test --threads`.
const MAX_READERS: usize = 1024;

/// The most mappings `--mappings` may ask for: every one of them is read whole three times.
const MAX_MAPPINGS: usize = 64;

/// The largest `--size`: the pattern is written to every page, so the run allocates all of it.
const MAX_SIZE: u64 = 16 << 30;

/// What `poison-test` was asked to do, checked.
#[derive(Debug, Clone)]
struct Plan {
    /// Device bytes.
    size: u64,
    /// Leaf bytes.
    align: u64,
    /// Backing.
    backing: BackingArg,
    /// Mappings of the whole device.
    mappings: usize,
    /// Granularities to run, one row each.
    granularities: Vec<Granularity>,
    /// Device byte offset of the first poisoned page.
    offset: u64,
    /// Consecutive pages poisoned.
    count: u64,
    /// Reading (and writing) threads.
    readers: usize,
    /// `MF_ACTION_REQUIRED`.
    action_required: bool,
}

/// One poisoned range of the device, as its badblocks list has it.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Badblock {
    /// Device byte offset.
    offset: u64,
    /// Bytes.
    len: u64,
}

/// One row of `poison-test`: one granularity's run.
#[derive(Debug, Serialize)]
pub(crate) struct Injected {
    /// The granularity asked for: `page` or `leaf`.
    pub granularity: &'static str,
    /// The granularity the device applied (`leaf` where `page` cannot hold).
    pub applied: &'static str,
    /// `memfd` or `hugetlb`.
    pub backing: &'static str,
    /// Device bytes.
    pub size: u64,
    /// Leaf bytes.
    pub align: u64,
    /// Mappings of the whole device.
    pub mappings: usize,
    /// Reading threads.
    pub readers: usize,
    /// Device byte offset of the first poisoned page.
    pub offset: u64,
    /// Pages poisoned, consecutive from `offset`.
    pub count: u64,
    /// The first poisoned page's pfn.
    pub pfn: u64,
    /// The head pfn of its folio.
    pub head: u64,
    /// `generic` (the device revoked its mappings) or `callback`.
    pub handled_by: &'static str,
    /// Notices the mappings' owner callbacks received, all mappings together.
    pub owners_told: u64,
    /// Nanoseconds of the `memory_failure` calls, timed around them.
    pub inject_ns: u64,
    /// Nanoseconds `memory_failure` reported for revoking every mapping and telling every
    /// owner (`MfReport::elapsed`), summed over the errors.
    pub revoke_ns: u64,
    /// Bytes each mapping lost (the same for every mapping: each maps the whole device).
    pub bytes_lost_per_mapping: u64,
    /// Bytes lost, all mappings together.
    pub bytes_lost_total: u64,
    /// Bytes still read back with their pattern after the errors, all mappings together.
    pub bytes_intact: u64,
    /// The device's badblocks list after the errors.
    pub badblocks: Vec<Badblock>,
    /// Pins on the poisoned folios when the errors were handled (the most of any error).
    pub pins: u32,
    /// Whether clearing the poison gave every mapping every byte back.
    pub cleared: bool,
    /// Pages `clear_poison` found poisoned.
    pub cleared_pages: u64,
}

fn columns(r: &Injected) -> Cells {
    let badblocks = if r.badblocks.is_empty() {
        "none".to_owned()
    } else {
        r.badblocks
            .iter()
            .map(|b| format!("{}+{}", format_size(b.offset), format_size(b.len)))
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        ("granularity", r.granularity.to_owned()),
        ("applied", r.applied.to_owned()),
        ("backing", r.backing.to_owned()),
        ("size", format_size(r.size)),
        ("align", format_size(r.align)),
        ("maps", r.mappings.to_string()),
        ("offset", format_size(r.offset)),
        ("count", r.count.to_string()),
        ("pfn", format!("{:#x}", r.pfn)),
        ("handled", r.handled_by.to_owned()),
        ("told", r.owners_told.to_string()),
        ("revoke", nanos(r.revoke_ns)),
        ("lost/map", format_size(r.bytes_lost_per_mapping)),
        ("lost", format_size(r.bytes_lost_total)),
        ("intact", human(r.bytes_intact)),
        ("badblocks", badblocks),
        ("pins", r.pins.to_string()),
        ("cleared", r.cleared.to_string()),
    ]
}

/// Runs `poison-test`: checks the arguments, runs the scenario once per granularity, and
/// prints a row for each.
pub fn run(a: PoisonTestArgs) -> Result<()> {
    let rows = rows(&a)?;
    output::print(a.json, &rows, columns)
}

/// Checks `a` and runs the scenario once per granularity: the rows `poison-test` prints
/// (`report` reads them too).
pub(crate) fn rows(a: &PoisonTestArgs) -> Result<Vec<Injected>> {
    let plan = checks::plan(a)?;
    let mut rows = Vec::with_capacity(plan.granularities.len());
    for &g in &plan.granularities {
        rows.push(scenario::run(&plan, g)?);
    }
    Ok(rows)
}
