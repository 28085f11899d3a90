//! The on-disk info block at the start of every namespace: what a namespace is (uuid, parent
//! region's uuid, name, mode, size, align, where its memmap lives), where its data starts (the
//! `nd_pfn_init` offset, or for a 4 KiB-aligned namespace an older devmap created the offset at
//! its own align, which it keeps; checked against the geometry), and the state a warm enable
//! needs (a clean flag and a generation), sealed by the kernel's `nd_sb_checksum` (Fletcher-64
//! over the block with the checksum field zeroed).
//!
//! The block is 4 KiB, written at byte 4096 of the namespace, where the kernel keeps
//! `struct nd_pfn_sb` (the first 4 KiB stay free for labels of other formats; the whole 8 KiB
//! is the info block reserve of [`INFO_BLOCK_BYTES`](super::INFO_BLOCK_BYTES)). All integers are
//! little-endian. [`InfoBlock::decode`] never panics and never trusts a field before the
//! checksum and the signature say the block is ours: it names the first thing wrong, and a
//! caller that gets an error must not write the block back.
//!
//! | bytes | field |
//! |---|---|
//! | 0..16 | signature `DEVMAP_NS_INFO\0\0` |
//! | 16..18, 18..20 | version major, minor |
//! | 20..24 | flags ([`InfoFlags`]) |
//! | 24..40, 40..56 | uuid, parent (region) uuid |
//! | 56..120 | name, UTF-8, NUL-padded |
//! | 120..124, 124..128 | mode (1 devdax, 2 fsdax), map (1 mem, 2 dev) |
//! | 128..136, 136..144 | size, align |
//! | 144..152, 152..160 | data offset, npfns (pfns of data) |
//! | 160..168 | generation |
//! | 168..176 | memmap record (1.1): first pfn of the device the on-device memmap describes |
//! | 176..184 | memmap record (1.1): the pgmap id its head descriptors name |
//! | 184..188 | memmap record (1.1): its layout (1 flat, 2 vmemmap, 3 heads) |
//! | 188..192 | room checksums (1.2): units, 1 to [`RoomSums::MAX_UNITS`] |
//! | 192..200 | room checksums (1.2): compounds per unit, at least 1 |
//! | 200..4040 | room checksums (1.2): one per unit, 8 bytes each (0: unknown), then zero |
//! | 4040..4088 | zero |
//! | 4088..4096 | checksum |
//!
//! Version 1.1 adds the memmap record of a `--map dev` namespace whose memmap lives in its
//! room ([`MemmapRecord`]), and is written only with one; a 1.0 block has none and reads as
//! before. Version 1.2 adds the checksums of the room's units ([`RoomSums`]) that a clean
//! disable computed, and is written only with them (so only with a record); a 1.1 block has
//! none, and a warm enable of its room rebuilds each unit on first use instead of trusting it.

use super::ondisk::{self, Header, map_code, map_of, mode_code, mode_of, u32_at, u64_at};
use super::{GeometryRule, MemmapLocation, Namespace, NamespaceMode};
use crate::addr::PAGE_SIZE;
use crate::addr::Pfn;
use crate::memmap::{Layout, RoomSums};

/// Bytes of the block.
pub const INFO_BLOCK_LEN: usize = 4096;
/// Where the block sits in its namespace.
pub const INFO_BLOCK_OFFSET: u64 = 4096;
/// The signature.
pub const INFO_SIGNATURE: [u8; 16] = *b"DEVMAP_NS_INFO\0\0";
/// The version this code writes and the newest it reads.
pub const INFO_VERSION: (u16, u16) = (1, 2);
/// Bytes of the name field.
pub const NAME_LEN: usize = 64;

