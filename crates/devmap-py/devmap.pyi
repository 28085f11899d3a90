"""devmap: the Linux kernel's ZONE_DEVICE page metadata in userspace, from Python.

Device-dax devices over a memfd, hugetlb or a file; their mappings, whose bytes are a
writable memoryview; pins by user address for DMA registration; memory failure and poison;
namespaces kept on disk in region files; and connect(), a client of a running `devmap serve`.
Sizes are ints of bytes or strings with a binary suffix ("64M", "1G": powers of 1024, as
ndctl reads them).
"""

from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Literal, TypedDict, final

__version__: str
PAGE_SIZE: int

Size = int | str
Layout = Literal["flat", "vmemmap", "heads"]
Init = Literal["sync", "parallel", "async"]
GranularityName = Literal["page", "leaf"]
FaultsName = Literal["auto", "userfaultfd", "explicit"]
ModeName = Literal["devdax", "fsdax"]
MapName = Literal["mem", "dev"]

class Error(OSError):
    """Base class of devmap's errors: errno says what kind of refusal, strerror the reason."""

class InvalidArgument(Error, ValueError):
    """A refused argument (EINVAL; E2BIG for extent limits; EFAULT for an address outside every
    mapping or a nofault pin of a leaf not faulted in); the reason names what would work."""

class BusyError(Error):
    """Something is still in use (EBUSY)."""

class TornDownError(Error):
    """The device is torn down, or the mapping, pin or region closed (ENXIO)."""

class PoisonedError(Error):
    """Poisoned memory (EHWPOISON)."""

class MemoryLost(PoisonedError):
    """Bytes lost to a memory error, raised by Mapping.read_mc instead of a SIGBUS (EHWPOISON)."""

    offset: int | None
    """The first lost byte's offset in the mapping."""
    addr: int | None
    """The first lost byte's user address."""
    length: int | None
    """How many bytes are lost there: a page, or a whole leaf at leaf granularity."""

class FaultStats(TypedDict):
    user_faults: int
    leaves_mapped: int
    raced: int
    sigbus: int
    fault_around: int
    zeroed_ahead: int
    zero_ahead_hits: int
    zero_ahead_failed: int

class PinStats(TypedDict):
    pinned_bytes: int
    pin_refs: int
    referenced_bytes: int

class PoisonNotice(TypedDict):
    mapping: int
    pfn: int
    addr: int
    length: int
    shift: int
    action_required: bool

class MfReport(TypedDict):
    pfn: int
    head: int
    handled_by: Literal["callback", "generic"]
    revoked: list[PoisonNotice]
    notices: list[PoisonNotice]
    pins: int
    elapsed_ns: int

class NamespaceInfo(TypedDict):
    name: str
    uuid: str
    offset: int
    size: int
    align: int
    mode: ModeName
    map: MapName
    data_offset: int
    data_bytes: int

class EnabledNamespaceInfo(NamespaceInfo):
    was_clean: bool
    enable_path: Literal["host", "cold", "warm"]

class Estimate(TypedDict):
    size: int
    align: int
    layout: Layout
    map: MapName
    mode: ModeName
    vmemmap_shift: int
    metadata_bytes: int
    descriptor_bytes: int
    pte_table_bytes: int
    pmd_table_bytes: int
    section_usage_bytes: int
    device_bytes: int
    descriptors_initialized: int

