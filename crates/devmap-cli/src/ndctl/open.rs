//! What every region command shares: opening a region file with an error that names it and
//! says what would help, and a library error as one message.

use std::path::Path;

use anyhow::{Result, anyhow};
use devmap::namespace::{Access, Region, RegionError};

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
