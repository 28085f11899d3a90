"""devmap.connect: a client of a real `devmap serve`, the binary named by DEVMAP_BIN
(scripts/python-tests.sh builds target/debug/devmap and sets it), serving a region file on
tmpfs (/dev/shm) over a socket in a temporary folder. Another client process is this
interpreter run again (sys.executable), so the bytes really cross processes.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

import devmap

MiB = 1 << 20
PAGE = 4096


def devmap_bin() -> str:
    path = os.environ.get("DEVMAP_BIN")
    if not path:
        pytest.fail(
            "DEVMAP_BIN is not set: these tests run a real `devmap serve`. Run them with "
            "`bash scripts/python-tests.sh` (which builds target/debug/devmap and sets it), or "
            "set DEVMAP_BIN to a devmap binary (cargo build -p devmap-cli)"
        )
    if not os.access(path, os.X_OK):
        pytest.fail(f"DEVMAP_BIN={path} is not an executable: build it with cargo build -p devmap-cli")
    return path


class Served:
    """`devmap serve` over a fresh region holding namespace vm0 (64 MiB at 2 MiB)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="devmap-py-")
        self.socket = os.path.join(self.dir, "devmap.sock")
        self.region = f"/dev/shm/devmap-py-{os.getpid()}-{os.path.basename(self.dir)}.img"
        with devmap.Region.create(self.region, "128M") as r:
            r.create_namespace("vm0", "64M", align="2M")
        self.proc = subprocess.Popen(
            [devmap_bin(), "serve", "--socket", self.socket, "-r", self.region, "--enable", "vm0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        assert ready.startswith("devmap serve: ready on"), ready

    def stop(self) -> str:
        """SIGTERM; the exit must be 0 after a clean disable. Returns the last line."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        last = self.proc.stdout.readline()
        assert self.proc.wait(timeout=30) == 0, last
        assert "disabled cleanly: vm0" in last, last
        return last

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.unlink(self.region)
        except FileNotFoundError:
            pass


@pytest.fixture
def served():
    s = Served()
    try:
        yield s
        if s.proc.poll() is None:
            s.stop()
    finally:
        s.cleanup()


def test_nothing_listening_is_an_error_naming_the_socket():
    with pytest.raises(devmap.Error) as e:
        devmap.connect("/nonexistent/devmap.sock")
    assert e.value.errno == errno.ENOENT
    assert "devmap serve --socket /nonexistent/devmap.sock" in e.value.strerror


def test_list_and_status_say_what_the_service_holds(served):
    with devmap.connect(served.socket) as c:
        assert repr(c).startswith("<devmap.Client socket=")
        [entry] = c.list()
        assert entry["name"] == "vm0" and entry["enabled"] and entry["clients"] == 0
        assert entry["region"] == served.region and entry["align"] == 2 * MiB
        status = c.status()
        assert status["pid"] == served.proc.pid
        assert status["namespaces"][0]["pins"] == 0
        assert os.getpid() in [client["pid"] for client in status["clients"]]
    assert c.closed
    with pytest.raises(devmap.TornDownError):
        c.list()


def test_a_mapping_is_a_writable_buffer_shared_with_another_process(served):
    c = devmap.connect(served.socket)
    ns = c.open("vm0")
    assert (ns.name, ns.align, ns.caught) == ("vm0", 2 * MiB, True)
    assert 60 * MiB < ns.size <= 64 * MiB
    c.close()  # the namespace and its mappings keep the connection
    with ns.map(0, 8 * MiB) as m:
        assert m.addr % (2 * MiB) == 0 and m.length == len(m) == 8 * MiB and m.offset == 0
        view = memoryview(m)
        view[3 * MiB + 5 : 3 * MiB + 10] = b"hello"
        with pytest.raises(BufferError):
            m.close()
        view.release()
        m.write(5 * MiB, bytearray(b"from python"))
        assert m.read(3 * MiB + 5, 5) == b"hello"
        # Another process maps the namespace from 2 MiB and reads both, then writes back.
        child = textwrap.dedent(
            f"""
            import devmap
            c = devmap.connect({served.socket!r})
            m = c.open("vm0").map("2M", "4M")
            assert m.read(MiB + 5, 5) == b"hello", m.read(MiB + 5, 5)
            assert m.read(3 * MiB, 11) == b"from python"
            m.view[0:6] = b"answer"
            print(hex(m.addr))
            """
        ).replace("MiB", str(MiB))
        out = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert m.read(2 * MiB, 6) == b"answer"
    assert m.closed
    with pytest.raises(devmap.TornDownError):
        m.read(0, 1)
    ns.close()


def test_pins_carry_their_extents_and_hold_the_namespace(served):
    c = devmap.connect(served.socket)
    m = c.open("vm0").map(0, "8M")
    start = m.addr + MiB
    with m.pin(start, 4 * MiB // PAGE, write=True) as pins:
        assert pins.nr_pages == 1024 and not pins.unpinned
        assert not pins.fast, "no leaf was touched: pinned by request"
        assert pins.handle > 0
        [e] = pins.extents()
        assert (e.addr, e.offset, e.length) == (start, MiB, 4 * MiB) and e.pfn > 0
        assert c.status()["namespaces"][0]["pins"] == 1
        with pytest.raises(devmap.BusyError) as busy:
            c.disable("vm0")
        assert str(os.getpid()) in busy.value.strerror
    assert pins.unpinned
    with pytest.raises(devmap.TornDownError):
        pins.extents()
    pins.unpin()  # twice does nothing
    assert c.status()["namespaces"][0]["pins"] == 0
    # By page, the whole mapping by default; the extents are the same.
    p = m.pin(folios=False)
    assert p.nr_pages == 2048 and [x.length for x in p.extents()] == [8 * MiB]
    p.unpin(dirty=True)
    # Every leaf is faulted now: the same pin is fast, with the same extents.
    fast = m.pin(folios=False)
    assert fast.fast and [x.length for x in fast.extents()] == [8 * MiB]
    assert c.status()["namespaces"][0]["fast_pins"] == 1
    fast.unpin()
    assert c.status()["namespaces"][0]["fast_pins"] == 0
    with pytest.raises(devmap.InvalidArgument) as e:
        m.pin(m.addr + 8 * MiB, 1)
    assert e.value.errno == errno.EFAULT
    assert "not inside this mapping" in e.value.strerror
    with pytest.raises(devmap.InvalidArgument):
        m.pin(m.addr + 8 * MiB)
    m.close()


def test_refusals_carry_the_services_errno_and_reason(served):
    c = devmap.connect(served.socket)
    with pytest.raises(devmap.Error) as e:
        c.open("nope")
    assert e.value.errno == errno.ENOENT
    assert 'no served region has a namespace "nope"' in e.value.strerror
    ns = c.open("vm0", region=served.region)
    with pytest.raises(devmap.InvalidArgument) as e:
        ns.map("1M", "2M")
    assert "offset" in e.value.strerror
    with pytest.raises(devmap.InvalidArgument):
        ns.map(ns.size + 2 * MiB)
    m = ns.map(0, "2M")
    with pytest.raises(devmap.BusyError):
        c.disable("vm0")
    assert c.notices() == []
    c.disable("vm0", force=True)
    [told] = c.notices()
    assert told["what"] == "mapping_revoked" and told["handle"] == m.handle
    assert (told["addr"], told["len"]) == (m.addr, 2 * MiB)
    with pytest.raises(devmap.TornDownError):
        c.open("vm0")  # not enabled: ENXIO
    m.close()
    assert c.enable("vm0") is True, "a clean disable: the enable is warm"


def test_a_client_of_a_stopped_service_is_refused_not_hung(served):
    c = devmap.connect(served.socket)
    m = c.open("vm0").map(0, "2M")
    m.write(0, b"before")
    pins = m.pin(m.addr, 1)
    assert pins.fast and pins.handle == 0, "the leaf was touched: pinned with no request"
    last = served.stop()
    assert "1 client(s) disconnected" in last, last
    with pytest.raises(devmap.Error):
        c.status()
    pins.unpin()  # a fast pin is given back here: nothing to ask
    assert pins.unpinned
    m.close()
    c.close()


def test_the_two_process_example_runs(served):
    example = os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "examples", "python", "client_demo.py"
    )
    message = "written by one process, read by another"
    writer = subprocess.Popen(
        [sys.executable, example, "write", served.socket, "vm0", message],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdin is not None
    assert "wrote" in writer.stdout.readline()
    reader = subprocess.run(
        [sys.executable, example, "read", served.socket, "vm0", message],
        capture_output=True,
        text=True,
        timeout=60,
    )
    writer.stdin.close()
    assert writer.wait(timeout=30) == 0
    writer.stdout.close()
    assert reader.returncode == 0, reader.stdout + reader.stderr
    assert repr(message) in reader.stdout
    assert "pinned 512 pages in 1 extent(s)" in reader.stdout
    assert "2 client(s) map vm0" in reader.stdout


def test_a_memory_error_is_told_at_this_process_address(served):
    c = devmap.connect(served.socket)
    m = c.open("vm0").map(0, "4M")
    m.write(3 * MiB, b"x" * PAGE)
    done = c.inject_error("vm0", 3 * MiB)
    assert (done["pages"], done["revoked"], done["told"]) == (1, 1, 1)
    [told] = c.notices()
    assert told["what"] == "memory_lost" and told["handle"] == m.handle
    assert (told["addr"], told["len"]) == (m.addr + 3 * MiB, PAGE)
    assert m.read(3 * MiB - PAGE, PAGE) == bytes(PAGE)  # the neighbour is intact
    with pytest.raises(devmap.InvalidArgument):
        c.inject_error("vm0", 3 * MiB + 1)
    # An error this process met, reported by its own address: told the same way.
    done = m.report_memory_error(m.addr + 3 * MiB + 2 * PAGE)
    assert (done["pages"], done["revoked"], done["told"]) == (1, 1, 1)
    [told] = c.notices()
    assert (told["what"], told["addr"]) == ("memory_lost", m.addr + 3 * MiB + 2 * PAGE)
    m.close()
