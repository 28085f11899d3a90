//! The label index of a region: the table of its namespaces, kept twice at the start of the
//! region and updated crash-safely, as ndctl's label index is: each copy carries a sequence
//! number that cycles 1 → 2 → 3 → 1 (`nd_inc_seq`) and a Fletcher-64 checksum; an update
//! writes the whole table into the copy that is not current, with the next sequence number,
//! and syncs it. A crash mid-write leaves that copy failing its checksum, so the other, older
//! copy is still the current one; a completed write makes the new copy win.
//!
//! Unlike ndctl, which keeps one label per namespace in separate slots and a free-slot bitmap in
//! the index, the table lives in the index itself: a region holds at most [`MAX_NAMESPACES`], so
//! a whole table fits in one 8 KiB copy and one write replaces it atomically as far as readers
//! are concerned (they never trust a copy whose checksum fails).
//!
//! | bytes | field |
//! |---|---|
//! | 0..16 | signature `DEVMAP_LABELS\0\0\0` |
//! | 16..18, 18..20 | version major, minor |
//! | 20..24 | sequence number (1..=3) |
//! | 24..40 | region uuid |
//! | 40..48 | region size |
//! | 48..52 | namespaces in the table |
//! | 52..56 | zero |
//! | 56.. | [`MAX_NAMESPACES`] entries of 128 bytes |
//! | 8184..8192 | checksum |
//!
//! An entry: uuid (16), name (64, NUL-padded), offset in the region (8), size (8), align (8),
//! mode (4), map (4), geometry (4, version 1.1), then owner uid (4), gid (4) and access mode
//! (4, version 1.2; all zero for the default, root and 0600; else the mode's permission bits
//! with bit 16 set).
//!
//! The geometry says which rule placed the namespace's data ([`GeometryRule`]): 0 for the rule
//! of version 1.0 (the data offset on the namespace's own align), 1 for `nd_pfn_init`'s with
//! `memremap_compat_align()` (a 4 KiB-aligned namespace laid out at 2 MiB, its start on 2 MiB,
//! its end truncated). At 2 MiB and 1 GiB both rules give one layout, written 0. Version 1.1 is
//! written only when some entry says 1, so that an index of namespaces whose layout version 1.0
//! describes stays readable by a devmap that knows only 1.0; such a devmap refuses a 1.1 index
//! as newer instead of misreading a 4 KiB-aligned namespace's layout. Likewise version 1.2 is
//! written only when some namespace has an owner other than the default ([`Owner`]: who may
//! open it through `devmap serve`, as a `/dev/dax` node's owner, group and mode), so that an
//! older devmap refuses such an index rather than drop its owners on the next write. Every
//! index is written at the lowest version that describes it, and one of a higher version than
//! its namespaces need is refused.

use super::ondisk::{self, Header, map_code, map_of, mode_code, mode_of, u32_at, u64_at};
use super::{GeometryRule, Namespace};

/// Bytes at the start of a region kept for the label index (its two copies, and room).
pub const LABEL_AREA_BYTES: u64 = 64 << 10;
/// Bytes of one copy of the index.
pub const LABEL_INDEX_LEN: usize = 8192;
/// Namespaces a region can hold.
pub const MAX_NAMESPACES: usize = 48;
/// The signature.
pub const LABEL_SIGNATURE: [u8; 16] = *b"DEVMAP_LABELS\0\0\0";
/// The newest version written and read.
pub const LABEL_VERSION: (u16, u16) = (1, 2);

const ENTRY_LEN: usize = 128;
const ENTRIES_AT: usize = 56;
const CHECKSUM_AT: usize = LABEL_INDEX_LEN - 8;

/// Who may open a namespace through `devmap serve`: its owner, group and permission bits, as a
/// `/dev/dax` node's. The default is the kernel's for a new node: root, group root, 0600.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The owner's uid.
    pub uid: u32,
    /// The group's gid.
    pub gid: u32,
    /// Permission bits (`0o777` at most): read and write are what opening needs.
    pub mode: u32,
}

impl Owner {
    /// Root, group root, 0600.
    pub const DEFAULT: Owner = Owner {
        uid: 0,
        gid: 0,
        mode: 0o600,
    };

