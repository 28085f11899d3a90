//! Regions: a file (sparse: it costs what its namespaces write) that holds namespaces, with the
//! label index (two copies, [`super::label`]) at its start and each namespace's info block
//! ([`super::infoblock`]) at byte 4096 of the namespace.
//!
//! One process manages a region at a time: [`Access::Manage`] takes an exclusive advisory
//! lock (`flock`) on the file, and a second manager is refused with the reason; [`Access::Read`]
//! takes no lock and may list a region another process manages. A region that fails its checks
//! (foreign, truncated, corrupt in both copies, newer) is refused before anything is written,
//! and nothing is ever written through a read-only handle.
//!
//! Creating a namespace writes its info block first and its label second; destroying one
//! removes the label first and zeroes the info block second. A crash between the two leaves an
//! info block no label points to, which the next create over it overwrites: the label index is
//! what says which namespaces exist.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::NamespaceError;
use super::badblocks::BadblocksError;
use super::infoblock::{INFO_BLOCK_LEN, INFO_BLOCK_OFFSET, InfoBlock, InfoBlockError};
use super::label::{
    LABEL_AREA_BYTES, LABEL_INDEX_LEN, Label, LabelError, LabelIndex, MAX_NAMESPACES, current,
    next_seq,
};
use super::lock::NamespaceLock;

/// The smallest region: the label area and 1 MiB for namespaces.
pub const MIN_REGION_BYTES: u64 = LABEL_AREA_BYTES + (1 << 20);

/// How a region is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// List and read only; no lock, so another process may manage the region meanwhile.
    Read,
    /// Create and destroy namespaces; holds the region's exclusive lock.
    Manage,
}

