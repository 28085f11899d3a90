#!/usr/bin/env python3
"""Memory failure across client processes: how long `devmap serve` takes to revoke a poisoned
page from every client process mapping it and tell each (the `elapsed_ns` of its InjectError
reply), with N client processes, each mapping and touching the namespace's first 32 MiB.

Usage: scripts/mf-clients-bench.py [--bin target/release/devmap] [--clients 4] [--errors 64]
Needs the Python module (bash scripts/python-tests.sh builds it into target/pyenv) and runs
with that interpreter: target/pyenv/bin/python scripts/mf-clients-bench.py.
"""

import argparse
import statistics
import subprocess
import sys
import time

import devmap
from served import served

MiB = 1 << 20

CLIENT = """
import devmap, sys
c = devmap.connect(sys.argv[1])
m = c.open("vm0").map(0, "32M")
for leaf in range(16):
    m.write(leaf * (2 << 20), b"x")
print("ready", flush=True)
sys.stdin.readline()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/devmap")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--errors", type=int, default=64)
    a = ap.parse_args()
    with served(a.bin, "mf", 256 << 20, 64 << 20) as (socket, _run):
        kids = [
            subprocess.Popen(
                [sys.executable, "-c", CLIENT, socket],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(a.clients)
        ]
        for k in kids:
            assert k.stdout.readline().startswith("ready")
        c = devmap.connect(socket)
        ns = []
        for i in range(a.errors):
            # A page in each of the 16 touched leaves in turn, never the same page twice.
            offset = (i % 16) * 2 * MiB + 4096 * (1 + i // 16)
            done = c.inject_error("vm0", offset)
            assert done["revoked"] == a.clients, done
            ns.append(done["elapsed_ns"])
        for k in kids:
            k.stdin.write("\n")
            k.stdin.flush()
            k.wait()
        ns.sort()
        print(
            f"{a.errors} errors, {a.clients} client processes each mapping the page: revoked "
            f"everywhere and told in p50 {statistics.median(ns) / 1e3:.0f} us, "
            f"p90 {ns[int(len(ns) * 0.9)] / 1e3:.0f} us, max {ns[-1] / 1e3:.0f} us"
        )


if __name__ == "__main__":
    main()
