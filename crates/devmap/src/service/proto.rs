//! The messages of `devmap serve` (DESIGN §9.1): one type per request and reply, each the
//! whole payload of a frame of its kind ([`WireMessage`]), encoded field by field with the
//! wire codec. A client sends a request with a request id of its choosing; the service answers
//! every request, in order, with a frame carrying the same id: the request's reply kind, or
//! [`ErrorReply`] (an errno and the reason). Descriptors travel with [`Opened`] (the
//! namespace's file) and [`Map`] (the client's userfaultfd, when it catches its touches). The
//! management messages (create, destroy and check a namespace, clear its errors) are in
//! `manage.rs`, re-exported here.

use crate::wire::{Decode, Encode, Reader, WireError, WireMessage, Writer};

pub mod kind;

pub use self::fields::MAX_NAME;

/// Implements [`Encode`], [`Decode`] and [`WireMessage`] for a struct from its fields, in
/// order, each with its codec call.
macro_rules! message {
    ($ty:ident = $kind:expr; $($field:ident: $enc:ident / $dec:expr),* $(,)?) => {
        impl Encode for $ty {
            #[allow(unused_variables)]
            fn encode(&self, w: &mut Writer) {
                $( message!(@enc w, self.$field, $enc); )*
            }
        }
        impl Decode for $ty {
            #[allow(unused_variables)]
            fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
                Ok($ty { $( $field: $dec(r, stringify!($field))?, )* })
            }
        }
        impl WireMessage for $ty {
            const KIND: u16 = $kind;
        }
    };
    (@enc $w:ident, $v:expr, str) => { $w.str(&$v); };
    (@enc $w:ident, $v:expr, bytes) => { $w.bytes(&$v); };
    (@enc $w:ident, $v:expr, $enc:ident) => { $w.$enc($v); };
}

use self::fields::{bool_, i32_, name, text, u32_, u64_};

mod fields;
mod manage;

pub use self::manage::{
    CheckNamespace, Checked, ClearErrors, Cleared, CreateNamespace, Created, DestroyNamespace,
};

/// Lists every namespace of every region the service serves. Reply: [`Namespaces`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List {}
message!(List = kind::LIST;);

/// Opens a device-dax namespace for mapping; `region` empty means the one region holding a
/// namespace of that name. Reply: [`Opened`], with the file the namespace lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The region file as the service was started with it, or empty.
    pub region: String,
    /// The namespace.
    pub name: String,
}
message!(Open = kind::OPEN; region: str / name, name: str / name);

/// Maps `len` bytes of an opened namespace from `offset` at the client's address `base`
/// (all multiples of the namespace's align), which the client has already mapped from the
/// file [`Opened`] gave. With `features` non-zero the frame carries one descriptor, the
/// client's userfaultfd with those features enabled and the window registered on it (MISSING
/// and MINOR); the service then resolves the window's first touches. Reply: [`Mapped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    /// The handle [`Opened`] gave.
    pub ns: u32,
    /// Namespace byte offset of the first byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// The client's address of the first byte.
    pub base: u64,
    /// The userfaultfd features the client enabled, or 0 for no userfaultfd.
    pub features: u64,
}
message!(Map = kind::MAP; ns: u32 / u32_, offset: u64 / u64_, len: u64 / u64_, base: u64 / u64_, features: u64 / u64_);

/// Forgets a mapping (the client unmaps its window after the reply). Reply: [`Done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmap {
    /// The handle [`Mapped`] gave.
    pub mapping: u32,
}
message!(Unmap = kind::UNMAP; mapping: u32 / u32_);

/// Asks what the service holds. Reply: [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {}
message!(Status = kind::STATUS;);

/// Enables a namespace (`devmap enable-namespace` through the service). Reply: [`Enabled`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enable {
    /// The region file, or empty for the one holding `name`.
    pub region: String,
    /// The namespace.
    pub name: String,
}
message!(Enable = kind::ENABLE; region: str / name, name: str / name);