const CHECKSUM_AT: usize = INFO_BLOCK_LEN - 8;
/// Where the room checksums (1.2) start: their count and unit size, then the sums.
const SUMS_AT: usize = 188;
const SUMS_TABLE_AT: usize = 200;
const SUMS_END: usize = SUMS_TABLE_AT + 8 * RoomSums::MAX_UNITS;
const RESERVED: std::ops::Range<usize> = SUMS_END..CHECKSUM_AT;
/// The version of a block without a memmap record.
const VERSION_NO_RECORD: (u16, u16) = (1, 0);
/// The version of a block with a memmap record but no room checksums.
const VERSION_NO_SUMS: (u16, u16) = (1, 1);

/// Flags of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InfoFlags(u32);

impl InfoFlags {
    /// No flags.
    pub const NONE: InfoFlags = InfoFlags(0);
    /// The namespace was disabled cleanly: an on-device memmap is valid and may be adopted.
    pub const CLEAN: InfoFlags = InfoFlags(1 << 0);
    /// Every flag this version knows.
    const KNOWN: u32 = 1;

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: InfoFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// With `other` set or cleared.
    pub const fn with(self, other: InfoFlags, on: bool) -> InfoFlags {
        if on {
            InfoFlags(self.0 | other.0)
        } else {
            InfoFlags(self.0 & !other.0)
        }
    }
}

/// Where a `--map dev` namespace's on-device memmap was built, so that a later enable can tell
/// whether it may adopt it: the descriptors name pfns (compound heads) and a pgmap id, and are
/// laid out for one layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemmapRecord {
    /// First pfn of the device's range when the memmap was written.
    pub base: Pfn,
    /// The pgmap id its head descriptors name.
    pub pgmap_id: u64,
    /// Its layout.
    pub layout: Layout,
}

/// A namespace's info block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoBlock {
    /// The namespace's uuid.
    pub uuid: [u8; 16],
    /// The uuid of the region holding it.
    pub parent_uuid: [u8; 16],
    /// Its name (at most [`NAME_LEN`] bytes of UTF-8, no NUL).
    pub name: String,
    /// Its geometry: size, align, mode, memmap location and the data offset they imply.
    pub namespace: Namespace,
    /// Flags.
    pub flags: InfoFlags,
    /// Bumped every time the block is rewritten, so that of two copies the newer wins.
    pub generation: u64,
    /// Where the on-device memmap was last built (`--map dev` namespaces once enabled).
    pub memmap: Option<MemmapRecord>,
    /// The checksums of that memmap's units, as the last clean disable wrote them (only with
    /// a record; none in blocks before 1.2, nor in one marked in use).
    pub room_sums: Option<RoomSums>,
}

/// Why an info block was refused. Nothing is written over a block refused for any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InfoBlockError {
    /// Fewer bytes than a block.
    #[error("the info block is truncated: {len} bytes, a block is {INFO_BLOCK_LEN}")]
    Truncated {
        /// Bytes there were.
        len: usize,
    },
    /// Not a devmap info block (another format, or nothing written yet).
    #[error("no devmap info block here (signature {found:02x?}): not a devmap namespace")]
    Foreign {
        /// The first 16 bytes found.
        found: [u8; 16],
    },
    /// Written by a newer version.
    #[error(
        "the info block is version {major}.{minor}, newer than this devmap reads ({}.{}): \
         upgrade devmap",
        INFO_VERSION.0,
        INFO_VERSION.1
    )]
    NewerVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The checksum does not match: the block is corrupt.
    #[error("the info block is corrupt: checksum {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// Stored checksum.
        stored: u64,
        /// Checksum of the bytes.
        computed: u64,
    },
    /// A field holds a value no version writes.
    #[error("the info block's {field} is invalid: {why}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The geometry fields do not describe a namespace, or disagree with what `nd_pfn_init`
    /// computes from them.
    #[error("the info block's geometry is inconsistent: {why}")]
    Geometry {
        /// What disagrees.
        why: String,
    },
}

fn bad(field: &'static str, why: impl Into<String>) -> InfoBlockError {
    InfoBlockError::BadField {
        field,
        why: why.into(),
    }
}

