//! The JSON the ndctl verbs print, with ndctl's field names, meanings and units so that a
//! script written for ndctl reads devmap's unchanged: a namespace as ndctl's
//! `util_namespace_to_json` prints it (`dev`, `mode`, `map`, `size` = the usable bytes, `uuid`,
//! `chardev` or with `-X` the `daxregion` of daxctl's `util_daxctl_region_to_json`, its device
//! with the `target_node` of its memory, `align`, `name`, `badblock_count` and with `-M`
//! `badblocks` in 512-byte sectors; with `list -v` also `raw_uuid`, `numa_node` and
//! `target_node`), a region as `ndctl list -R` prints it (`dev`, `size`, `align`,
//! `available_size`, `max_available_extent`, `type`, with `-v` `numa_node` and `target_node`,
//! with `-C` `capabilities`, `persistence_domain`), and `-u` as ndctl's `display_size` and
//! `display_hex` format numbers. The nodes are printed only where devmap can name one
//! (`super::node`). devmap's own fields sit beside them under names ndctl does not use
//! (`raw_size`, `region_offset`, `data_offset`, `path`, `namespaces_count`).
//!
//! A region file read alone is a bus of its own with one region, `region0`. Through a service
//! (`--socket`), its regions are `region0`, `region1`, ... in the order the service serves them
//! (its `-r` order, so the same across its runs while it is started the same way), as the
//! kernel numbers the regions it probes. A region X's namespaces are `namespaceX.N` and their
//! device-dax devices `daxX.N`, N their place in the label index (offset order), as the kernel
//! numbers a region's labelled namespaces by their place on the media when it probes them
//! (`scan_labels` sorts them by DPA). N stays as it is across runs while the namespaces before
//! it stay; creating one in a gap before it, or destroying one before it, renumbers it, as a
//! reboot would under the kernel.

use anyhow::{Context, Result};
use clap::Args;
use devmap::namespace::{Label, Region, RegionError};
use devmap::{Namespace, NamespaceMode, PAGE_SIZE};
use serde::Serialize;

use super::node::memory_node;
use super::open::region_error;
use crate::output;
use crate::units::ndctl_size;

/// The region index of a region file read alone (not through a service): a bus with one
/// region.
pub const REGION_ID: u64 = 0;
/// Bytes in one of ndctl's badblocks sectors.
const SECTOR: u64 = 512;

/// The output flags every ndctl verb takes.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OutputArgs {
    /// Print JSON. The verbs that print objects always do (as ndctl's); `destroy-namespace`
    /// and `clear-errors` print a line without it, and the namespace's object with it.
    #[arg(long, short = 'j')]
    pub json: bool,
    /// Print sizes for people, as ndctl's `-u` does: `"1006.00 MiB (1054.87 MB)"` (a count
    /// below 5000 KiB stays a number) and offsets in hex.
    #[arg(long, short = 'u')]
    pub human: bool,
}

/// What a namespace object includes beyond its fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detail {
    /// Sizes for people (`-u`).
    pub human: bool,
    /// A devdax namespace's `daxregion` (ndctl's `-X`, and what `create-namespace` prints)
    /// instead of its `chardev`.
    pub dax: bool,
    /// The `badblocks` list (ndctl's `-M`).
    pub media_errors: bool,
    /// The region's index: [`REGION_ID`] for a region file read alone, its place among a
    /// service's regions through one (`namespaceX.N`, `daxX.N`).
    pub region: u64,
    /// ndctl's `list -v`: a namespace's `raw_uuid`, and the `numa_node` and `target_node` of
    /// namespaces and regions.
    pub verbose: bool,
    /// ndctl's `list -C`: a region's `capabilities`.
    pub capabilities: bool,
}

impl Detail {
    /// What a verb on one namespace prints of it: its object as `create-namespace` prints it,
    /// `daxregion` included, with sizes for people under `-u`.
    pub fn one(out: OutputArgs) -> Detail {
        Detail {
            human: out.human,
            dax: true,
            media_errors: false,
            region: REGION_ID,
            verbose: false,
            capabilities: false,
        }
    }

    /// The node of the memory (`numa_node`, `target_node`) where `-v` prints it.
    fn verbose_node(self) -> Option<u32> {
        memory_node().filter(|_| self.verbose)
    }
}

