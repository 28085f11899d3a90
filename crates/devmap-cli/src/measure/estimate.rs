//! `devmap estimate`: what a namespace's memmap costs in each layout, computed without
//! allocating anything, one row per layout. Its arguments and row live here, and so do
//! [`cost`] and [`host_bytes`], which `enable` and `gup-test` check against the memory budget
//! before they build anything.

use anyhow::Result;
use clap::Args;
use devmap::{Cost, Layout, Namespace, PAGE_SIZE, Pfn, PfnRange};
use serde::Serialize;

use crate::args::{LayoutArg, NamespaceArgs};
use crate::output::{self, Cells};
use crate::units::{format_size, human};

/// `estimate`'s arguments.
#[derive(Debug, Args)]
pub struct EstimateArgs {
    #[command(flatten)]
    ns: NamespaceArgs,
    /// Layout(s) to price.
    #[arg(long, value_enum, default_value = "all")]
    layout: LayoutArg,
}

/// One row of `estimate`.
#[derive(Debug, Serialize)]
pub struct Estimate {
    /// Namespace bytes.
    pub size: u64,
    /// Alignment bytes.
    pub align: u64,
    /// Layout name.
    pub layout: &'static str,
    /// `mem` or `dev`.
    pub map: &'static str,
    /// `devdax` or `fsdax`.
    pub mode: &'static str,
    /// Compound order.
    pub vmemmap_shift: u32,
    /// Host memory for the memmap: the sum of the four items that follow.
    pub metadata_bytes: u64,
    /// Host memory holding descriptors (vmemmap pages).
    pub descriptor_bytes: u64,
    /// Host memory in PTE tables (Vmemmap).
    pub pte_table_bytes: u64,
    /// Host memory in PMD tables (Vmemmap).
    pub pmd_table_bytes: u64,
    /// Host memory in per-section usage records, `struct mem_section_usage` (Vmemmap).
    pub section_usage_bytes: u64,
    /// Device memory given to the memmap.
    pub device_bytes: u64,
    /// Descriptors initialisation writes.
    pub descriptors_initialized: u64,
}

fn columns(r: &Estimate) -> Cells {
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
}

/// Runs `estimate`: one row per layout.
pub fn run(a: EstimateArgs) -> Result<()> {
    let rows = rows(&a)?;
    output::print(a.ns.json, &rows, columns)
}

/// The rows `estimate` prints for `a`, one per layout (`report` reads them too).
pub(crate) fn rows(a: &EstimateArgs) -> Result<Vec<Estimate>> {
    let ns = a.ns.namespace()?;
    a.layout
        .layouts()
        .into_iter()
        .map(|l| Ok(row(&ns, l, cost(&ns, l)?)))
        .collect()
}

/// What the memmap of `ns` costs in `layout`, as the library will build it, priced at pfn 0
/// without a device space. The kernel's room for a `--map dev` memmap is rounded up to 2 MiB,
/// so every layout fits it.
pub fn cost(ns: &Namespace, layout: Layout) -> Result<Cost> {
    let range = PfnRange::new(Pfn::new(0), ns.pages())?;
    Ok(ns.pgmap_config(range, layout)?.estimate_cost()?)
}

/// Host bytes the memmap of `ns` takes in `layout` once built: its DRAM part, plus for
/// `--map dev` its part on the device, which this emulation keeps in host memory too. That
/// part is what the layout's store holds, not the whole room the info block sets aside
/// (`device_bytes`): a Heads memmap of 1 TiB at 2M takes 32 MiB of its 16 GiB + 2 MiB.
pub fn host_bytes(ns: &Namespace, layout: Layout) -> Result<u64> {
    let cost = cost(ns, layout)?;
    let on_device = match ns.altmap() {
        Some(_) => layout
            .memmap_bytes((ns.size() - ns.end_trunc()) / PAGE_SIZE, ns.vmemmap_shift())
            .next_multiple_of(PAGE_SIZE),
        None => 0,
    };
    Ok(cost.metadata_bytes + on_device)
}

/// The estimate row for `ns` in `layout`.
fn row(ns: &Namespace, layout: Layout, cost: Cost) -> Estimate {
    Estimate {
        size: ns.size(),
        align: ns.align(),
        layout: layout.name(),
        map: ns.map().name(),
        mode: ns.mode().name(),
        vmemmap_shift: ns.vmemmap_shift().get(),
        metadata_bytes: cost.metadata_bytes,
        descriptor_bytes: cost.descriptor_bytes,
        pte_table_bytes: cost.pte_table_bytes,
        pmd_table_bytes: cost.pmd_table_bytes,
        section_usage_bytes: cost.section_usage_bytes,
        device_bytes: cost.device_bytes,
        descriptors_initialized: cost.descriptors_initialized,
    }
}