impl InfoBlock {
    /// The block's bytes, checksum included.
    pub fn encode(&self) -> Result<[u8; INFO_BLOCK_LEN], InfoBlockError> {
        if self.name.len() > NAME_LEN || self.name.contains('\0') {
            return Err(bad(
                "name",
                format!(
                    "{:?} is {} bytes or holds a NUL; a name is at most {NAME_LEN} bytes",
                    self.name,
                    self.name.len()
                ),
            ));
        }
        let ns = &self.namespace;
        let mut b = [0u8; INFO_BLOCK_LEN];
        let version = match (&self.memmap, &self.room_sums) {
            (Some(_), Some(_)) => INFO_VERSION,
            (Some(_), None) => VERSION_NO_SUMS,
            (None, None) => VERSION_NO_RECORD,
            (None, Some(_)) => {
                return Err(bad(
                    "room checksums",
                    "given without a memmap record: they describe the recorded memmap",
                ));
            }
        };
        ondisk::write_header(&mut b, &INFO_SIGNATURE, version);
        b[20..24].copy_from_slice(&self.flags.0.to_le_bytes());
        b[24..40].copy_from_slice(&self.uuid);
        b[40..56].copy_from_slice(&self.parent_uuid);
        b[56..56 + self.name.len()].copy_from_slice(self.name.as_bytes());
        b[120..124].copy_from_slice(&mode_code(ns.mode()).to_le_bytes());
        b[124..128].copy_from_slice(&map_code(ns.map()).to_le_bytes());
        b[128..136].copy_from_slice(&ns.size().to_le_bytes());
        b[136..144].copy_from_slice(&ns.align().to_le_bytes());
        b[144..152].copy_from_slice(&ns.data_offset().to_le_bytes());
        b[152..160].copy_from_slice(&(ns.data_bytes() / PAGE_SIZE).to_le_bytes());
        b[160..168].copy_from_slice(&self.generation.to_le_bytes());
        if let Some(r) = self.memmap {
            if r.base.raw() == 0
                || r.pgmap_id == 0
                || !r.base.raw().is_multiple_of(ns.align() / PAGE_SIZE)
            {
                return Err(bad(
                    "memmap record",
                    format!("{r:?} has a zero or unaligned pfn, or a zero pgmap id"),
                ));
            }
            b[168..176].copy_from_slice(&r.base.raw().to_le_bytes());
            b[176..184].copy_from_slice(&r.pgmap_id.to_le_bytes());
            b[184..188].copy_from_slice(&layout_code(r.layout).to_le_bytes());
        }
        if let Some(t) = &self.room_sums {
            if t.sums.is_empty() || t.sums.len() > RoomSums::MAX_UNITS || t.unit_compounds == 0 {
                return Err(bad(
                    "room checksums",
                    format!(
                        "{} units of {} compounds: a table holds 1 to {} units of at least one",
                        t.sums.len(),
                        t.unit_compounds,
                        RoomSums::MAX_UNITS
                    ),
                ));
            }
            // At most MAX_UNITS, so the count fits.
            b[SUMS_AT..SUMS_AT + 4].copy_from_slice(&(t.sums.len() as u32).to_le_bytes());
            b[SUMS_AT + 4..SUMS_TABLE_AT].copy_from_slice(&t.unit_compounds.to_le_bytes());
            for (i, sum) in t.sums.iter().enumerate() {
                let at = SUMS_TABLE_AT + 8 * i;
                b[at..at + 8].copy_from_slice(&sum.to_le_bytes());
            }
        }
        ondisk::seal(&mut b);
        Ok(b)
    }

