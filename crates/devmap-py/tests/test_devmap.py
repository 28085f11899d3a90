"""The devmap Python module, used the way a C program uses the library: make a memfd device,
map it, write through the memoryview, pin by address and export extents, report a memory
error and read around it with read_mc, clear it, and manage namespaces in a region file.

Poisoned bytes are only ever read with read_mc: a touch through the memoryview would raise
SIGBUS in this process, as it would in C.
"""

import errno
import gc
import importlib.resources
import pathlib
import subprocess
import sys
import threading

import pytest

import devmap

# Linux's "memory page has hardware error"; Python's errno module does not name it.
EHWPOISON = 133

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
PAGE = 4 * KiB

ZERO_PINS = {"pinned_bytes": 0, "pin_refs": 0, "referenced_bytes": 0}


@pytest.fixture
def dev():
    d = devmap.Device.memfd("64M", align="2M")
    yield d
    gc.collect()
    d.close()


# --- sizes and refusals -------------------------------------------------------------------


def test_sizes_are_binary_like_ndctl():
    assert devmap.parse_size("1K") == 1024
    assert devmap.parse_size("64M") == 64 * MiB
    assert devmap.parse_size("1G") == GiB
    assert devmap.parse_size(12345) == 12345


def test_a_bad_size_string_is_refused_with_the_reason():
    with pytest.raises(devmap.InvalidArgument) as e:
        devmap.Device.memfd("64Q")
    assert isinstance(e.value, ValueError)
    assert isinstance(e.value, OSError)
    assert e.value.errno == errno.EINVAL
    assert 'size "64Q" is malformed' in e.value.strerror


def test_a_handler_count_past_the_library_bound_is_refused_with_the_limit():
    with pytest.raises(devmap.InvalidArgument) as e:
        devmap.Device.memfd("64M", handlers=100000)
    assert e.value.errno == errno.EINVAL
    assert "handlers 100000 is not a usable count" in e.value.strerror
    assert "use 1 to 256" in e.value.strerror


def test_a_bad_align_is_refused_with_one_that_works():
    with pytest.raises(devmap.InvalidArgument) as e:
        devmap.Device.memfd("64M", align="3M")
    assert '"4K", "2M" or "1G"' in e.value.strerror


def test_a_size_not_a_multiple_of_the_align_is_refused_with_sizes_that_work():
    with pytest.raises(devmap.InvalidArgument) as e:
        devmap.Device.memfd("3M", align="2M")
    assert e.value.errno == errno.EINVAL
    assert "not a multiple of the device align 2 MiB" in e.value.strerror
    assert "2 MiB or 4 MiB" in e.value.strerror


def test_a_mapping_off_the_align_is_refused(dev):
    with pytest.raises(devmap.InvalidArgument, match="offset 4 KiB is not a multiple"):
        dev.mmap(offset=PAGE, length="2M")


def test_every_error_is_a_devmap_error():
    for cls in (
        devmap.InvalidArgument,
        devmap.BusyError,
        devmap.TornDownError,
        devmap.PoisonedError,
        devmap.MemoryLost,
    ):
        assert issubclass(cls, devmap.Error)
        assert cls.__module__ == "devmap"
    assert issubclass(devmap.MemoryLost, devmap.PoisonedError)


# --- mapping, memoryview, buffer protocol -----------------------------------------------


def test_write_through_the_memoryview_and_read_back(dev):
    assert dev.backing == "memfd" and dev.catches_touches and dev.namespace is None
    with dev.mmap() as m:
        assert m.length == 64 * MiB and m.addr % (2 * MiB) == 0
        view = memoryview(m)
        assert not view.readonly and view.format == "B" and len(view) == m.length
        view[4096:4101] = b"hello"
        view[3 * MiB : 3 * MiB + 3] = b"abc"
        assert m.read(4096, 5) == b"hello"
        assert m.read_mc(3 * MiB, 3) == b"abc"
        assert bytes(view[3 * MiB : 3 * MiB + 3]) == b"abc"
        m.write(8 * MiB, bytearray(b"xyz"))
        assert bytes(view[8 * MiB : 8 * MiB + 3]) == b"xyz"
        view.release()
        # first touches ran the fault path: one leaf per 2 MiB touched
        assert dev.fault_stats()["leaves_mapped"] == 3
        assert m.is_faulted(0) and not m.is_faulted(10 * MiB)
    assert m.closed


