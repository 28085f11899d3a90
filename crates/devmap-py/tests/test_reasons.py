"""Refusals from the Python module that name their real cause, and agree with the C ABI:
a poison clear off the 4 KiB grid, a populate of nothing, a close refused inside a `with`
block chained to the exception that left things open, a non-callable poison owner,
`handlers=0`, and 0 as "no limit" for extents (as in C's devmap_pins_extents).
"""

import errno

import pytest

import devmap

MiB = 1 << 20
PAGE = 4096


@pytest.fixture
def dev():
    d = devmap.Device.memfd("8M", align="2M")
    yield d
    d.close()


def test_an_unaligned_poison_clear_names_the_alignment_and_the_pages_that_would_work(dev):
    with pytest.raises(devmap.InvalidArgument) as e:
        dev.clear_poison(100, 5)
    assert e.value.errno == errno.EINVAL
    assert "offset 100 B and length 5 B are not multiples of 4 KiB" in e.value.strerror
    assert "use offset 0 and length 4 KiB" in e.value.strerror
    assert "past the end" not in e.value.strerror
    assert dev.clear_poison(0, PAGE) == 0  # what the message suggests works


def test_a_populate_of_nothing_is_einval_not_efault(dev):
    with dev.mmap() as m:
        with pytest.raises(devmap.InvalidArgument) as e:
            m.populate(0, 0)
        assert e.value.errno == errno.EINVAL
        assert "a populate of 0 bytes does nothing" in e.value.strerror
        with pytest.raises(devmap.InvalidArgument) as e:
            m.pin(0, 0)
        assert e.value.errno == errno.EINVAL


def test_a_busy_device_names_the_live_memoryview_that_kept_its_mapping_open():
    with pytest.raises(devmap.BusyError, match="1 mapping") as e:
        with devmap.Device.memfd("4M") as d, d.mmap() as m:
            view = memoryview(m)
    cause = e.value.__cause__
    assert isinstance(cause, BufferError), repr(cause)
    assert "memoryview(s) of this mapping are still alive" in str(cause)
    assert e.value.__context__ is cause
    view.release()
    m.close()
    d.close()


def test_a_busy_region_closed_by_with_chains_the_exception_that_left_it_busy(tmp_path):
    with pytest.raises(devmap.BusyError) as e:
        with devmap.Region.create(tmp_path / "pmem.img", "64M") as region:
            region.create_namespace("vm0", "16M")
            d = region.enable("vm0")
            raise KeyError("the block's own failure")
    assert isinstance(e.value.__cause__, KeyError)
    assert e.value.__context__ is e.value.__cause__
    d.close()
    region.close()


def test_on_poison_refuses_a_non_callable(dev):
    with dev.mmap() as m:
        with pytest.raises(TypeError, match="on_poison needs a callable.*not int"):
            m.on_poison(42)
        m.on_poison(print)


@pytest.mark.parametrize("faults", ["auto", "explicit"])
def test_zero_handlers_are_refused_with_the_reason_c_gives(faults):
    with pytest.raises(devmap.InvalidArgument) as e:
        devmap.Device.memfd("4M", faults=faults, handlers=0)
    assert e.value.errno == errno.EINVAL
    # The library's words, which devmap_device_create_* returns too.
    assert "handlers = 0: a device needs at least 1 handler thread" in e.value.strerror
    devmap.Device.memfd("4M", faults=faults, handlers=1).close()


def test_zero_extent_limits_mean_no_limit_as_in_c(dev):
    def extents(**limits):
        return [(x.addr, x.offset, x.pfn, x.length) for x in pins.extents(**limits)]

    with dev.mmap() as m, m.pin(0, "4M") as pins:
        whole = extents()
        assert len(whole) == 1 and whole[0][3] == 4 * MiB
        assert extents(max_bytes=0) == whole
        assert extents(max_extents=0) == whole
        assert extents(max_extents=0, max_bytes=0) == whole
        with pytest.raises(devmap.InvalidArgument, match="extent cap of 1 MiB"):
            pins.extents(max_bytes="1M")