    /// Whether a process of `uid`, in the groups `gids`, may open the namespace for reading
    /// and writing (a device-dax mapping is shared and writable): root always may, as with
    /// `CAP_DAC_OVERRIDE`; otherwise the owner's bits for the owner, the group's for a member
    /// of the group, the others' for the rest, as `generic_permission` decides.
    pub fn permits(&self, uid: u32, gids: &[u32]) -> bool {
        let rw = if uid == 0 {
            return true;
        } else if uid == self.uid {
            self.mode >> 6
        } else if gids.contains(&self.gid) {
            self.mode >> 3
        } else {
            self.mode
        };
        rw & 0o6 == 0o6
    }
}

impl Default for Owner {
    fn default() -> Owner {
        Owner::DEFAULT
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "uid {} gid {} mode {:04o}",
            self.uid, self.gid, self.mode
        )
    }
}

/// The bit an explicit owner's stored mode carries, so that a default entry stays all zero.
const OWNER_SET: u32 = 1 << 16;

/// One namespace of a region, as its label records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The namespace's uuid.
    pub uuid: [u8; 16],
    /// Its name: unique in the region, at most 64 bytes of UTF-8.
    pub name: String,
    /// Its first byte in the region.
    pub offset: u64,
    /// Its geometry.
    pub namespace: Namespace,
    /// Who may open it through `devmap serve`.
    pub owner: Owner,
}

/// One copy of the index, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelIndex {
    /// The sequence number (1, 2 or 3).
    pub seq: u32,
    /// The region's uuid.
    pub region_uuid: [u8; 16],
    /// The region's size in bytes.
    pub region_size: u64,
    /// The namespaces, in offset order.
    pub labels: Vec<Label>,
}

/// Why a copy of the index was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// Fewer bytes than a copy.
    #[error("the label index is truncated: {len} bytes, a copy is {LABEL_INDEX_LEN}")]
    Truncated {
        /// Bytes there were.
        len: usize,
    },
    /// Not a devmap label index (another format, or never written).
    #[error("no devmap label index here: not a devmap region")]
    Foreign,
    /// Written by a newer version.
    #[error(
        "the label index is version {major}.{minor}, newer than this devmap reads ({}.{}): \
         upgrade devmap",
        LABEL_VERSION.0,
        LABEL_VERSION.1
    )]
    NewerVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The checksum does not match.
    #[error("the label index is corrupt: checksum {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// Stored.
        stored: u64,
        /// Computed.
        computed: u64,
    },
    /// A field or an entry that no version writes, or entries that contradict each other.
    #[error("the label index is invalid: {why}")]
    Invalid {
        /// What is wrong.
        why: String,
    },
}

fn invalid(why: impl Into<String>) -> LabelError {
    LabelError::Invalid { why: why.into() }
}

/// The sequence number after `seq` (`nd_inc_seq`).
pub fn next_seq(seq: u32) -> u32 {
    seq % 3 + 1
}