def test_zero_ahead_has_leaves_ready_for_a_sequential_toucher():
    import time

    with devmap.Device.memfd("32M", zero_ahead=4) as d:
        with d.mmap() as m:
            for leaf in range(16):
                # time for the pool's thread to zero the next leaf, as a program working
                # between first touches gives it
                time.sleep(0.005)
                assert m.read(leaf * 2 * MiB + 8192, 4) == bytes(4)
                m.write(leaf * 2 * MiB, b"t")
            stats = d.fault_stats()
            assert stats["leaves_mapped"] == 16
            assert stats["zero_ahead_hits"] >= 8, stats
            assert stats["zeroed_ahead"] >= stats["zero_ahead_hits"]
    with pytest.raises(devmap.InvalidArgument) as e:
        devmap.Device.memfd("4M", align="4K", zero_ahead=4)
    assert "use zero-ahead 0, or align 2M" in e.value.strerror


def test_fault_around_maps_the_neighbours_of_sequential_touches_at_4k():
    for window in (1, 16):
        with devmap.Device.memfd("1M", align="4K", fault_around=window) as d:
            with d.mmap() as m:
                for page in range(64):
                    m.write(page * 4096, b"t")
                stats = d.fault_stats()
                assert stats["leaves_mapped"] == 64, stats
                if window == 1:
                    assert stats["fault_around"] == 0 and stats["user_faults"] == 64, stats
                else:
                    assert stats["fault_around"] > 0 and stats["user_faults"] < 64, stats
    with pytest.raises(devmap.InvalidArgument) as e:
        devmap.Device.memfd("1M", align="4K", fault_around=3)
    assert "fault_around = 3" in e.value.strerror


def test_a_second_mapping_sees_the_same_bytes(dev):
    with dev.mmap(0, "4M") as a, dev.mmap("2M", "2M") as b:
        a.write(2 * MiB + 10, b"shared")
        assert b.read(10, 6) == b"shared"
        assert dev.nr_mappings == 2


def test_closing_a_mapping_with_a_live_memoryview_raises_buffer_error(dev):
    m = dev.mmap()
    view = m.view
    with pytest.raises(BufferError, match="still alive"):
        m.close()
    assert not m.closed
    view[0] = 7
    view.release()
    m.close()
    assert m.closed
    with pytest.raises(devmap.TornDownError):
        m.read(0, 1)
    with pytest.raises(devmap.TornDownError):
        m.pin(0, PAGE)
    with pytest.raises(BufferError):
        memoryview(m)
    m.close()  # twice is fine


def test_a_mapping_outlives_nothing_it_needs():
    # the device object goes first; the mapping keeps the device alive until it closes
    d = devmap.Device.memfd("4M")
    m = d.mmap()
    del d
    gc.collect()
    m.write(0, b"still here")
    assert m.read(0, 10) == b"still here"
    m.close()


# --- pins and extents ---------------------------------------------------------------------


def test_pin_by_address_export_extents_and_unpin_dirty():
    with devmap.Device.memfd("1G", align="2M", faults="explicit") as d:
        with d.mmap() as m:
            pins = m.pin(0, "1G")
            assert pins.nr_pages == GiB // PAGE
            folios = pins.folios
            assert len(folios) == 512
            assert folios[0].addr == m.addr and folios[0].order == 9
            assert folios[0].pfn == d.pfn_at(0) and folios[0].nr_pages == 512
            assert folios[1].addr == m.addr + 2 * MiB

            (whole,) = pins.extents()
            assert (whole.addr, whole.offset, whole.length) == (m.addr, 0, GiB)
            assert whole.pfn == d.pfn_at(0)

            capped = pins.extents(max_bytes="64M")
            assert len(capped) == 16
            assert all(e.length == 64 * MiB for e in capped)
            assert [e.addr for e in capped] == [m.addr + i * 64 * MiB for i in range(16)]

            with pytest.raises(devmap.InvalidArgument):
                pins.extents(max_extents=4, max_bytes="64M")
            with pytest.raises(devmap.InvalidArgument):
                pins.extents(max_bytes="1M")  # shorter than a folio

            stats = d.pin_stats()
            assert stats["pinned_bytes"] == GiB
            assert stats["pin_refs"] == GiB // PAGE
            pins.unpin(dirty=True)
            assert pins.unpinned
            assert d.pin_stats() == ZERO_PINS
            with pytest.raises(devmap.TornDownError):
                pins.extents()
            pins.unpin()  # twice is fine