/// A number in JSON: the integer, or under `-u` as ndctl formats it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Bytes {
    /// The integer.
    Raw(u64),
    /// `"16.00 GiB (17.18 GB)"` or `"0x200000"`.
    Human(String),
}

impl Bytes {
    /// A size as ndctl's `util_json_object_size` prints it.
    pub fn size(bytes: u64, human: bool) -> Bytes {
        match ndctl_size(bytes) {
            Some(text) if human => Bytes::Human(text),
            _ => Bytes::Raw(bytes),
        }
    }

    /// An offset as ndctl's `util_json_object_hex` prints it: in hex under `-u`.
    pub fn hex(value: u64, human: bool) -> Bytes {
        if human {
            Bytes::Human(format!("{value:#x}"))
        } else {
            Bytes::Raw(value)
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

/// The namespace of `region` (the region of index `id`) that `ident` names: by its name, or by
/// its `dev` (`namespaceID.N`) when no namespace has that name. The library's refusal
/// otherwise.
pub fn find<'r>(region: &'r Region, ident: &str, id: u64) -> Result<&'r Label, RegionError> {
    region.namespace(ident).or_else(|e| {
        ident
            .strip_prefix(&format!("namespace{id}."))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| region.namespaces().get(n))
            .ok_or(e)
    })
}

/// One bad range, in 512-byte sectors as ndctl prints them: from the start of the namespace's
/// data in a namespace, from the start of the region file in a region.
#[derive(Debug, Serialize)]
pub struct BadRange {
    /// First bad sector.
    pub offset: u64,
    /// Bad sectors from there.
    pub length: u64,
}

/// A device-dax device of a `daxregion`, as daxctl's `util_daxctl_dev_to_json` prints it.
#[derive(Debug, Serialize)]
pub struct DaxDevice {
    /// `daxX.N`.
    pub chardev: String,
    /// Its bytes: the namespace's usable size.
    pub size: Bytes,
    /// The node its memory is on, when the machine has one node with memory (daxctl prints it
    /// whenever the kernel names one, `-v` or not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_node: Option<u32>,
    /// The size of its folios.
    pub align: Bytes,
    /// `devdax` (not onlined as system RAM).
    pub mode: &'static str,
}

/// A devdax namespace's dax region, as daxctl's `util_daxctl_region_to_json` prints it for
/// ndctl (no sysfs `path`, no `available_size`: the one device takes it all).
#[derive(Debug, Serialize)]
pub struct DaxRegion {
    /// The region's index.
    pub id: u64,
    /// Its bytes: the namespace's usable size.
    pub size: Bytes,
    /// The namespace's align (an integer even under `-u`, as ndctl prints it).
    pub align: u64,
    /// Its one device.
    pub devices: Vec<DaxDevice>,
}

/// A namespace as the ndctl verbs print it: ndctl's fields in ndctl's order, then devmap's.
#[derive(Debug, Serialize)]
pub struct NamespaceObject {
    /// `namespaceX.N`, X the region's index, N its place in the label index.
    pub dev: String,
    /// `devdax` or `fsdax`.
    pub mode: &'static str,
    /// `mem` or `dev`: where the memmap lives.
    pub map: &'static str,
    /// Usable bytes: raw size less the data offset and the truncated end (devmap's
    /// `data_bytes`, the kernel's pfn or dax device size).
    pub size: Bytes,
    /// Its uuid (the label's and the info block's).
    pub uuid: String,
    /// With `list -v`, the label's uuid: the same (ndctl's `raw_uuid` is the namespace's,
    /// beside the pfn or dax device's `uuid`; devmap's namespace and device share one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_uuid: Option<String>,
    /// A devdax namespace's device, `daxX.N`, without `-X`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chardev: Option<String>,
    /// A devdax namespace's dax region, with `-X`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daxregion: Option<DaxRegion>,
    /// The align (an integer even under `-u`, as ndctl prints it).
    pub align: u64,
    /// Its name, unique in the region (ndctl's alt name).
    pub name: String,
    /// With `list -v`, the node nearest its memory: the node it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// With `list -v`, the node its memory is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_node: Option<u32>,
    /// devmap: bytes of the namespace, info block and truncated end included.
    pub raw_size: Bytes,
    /// devmap: its first byte in the region file.
    pub region_offset: Bytes,
    /// devmap: bytes from its start to its data.
    pub data_offset: Bytes,
    /// devmap: the region file.
    pub path: String,
    /// devmap: who may open it through `devmap serve`, as a `/dev/dax` node's owner, group and
    /// mode (`perm`, octal).
    pub uid: u32,
    /// devmap: the owner's group.
    pub gid: u32,
    /// devmap: the permission bits, in octal (`"0600"`).
    pub perm: String,
    /// Bad 512-byte sectors of its data, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badblock_count: Option<u64>,
    /// With `-M`, when there are any: its bad ranges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badblocks: Option<Vec<BadRange>>,
}

