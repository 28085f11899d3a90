//! Carving a region: creating a namespace where there is room (on its start align, as
//! `nd_pfn_init` places one; without a size, the largest that fits; without a name, the first
//! free `namespaceN`), giving it an owner, destroying it (refused without force when it was
//! left in use), and the free space between namespaces (`ndctl`'s `available_size` and
//! `max_available_extent`). Every change is a
//! crash-safe label update (`Region::write_labels`); the rest of `Region` is in `region.rs`.

use super::badblocks::{BADBLOCKS_LEN, BADBLOCKS_OFFSET};
use super::infoblock::{INFO_BLOCK_LEN, INFO_BLOCK_OFFSET, InfoBlock, InfoFlags};
use super::label::{LABEL_AREA_BYTES, Label, MAX_NAMESPACES, Owner};
use super::region::{Access, Region, RegionError, new_uuid};
use super::{MemmapLocation, Namespace, NamespaceMode, data_align};

impl Region {
    /// Creates a namespace of `size` bytes laid out as `nd_pfn_init` does: its info block, then
    /// its label. First fit after the label area at an offset on its
    /// [`start_align`](Namespace::start_align), `max(align, 2 MiB)`.
    pub fn create_namespace(
        &mut self,
        name: &str,
        size: u64,
        align: u64,
        mode: NamespaceMode,
        map: MemmapLocation,
    ) -> Result<Label, RegionError> {
        self.check_new(name)?;
        let namespace = Namespace::new(size, align, mode, map)?;
        self.create_laid_out(name, namespace)
    }

    /// Whether a namespace named `name` may be created: a managed region, a valid name not in
    /// use, and room in the table.
    fn check_new(&self, name: &str) -> Result<(), RegionError> {
        if self.access != Access::Manage {
            return Err(RegionError::ReadOnly);
        }
        if name.is_empty() || name.len() > 64 || name.contains('\0') {
            return Err(RegionError::BadName { name: name.into() });
        }
        if self.index.labels.iter().any(|l| l.name == name) {
            return Err(RegionError::NameTaken { name: name.into() });
        }
        if self.index.labels.len() >= MAX_NAMESPACES {
            return Err(RegionError::Full);
        }
        Ok(())
    }

    /// Creates a namespace of the geometry `namespace` (the kernel's for every namespace
    /// created now; the tests also lay out namespaces as an older devmap did).
    pub(super) fn create_laid_out(
        &mut self,
        name: &str,
        namespace: Namespace,
    ) -> Result<Label, RegionError> {
        self.check_new(name)?;
        // On its start align: nd_pfn_init refuses a start off memremap_compat_align().
        let offset = self.place(namespace.size(), namespace.start_align())?;
        let label = Label {
            uuid: new_uuid(&self.path)?,
            name: name.into(),
            offset,
            namespace,
            owner: Owner::DEFAULT,
        };
        let block = InfoBlock {
            uuid: label.uuid,
            parent_uuid: self.index.region_uuid,
            name: name.into(),
            namespace,
            flags: InfoFlags::NONE,
            generation: 1,
            memmap: None,
            room_sums: None,
        };
        let bytes = block.encode().map_err(|source| RegionError::InfoBlock {
            name: name.into(),
            source,
        })?;
        self.write_at(
            &bytes,
            offset + INFO_BLOCK_OFFSET,
            "write an info block",
            true,
        )?;
        // A new namespace has no bad pages, whatever an earlier one here had.
        self.write_at(
            &[0u8; BADBLOCKS_LEN],
            offset + BADBLOCKS_OFFSET,
            "clear a badblocks list",
            true,
        )?;
        let mut labels = self.index.labels.clone();
        labels.push(label.clone());
        labels.sort_by_key(|l| l.offset);
        self.write_labels(labels)?;
        Ok(label)
    }

    /// Sets who may open the namespace `name` through `devmap serve` (`create-namespace --uid
    /// --gid --mode`): a label update, crash-safe as every other. The mode's permission bits
    /// only (at most 0o777).
    pub fn set_owner(&mut self, name: &str, owner: Owner) -> Result<(), RegionError> {
        if self.access != Access::Manage {
            return Err(RegionError::ReadOnly);
        }
        if owner.mode > 0o777 {
            return Err(RegionError::OwnerMode { mode: owner.mode });
        }
        self.namespace(name)?;
        let labels = self
            .index
            .labels
            .iter()
            .map(|l| match l.name == name {
                true => Label { owner, ..l.clone() },
                false => l.clone(),
            })
            .collect();
        self.write_labels(labels)
    }

    /// The largest namespace of `align` the region has room for (0 if none): what
    /// `create-namespace` makes without a size, as ndctl's does. The second of
    /// [`namespace_room`](Self::namespace_room).
    pub fn largest_namespace(&self, align: u64) -> Result<u64, RegionError> {
        Ok(self.namespace_room(align)?.1)
    }