/// Why a region operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// Reading, writing, creating or locking the file failed.
    #[error("{path}: cannot {what}: {source}")]
    Io {
        /// The region file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Another process manages the region.
    #[error(
        "{path} is managed by another process (it holds the region's lock): open it read-only to list it"
    )]
    Busy {
        /// The region file.
        path: PathBuf,
    },
    /// The path names a directory.
    #[error(
        "{path} is a directory: give the path of a region file (one `devmap create-region` made)"
    )]
    IsDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A region too small to hold its label area and a namespace.
    #[error("a region of {size} bytes is too small: it needs at least {min} bytes")]
    TooSmall {
        /// Size asked for.
        size: u64,
        /// The least that works.
        min: u64,
    },
    /// Neither copy of the label index is valid: the first copy's reason, then the second's.
    #[error("{path} is not a usable devmap region: first label copy: {first}; second: {second}")]
    Labels {
        /// The region file.
        path: PathBuf,
        /// Why the first copy was refused.
        first: LabelError,
        /// Why the second copy was refused.
        second: LabelError,
    },
    /// The label index says the region is a different size than the file.
    #[error("{path}: the labels describe a region of {labels} bytes but the file holds {file}")]
    SizeMismatch {
        /// The region file.
        path: PathBuf,
        /// Size the labels record.
        labels: u64,
        /// Size of the file.
        file: u64,
    },
    /// A change through a read-only handle.
    #[error("the region is open read-only: open it to manage it (one process at a time)")]
    ReadOnly,
    /// A name in use.
    #[error("a namespace named {name:?} exists already in this region")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// No namespace of that name.
    #[error("no namespace named {name:?} in this region")]
    NotFound {
        /// The name.
        name: String,
    },
    /// No room for the namespace.
    #[error("no room for {size} bytes aligned to {align} (largest free run: {largest} bytes)")]
    NoSpace {
        /// Bytes asked for.
        size: u64,
        /// Their align.
        align: u64,
        /// The largest free, aligned run.
        largest: u64,
    },
    /// The region holds as many namespaces as it can.
    #[error("the region holds {MAX_NAMESPACES} namespaces already: destroy one first")]
    Full,
    /// A name that does not fit a label.
    #[error("namespace name {name:?} is not 1 to 64 bytes without NUL")]
    BadName {
        /// The name.
        name: String,
    },
    /// The geometry asked for.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// A label update that would be invalid.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// Only device-dax namespaces can be enabled (fsdax needs a filesystem on top).
    #[error("namespace {name:?} is fsdax: only devdax namespaces can be enabled here")]
    NotDevdax {
        /// The namespace.
        name: String,
    },
    /// Enabling or disabling a namespace failed.
    #[error("namespace {name:?}: {why}")]
    Enable {
        /// The namespace.
        name: String,
        /// What went wrong.
        why: String,
    },
    /// The namespace is enabled already, through another region handle or device space of
    /// this process or by another process: it holds the namespace's lock.
    #[error(
        "namespace {name:?} of {path} is enabled already, by another device in this process or \
         another process (it holds the namespace's lock): disable it there first"
    )]
    NamespaceBusy {
        /// The namespace.
        name: String,
        /// The region file.
        path: PathBuf,
    },
    /// An align that is not a power of two.
    #[error("align {align} is not a power of two: give one such as 1, 4096 or 2097152")]
    BadAlign {
        /// The align given.
        align: u64,
    },
    /// A namespace's badblocks list.
    #[error("namespace {name:?}: {source}")]
    Badblocks {
        /// The namespace.
        name: String,
        /// Why its list was refused.
        #[source]
        source: BadblocksError,
    },
    /// An owner mode with bits beyond the permission bits.
    #[error("mode {mode:#o} has bits beyond the permission bits: use at most 0777 (e.g. 0660)")]
    OwnerMode {
        /// As asked.
        mode: u32,
    },
    /// A `clear-errors` range off a page boundary or past the namespace's data.
    #[error(
        "namespace {name:?}: cannot clear errors of {len} bytes at offset {offset}: give \
         multiples of 4096 inside its {data} data bytes"
    )]
    ClearRange {
        /// The namespace.
        name: String,
        /// As asked.
        offset: u64,
        /// As asked.
        len: u64,
        /// Its data bytes.
        data: u64,
    },
    /// A label change through a shared handle (one the service enables a namespace through),
    /// whose copy of the label index may be stale.
    #[error(
        "{path}: this handle shares the region with its manager and may not change its labels: \
         change them through the manager's handle"
    )]
    Shared {
        /// The region file.
        path: PathBuf,
    },
    /// A namespace left enabled (its info block says in use: the process that enabled it
    /// ended without disabling it), or whose info block cannot be read, is not destroyed
    /// without force.
    #[error(
        "namespace {name:?} {}: check its data, then destroy it with --force",
        match unreadable {
            None => "was not disabled cleanly (the process that last enabled it ended without \
                     disabling it)".to_owned(),
            Some(why) => format!("has an info block that cannot be read ({why})"),
        }
    )]
    NotClean {
        /// The namespace.
        name: String,
        /// Why its info block cannot be read, or `None` when it reads and says in use.
        unreadable: Option<String>,
    },
    /// A namespace's info block.
    #[error("namespace {name:?}: {source}")]
    InfoBlock {
        /// The namespace.
        name: String,
        /// Why its block was refused.
        #[source]
        source: InfoBlockError,
    },
}

/// An open region.
#[derive(Debug)]
pub struct Region {
    file: File,
    pub(super) path: PathBuf,
    pub(super) access: Access,
    pub(super) index: LabelIndex,
    /// Which copy (0 or 1) holds `index`.
    slot: u64,
    /// A handle [`Region::share`] made: its label index is a copy that goes stale, so it never
    /// writes labels.
    shared: bool,
}

/// 16 random bytes as an RFC 4122 version-4 uuid.
pub(super) fn new_uuid(path: &Path) -> Result<[u8; 16], RegionError> {
    let mut u = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|f| f.read_exact_at(&mut u, 0))
        .map_err(|source| RegionError::Io {
            path: path.to_path_buf(),
            what: "read /dev/urandom for a uuid",
            source,
        })?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

