//! `devmap create-region`. ndctl has no such verb, its regions being the hardware's; here a
//! region is a sparse file, and `create-namespace`, `list`, `destroy-namespace` and
//! `check-namespace` work on it. It prints the region as `list -R` does, one object.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use devmap::namespace::{LABEL_AREA_BYTES, MIN_REGION_BYTES, Region};

use super::json::{Detail, OutputArgs, RegionObject};
use super::open::region_error;
use crate::args::parse_size;
use crate::output;
use crate::units::format_size;

/// `create-region`'s arguments.
#[derive(Debug, Args)]
pub struct CreateRegionArgs {
    /// The region file to create; an existing file is refused, never overwritten.
    #[arg(long, short = 'p')]
    path: PathBuf,
    /// Region size, with K/M/G/T suffixes in powers of 1024 (e.g. 64G). The file is sparse:
    /// it takes disk space only for what its namespaces write.
    #[arg(long, short = 's', allow_hyphen_values = true)]
    size: String,
    #[command(flatten)]
    out: OutputArgs,
}

/// Runs `create-region`: creates the file, writes its label index, prints the region.
pub fn run(a: CreateRegionArgs) -> Result<()> {
    let size = parse_size(&a.size)?;
    let min = MIN_REGION_BYTES;
    if size < min {
        bail!(
            "size {} is too small for a region: the label area takes {} and a namespace needs \
             room after it; use --size {} or more",
            format_size(size),
            format_size(LABEL_AREA_BYTES),
            format_size(min)
        );
    }
    if a.path.exists() {
        bail!(
            "{} exists already: create-region never overwrites a file; choose another --path, \
             or remove the file if it is not needed",
            a.path.display()
        );
    }
    let region = Region::create(&a.path, size)
        .map_err(region_error)
        .with_context(|| format!("cannot create region {}", a.path.display()))?;
    let detail = Detail {
        human: a.out.human,
        ..Detail::default()
    };
    output::object(&RegionObject::new(&region, detail)?)
}
