//! `devmap create-region`, and what every region command shares: opening a region file with
//! errors that name it (the JSON they print is `json`'s). ndctl has no such verb, its regions
//! being the hardware's; here a region is a sparse file, and `create-namespace`, `list`,
//! `destroy-namespace` and `check-namespace` work on it. It prints the region as `list -R`
//! does, one object.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use devmap::namespace::{Access, LABEL_AREA_BYTES, MIN_REGION_BYTES, Region, RegionError};

use super::json::{Detail, OutputArgs, RegionObject};
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

/// Opens the region at `path`, with an error that names it.
pub fn open(path: &Path, access: Access) -> Result<Region> {
    Region::open(path, access).map_err(|e| {
        let hint = match &e {
            RegionError::Busy { .. } => {
                "; wait for it to finish, or use `devmap list` meanwhile (it only reads)"
            }
            RegionError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "; create one with `devmap create-region --path FILE --size SIZE`"
            }
            _ => "",
        };
        anyhow!(
            "cannot open region {}: {}{hint}",
            path.display(),
            region_error(e)
        )
    })
}

/// A library error as one message. Its own text already says what its source said, so the
/// source is not chained again (`{:#}` would print it twice).
pub fn region_error(e: RegionError) -> anyhow::Error {
    anyhow!("{e}")
}