/// Disables a namespace; with live client mappings it is refused (`EBUSY`, naming their
/// pids) unless `force`, which takes them from their clients. Reply: [`Done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disable {
    /// The region file, or empty for the one holding `name`.
    pub region: String,
    /// The namespace.
    pub name: String,
    /// Take live mappings from their clients.
    pub force: bool,
}
message!(Disable = kind::DISABLE; region: str / name, name: str / name, force: bool / bool_);

/// A request done, with nothing to say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Done {}
message!(Done = kind::DONE;);

/// A request refused: the kernel-style errno and why, with what would be right where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// Positive errno (`EBUSY`, `ENOENT`, ...).
    pub errno: i32,
    /// The reason.
    pub reason: String,
}
message!(ErrorReply = kind::ERROR; errno: i32 / i32_, reason: str / name);

/// One namespace of a served region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceEntry {
    /// The region file.
    pub region: String,
    /// The namespace's name.
    pub name: String,
    /// Raw size in bytes.
    pub size: u64,
    /// Usable bytes (what a mapping can cover).
    pub data_bytes: u64,
    /// Align in bytes.
    pub align: u64,
    /// `devdax` or `fsdax`.
    pub mode: String,
    /// Whether the service has it enabled.
    pub enabled: bool,
    /// Whether its enable was warm (meaningful when enabled).
    pub warm: bool,
    /// Clients with a mapping of it.
    pub clients: u32,
}

impl Encode for NamespaceEntry {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.region)
            .str(&self.name)
            .u64(self.size)
            .u64(self.data_bytes)
            .u64(self.align)
            .str(&self.mode)
            .bool(self.enabled)
            .bool(self.warm)
            .u32(self.clients);
    }
}

impl Decode for NamespaceEntry {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(NamespaceEntry {
            region: name(r, "region")?,
            name: name(r, "name")?,
            size: r.u64("size")?,
            data_bytes: r.u64("data_bytes")?,
            align: r.u64("align")?,
            mode: name(r, "mode")?,
            enabled: r.bool("enabled")?,
            warm: r.bool("warm")?,
            clients: r.u32("clients")?,
        })
    }
}

/// Every served region, in the order the service was given them (its `-r` order: what
/// `list` numbers `region0`, `region1`, ...), and every namespace of each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespaces {
    /// The namespaces, region by region.
    pub entries: Vec<NamespaceEntry>,
    /// The regions' paths as the service was given them, each once, with or without
    /// namespaces.
    pub regions: Vec<String>,
}

impl Encode for Namespaces {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            e.encode(w);
        }
        w.u32(self.regions.len() as u32);
        for r in &self.regions {
            w.str(r);
        }
    }
}

impl Decode for Namespaces {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let n = r.u32("count")?;
        // Each entry takes at least 46 bytes: a count beyond what is left is a lie, refused
        // before anything is allocated for it.
        if n as usize > r.remaining() / 46 {
            return Err(WireError::BadValue {
                field: "count",
                value: u64::from(n),
                expected: "at most one entry per 46 bytes left",
            });
        }
        let entries = (0..n)
            .map(|_| NamespaceEntry::decode(r))
            .collect::<Result<_, _>>()?;
        let n = r.u32("regions")?;
        if n as usize > r.remaining() / 4 {
            return Err(WireError::BadValue {
                field: "regions",
                value: u64::from(n),
                expected: "at most one region per 4 bytes left",
            });
        }
        let regions = (0..n)
            .map(|_| name(r, "region"))
            .collect::<Result<_, _>>()?;
        Ok(Namespaces { entries, regions })
    }
}
impl WireMessage for Namespaces {
    const KIND: u16 = kind::NAMESPACES;
}

/// A namespace opened: its handle for [`Map`], and how to map it. The frame carries one
/// descriptor, the file holding the namespace's bytes: byte `n` of the namespace is at file
/// offset `file_offset + n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The handle.
    pub ns: u32,
    /// Bytes a mapping can cover.
    pub data_bytes: u64,
    /// The namespace's align: offsets, lengths and addresses of mappings are multiples of it.
    pub align: u64,
    /// File offset of the namespace's byte 0.
    pub file_offset: u64,
    /// Whether the service resolves first touches (the file is on tmpfs): then the client
    /// registers its window with a userfaultfd and passes it with [`Map`].
    pub caught: bool,
}
message!(Opened = kind::OPENED; ns: u32 / u32_, data_bytes: u64 / u64_, align: u64 / u64_, file_offset: u64 / u64_, caught: bool / bool_);

