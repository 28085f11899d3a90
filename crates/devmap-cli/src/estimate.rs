//! `devmap estimate`: what a namespace's memmap costs in each layout, computed without
//! allocating anything.

use anyhow::Result;
use devmap::memmap::MemmapError;
use devmap::{Cost, Geometry, Layout, Pfn, PfnRange};
use serde::Serialize;

use crate::shape::Shape;

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

/// The geometry of `shape` in `layout`, as the library will build it.
pub fn geometry(shape: &Shape, layout: Layout) -> Result<Geometry> {
    let range = PfnRange::new(Pfn::new(0), shape.pages())?;
    let geo = match shape.altmap_reserve() {
        Some(reserve) => Geometry::with_altmap(range, shape.shift, layout, reserve),
        None => Geometry::new(range, shape.shift),
    };
    geo.map_err(|e| match e {
        MemmapError::AltmapTooLarge { altmap_pfns, .. } => {
            shape.altmap_too_large(layout, altmap_pfns)
        }
        other => other.into(),
    })
}

/// The estimate row for `shape` in `layout`.
pub fn row(shape: &Shape, layout: Layout, cost: Cost) -> Estimate {
    Estimate {
        size: shape.size,
        align: shape.align,
        layout: layout.name(),
        map: shape.map.name(),
        mode: shape.mode.name(),
        vmemmap_shift: shape.shift.get(),
        metadata_bytes: cost.metadata_bytes,
        descriptor_bytes: cost.descriptor_bytes,
        pte_table_bytes: cost.pte_table_bytes,
        pmd_table_bytes: cost.pmd_table_bytes,
        section_usage_bytes: cost.section_usage_bytes,
        device_bytes: cost.device_bytes,
        descriptors_initialized: cost.descriptors_initialized,
    }
}

/// Runs `estimate` for each layout.
pub fn run(shape: &Shape, layouts: &[Layout]) -> Result<Vec<Estimate>> {
    layouts
        .iter()
        .map(|&l| Ok(row(shape, l, l.cost(&geometry(shape, l)?))))
        .collect()
}
