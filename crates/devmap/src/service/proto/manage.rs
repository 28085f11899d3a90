//! The management messages (DESIGN §9.1): creating, destroying and checking a namespace of a
//! served region and clearing its errors, which the ndctl verbs send when given a service's
//! socket, since the service holds the region. Only root and the service's own uid may send
//! them (`EACCES` otherwise). Each reply carries what the verb prints beyond the namespace's
//! object, which the verb reads from the region file itself (read-only, as `list` does).

use super::fields::{bool_, name, u32_, u64_};
use super::kind;
use crate::wire::{Decode, Encode, Reader, WireError, WireMessage, Writer};

/// Creates a namespace, as `devmap create-namespace` does in-process: the same geometry rules,
/// the first free run on its start align. Reply: [`Created`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateNamespace {
    /// The region file, or empty when the service serves one region.
    pub region: String,
    /// The new namespace's name, or empty for the first free of `namespace0`, `namespace1`, ...
    pub name: String,
    /// Bytes, info block included, a multiple of `align`; 0 for the largest the region has
    /// room for.
    pub size: u64,
    /// The align in bytes: 4096, 2 MiB or 1 GiB.
    pub align: u64,
    /// `devdax` or `fsdax`.
    pub mode: String,
    /// Where the memmap lives: `mem` or `dev`.
    pub map: String,
    /// Who may open it: the owner's uid, ...
    pub uid: u32,
    /// ... gid ...
    pub gid: u32,
    /// ... and permission bits (at most 0o777).
    pub perm: u32,
}
message!(CreateNamespace = kind::CREATE_NAMESPACE;
    region: str / name, name: str / name, size: u64 / u64_, align: u64 / u64_,
    mode: str / name, map: str / name, uid: u32 / u32_, gid: u32 / u32_, perm: u32 / u32_);

/// A namespace created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Its name (the one chosen, when the request left it empty).
    pub name: String,
    /// Its raw size in bytes (the one chosen, when the request asked for the largest).
    pub size: u64,
}
message!(Created = kind::CREATED; name: str / name, size: u64 / u64_);

/// Destroys a namespace: its label, then its info block. One the service has enabled is
/// refused (`EBUSY`, naming the clients that map it) whatever `force` says: disable it first.
/// Without `force`, one left in use by a process that ended, or whose info block cannot be
/// read, is refused (`EUCLEAN`). Reply: [`super::Done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyNamespace {
    /// The region file, or empty for the one region holding `name`.
    pub region: String,
    /// The namespace.
    pub name: String,
    /// Destroy it though it was not disabled cleanly or its info block cannot be read.
    pub force: bool,
}
message!(DestroyNamespace = kind::DESTROY_NAMESPACE;
    region: str / name, name: str / name, force: bool / bool_);

/// Checks a namespace: its label and the info block it points to are read, checked and
/// compared (the library's checks, as `check-namespace` in-process). Works on an enabled
/// namespace too (nothing is written). Reply: [`Checked`]; a namespace that fails a check
/// is refused with what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckNamespace {
    /// The region file, or empty for the one region holding `name`.
    pub region: String,
    /// The namespace.
    pub name: String,
}
message!(CheckNamespace = kind::CHECK_NAMESPACE; region: str / name, name: str / name);

/// What a [`CheckNamespace`] read from a namespace that passed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The info block's generation.
    pub generation: u64,
    /// Whether it says the namespace was last disabled cleanly.
    pub clean: bool,
    /// The layout of the memmap kept on the device (`flat`, `heads`, ...), or empty for none.
    pub memmap_layout: String,
    /// The first pfn that memmap describes (0 when there is none).
    pub memmap_base_pfn: u64,
    /// The pid of the service when it has the namespace enabled, else 0.
    pub enabled_by: u32,
}
message!(Checked = kind::CHECKED;
    generation: u64 / u64_, clean: bool / bool_, memmap_layout: str / name,
    memmap_base_pfn: u64 / u64_, enabled_by: u32 / u32_);

/// Clears the bad pages of `len` bytes from byte `offset` of a namespace's data (multiples of
/// 4 KiB inside it), as `ndctl clear-errors` does once the bytes were rewritten or discarded:
/// an enabled namespace through its device (the pages' poison too, so that a mapping made
/// from now on reads them), any other in its badblocks list. Reply: [`Cleared`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearErrors {
    /// The region file, or empty for the one region holding `name`.
    pub region: String,
    /// The namespace.
    pub name: String,
    /// Byte offset in the namespace's data.
    pub offset: u64,
    /// Bytes (0 clears nothing).
    pub len: u64,
}
message!(ClearErrors = kind::CLEAR_ERRORS;
    region: str / name, name: str / name, offset: u64 / u64_, len: u64 / u64_);

/// What a [`ClearErrors`] did, in 4 KiB pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleared {
    /// Bad pages the range held, cleared.
    pub cleared: u64,
    /// Bad pages the namespace has left.
    pub left: u64,
}
message!(Cleared = kind::CLEARED; cleared: u64 / u64_, left: u64 / u64_);

#[cfg(test)]
mod tests {
    use super::super::{NamespaceEntry, Namespaces};
    use super::*;
    use crate::wire::{decode_payload, encode_payload};

    fn round_trip<M: Encode + Decode + PartialEq + std::fmt::Debug>(m: M) {
        let bytes = encode_payload(&m).expect("encode");
        assert_eq!(decode_payload::<M>(&bytes).expect("decode"), m);
        // Every prefix is refused, never misread.
        for cut in 0..bytes.len() {
            assert!(decode_payload::<M>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_service_management_messages_round_trip() {
        round_trip(CreateNamespace {
            region: "/dev/shm/pool.img".into(),
            name: String::new(),
            size: 0,
            align: 2 << 20,
            mode: "devdax".into(),
            map: "dev".into(),
            uid: 1000,
            gid: 100,
            perm: 0o660,
        });
        round_trip(Created {
            name: "namespace3".into(),
            size: 64 << 20,
        });
        round_trip(DestroyNamespace {
            region: String::new(),
            name: "kv".into(),
            force: true,
        });
        round_trip(CheckNamespace {
            region: "r".into(),
            name: "kv".into(),
        });
        round_trip(Checked {
            generation: 7,
            clean: true,
            memmap_layout: "heads".into(),
            memmap_base_pfn: 0x10_0000,
            enabled_by: 0,
        });
        round_trip(ClearErrors {
            region: String::new(),
            name: "kv".into(),
            offset: 8192,
            len: 4096,
        });
        round_trip(Cleared {
            cleared: 1,
            left: 2,
        });
    }

    #[test]
    fn the_service_lists_every_region_in_its_order() {
        round_trip(Namespaces {
            entries: vec![NamespaceEntry {
                region: "/b".into(),
                name: "kv".into(),
                size: 64 << 20,
                data_bytes: 62 << 20,
                align: 2 << 20,
                mode: "devdax".into(),
                enabled: true,
                warm: false,
                clients: 2,
            }],
            regions: vec!["/a".into(), "/b".into()],
        });
        // A region count beyond what the payload holds is refused before anything is kept.
        let mut bytes = encode_payload(&Namespaces::default()).expect("encode");
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_payload::<Namespaces>(&bytes).is_err());
    }
}
