#!/usr/bin/env python3
"""How long after a client's SIGKILL `devmap serve` has dropped its mapping and pins (issue 19:
within 100 ms). Starts a service over a fresh region on /dev/shm; N times, a client process
maps 8 MiB, touches it, pins a folio (fast), says ready, and is SIGKILLed; the time is from
the kill until `status` shows no mapping and no pin, polled every 0.5 ms.

Usage: target/pyenv/bin/python scripts/lease-drop-bench.py [--bin target/release/devmap] [--clients 20]
Needs the Python module (bash scripts/python-tests.sh builds it into target/pyenv).
"""

import argparse
import subprocess
import sys
import time

import devmap
from served import served

CHILD = """
import devmap, sys, time
c = devmap.connect(sys.argv[1])
m = c.open("vm0").map(0, "8M")
m.write(0, b"x")
p = m.pin(m.addr, 512)
print("ready", flush=True)
time.sleep(100)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/devmap")
    ap.add_argument("--clients", type=int, default=20)
    a = ap.parse_args()
    with served(a.bin, "lease", 1 << 30, 256 << 20) as (sock, _run):
        c = devmap.connect(sock)
        times = []
        for _ in range(a.clients):
            k = subprocess.Popen([sys.executable, "-c", CHILD, sock], stdout=subprocess.PIPE, text=True)
            assert k.stdout.readline().strip() == "ready"
            t = time.monotonic()
            k.kill()
            while True:
                ns = c.status()["namespaces"][0]
                if not ns["mappings"] and ns["fast_pins"] == 0 and ns["pins"] == 0:
                    break
                time.sleep(0.0005)
            times.append((time.monotonic() - t) * 1e3)
            k.wait()
        c.close()
        times.sort()
        print(
            f"SIGKILL to nothing left: p50 {times[len(times) // 2]:.2f} ms, "
            f"max {times[-1]:.2f} ms over {len(times)} clients (target: 100 ms)"
        )


if __name__ == "__main__":
    main()