    /// Decodes and checks a block: its length, signature, version, checksum, every field, and
    /// the geometry against `nd_pfn_init`. The first thing wrong is the error.
    pub fn decode(bytes: &[u8]) -> Result<InfoBlock, InfoBlockError> {
        let b: &[u8; INFO_BLOCK_LEN] = ondisk::check(bytes, &INFO_SIGNATURE, INFO_VERSION)
            .map_err(|h| match h {
                Header::Truncated { len } => InfoBlockError::Truncated { len },
                Header::Foreign { found } => InfoBlockError::Foreign { found },
                Header::Newer { major, minor } => InfoBlockError::NewerVersion { major, minor },
                Header::Checksum { stored, computed } => {
                    InfoBlockError::Checksum { stored, computed }
                }
            })?;
        let flags = u32_at(b, 20);
        if flags & !InfoFlags::KNOWN != 0 {
            return Err(bad(
                "flags",
                format!("{flags:#x} has bits this version does not know"),
            ));
        }
        if b[RESERVED].iter().any(|&x| x != 0) {
            return Err(bad("reserved bytes", "not zero"));
        }
        let name_field = &b[56..56 + NAME_LEN];
        let name_len = name_field.iter().position(|&x| x == 0).unwrap_or(NAME_LEN);
        if name_field[name_len..].iter().any(|&x| x != 0) {
            return Err(bad("name", "bytes after its NUL are not zero"));
        }
        let name = std::str::from_utf8(&name_field[..name_len])
            .map_err(|e| bad("name", format!("not UTF-8: {e}")))?
            .to_owned();
        let m = u32_at(b, 120);
        let mode = mode_of(m).ok_or_else(|| bad("mode", format!("{m} (1 is devdax, 2 fsdax)")))?;
        let m = u32_at(b, 124);
        let map = map_of(m).ok_or_else(|| bad("map", format!("{m} (1 is mem, 2 dev)")))?;
        let (size, align) = (u64_at(b, 128), u64_at(b, 136));
        let (data_offset, npfns) = (u64_at(b, 144), u64_at(b, 152));
        let namespace = recorded_geometry(size, align, mode, map, data_offset, npfns)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[24..40]);
        let mut parent_uuid = [0u8; 16];
        parent_uuid.copy_from_slice(&b[40..56]);
        let memmap = decode_record(b, &namespace)?;
        let room_sums = decode_sums(b)?;
        Ok(InfoBlock {
            uuid,
            parent_uuid,
            name,
            namespace,
            flags: InfoFlags(flags),
            generation: u64_at(b, 160),
            memmap,
            room_sums,
        })
    }
}

/// The namespace whose layout the block records: the one `nd_pfn_init` gives its size, align
/// and map, or, for a 4 KiB-aligned namespace an older devmap created, the one at its own align
/// ([`GeometryRule::OwnAlign`](super::GeometryRule::OwnAlign)), which it keeps. The recorded
/// data offset and npfns must be one of these, whole.
fn recorded_geometry(
    size: u64,
    align: u64,
    mode: NamespaceMode,
    map: MemmapLocation,
    data_offset: u64,
    npfns: u64,
) -> Result<Namespace, InfoBlockError> {
    let kernel = Namespace::new(size, align, mode, map);
    let own = Namespace::own_align(size, align, mode, map)
        .ok()
        .filter(|n| n.rule() == GeometryRule::OwnAlign);
    let candidates: Vec<Namespace> = kernel.iter().copied().chain(own).collect();
    let geometry = |why: String| InfoBlockError::Geometry { why };
    let pfns = |n: &Namespace| n.data_bytes() / PAGE_SIZE;
    if let Some(n) = candidates
        .iter()
        .find(|n| n.data_offset() == data_offset && pfns(n) == npfns)
    {
        return Ok(*n);
    }
    if let Some(n) = candidates.iter().find(|n| n.data_offset() == data_offset) {
        return Err(geometry(format!(
            "{npfns} data pfns where the namespace holds {}",
            pfns(n)
        )));
    }
    let kernel_says = match kernel {
        Ok(n) => format!("nd_pfn_init puts it at {}", n.data_offset()),
        Err(e) => format!("nd_pfn_init refuses the namespace ({e})"),
    };
    let older = match own {
        Some(o) => format!(
            ", and an older devmap at the namespace's own align at {}",
            o.data_offset()
        ),
        None => String::new(),
    };
    Err(geometry(format!(
        "data offset {data_offset} where {kernel_says}{older}"
    )))
}