def test_pin_by_page(dev):
    with dev.mmap() as m:
        with m.pin(PAGE, 3 * MiB, folios=False) as pins:
            pages = pins.pages
            assert len(pages) == 3 * MiB // PAGE
            assert pages[0] == (m.addr + PAGE, dev.pfn_at(PAGE))
            assert [f.nr_pages for f in pins.folios] == [511, 257]
            assert len(pins.extents()) == 1
        assert dev.pin_stats() == ZERO_PINS


def test_a_nofault_pin_of_a_leaf_not_faulted_in_is_refused(dev):
    with dev.mmap() as m:
        with pytest.raises(devmap.Error) as e:
            m.pin(0, PAGE, nofault=True)
        assert e.value.errno == errno.EFAULT
        m.populate(0, "2M")
        with m.pin(0, PAGE, nofault=True) as pins:
            assert pins.nr_pages == 1


def test_context_managers_release_everything():
    with devmap.Device.memfd("16M") as d:
        with d.mmap() as m:
            with m.pin(0, "8M") as pins:
                assert d.pin_stats()["pinned_bytes"] == 8 * MiB
                assert len(pins) == 4
            assert d.pin_stats() == ZERO_PINS
        assert d.nr_mappings == 0
    assert d.closed
    with pytest.raises(devmap.TornDownError, match="closed"):
        d.mmap()
    d.close()  # twice is fine


def test_a_device_with_open_mappings_or_pins_refuses_to_close():
    d = devmap.Device.memfd("4M")
    m = d.mmap()
    with pytest.raises(devmap.BusyError, match="1 mapping"):
        d.close()
    pins = m.pin(0, PAGE)
    m.close()  # pins outlive their mapping, as in the kernel
    with pytest.raises(devmap.BusyError) as e:
        d.close(timeout=0.05)
    assert e.value.errno == errno.EBUSY
    assert not d.closed
    pins.unpin()
    d.close()
    assert d.closed


def test_pins_from_threads_run_without_the_gil():
    with devmap.Device.memfd("64M", faults="explicit") as d, d.mmap() as m:
        errors = []

        def pin(i):
            try:
                with m.pin(i * 16 * MiB, "16M") as p:
                    assert p.nr_pages == 16 * MiB // PAGE
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=pin, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            d.pin_stats()  # the device's lock, from a thread holding the GIL meanwhile
            assert not m.closed
        for t in threads:
            t.join()
        assert errors == []
        assert d.pin_stats() == ZERO_PINS


# --- memory failure -----------------------------------------------------------------------


