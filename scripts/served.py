"""One namespace served by `devmap serve` for the benchmark scripts that drive client
processes (touch-clients-bench.py, lease-drop-bench.py, mf-clients-bench.py): a region file on
/dev/shm (tmpfs, so the service catches its clients' touches), a 2M namespace `vm0` enabled at
start, the service on a socket in a fresh directory. Left as it found the machine: the service
stopped with SIGTERM and the region file removed, however the body ends.

    with served(bin, "touch", region_bytes, namespace_bytes) as (socket, run):
        ...  # run("status", "--socket", socket) runs the same binary
"""

import contextlib
import os
import subprocess
import tempfile


@contextlib.contextmanager
def served(binary, tag, region_bytes, namespace_bytes):
    region = f"/dev/shm/devmap-{tag}-bench-{os.getpid()}.img"
    socket = os.path.join(tempfile.mkdtemp(), "devmap.sock")

    def run(*args):
        return subprocess.run([binary, *args], check=True, capture_output=True)

    run("create-region", "--path", region, "--size", str(region_bytes))
    try:
        run("create-namespace", "-r", region, "-s", str(namespace_bytes), "-a", "2M", "-n", "vm0")
        service = subprocess.Popen(
            [binary, "serve", "--socket", socket, "-r", region, "--enable", "vm0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert service.stdout.readline().startswith("devmap serve: ready")
            yield socket, run
        finally:
            service.terminate()
            service.wait()
    finally:
        os.remove(region)