/// The on-disk code of a layout.
fn layout_code(layout: Layout) -> u32 {
    match layout {
        Layout::Flat => 1,
        Layout::Vmemmap => 2,
        Layout::Heads => 3,
    }
}

/// The room checksums of a checked block: none before 1.2 (their bytes are reserved, so
/// zero), a table of 1 to [`RoomSums::MAX_UNITS`] in a 1.2 block (whose record
/// [`decode_record`] has checked), zero after its last unit.
fn decode_sums(b: &[u8; INFO_BLOCK_LEN]) -> Result<Option<RoomSums>, InfoBlockError> {
    let minor = u16::from_le_bytes([b[18], b[19]]);
    if minor < INFO_VERSION.1 {
        if b[SUMS_AT..SUMS_END].iter().any(|&x| x != 0) {
            return Err(bad("reserved bytes", "not zero"));
        }
        return Ok(None);
    }
    let count = u32_at(b, SUMS_AT) as usize;
    let unit_compounds = u64_at(b, SUMS_AT + 4);
    if count == 0 || count > RoomSums::MAX_UNITS {
        return Err(bad(
            "room checksum count",
            format!("{count} (1 to {})", RoomSums::MAX_UNITS),
        ));
    }
    if unit_compounds == 0 {
        return Err(bad("room checksum unit", "0 compounds per unit"));
    }
    let table_end = SUMS_TABLE_AT + 8 * count;
    if b[table_end..SUMS_END].iter().any(|&x| x != 0) {
        return Err(bad(
            "room checksums",
            "bytes after the last unit are not zero",
        ));
    }
    let sums = (0..count)
        .map(|i| u64_at(b, SUMS_TABLE_AT + 8 * i))
        .collect();
    Ok(Some(RoomSums {
        unit_compounds,
        sums,
    }))
}

/// The memmap record of a checked block: none in a 1.0 block (its bytes are reserved, so
/// zero), a valid one in a 1.1 block, which is only written with one.
fn decode_record(
    b: &[u8; INFO_BLOCK_LEN],
    ns: &Namespace,
) -> Result<Option<MemmapRecord>, InfoBlockError> {
    let minor = u16::from_le_bytes([b[18], b[19]]);
    let (base, id, code) = (u64_at(b, 168), u64_at(b, 176), u32_at(b, 184));
    if minor < VERSION_NO_SUMS.1 {
        if base != 0 || id != 0 || code != 0 {
            return Err(bad("reserved bytes", "not zero"));
        }
        return Ok(None);
    }
    if ns.map() != MemmapLocation::Dev {
        return Err(bad(
            "memmap record",
            "present in a --map mem namespace, whose memmap never lives on the device",
        ));
    }
    let layout = match code {
        1 => Layout::Flat,
        2 => Layout::Vmemmap,
        3 => Layout::Heads,
        _ => {
            return Err(bad(
                "memmap layout",
                format!("{code} (1 flat, 2 vmemmap, 3 heads)"),
            ));
        }
    };
    let base = Pfn::new(base);
    if base.raw() == 0 || !base.raw().is_multiple_of(ns.align() / PAGE_SIZE) || base > Pfn::END {
        return Err(bad(
            "memmap base pfn",
            format!("{base} is zero, beyond the physical address space or not on the align"),
        ));
    }
    if id == 0 || id > crate::desc::PgmapId::MAX {
        return Err(bad("memmap pgmap id", format!("{id} is zero or too large")));
    }
    Ok(Some(MemmapRecord {
        base,
        pgmap_id: id,
        layout,
    }))
}

#[cfg(all(test, not(loom)))]
mod tests;