def test_memory_failure_costs_one_page_and_read_mc_reports_it(dev):
    assert dev.granularity == "page"
    told = []
    with dev.mmap() as m:
        # told of an error its own accesses did not meet: early kill
        m.on_poison(told.append, early_kill=True)
        pattern = bytes(range(256)) * (2 * MiB // 256)
        m.write(0, pattern)
        report = dev.memory_failure(2 * PAGE)
        assert report["pfn"] == dev.pfn_at(2 * PAGE)
        assert report["head"] == dev.pfn_at(0)
        assert report["handled_by"] == "generic"
        (notice,) = report["notices"]
        assert notice["addr"] == m.addr + 2 * PAGE
        assert notice["length"] == PAGE and notice["shift"] == 12
        assert not notice["action_required"]
        assert report["revoked"] == [notice]
        assert told == [notice]

        # the rest of the leaf keeps its bytes
        assert m.read_mc(0, 2 * PAGE) == pattern[: 2 * PAGE]
        assert m.read_mc(3 * PAGE, 2 * MiB - 3 * PAGE) == pattern[3 * PAGE :]
        with pytest.raises(devmap.MemoryLost) as e:
            m.read_mc(PAGE, 3 * PAGE)
        assert isinstance(e.value, devmap.PoisonedError)
        assert e.value.errno == EHWPOISON
        assert (e.value.offset, e.value.addr, e.value.length) == (2 * PAGE, m.addr + 2 * PAGE, PAGE)
        assert "lost to a memory error" in e.value.strerror

        assert dev.badblocks() == [(2 * PAGE, PAGE)]
        # a second error on the page is handled again, as the kernel's device pages are
        assert dev.memory_failure(2 * PAGE)["notices"] == [notice]
        assert told == [notice, notice]
        assert dev.badblocks() == [(2 * PAGE, PAGE)]
        with pytest.raises(devmap.PoisonedError):
            m.pin(2 * PAGE, PAGE)

        assert dev.clear_poison(0, "2M") == 1
        assert dev.badblocks() == []
        assert len(m.read_mc(0, 2 * MiB)) == 2 * MiB
        with m.pin(0, "2M"):
            pass


def test_memory_failure_by_address(dev):
    with dev.mmap() as m:
        m.populate(0, "4M")
        report = devmap.memory_failure_at(m.addr + 2 * MiB + 5 * PAGE, action_required=True)
        assert report["pfn"] == dev.pfn_at(2 * MiB + 5 * PAGE)
        # the mapping whose access met the error is current: told, action required
        (notice,) = report["notices"]
        assert notice["action_required"] and notice["mapping"] == report["revoked"][0]["mapping"]
        assert dev.badblocks() == [(2 * MiB + 5 * PAGE, PAGE)]
        assert dev.clear_poison(2 * MiB + 5 * PAGE, PAGE) == 1
    with pytest.raises(devmap.InvalidArgument, match="not in a device-dax mapping"):
        devmap.memory_failure_at(8)


def test_kill_proc_tells_current_ar_early_kill_ao_and_no_one_else():
    with devmap.Device.memfd("4M") as d, d.mmap() as a, d.mmap() as b, d.mmap() as c:
        told = {"a": [], "b": [], "c": []}
        a.on_poison(told["a"].append)
        b.on_poison(told["b"].append, early_kill=True)
        c.on_poison(told["c"].append)
        for m in (a, b, c):
            m.populate()
        report = devmap.memory_failure_at(a.addr + 2 * MiB + PAGE, action_required=True)
        assert len(report["revoked"]) == 3
        assert [(n["addr"], n["action_required"]) for n in report["notices"]] == [
            (a.addr + 2 * MiB + PAGE, True),
            (b.addr + 2 * MiB + PAGE, False),
        ]
        assert (len(told["a"]), len(told["b"]), told["c"]) == (1, 1, [])
        # tell_all: every owner, action_required as passed
        report = d.memory_failure(2 * MiB + 2 * PAGE, tell_all=True)
        assert [n["action_required"] for n in report["notices"]] == [False] * 3
        assert told["c"] and len(told["a"]) == 2


def test_a_page_nothing_mapped_is_busy_unless_record_unmapped(dev):
    with pytest.raises(devmap.BusyError, match="RECORD_UNMAPPED") as e:
        dev.memory_failure(5 * PAGE)
    assert e.value.errno == errno.EBUSY
    assert dev.badblocks() == []
    report = dev.memory_failure(5 * PAGE, record_unmapped=True)
    assert report["revoked"] == [] and report["notices"] == []
    assert dev.badblocks() == [(5 * PAGE, PAGE)]


def test_leaf_granularity_loses_the_whole_leaf():
    with devmap.Device.memfd("8M", granularity="leaf") as d, d.mmap() as m:
        assert d.granularity == "leaf"
        m.populate()
        d.memory_failure(2 * MiB + PAGE)
        assert m.read_mc(0, 2 * MiB)  # the leaf before is untouched
        with pytest.raises(devmap.MemoryLost) as e:
            m.read_mc(3 * MiB, 1)
        assert (e.value.offset, e.value.length) == (2 * MiB, 2 * MiB)
        d.clear_poison(2 * MiB, "2M")


# --- other backings -----------------------------------------------------------------------


def test_a_file_device(tmp_path):
    path = tmp_path / "dev.img"
    with devmap.Device.file(path, size="8M", align="2M") as d:
        assert not d.catches_touches and d.granularity == "leaf"
        assert d.backing.startswith("file ")
        with d.mmap() as m:
            # the mapping faulted every leaf's metadata in: nothing is left to populate
            assert m.populate() == (0, 4)
            m.write(PAGE, b"on disk")
    with devmap.Device.file(path) as d, d.mmap() as m:
        assert d.size == 8 * MiB
        assert m.read_mc(PAGE, 7) == b"on disk"


def test_a_file_mapping_written_through_a_memoryview_is_told_of_a_memory_error(tmp_path):
    # no populate: the mapping is in the rmap from the start, as the kernel's faults would
    # put it there
    with devmap.Device.file(tmp_path / "dev.img", size="8M", align="2M") as d, d.mmap() as m:
        told = []
        m.on_poison(told.append, early_kill=True)
        view = m.view
        view[2 * MiB + PAGE : 2 * MiB + PAGE + 5] = b"bytes"
        view.release()
        report = d.memory_failure(2 * MiB + PAGE)
        (notice,) = report["notices"]
        assert notice["addr"] == m.addr + 2 * MiB + PAGE
        assert told == [notice]
        with pytest.raises(devmap.MemoryLost):
            m.read_mc(2 * MiB, PAGE)


def free_2m_huge_pages():
    """HugePages_Free of the default (2 MiB) pool, from /proc/meminfo."""
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    assert info["Hugepagesize"].split() == ["2048", "kB"]
    return int(info["HugePages_Free"])


def test_a_hugetlb_device_maps_huge_pages_or_names_the_pool():
    # scripts/python-tests.sh reserves four 2 MiB pages when it runs as root (CI does).
    free = free_2m_huge_pages()
    with devmap.Device.hugetlb("4M", align="2M") as d:
        assert d.backing == "2 MiB hugetlb memfd"
        if free < 2:
            # refused at mmap, naming the pool, never a SIGBUS later
            with pytest.raises(devmap.Error) as e:
                d.mmap()
            assert e.value.errno == errno.ENOMEM
            assert "free" in e.value.strerror
            return
        with d.mmap() as m:
            m.write(2 * MiB, b"huge")
            assert m.read_mc(2 * MiB, 4) == b"huge"
            with m.pin(0, "4M") as pins:
                assert [f.order for f in pins.folios] == [9, 9]
                assert len(pins.extents()) == 1


def test_a_missing_file_is_refused_with_the_system_errno(tmp_path):
    with pytest.raises(devmap.Error) as e:
        devmap.Device.file(tmp_path / "missing")
    assert e.value.errno == errno.ENOENT
    assert "missing" in e.value.strerror


# --- namespaces ---------------------------------------------------------------------------


def test_namespace_create_list_destroy(tmp_path):
    path = tmp_path / "pmem.img"
    with devmap.Region.create(path, "64M") as region:
        assert region.managed and region.size == 64 * MiB
        ns = region.create_namespace("vm0", "16M", align="2M")
        assert ns["name"] == "vm0" and ns["size"] == 16 * MiB and ns["mode"] == "devdax"
        assert ns["data_offset"] == 2 * MiB and ns["data_bytes"] == 14 * MiB
        region.create_namespace("fs0", "8M", mode="fsdax", align="4K", map="dev")
        assert [n["name"] for n in region.namespaces()] == ["vm0", "fs0"]

        with pytest.raises(devmap.InvalidArgument, match="not a multiple of the align"):
            region.create_namespace("bad", "3M", align="2M")
        with pytest.raises(devmap.Error) as e:
            region.create_namespace("vm0", "2M")
        assert e.value.errno == errno.EEXIST
        with pytest.raises(devmap.BusyError, match="managed by another process"):
            devmap.Region.open(path)
        with devmap.Region.open(path, manage=False) as ro:
            assert not ro.managed
            assert [n["name"] for n in ro.namespaces()] == ["vm0", "fs0"]

        region.destroy_namespace("fs0")
        assert [n["name"] for n in region.namespaces()] == ["vm0"]
        with pytest.raises(devmap.Error) as e:
            region.destroy_namespace("fs0")
        assert e.value.errno == errno.ENOENT
    assert region.closed
    with devmap.Region.open(path) as region:
        assert [n["name"] for n in region.namespaces()] == ["vm0"]


def test_free_space_is_what_a_namespace_of_the_align_can_take(tmp_path):
    # A 4K namespace starts on 2M (memremap_compat_align()) and what is past its last whole
    # 2M holds no data: free space counted on 4 KiB boundaries overstates it.
    with devmap.Region.create(tmp_path / "pmem.img", "64M") as region:
        region.create_namespace("a", 4 * MiB + PAGE, align="4K", map="mem")
        # a takes 2M..6M+4K; free are 64K..2M and 6M+4K..64M: 56M from 8M on.
        for align in ("4K", "2M"):
            assert region.free_space(align) == (56 * MiB, 56 * MiB), align
        assert region.free_space("1G") == (0, 0)
        total, largest = region.free_space("4K")
        ns = region.create_namespace("b", largest, align="4K", map="mem")
        assert ns["offset"] == 8 * MiB and ns["size"] == 56 * MiB
        assert region.free_space("4K") == (0, 0)
        with pytest.raises(devmap.InvalidArgument, match="use '4K', '2M' or '1G'"):
            region.free_space(3 * MiB)


def test_threads_share_a_region_without_deadlock(tmp_path):
    # each call takes the region's lock with the GIL released, so threads queue on the lock,
    # never one on the GIL while holding the lock
    with devmap.Region.create(tmp_path / "pmem.img", "256M") as region:
        errors = []

        def work(i):
            try:
                for j in range(5):
                    region.create_namespace(f"ns{i}-{j}", "4M")
                    assert region.namespaces()
                for j in range(5):
                    region.destroy_namespace(f"ns{i}-{j}")
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert region.namespaces() == []


def test_an_enabled_namespace_keeps_its_bad_pages(tmp_path):
    path = tmp_path / "pmem.img"
    with devmap.Region.create(path, "64M") as region:
        region.create_namespace("vm0", "16M", map="mem")
        with region.enable("vm0") as d:
            ns = d.namespace
            assert ns["name"] == "vm0" and not ns["was_clean"] and ns["enable_path"] == "host"
            with pytest.raises(devmap.BusyError):
                region.close()
            with d.mmap() as m:
                m.populate(0, "2M")
                m.write(0, b"persistent")
                d.memory_failure(2 * MiB + PAGE)
        assert region.badblocks("vm0") == [(2 * MiB + PAGE, PAGE)]
        with region.enable("vm0") as d, d.mmap() as m:
            assert d.namespace["was_clean"]
            assert d.badblocks() == [(2 * MiB + PAGE, PAGE)]
            m.populate(0, "2M")
            assert m.read_mc(0, 10) == b"persistent"
            with pytest.raises(devmap.MemoryLost):
                m.read_mc(2 * MiB, 1)
            d.clear_poison(2 * MiB + PAGE, PAGE)
        assert region.badblocks("vm0") == []
        region.destroy_namespace("vm0")


def test_a_dev_map_namespace_adopts_its_memmap_on_a_clean_enable(tmp_path):
    with devmap.Region.create(tmp_path / "pmem.img", "64M") as region:
        region.create_namespace("d0", "16M", map="dev")
        paths = []
        for _ in range(2):
            with region.enable("d0") as d:
                paths.append(d.namespace["enable_path"])
                with d.mmap() as m:
                    pins = m.pin(0, "2M")
                with pytest.raises(devmap.BusyError, match="pin"):
                    d.close()
                pins.unpin()
        assert paths == ["cold", "warm"]


def test_a_namespace_device_dropped_without_close_is_disabled(tmp_path):
    with devmap.Region.create(tmp_path / "pmem.img", "64M") as region:
        region.create_namespace("vm0", "16M")
        d = region.enable("vm0")
        m = d.mmap()
        m.populate(0, "2M")
        d.memory_failure(PAGE)
        del d, m
        gc.collect()
        # disabled on the way out: its bad page is on disk, the region closes, and the
        # namespace destroys without force (its last enable ended with a disable)
        assert region.badblocks("vm0") == [(PAGE, PAGE)]
        region.destroy_namespace("vm0")


# --- estimate and packaging ---------------------------------------------------------------


def test_estimate_prices_the_memmap_without_allocating():
    heads = devmap.estimate("1T", "2M", "heads")
    assert heads["metadata_bytes"] == 32 * MiB
    assert heads["descriptors_initialized"] == 524288
    assert devmap.estimate("1T", "2M", "flat")["metadata_bytes"] == 16 * GiB
    assert devmap.estimate("1T", "1G", "heads")["metadata_bytes"] == 64 * KiB
    with pytest.raises(devmap.InvalidArgument):
        devmap.estimate("3000M", "1G")


def test_the_package_ships_its_type_stubs():
    files = importlib.resources.files("devmap")
    assert files.joinpath("py.typed").is_file()
    stub = files.joinpath("__init__.pyi").read_text()
    assert "class Device" in stub and "def extents" in stub


def test_the_stubs_match_the_module():
    pytest.importorskip("mypy")
    allowlist = pathlib.Path(__file__).with_name("stubtest-allowlist.txt")
    run = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "devmap", "--allowlist", str(allowlist)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