impl NamespaceObject {
    /// The namespace `label` of `region` records.
    pub fn new(region: &Region, label: &Label, d: Detail) -> Result<NamespaceObject> {
        let index = region
            .namespaces()
            .iter()
            .position(|l| l.name == label.name)
            .with_context(|| {
                format!(
                    "namespace {:?} is not in the label index of region {}",
                    label.name,
                    region.path().display()
                )
            })?;
        let ns = &label.namespace;
        let usable = ns.data_bytes();
        let id = d.region;
        let dax = (ns.mode() == NamespaceMode::Devdax).then(|| format!("dax{id}.{index}"));
        let (count, ranges) = bad_ranges(region, label, d.media_errors)?;
        Ok(NamespaceObject {
            dev: format!("namespace{id}.{index}"),
            mode: ns.mode().name(),
            map: ns.map().name(),
            size: Bytes::size(usable, d.human),
            uuid: format_uuid(&label.uuid),
            raw_uuid: d.verbose.then(|| format_uuid(&label.uuid)),
            chardev: dax.clone().filter(|_| !d.dax),
            daxregion: dax.filter(|_| d.dax).map(|chardev| DaxRegion {
                id,
                size: Bytes::size(usable, d.human),
                align: ns.align(),
                devices: vec![DaxDevice {
                    chardev,
                    size: Bytes::size(usable, d.human),
                    target_node: memory_node(),
                    align: Bytes::size(ns.align(), d.human),
                    mode: "devdax",
                }],
            }),
            align: ns.align(),
            name: label.name.clone(),
            numa_node: d.verbose_node(),
            target_node: d.verbose_node(),
            raw_size: Bytes::size(ns.size(), d.human),
            region_offset: Bytes::hex(label.offset, d.human),
            data_offset: Bytes::hex(ns.data_offset(), d.human),
            path: region.path().display().to_string(),
            uid: label.owner.uid,
            gid: label.owner.gid,
            perm: format!("{:04o}", label.owner.mode),
            badblock_count: (count > 0).then_some(count),
            badblocks: ranges.filter(|r| d.media_errors && !r.is_empty()),
        })
    }
}

/// The bad sectors of `label`'s namespace, counted, and its bad ranges from the start of its
/// data. A list that cannot be read fails the command when `-M` asked for it; otherwise it is
/// a warning and counts none, so that `list` still lists.
fn bad_ranges(
    region: &Region,
    label: &Label,
    media_errors: bool,
) -> Result<(u64, Option<Vec<BadRange>>)> {
    let list = match region.badblocks(label) {
        Ok(list) => list,
        Err(e) if !media_errors => {
            eprintln!(
                "devmap: warning: {}; its badblock_count is left out (`check-namespace` checks \
                 the namespace)",
                region_error(e)
            );
            return Ok((0, None));
        }
        Err(e) => {
            return Err(region_error(e)).with_context(|| {
                format!("cannot read the media errors of namespace {:?}", label.name)
            });
        }
    };
    let per_page = PAGE_SIZE / SECTOR;
    let ranges: Vec<BadRange> = list
        .ranges
        .iter()
        .map(|&(first, n)| BadRange {
            offset: first * per_page,
            length: n * per_page,
        })
        .collect();
    Ok((ranges.iter().map(|r| r.length).sum(), Some(ranges)))
}