impl Region {
    /// Creates a region file of `size` bytes at `path` (refusing a file that exists: nothing
    /// is overwritten), writes its first label copy and keeps it managed.
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<Region, RegionError> {
        let path = path.as_ref().to_path_buf();
        if size < MIN_REGION_BYTES {
            return Err(RegionError::TooSmall {
                size,
                min: MIN_REGION_BYTES,
            });
        }
        let io = |what| {
            let path = path.clone();
            move |source| RegionError::Io { path, what, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("create the region file"))?;
        lock(&file, &path)?;
        file.set_len(size).map_err(io("size the region file"))?;
        let index = LabelIndex {
            seq: 1,
            region_uuid: new_uuid(&path)?,
            region_size: size,
            labels: Vec::new(),
        };
        let mut region = Region {
            file,
            path,
            access: Access::Manage,
            index,
            slot: 1,
            shared: false,
        };
        region.write_labels(region.index.labels.clone())?;
        Ok(region)
    }

    /// Opens the region at `path`, validating both label copies and taking the current one.
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Region, RegionError> {
        let path = path.as_ref().to_path_buf();
        let io = |what| {
            let path = path.clone();
            move |source| RegionError::Io { path, what, source }
        };
        if path.is_dir() {
            return Err(RegionError::IsDirectory { path });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::Manage)
            .open(&path)
            .map_err(io("open the region file"))?;
        if access == Access::Manage {
            lock(&file, &path)?;
        }
        let len = file.metadata().map_err(io("stat the region file"))?.len();
        // A copy that cannot be read is a failure to read, not a short copy.
        let read = |slot: u64| -> Result<Result<LabelIndex, LabelError>, RegionError> {
            let mut buf = vec![0u8; LABEL_INDEX_LEN];
            let at = slot * LABEL_INDEX_LEN as u64;
            let n = file
                .read_at(&mut buf, at)
                .map_err(io("read the label index"))?;
            Ok(LabelIndex::decode(&buf[..n]))
        };
        let (a, b) = (read(0)?, read(1)?);
        let index = match current(a.as_ref().ok(), b.as_ref().ok()) {
            Some(i) => i.clone(),
            None => {
                return Err(RegionError::Labels {
                    path,
                    first: a.err().unwrap_or(LabelError::Foreign),
                    second: b.err().unwrap_or(LabelError::Foreign),
                });
            }
        };
        let slot = u64::from(b.as_ref().ok() == Some(&index) && a.as_ref().ok() != Some(&index));
        if index.region_size != len {
            return Err(RegionError::SizeMismatch {
                path,
                labels: index.region_size,
                file: len,
            });
        }
        Ok(Region {
            file,
            path,
            access,
            index,
            slot,
            shared: false,
        })
    }

    /// Another handle of this region for enabling and disabling one namespace while this one
    /// goes on creating and destroying others (what `devmap serve` does): it shares this
    /// handle's open file, and so its lock, and holds a copy of the label index as it is now.
    /// An enable and a disable write only their own namespace's bytes, which no label change
    /// touches while the namespace is enabled (its lock refuses a destroy); label changes
    /// through the copy are refused ([`RegionError::Shared`]), since its index goes stale.
    pub(crate) fn share(&self) -> Result<Region, RegionError> {
        let file = self.file.try_clone().map_err(|source| RegionError::Io {
            path: self.path.clone(),
            what: "share the region's handle",
            source,
        })?;
        Ok(Region {
            file,
            path: self.path.clone(),
            access: self.access,
            index: self.index.clone(),
            slot: self.slot,
            shared: true,
        })
    }

    /// How the region is open.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Writes `bytes` at `at` of a region managed by this process, synced to the disk only if
    /// `durable`: an unsynced write is seen by every later reader of the file, but a power loss may undo it.
    pub(super) fn write_bytes_synced(
        &self,
        bytes: &[u8],
        at: u64,
        what: &'static str,
        durable: bool,
    ) -> Result<(), RegionError> {
        if self.access != Access::Manage {
            return Err(RegionError::ReadOnly);
        }
        self.write_at(bytes, at, what, durable)
    }

    /// The region file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open region file (for the namespace lock, which opens it once more and checks that
    /// it is the same file).
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// The region's uuid.
    pub fn uuid(&self) -> [u8; 16] {
        self.index.region_uuid
    }

    /// The region's size in bytes.
    pub fn size(&self) -> u64 {
        self.index.region_size
    }

    /// The namespaces, in offset order.
    pub fn namespaces(&self) -> &[Label] {
        &self.index.labels
    }

    /// The label of the namespace named `name`.
    pub fn namespace(&self, name: &str) -> Result<&Label, RegionError> {
        self.index
            .labels
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| RegionError::NotFound { name: name.into() })
    }

