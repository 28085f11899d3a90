//! Device-dax backings: a `/dev/daxX.Y` character device, its size and alignment read from
//! `/sys/bus/dax/devices/daxX.Y/{size,align}`. The alignment is the page size: the driver
//! refuses mappings and faults that are not multiples of it. No userfaultfd mode: faults are
//! driven by the caller.

use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::memfd::read_u64;
use super::{Backing, BackingError, BackingKind, UffdModes};
use crate::addr::Order;

/// Where the kernel lists device-dax instances.
const SYSFS: &str = "/sys";

impl Backing {
    /// Opens the device-dax character device at `path` (e.g. `/dev/dax0.0`) read-write.
    pub fn open_devdax(path: impl AsRef<Path>) -> Result<Backing, BackingError> {
        open_devdax_in(path.as_ref(), Path::new(SYSFS))
    }
}

/// [`Backing::open_devdax`] with sysfs at `sysfs`.
pub(super) fn open_devdax_in(path: &Path, sysfs: &Path) -> Result<Backing, BackingError> {
    let open = |source| BackingError::Open {
        backing: "device-dax",
        path: path.to_path_buf(),
        source,
    };
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(open)?;
    let ty = dev.metadata().map_err(open)?.file_type();
    if !ty.is_char_device() {
        return Err(BackingError::WrongFileType {
            path: path.to_path_buf(),
            found: if ty.is_file() {
                "a regular file"
            } else {
                "not a character device"
            },
            wanted: "a device-dax character device",
        });
    }
    let name = path.file_name().unwrap_or_default();
    let (len, page) = geometry(&sysfs.join("bus/dax/devices").join(name))?;
    Ok(Backing {
        base: 0,
        fd: dev.into(),
        len,
        page,
        uffd: UffdModes::NONE,
        kind: BackingKind::DevDax {
            path: path.to_path_buf(),
        },
    })
}

/// A device's size and alignment from its sysfs directory: a non-empty size that is a
/// multiple of an alignment that is a power of two of at least 4 KiB.
pub(super) fn geometry(dir: &Path) -> Result<(u64, Order), BackingError> {
    let size_path = dir.join("size");
    let align_path = dir.join("align");
    let size = read_u64(&size_path)?;
    let align = read_u64(&align_path)?;
    let bad = |path: PathBuf, msg: String| BackingError::Sysfs {
        path,
        source: std::io::Error::other(msg),
    };
    let page = Order::from_bytes(align).map_err(|e| {
        bad(
            align_path,
            format!("alignment {align} is not a power of two of at least 4 KiB: {e}"),
        )
    })?;
    if size == 0 || !size.is_multiple_of(align) {
        return Err(bad(
            size_path,
            format!("size {size} is not a positive multiple of the alignment {align}"),
        ));
    }
    Ok((size, page))
}