/// A mapping attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The handle, for [`Unmap`].
    pub mapping: u32,
    /// The pfn of the mapping's first byte if its pfns run on to its end, else [`NO_PFN`]:
    /// with it the client names the pfns of what it pins fast.
    pub first_pfn: u64,
}
message!(Mapped = kind::MAPPED; mapping: u32 / u32_, first_pfn: u64 / u64_);

/// [`Mapped::first_pfn`] of a mapping whose pfns do not run on: no fast pins.
pub const NO_PFN: u64 = u64::MAX;

/// What the service holds, as JSON (`devmap status --json` prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReply {
    /// UTF-8 JSON.
    pub json: Vec<u8>,
}
message!(StatusReply = kind::STATUS_REPLY; json: bytes / text);

/// A namespace enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enabled {
    /// Whether its memmap was adopted from a clean disable.
    pub warm: bool,
}
message!(Enabled = kind::ENABLED; warm: bool / bool_);

/// Pins `nr_pages` pages from the client address `addr` of one of the client's own mappings
/// (`pin_user_pages_fast`: leaves not yet faulted are faulted first unless `flags` has
/// `NOFAULT`), one reference update per folio. Reply: [`PinReply`], with the extents to
/// register for DMA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The handle [`Mapped`] gave.
    pub mapping: u32,
    /// The client address of the first page (rounded down to its page).
    pub addr: u64,
    /// Pages to pin.
    pub nr_pages: u64,
    /// `DEVMAP_PIN_*` bits: 1 write, 2 long-term, 4 no fault.
    pub flags: u32,
    /// Hold the pin as folios (one entry per folio) rather than pages: the same extents, and
    /// a smaller record in the service.
    pub folios: bool,
}
message!(Pin = kind::PIN; mapping: u32 / u32_, addr: u64 / u64_, nr_pages: u64 / u64_, flags: u32 / u32_, folios: bool / bool_);

/// Gives a pin back, marking each folio dirty once first if `dirty`. Reply: [`Done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpin {
    /// The handle [`PinReply`] gave.
    pub pin: u32,
    /// Mark the folios dirty.
    pub dirty: bool,
}
message!(Unpin = kind::UNPIN; pin: u32 / u32_, dirty: bool / bool_);

/// One contiguous piece of a pin: client address, namespace offset and pfn all run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireExtent {
    /// The client address of the first byte.
    pub addr: u64,
    /// The namespace offset of the first byte.
    pub offset: u64,
    /// The first pfn.
    pub pfn: u64,
    /// Bytes (a multiple of 4 KiB).
    pub len: u64,
}

/// Bytes of one [`WireExtent`] on the wire.
const EXTENT_LEN: usize = 32;

/// The most extents a [`PinReply`] carries: a pin needing more is refused (`E2BIG`), so pin
/// a smaller range.
pub const MAX_EXTENTS: usize = (crate::wire::MAX_PAYLOAD - 16) / EXTENT_LEN;

/// A pin taken: its handle and the fewest extents covering exactly the pinned bytes, in
/// address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinReply {
    /// The handle, for [`Unpin`].
    pub pin: u32,
    /// Pages pinned.
    pub nr_pages: u64,
    /// The extents.
    pub extents: Vec<WireExtent>,
}

impl Encode for PinReply {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.pin)
            .u64(self.nr_pages)
            .u32(self.extents.len() as u32);
        for e in &self.extents {
            w.u64(e.addr).u64(e.offset).u64(e.pfn).u64(e.len);
        }
    }
}