    /// Reads and checks the info block of `label`'s namespace; it must agree with the label.
    pub fn info_block(&self, label: &Label) -> Result<InfoBlock, RegionError> {
        let buf = self.read_at(
            INFO_BLOCK_LEN,
            label.offset + INFO_BLOCK_OFFSET,
            "read an info block",
        )?;
        let block = InfoBlock::decode(&buf).map_err(|source| RegionError::InfoBlock {
            name: label.name.clone(),
            source,
        })?;
        let disagree = if block.uuid != label.uuid {
            Some("uuid")
        } else if block.namespace != label.namespace {
            Some("geometry")
        } else if block.name != label.name {
            Some("name")
        } else if block.parent_uuid != self.index.region_uuid {
            Some("region uuid (it belongs to another region)")
        } else {
            None
        };
        if let Some(what) = disagree {
            return Err(RegionError::InfoBlock {
                name: label.name.clone(),
                source: InfoBlockError::Geometry {
                    why: format!("the info block and the region's label disagree on the {what}"),
                },
            });
        }
        Ok(block)
    }

    /// Waits until every write to the region file so far is on the disk (`fdatasync`).
    pub(super) fn sync_data(&self, what: &'static str) -> Result<(), RegionError> {
        self.file.sync_data().map_err(|source| RegionError::Io {
            path: self.path.clone(),
            what,
            source,
        })
    }

    /// Takes `label`'s namespace lock, or says that another device holds it.
    pub(super) fn lock_namespace(&self, label: &Label) -> Result<NamespaceLock, RegionError> {
        let at = label.offset + INFO_BLOCK_OFFSET;
        match NamespaceLock::try_take(self.file(), self.path(), at, INFO_BLOCK_LEN as u64) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(RegionError::NamespaceBusy {
                name: label.name.clone(),
                path: self.path().to_path_buf(),
            }),
            Err(source) => Err(RegionError::Io {
                path: self.path().to_path_buf(),
                what: "lock the namespace",
                source,
            }),
        }
    }

    /// Writes `labels` as the next copy of the index into the slot that is not current, syncs
    /// it, and makes it current.
    pub(super) fn write_labels(&mut self, labels: Vec<Label>) -> Result<(), RegionError> {
        if self.shared {
            return Err(RegionError::Shared {
                path: self.path.clone(),
            });
        }
        let next = LabelIndex {
            seq: next_seq(self.index.seq),
            region_uuid: self.index.region_uuid,
            region_size: self.index.region_size,
            labels,
        };
        let bytes = next.encode()?;
        let slot = 1 - self.slot;
        self.write_at(
            &bytes,
            slot * LABEL_INDEX_LEN as u64,
            "write the label index",
            true,
        )?;
        self.index = next;
        self.slot = slot;
        Ok(())
    }

    /// `len` bytes of the region file at `at`.
    pub(super) fn read_at(
        &self,
        len: usize,
        at: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, RegionError> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|source| RegionError::Io {
                path: self.path.clone(),
                what,
                source,
            })?;
        Ok(buf)
    }

    /// Writes `bytes` at `at`, synced to the disk if `durable`.
    pub(super) fn write_at(
        &self,
        bytes: &[u8],
        at: u64,
        what: &'static str,
        durable: bool,
    ) -> Result<(), RegionError> {
        self.file
            .write_all_at(bytes, at)
            .and_then(|()| {
                if durable {
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|source| RegionError::Io {
                path: self.path.clone(),
                what,
                source,
            })
    }
}

/// Takes the region's exclusive lock, or says who has it.
fn lock(file: &File, path: &Path) -> Result<(), RegionError> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(RegionError::Busy {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(RegionError::Io {
            path: path.to_path_buf(),
            what: "lock the region",
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests;
