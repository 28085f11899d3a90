#!/usr/bin/env python3
"""First touches from several client processes at once: N `devmap client-test` processes,
each with T threads, touch their own fresh 2 MiB leaves of one served namespace (region on
/dev/shm, so the service resolves every touch), in step (`--in-step`): all the service's
touches at once, then all the kernel's. Each prints its p50 and
p99 and the kernel's first touch of a tmpfs file with the same thread count; this prints them
and the issue-19 figure: the worst client p99 over the median client p50 (target <= 3).

Usage: scripts/touch-clients-bench.py [--bin target/release/devmap] [--clients 4]
       [--threads 2] [--leaves 64] [--runs 3]
"""

import argparse
import json
import statistics
import subprocess

from served import served

LEAF = 2 << 20


def one_run(a):
    size = a.clients * a.leaves * LEAF
    with served(a.bin, "touch", size + (64 << 20), size + (8 << 20)) as (socket, run):
        kids = [
            subprocess.Popen(
                [a.bin, "client-test", "--socket", socket, "--from", str(i * a.leaves),
                 "--leaves", str(a.leaves), "--threads", str(a.threads), "--pins", "10",
                 "--json", "--in-step"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(a.clients)
        ]
        # Every client touches the service's leaves at once, then every one the kernel's.
        for phase in ("served", "kernel"):
            for k in kids:
                line = k.stderr.readline()
                assert line.strip() == f"ready {phase}", line
            for k in kids:
                k.stdin.write("\n")
                k.stdin.flush()
        rows = []
        for k in kids:
            out, err = k.communicate()
            assert k.returncode == 0, out + err
            rows.append(json.loads(out)[0])
        status = json.loads(run("status", "--socket", socket).stdout)
        return rows, status["namespaces"][0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/devmap")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--leaves", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    for r in range(a.runs):
        rows, ns = one_run(a)
        p50s = [x["touch_p50_ns"] / 1e3 for x in rows]
        p99s = [x["touch_p99_ns"] / 1e3 for x in rows]
        k50 = [x["kernel_touch_p50_ns"] / 1e3 for x in rows]
        print(
            f"run {r + 1}: {a.clients} clients x {a.threads} threads, {a.leaves} leaves each; "
            f"client p50 {', '.join(f'{v:.0f}' for v in p50s)} us; "
            f"p99 {', '.join(f'{v:.0f}' for v in p99s)} us; "
            f"worst p99 / median p50 {max(p99s) / statistics.median(p50s):.2f}; "
            f"kernel p50 (same threads) median {statistics.median(k50):.0f} us; "
            f"service resolve p50 {ns['resolve_p50_ns'] / 1e3:.0f} us, "
            f"p99 {ns['resolve_p99_ns'] / 1e3:.0f} us"
        )


if __name__ == "__main__":
    main()