impl Decode for PinReply {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let pin = r.u32("pin")?;
        let nr_pages = r.u64("nr_pages")?;
        let n = r.u32("count")?;
        if n as usize > r.remaining() / EXTENT_LEN {
            return Err(WireError::BadValue {
                field: "count",
                value: u64::from(n),
                expected: "at most one extent per 32 bytes left",
            });
        }
        let extents = (0..n)
            .map(|_| {
                Ok(WireExtent {
                    addr: r.u64("addr")?,
                    offset: r.u64("offset")?,
                    pfn: r.u64("pfn")?,
                    len: r.u64("len")?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(PinReply {
            pin,
            nr_pages,
            extents,
        })
    }
}
impl WireMessage for PinReply {
    const KIND: u16 = kind::PINNED;
}

/// What a [`Notice`] tells.
pub mod notice {
    /// The mapping was taken from the client (a forced disable, the service stopping): every
    /// access to it now raises SIGBUS, and its handle is gone.
    pub const MAPPING_REVOKED: u8 = 1;
    /// The pin was dropped (a forced disable): its handle is gone.
    pub const PIN_DROPPED: u8 = 2;
    /// Memory under the mapping failed: `len` bytes at `addr` are lost (SIGBUS when touched).
    pub const MEMORY_LOST: u8 = 3;
}

/// Something that happened to what a client holds, sent without its asking (request id 0),
/// between replies: the client reads notices while it waits for a reply, and when it asks for
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// One of [`notice`]'s codes.
    pub what: u8,
    /// The mapping's or the pin's handle.
    pub handle: u32,
    /// The client address concerned (the mapping's start, or the lost bytes).
    pub addr: u64,
    /// Bytes concerned.
    pub len: u64,
    /// The pfn of the first byte concerned, where there is one (0 otherwise).
    pub pfn: u64,
}

impl Encode for Notice {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.what)
            .u32(self.handle)
            .u64(self.addr)
            .u64(self.len)
            .u64(self.pfn);
    }
}

impl Decode for Notice {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Notice {
            what: r.u8("what")?,
            handle: r.u32("handle")?,
            addr: r.u64("addr")?,
            len: r.u64("len")?,
            pfn: r.u64("pfn")?,
        })
    }
}
impl WireMessage for Notice {
    const KIND: u16 = kind::NOTICE;
}

/// Reports a memory error on `count` pages from byte `offset` (a multiple of 4 KiB) of an
/// enabled namespace, as `ndctl inject-error` does for a pmem namespace: each page goes through
/// `memory_failure` (recorded in the namespace's badblocks even where nothing maps it), every
/// client that maps it loses it (SIGBUS at that page on its next touch) and is told with a
/// `MEMORY_LOST` notice at its own address. Reply: [`Injected`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectError {
    /// The region file, or empty for the one holding `name`.
    pub region: String,
    /// The namespace.
    pub name: String,
    /// Byte offset in the namespace's data.
    pub offset: u64,
    /// Pages (4 KiB each).
    pub count: u64,
}
message!(InjectError = kind::INJECT_ERROR; region: str / name, name: str / name, offset: u64 / u64_, count: u64 / u64_);

/// A memory error the client met at its own address `addr` of its mapping `mapping` (a
/// `BUS_MCEERR_AR` SIGBUS): the service runs `memory_failure` on the page with this client's
/// mapping as the current one, so every client that maps the page loses it and is told, this
/// one with the error as its own. Reply: [`Injected`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportError {
    /// The handle [`Mapped`] gave.
    pub mapping: u32,
    /// The client's address of the page.
    pub addr: u64,
}
message!(ReportError = kind::REPORT_ERROR; mapping: u32 / u32_, addr: u64 / u64_);

/// What an [`InjectError`] or a [`ReportError`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Pages poisoned.
    pub pages: u32,
    /// Mappings that lost a page, summed over the pages.
    pub revoked: u32,
    /// Owners told, summed over the pages.
    pub told: u32,
    /// Nanoseconds from the first page's `memory_failure` until the last page was revoked
    /// everywhere and every owner told.
    pub elapsed_ns: u64,
}
message!(Injected = kind::INJECTED; pages: u32 / u32_, revoked: u32 / u32_, told: u32 / u32_, elapsed_ns: u64 / u64_);