@final
class Device:
    """A device-dax device: compound folios of its align over the bytes of a backing."""

    @staticmethod
    def memfd(
        size: Size,
        align: Size = "2M",
        layout: Layout = "heads",
        init: Init = "parallel",
        granularity: GranularityName = "page",
        faults: FaultsName = "auto",
        handlers: int | None = None,
        zero_ahead: int = 0,
        fault_around: int = 128,
    ) -> Device:
        """A device over a new memfd of `size` bytes; `zero_ahead` leaves (2M or 1G align)
        allocated and zeroed ahead of sequential touchers; at a 4K align a caught touch maps
        up to `fault_around` leaves."""
    @staticmethod
    def hugetlb(
        size: Size,
        align: Size = "2M",
        page_size: Size | None = None,
        layout: Layout = "heads",
        init: Init = "parallel",
        granularity: GranularityName = "page",
        faults: FaultsName = "auto",
        handlers: int | None = None,
        zero_ahead: int = 0,
    ) -> Device:
        """A device over a new hugetlb memfd (2M or 1G pages)."""
    @staticmethod
    def file(
        path: str | PathLike[str],
        size: Size | None = None,
        align: Size = "2M",
        layout: Layout = "heads",
        init: Init = "parallel",
        granularity: GranularityName = "page",
        faults: FaultsName = "auto",
        handlers: int | None = None,
    ) -> Device:
        """A device over the file at `path`, or with `size` a new sparse file."""
    @property
    def size(self) -> int: ...
    @property
    def align(self) -> int: ...
    @property
    def layout(self) -> Layout: ...
    @property
    def init(self) -> Init: ...
    @property
    def backing(self) -> str: ...
    @property
    def catches_touches(self) -> bool: ...
    @property
    def granularity(self) -> GranularityName: ...
    @property
    def namespace(self) -> EnabledNamespaceInfo | None:
        """For a device enabled from a region, its namespace; else None."""
    @property
    def closed(self) -> bool: ...
    @property
    def nr_mappings(self) -> int: ...
    def ranges(self) -> list[tuple[int, int]]:
        """The pfn ranges, as (first pfn, number of pfns)."""
    def pfn_at(self, offset: Size) -> int | None: ...
    def fault_stats(self) -> FaultStats: ...
    def pin_stats(self) -> PinStats:
        """Pins and references held on the device's folios now."""
    def mmap(self, offset: Size | None = None, length: Size | None = None) -> Mapping:
        """Maps `length` bytes from `offset` (multiples of the align; default: all)."""
    def memory_failure(
        self,
        offset: Size,
        action_required: bool = False,
        record_unmapped: bool = False,
        tell_all: bool = False,
    ) -> MfReport:
        """Reports a memory error in the page holding byte `offset` of the device."""
    def clear_poison(self, offset: Size, length: Size) -> int:
        """Clears poison in [offset, offset + length); returns the pages that were poisoned."""
    def badblocks(self) -> list[tuple[int, int]]:
        """Bad pages as merged (offset, length) byte ranges."""
    def close(self, timeout: float | None = 1.0) -> None:
        """Tears the device down; BusyError while mappings are open or pins held."""
    def __enter__(self) -> Device: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class Mapping:
    """A shared mapping of a device; its bytes are its buffer (memoryview(mapping))."""

    @property
    def addr(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def id(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def view(self) -> memoryview:
        """memoryview(self): the mapped bytes, writable, in place."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...
    def read(self, offset: Size | None = None, length: Size | None = None) -> bytes: ...
    def write(self, offset: Size, data: bytes | bytearray | memoryview) -> None: ...
    def read_mc(self, offset: Size, length: Size) -> bytes:
        """Copies bytes, raising MemoryLost instead of SIGBUS for bytes lost to an error."""
    def populate(
        self, offset: Size | None = None, length: Size | None = None
    ) -> tuple[int, int]:
        """Faults leaves in; returns (mapped now, mapped already)."""
    def is_faulted(self, offset: Size) -> bool: ...
    def pin(
        self,
        offset: Size | None = None,
        length: Size | None = None,
        folios: bool = True,
        nofault: bool = False,
        write: bool = True,
        longterm: bool = False,
    ) -> Pins:
        """Pins [offset, offset + length) of the mapping by user address."""
    def on_poison(
        self, callback: Callable[[PoisonNotice], object], early_kill: bool = False
    ) -> None:
        """Names who is told when memory under this mapping fails (when its access met the
        error, or any error with early_kill); TypeError if not callable."""
    def close(self) -> None:
        """Unmaps; BufferError while a memoryview of it is alive."""
    def __enter__(self) -> Mapping: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class PinnedFolio:
    """One pinned folio, or the part of it a pin covers."""

    @property
    def addr(self) -> int: ...
    @property
    def pfn(self) -> int: ...
    @property
    def head(self) -> int: ...
    @property
    def order(self) -> int: ...
    @property
    def nr_pages(self) -> int: ...
    @property
    def length(self) -> int: ...

@final
class Extent:
    """A run of pinned bytes contiguous in both user addresses and pfns."""

    @property
    def addr(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def pfn(self) -> int: ...
    @property
    def length(self) -> int: ...

@final
class Pins:
    """Pages pinned by user address, held until unpin()."""

    @property
    def folios(self) -> list[PinnedFolio]: ...
    @property
    def pages(self) -> list[tuple[int, int]]:
        """(addr, pfn) per page."""
    @property
    def nr_pages(self) -> int: ...
    @property
    def unpinned(self) -> bool: ...
    def __len__(self) -> int: ...
    def extents(
        self, max_extents: int | None = None, max_bytes: Size | None = None
    ) -> list[Extent]:
        """The pinned range as extents, each at most max_bytes long, at most max_extents
        (None or 0: no limit, as 0 is in C)."""
    def unpin(self, dirty: bool = False) -> None: ...
    def __enter__(self) -> Pins: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class Region:
    """A region file holding namespaces."""

    @staticmethod
    def create(path: str | PathLike[str], size: Size) -> Region: ...
    @staticmethod
    def open(path: str | PathLike[str], manage: bool = True) -> Region: ...
    @property
    def path(self) -> Path: ...
    @property
    def size(self) -> int: ...
    @property
    def uuid(self) -> str: ...
    @property
    def managed(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def namespaces(self) -> list[NamespaceInfo]: ...
    def free_space(self, align: Size = "2M") -> tuple[int, int]:
        """(total, largest) that namespaces of align could take, counted where the kernel
        puts one: from max(align, 2M) boundaries, in whole ones. create_namespace(name,
        largest, align=align) fits."""
    def create_namespace(
        self,
        name: str,
        size: Size,
        mode: ModeName = "devdax",
        align: Size = "2M",
        map: MapName = "dev",
    ) -> NamespaceInfo: ...
    def destroy_namespace(self, name: str, force: bool = False) -> None: ...
    def badblocks(self, name: str) -> list[tuple[int, int]]: ...
    def enable(self, name: str, layout: Layout = "heads", init: Init = "parallel") -> Device:
        """Enables a devdax namespace as a device; closing the device disables it."""
    def close(self) -> None: ...
    def __enter__(self) -> Region: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

def parse_size(value: Size) -> int: ...
def memory_failure_at(
    addr: int,
    action_required: bool = False,
    record_unmapped: bool = False,
    tell_all: bool = False,
) -> MfReport: ...
def estimate(
    size: Size,
    align: Size = "2M",
    layout: Layout = "heads",
    map: MapName = "mem",
    mode: ModeName = "devdax",
) -> Estimate: ...

# --- a client of a running `devmap serve` --------------------------------------------------

class ServedNamespace(TypedDict):
    region: str
    name: str
    size: int
    data_bytes: int
    align: int
    mode: ModeName
    enabled: bool
    warm: bool
    clients: int

class ClientNotice(TypedDict):
    what: Literal["mapping_revoked", "pin_dropped", "memory_lost", "unknown"]
    handle: int
    addr: int
    len: int
    pfn: int

class Injected(TypedDict):
    pages: int
    revoked: int
    told: int
    elapsed_ns: int

def connect(socket: str | PathLike[str]) -> Client:
    """Connects to the service listening on `socket` (devmap serve --socket); devmap.Error
    (ENOENT, ECONNREFUSED) if nothing listens there."""

@final
class Client:
    """A connection to a running devmap serve. Namespaces, mappings and pins made through it
    hold the connection, so close() may come first."""

    @property
    def socket(self) -> Path: ...
    @property
    def closed(self) -> bool: ...
    def notices(self) -> list[ClientNotice]:
        """What the service told this client unasked (mappings revoked, pins dropped,
        memory lost), oldest first."""
    def list(self) -> list[ServedNamespace]:
        """Every namespace of every served region."""
    def status(self) -> dict[str, Any]:
        """What the service holds (its JSON, parsed): pid, socket, clients, namespaces."""
    def inject_error(
        self, name: str, offset: Size, count: int = 1, region: str | None = None
    ) -> Injected:
        """Reports a memory error on count pages from offset of the namespace, as ndctl
        inject-error: every client mapping them loses them and is told."""
    def enable(self, name: str, region: str | None = None) -> bool:
        """Enables a namespace; returns whether the enable was warm."""
    def disable(self, name: str, region: str | None = None, force: bool = False) -> None:
        """Disables a namespace; BusyError naming the pids of its clients unless force."""
    def open(self, name: str, region: str | None = None) -> ClientNamespace:
        """Opens an enabled namespace (of region, or of the one served region holding it)."""
    def close(self) -> None: ...
    def __enter__(self) -> Client: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class ClientNamespace:
    """A namespace opened through the service."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int:
        """Bytes a mapping can cover."""
    @property
    def align(self) -> int:
        """Offsets and lengths of mappings are multiples of it."""
    @property
    def caught(self) -> bool:
        """Whether the service resolves first touches (the region is on tmpfs)."""
    @property
    def closed(self) -> bool: ...
    def map(self, offset: Size | None = None, length: Size | None = None) -> ClientMapping:
        """Maps [offset, offset + length) (by default the whole namespace), shared with every
        other client's mapping of the same bytes."""
    def close(self) -> None: ...
    def __enter__(self) -> ClientNamespace: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class ClientMapping:
    """A window of a served namespace; its bytes are its buffer (memoryview(mapping)). Every
    access raises SIGBUS once the service is gone."""

    @property
    def addr(self) -> int: ...
    @property
    def handle(self) -> int:
        """The service's handle of this mapping, as a notice names it."""
    @property
    def length(self) -> int: ...
    @property
    def offset(self) -> int:
        """The namespace offset the mapping starts at."""
    @property
    def closed(self) -> bool: ...
    @property
    def view(self) -> memoryview:
        """memoryview(self): the mapped bytes, writable, in place."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...
    def read(self, offset: Size | None = None, length: Size | None = None) -> bytes: ...
    def write(self, offset: Size, data: bytes | bytearray | memoryview) -> None: ...
    def report_memory_error(self, addr: int) -> Injected:
        """Reports a memory error this process met at addr (its SIGBUS): every client mapping
        the page loses it and is told, this one too."""
    def pin(
        self,
        addr: int | None = None,
        nr_pages: int | None = None,
        write: bool = False,
        folios: bool = True,
        longterm: bool = False,
        nofault: bool = False,
    ) -> ClientPins:
        """Pins nr_pages pages from the client address addr in the service (by default from
        the mapping's start to its end)."""
    def close(self) -> None:
        """Detaches and unmaps; BufferError while a memoryview of it is alive."""
    def __enter__(self) -> ClientMapping: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class ClientPins:
    """Pages pinned for this client, held until unpin(): fast (in this process) where the
    service vouches for every leaf, else by request."""

    @property
    def nr_pages(self) -> int: ...
    @property
    def handle(self) -> int:
        """The service's handle of these pins, as a notice names it; 0 for fast pins."""
    @property
    def fast(self) -> bool:
        """Whether the pins were taken in this process with no request."""
    @property
    def unpinned(self) -> bool: ...
    def extents(self) -> list[Extent]:
        """The extents the service reported (offset: a namespace offset)."""
    def unpin(self, dirty: bool = False) -> None: ...
    def __enter__(self) -> ClientPins: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...
