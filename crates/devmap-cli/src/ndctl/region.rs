//! `devmap create-region`, and what every region command shares: opening a region file with
//! errors that name it, and the JSON objects a region and its namespaces print as (raw byte
//! counts, or with `--human` size strings for people, as `ndctl list -u` prints them). ndctl
//! has no such verb, its regions being the hardware's; here a region is a sparse file, and
//! `create-namespace`, `list`, `destroy-namespace` and `check-namespace` work on it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use devmap::namespace::{Access, LABEL_AREA_BYTES, Label, MIN_REGION_BYTES, Region, RegionError};
use serde::Serialize;

use crate::args::parse_size;
use crate::output;
use crate::units::{format_size, human};

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
    /// Print sizes for people instead of raw byte counts.
    #[arg(long, short = 'u')]
    human: bool,
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
    output::json(&[RegionObject::new(&region, a.human)?])
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

/// A byte count in JSON: the raw integer, or for people a size string.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Bytes {
    /// Bytes.
    Raw(u64),
    /// `16.00 GiB`.
    Human(String),
}

impl Bytes {
    /// `bytes`, for people when `human`.
    pub fn new(bytes: u64, human_sizes: bool) -> Bytes {
        if human_sizes {
            Bytes::Human(human(bytes))
        } else {
            Bytes::Raw(bytes)
        }
    }

    /// An offset: the raw integer, or for people in hex as ndctl prints addresses.
    pub fn offset(bytes: u64, human_sizes: bool) -> Bytes {
        if human_sizes {
            Bytes::Human(format!("{bytes:#x}"))
        } else {
            Bytes::Raw(bytes)
        }
    }
}

/// A uuid as `8-4-4-4-12` lower-case hex.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let hex =
        |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// A region as `list -R` and `create-region` print it.
#[derive(Debug, Serialize)]
pub struct RegionObject {
    /// The region file.
    pub path: String,
    /// Its uuid.
    pub uuid: String,
    /// Its size.
    pub size: Bytes,
    /// Bytes no namespace holds, the label area excluded.
    pub available_size: Bytes,
    /// The longest run of them.
    pub max_available_extent: Bytes,
    /// Namespaces in the region (whatever the filters).
    pub namespaces_count: usize,
    /// The namespaces, when `list` is given both `-R` and `-N` (nested as ndctl nests them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<NamespaceObject>>,
}

impl RegionObject {
    /// `region`, without its namespaces.
    pub fn new(region: &Region, human_sizes: bool) -> Result<RegionObject> {
        let (available, extent) = region.free_space(1).map_err(region_error)?;
        Ok(RegionObject {
            path: region.path().display().to_string(),
            uuid: format_uuid(&region.uuid()),
            size: Bytes::new(region.size(), human_sizes),
            available_size: Bytes::new(available, human_sizes),
            max_available_extent: Bytes::new(extent, human_sizes),
            namespaces_count: region.namespaces().len(),
            namespaces: None,
        })
    }
}

/// One bad range of a namespace: bytes from the start of its data.
#[derive(Debug, Serialize)]
pub struct BadRange {
    /// First bad byte, from the start of the namespace's data.
    pub offset: Bytes,
    /// Bad bytes from there.
    pub length: Bytes,
}

/// A namespace as `list -N` and `create-namespace` print it.
#[derive(Debug, Serialize)]
pub struct NamespaceObject {
    /// Its name.
    pub name: String,
    /// Its uuid.
    pub uuid: String,
    /// `devdax` or `fsdax`.
    pub mode: &'static str,
    /// `mem` or `dev`.
    pub map: &'static str,
    /// Bytes, info block included.
    pub size: Bytes,
    /// The align.
    pub align: Bytes,
    /// Its first byte in the region.
    pub offset: Bytes,
    /// Bytes from its start to its data.
    pub data_offset: Bytes,
    /// Bytes of data.
    pub data_bytes: Bytes,
    /// With `list --media-errors`: its bad ranges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badblocks: Option<Vec<BadRange>>,
}

impl NamespaceObject {
    /// The namespace `label` records.
    pub fn new(label: &Label, human_sizes: bool) -> NamespaceObject {
        let ns = &label.namespace;
        NamespaceObject {
            name: label.name.clone(),
            uuid: format_uuid(&label.uuid),
            mode: ns.mode().name(),
            map: ns.map().name(),
            size: Bytes::new(ns.size(), human_sizes),
            align: Bytes::new(ns.align(), human_sizes),
            offset: Bytes::offset(label.offset, human_sizes),
            data_offset: Bytes::offset(ns.data_offset(), human_sizes),
            data_bytes: Bytes::new(ns.data_bytes(), human_sizes),
            badblocks: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_8_4_4_4_12() {
        let u: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        assert_eq!(format_uuid(&u), "00112233-4455-6677-8899-aabbccddeeff");
    }
}