/// Which of two decoded copies is current: the one whose sequence number follows the other's,
/// or the only valid one.
pub fn current<'a>(a: Option<&'a LabelIndex>, b: Option<&'a LabelIndex>) -> Option<&'a LabelIndex> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq == next_seq(a.seq) { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl LabelIndex {
    /// The copy's bytes, checksum included.
    pub fn encode(&self) -> Result<[u8; LABEL_INDEX_LEN], LabelError> {
        self.check()?;
        let mut b = [0u8; LABEL_INDEX_LEN];
        let version = (LABEL_VERSION.0, required_minor(&self.labels));
        ondisk::write_header(&mut b, &LABEL_SIGNATURE, version);
        b[20..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..40].copy_from_slice(&self.region_uuid);
        b[40..48].copy_from_slice(&self.region_size.to_le_bytes());
        b[48..52].copy_from_slice(&(self.labels.len() as u32).to_le_bytes());
        for (i, l) in self.labels.iter().enumerate() {
            let e = &mut b[ENTRIES_AT + i * ENTRY_LEN..ENTRIES_AT + (i + 1) * ENTRY_LEN];
            let ns = &l.namespace;
            e[0..16].copy_from_slice(&l.uuid);
            e[16..16 + l.name.len()].copy_from_slice(l.name.as_bytes());
            e[80..88].copy_from_slice(&l.offset.to_le_bytes());
            e[88..96].copy_from_slice(&ns.size().to_le_bytes());
            e[96..104].copy_from_slice(&ns.align().to_le_bytes());
            e[104..108].copy_from_slice(&mode_code(ns.mode()).to_le_bytes());
            e[108..112].copy_from_slice(&map_code(ns.map()).to_le_bytes());
            e[112..116].copy_from_slice(&geometry_code(ns).to_le_bytes());
            if l.owner != Owner::DEFAULT {
                e[116..120].copy_from_slice(&l.owner.uid.to_le_bytes());
                e[120..124].copy_from_slice(&l.owner.gid.to_le_bytes());
                e[124..128].copy_from_slice(&(l.owner.mode | OWNER_SET).to_le_bytes());
            }
        }
        ondisk::seal(&mut b);
        Ok(b)
    }

    /// The rules every copy obeys: a sequence number of 1 to 3, at most [`MAX_NAMESPACES`]
    /// labels in offset order, each inside the region, aligned to its align and clear of the
    /// label area and of the others, and unique non-empty names and uuids.
    pub fn check(&self) -> Result<(), LabelError> {
        if !(1..=3).contains(&self.seq) {
            return Err(invalid(format!("sequence number {} (1 to 3)", self.seq)));
        }
        if self.labels.len() > MAX_NAMESPACES {
            return Err(invalid(format!(
                "{} namespaces, a region holds at most {MAX_NAMESPACES}",
                self.labels.len()
            )));
        }
        let mut end_of_last = LABEL_AREA_BYTES;
        for (i, l) in self.labels.iter().enumerate() {
            let ns = &l.namespace;
            if l.name.is_empty() || l.name.len() > 64 || l.name.contains('\0') {
                return Err(invalid(format!(
                    "namespace {i}'s name {:?} is not 1 to 64 bytes without NUL",
                    l.name
                )));
            }
            if !l.offset.is_multiple_of(ns.start_align()) {
                return Err(invalid(format!(
                    "namespace {:?} at offset {} is not aligned to its start align {} (its \
                     align, at least 2 MiB unless an older devmap laid it out)",
                    l.name,
                    l.offset,
                    ns.start_align()
                )));
            }
            if l.offset < end_of_last {
                return Err(invalid(format!(
                    "namespace {:?} at offset {} overlaps the label area or the namespace before it",
                    l.name, l.offset
                )));
            }
            end_of_last = l
                .offset
                .checked_add(ns.size())
                .filter(|end| *end <= self.region_size)
                .ok_or_else(|| {
                    invalid(format!(
                        "namespace {:?} ({} bytes at {}) runs past the region's end ({})",
                        l.name,
                        ns.size(),
                        l.offset,
                        self.region_size
                    ))
                })?;
            if let Some(other) = self.labels[..i]
                .iter()
                .find(|o| o.name == l.name || o.uuid == l.uuid)
            {
                return Err(invalid(format!(
                    "namespaces {:?} and {:?} share a name or a uuid",
                    other.name, l.name
                )));
            }
        }
        Ok(())
    }

    /// Decodes and checks one copy; the first thing wrong is the error.
    pub fn decode(bytes: &[u8]) -> Result<LabelIndex, LabelError> {
        let b: &[u8; LABEL_INDEX_LEN] = ondisk::check(bytes, &LABEL_SIGNATURE, LABEL_VERSION)
            .map_err(|h| match h {
                Header::Truncated { len } => LabelError::Truncated { len },
                Header::Foreign { .. } => LabelError::Foreign,
                Header::Newer { major, minor } => LabelError::NewerVersion { major, minor },
                Header::Checksum { stored, computed } => LabelError::Checksum { stored, computed },
            })?;
        let count = u32_at(b, 48) as usize;
        if count > MAX_NAMESPACES {
            return Err(invalid(format!(
                "{count} namespaces, a region holds at most {MAX_NAMESPACES}"
            )));
        }
        if b[52..56].iter().any(|&x| x != 0) {
            return Err(invalid("reserved header bytes are not zero"));
        }
        let minor = u16::from_le_bytes([b[18], b[19]]);
        let mut labels = Vec::with_capacity(count);
        for i in 0..MAX_NAMESPACES {
            let e = &b[ENTRIES_AT + i * ENTRY_LEN..ENTRIES_AT + (i + 1) * ENTRY_LEN];
            if i >= count {
                if e.iter().any(|&x| x != 0) {
                    return Err(invalid(format!("unused entry {i} is not zero")));
                }
                continue;
            }
            labels.push(decode_entry(i, e, minor)?);
        }
        let needed = required_minor(&labels);
        if minor != needed {
            return Err(invalid(format!(
                "version 1.{minor} where its namespaces need 1.{needed} (1.1: a namespace laid \
                 out by nd_pfn_init's rule, geometry 1; 1.2: a namespace with an owner other \
                 than root 0600): an index is written at the lowest version that describes it"
            )));
        }
        if b[ENTRIES_AT + MAX_NAMESPACES * ENTRY_LEN..CHECKSUM_AT]
            .iter()
            .any(|&x| x != 0)
        {
            return Err(invalid("reserved bytes after the entries are not zero"));
        }
        let mut region_uuid = [0u8; 16];
        region_uuid.copy_from_slice(&b[24..40]);
        let index = LabelIndex {
            seq: u32_at(b, 20),
            region_uuid,
            region_size: u64_at(b, 40),
            labels,
        };
        index.check()?;
        Ok(index)
    }
}

/// The on-disk geometry code of a namespace: 1 where `nd_pfn_init`'s rule placed its data
/// otherwise than version 1.0's would, 0 where version 1.0 describes its layout.
fn geometry_code(ns: &Namespace) -> u32 {
    match ns.rule() {
        GeometryRule::Kernel if ns.align() < super::COMPAT_ALIGN => 1,
        GeometryRule::Kernel | GeometryRule::OwnAlign => 0,
    }
}

/// Decodes entry `i` of an index of minor version `minor`.
fn decode_entry(i: usize, e: &[u8], minor: u16) -> Result<Label, LabelError> {
    let name_field = &e[16..80];
    let len = name_field.iter().position(|&x| x == 0).unwrap_or(64);
    if name_field[len..].iter().any(|&x| x != 0) {
        return Err(invalid(format!("entry {i}'s name has bytes after its NUL")));
    }
    let name = std::str::from_utf8(&name_field[..len])
        .map_err(|err| invalid(format!("entry {i}'s name is not UTF-8: {err}")))?
        .to_owned();
    if minor < 2 && e[116..128].iter().any(|&x| x != 0) {
        return Err(invalid(format!("entry {i}'s reserved bytes are not zero")));
    }
    let owner = decode_owner(i, &e[116..128])?;
    let code = u32_at(e, 112);
    if minor < 1 && code != 0 {
        return Err(invalid(format!("entry {i}'s reserved bytes are not zero")));
    }
    let m = u32_at(e, 104);
    let mode =
        mode_of(m).ok_or_else(|| invalid(format!("entry {i}'s mode {m} (1 devdax, 2 fsdax)")))?;
    let m = u32_at(e, 108);
    let map = map_of(m).ok_or_else(|| invalid(format!("entry {i}'s map {m} (1 mem, 2 dev)")))?;
    let (size, align) = (u64_at(e, 88), u64_at(e, 96));
    let namespace = match code {
        0 => Namespace::own_align(size, align, mode, map),
        1 => Namespace::new(size, align, mode, map),
        _ => {
            return Err(invalid(format!(
                "entry {i}'s geometry {code} (0 own align, 1 nd_pfn_init's)"
            )));
        }
    }
    .map_err(|err| invalid(format!("entry {i} ({name:?}): {err}")))?;
    if geometry_code(&namespace) != code {
        return Err(invalid(format!(
            "entry {i} ({name:?}) says geometry 1 at align {align}, where both rules agree: \
             written 0"
        )));
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&e[0..16]);
    Ok(Label {
        uuid,
        name,
        offset: u64_at(e, 80),
        namespace,
        owner,
    })
}

/// The owner fields of entry `i`: all zero for the default, else the mode with [`OWNER_SET`].
fn decode_owner(i: usize, f: &[u8]) -> Result<Owner, LabelError> {
    let (uid, gid, stored) = (u32_at(f, 0), u32_at(f, 4), u32_at(f, 8));
    if stored == 0 {
        if uid != 0 || gid != 0 {
            return Err(invalid(format!("entry {i} has an owner without a mode")));
        }
        return Ok(Owner::DEFAULT);
    }
    let mode = stored & !OWNER_SET;
    if stored & OWNER_SET == 0 || mode > 0o777 {
        return Err(invalid(format!(
            "entry {i}'s owner mode {stored:#x} (permission bits with bit 16 set)"
        )));
    }
    let owner = Owner { uid, gid, mode };
    if owner == Owner::DEFAULT {
        return Err(invalid(format!(
            "entry {i} spells out the default owner, which is written as zeros"
        )));
    }
    Ok(owner)
}

/// The lowest minor version that describes `labels`: 2 with an owner other than the default,
/// 1 with a namespace of geometry 1, else 0.
fn required_minor(labels: &[Label]) -> u16 {
    if labels.iter().any(|l| l.owner != Owner::DEFAULT) {
        2
    } else if labels.iter().any(|l| geometry_code(&l.namespace) != 0) {
        1
    } else {
        0
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