/// A region as `list -R` and `create-region` print it: ndctl's fields, then devmap's.
#[derive(Debug, Serialize)]
pub struct RegionObject {
    /// `regionX`: `region0` for a region file read alone.
    pub dev: String,
    /// Bytes of the region file, its label area included.
    pub size: Bytes,
    /// What a namespace's start is aligned to, at the least: 2 MiB (`memremap_compat_align()`).
    pub align: Bytes,
    /// Bytes no namespace holds, the label area excluded.
    pub available_size: Bytes,
    /// The longest run of them.
    pub max_available_extent: Bytes,
    /// `pmem`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// With `list -v`, the node nearest its memory: the node it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// With `list -v`, the node its memory is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_node: Option<u32>,
    /// Bad 512-byte sectors in the region's namespaces, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badblock_count: Option<u64>,
    /// With `-M`, when there are any: the bad ranges, in sectors from the start of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badblocks: Option<Vec<BadRange>>,
    /// With `list -C`: the modes its namespaces may have, each with the aligns it takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<Capability>>,
    /// `none`: a store reaches the file's page cache, durable only once written back.
    pub persistence_domain: &'static str,
    /// devmap: the region file.
    pub path: String,
    /// devmap: its uuid.
    pub uuid: String,
    /// devmap: namespaces in the region (whatever the filters).
    pub namespaces_count: usize,
    /// With `list -R -N`, when any pass the filters: the namespaces (nested as ndctl nests
    /// them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<NamespaceObject>>,
}

impl RegionObject {
    /// `region`, without its namespaces.
    pub fn new(region: &Region, d: Detail) -> Result<RegionObject> {
        let (available, extent) = region.free_space(1).map_err(region_error)?;
        let mut bad = Vec::new();
        for label in region.namespaces() {
            let data = label.offset + label.namespace.data_offset();
            let (_, ranges) = bad_ranges(region, label, d.media_errors)?;
            bad.extend(ranges.unwrap_or_default().into_iter().map(|r| BadRange {
                offset: data / SECTOR + r.offset,
                length: r.length,
            }));
        }
        let count: u64 = bad.iter().map(|r| r.length).sum();
        Ok(RegionObject {
            dev: format!("region{}", d.region),
            size: Bytes::size(region.size(), d.human),
            align: Bytes::size(devmap::namespace::data_align(PAGE_SIZE), d.human),
            available_size: Bytes::size(available, d.human),
            max_available_extent: Bytes::size(extent, d.human),
            kind: "pmem",
            numa_node: d.verbose_node(),
            target_node: d.verbose_node(),
            badblock_count: (count > 0).then_some(count),
            badblocks: (d.media_errors && !bad.is_empty()).then_some(bad),
            capabilities: d.capabilities.then(Capability::all),
            persistence_domain: "none",
            path: region.path().display().to_string(),
            uuid: format_uuid(&region.uuid()),
            namespaces_count: region.namespaces().len(),
            namespaces: None,
        })
    }
}

/// A mode a region's namespaces may have, as ndctl's `util_region_capabilities_to_json`
/// prints it (no `sector` entry: devmap has no BTT).
#[derive(Debug, Serialize)]
pub struct Capability {
    /// `fsdax` or `devdax`.
    pub mode: &'static str,
    /// The aligns a namespace of that mode takes, in bytes (numbers even under `-u`).
    pub alignments: Vec<u64>,
}

impl Capability {
    /// fsdax then devdax, as ndctl lists them, each with every align devmap takes.
    fn all() -> Vec<Capability> {
        [NamespaceMode::Fsdax, NamespaceMode::Devdax]
            .into_iter()
            .map(|mode| Capability {
                mode: mode.name(),
                alignments: Namespace::SUPPORTED_ALIGNS.to_vec(),
            })
            .collect()
    }
}

/// Prints `rows` as ndctl's `util_display_json_array` does: an array, except that under `-u`
/// one row prints as the object itself, and no rows print nothing.
pub fn print_list<T: Serialize>(rows: &[T], human: bool) -> Result<()> {
    match rows {
        [] => Ok(()),
        [one] if human => output::object(one),
        rows => output::json(rows),
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

    #[test]
    fn human_numbers_are_ndctls() {
        let json = |b: Bytes| serde_json::to_string(&b).expect("serialise");
        assert_eq!(
            json(Bytes::size(1006 << 20, true)),
            "\"1006.00 MiB (1054.87 MB)\""
        );
        assert_eq!(json(Bytes::size(1006 << 20, false)), "1054867456");
        assert_eq!(
            json(Bytes::size(2 << 20, true)),
            "2097152",
            "below 5000 KiB"
        );
        assert_eq!(json(Bytes::hex(2 << 20, true)), "\"0x200000\"");
        assert_eq!(json(Bytes::hex(2 << 20, false)), "2097152");
    }
}