    /// What namespaces of `align` could take of the free space, laid out as `nd_pfn_init` lays
    /// them out: the bytes, and the largest namespace that fits. A new namespace starts on its
    /// [`data_align`], `max(align, 2 MiB)` (`memremap_compat_align()`), and what is past the
    /// last whole one of those is truncated (`end_trunc`) and holds no data; so each free run
    /// counts from its first such boundary, in whole ones. At 2M and 1G that is every
    /// aligned size; a 4K namespace may be a few 4 KiB pages longer, but they hold nothing.
    /// [`free_space`](Self::free_space) counts bytes at any power of two, not where a
    /// namespace can go. `BadAlign` if `max(align, 2 MiB)` is not a power of two.
    pub fn namespace_room(&self, align: u64) -> Result<(u64, u64), RegionError> {
        let start = data_align(align);
        if !start.is_power_of_two() {
            return Err(RegionError::BadAlign { align });
        }
        Ok(self
            .free_runs(start)
            .map(|(_, n)| n / start * start)
            .fold((0, 0), |(total, longest), n| (total + n, longest.max(n))))
    }

    /// The first of `namespace0`, `namespace1`, ... no namespace of the region is named: what
    /// `create-namespace` names a namespace it is given no name for. There is always one, the
    /// region holding at most [`MAX_NAMESPACES`] namespaces.
    pub fn default_name(&self) -> String {
        (0..=MAX_NAMESPACES)
            .map(|i| format!("namespace{i}"))
            .find(|n| self.namespace(n).is_err())
            .unwrap_or_else(|| format!("namespace{}", MAX_NAMESPACES + 1))
    }

    /// Whether the namespace `name` may be destroyed without force: its info block reads,
    /// and says the namespace was never enabled or was last disabled cleanly. A namespace left
    /// in use (the process that enabled it ended without disabling it) may hold data someone
    /// wants back, and one whose info block cannot be read is not what its label says:
    /// [`RegionError::NotClean`] says which, and that force destroys it anyway. A namespace
    /// enabled now is refused by [`Region::destroy_namespace`] whatever this says.
    pub fn may_destroy(&self, name: &str) -> Result<(), RegionError> {
        let label = self.namespace(name)?;
        match self.info_block(label) {
            Ok(block) if block.generation > 1 && !block.flags.contains(InfoFlags::CLEAN) => {
                Err(RegionError::NotClean {
                    name: name.into(),
                    unreadable: None,
                })
            }
            Ok(_) => Ok(()),
            Err(e) => Err(RegionError::NotClean {
                name: name.into(),
                unreadable: Some(e.to_string()),
            }),
        }
    }

    /// Destroys the namespace named `name`: its label, then its info block. Its bytes stay
    /// in the file until another namespace is created over them.
    pub fn destroy_namespace(&mut self, name: &str) -> Result<(), RegionError> {
        if self.access != Access::Manage {
            return Err(RegionError::ReadOnly);
        }
        let label = self.namespace(name)?.clone();
        // Refused while a device serves the namespace, here or in another process; held until
        // both writes are done, so no enable starts in between.
        let _lock = self.lock_namespace(&label)?;
        let labels = self
            .index
            .labels
            .iter()
            .filter(|l| l.name != name)
            .cloned()
            .collect();
        self.write_labels(labels)?;
        self.write_at(
            &[0u8; INFO_BLOCK_LEN],
            label.offset + INFO_BLOCK_OFFSET,
            "clear an info block",
            true,
        )
    }

    /// The free runs after the label area, in order: each as (its first `align`-aligned
    /// offset, bytes from there to the next namespace or the region's end).
    fn free_runs(&self, align: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let size = self.index.region_size;
        let mut from = LABEL_AREA_BYTES;
        self.index
            .labels
            .iter()
            .map(|l| (l.offset, l.offset + l.namespace.size()))
            .chain(std::iter::once((size, size)))
            .map(move |(start, end)| {
                let at = from.next_multiple_of(align);
                from = from.max(end);
                (at, start.saturating_sub(at))
            })
    }

    /// Free bytes usable at `align` (each free run counted from its first aligned byte) and the
    /// longest such run: what `list -R` reports as available, and, with `align` a namespace's
    /// [`data_align`](super::data_align) (`max(align, 2 MiB)`, where a new namespace starts),
    /// the largest namespace of that align that fits. `align` must be a power of two (1 counts
    /// every free byte).
    pub fn free_space(&self, align: u64) -> Result<(u64, u64), RegionError> {
        if !align.is_power_of_two() {
            return Err(RegionError::BadAlign { align });
        }
        Ok(self
            .free_runs(align)
            .fold((0, 0), |(total, longest), (_, n)| {
                (total + n, longest.max(n))
            }))
    }

    /// The first `align`-aligned offset with `size` free bytes after it.
    fn place(&self, size: u64, align: u64) -> Result<u64, RegionError> {
        let largest = self.free_space(align)?.1;
        self.free_runs(align)
            .find(|&(_, n)| n >= size)
            .map(|(at, _)| at)
            .ok_or(RegionError::NoSpace {
                size,
                align,
                largest,
            })
    }
}
