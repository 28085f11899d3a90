#!/usr/bin/env python3
"""A/B comparison of two devmap release binaries on the figures an API change must not slow:
first touch of 2 MiB leaves (`touch-test --size 1G --align 2M`) and of 4 KiB leaves
(`touch-test --size 256M --align 4K`, where fault-around applies; each side's ratios to the
kernel's touches in the same run, and the wall time of all the touches against the kernel's),
and pins of one 2 MiB folio per call, by pfn and by address
(`gup-test -m 4096 -r 7 -n 512 -F --by-address`, medians of repeats 2-7).

The two binaries alternate within each round, and which goes first alternates by round, so
load on a shared machine falls on both alike. Prints, per figure, the median over the rounds
for each binary and new / old.

Usage: scripts/ab-bench.py OLD_BIN NEW_BIN [--rounds 10]
Build each with `cargo build --release -p devmap-cli` (an old commit in a `git worktree`).
"""

import argparse
import json
import statistics
import subprocess

TOUCH = ["touch-test", "--size", "1G", "--align", "2M", "--json"]
TOUCH_4K = ["touch-test", "--size", "256M", "--align", "4K", "--json"]
GUP = ["gup-test", "-m", "4096", "-r", "7", "-n", "512", "-F", "--by-address", "--json"]


def run(binary, args):
    out = subprocess.run([binary] + args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def figures(binary):
    """One round of one binary: name -> value."""
    got = {}
    t = run(binary, TOUCH)[0]
    got["touch p50 (ms)"] = t["p50_ns"] / 1e6
    got["touch p99 (ms)"] = t["p99_ns"] / 1e6
    got["touch p50 / kernel"] = t["ratio_p50"]
    t = run(binary, TOUCH_4K)[0]
    got["touch 4K p50 (us)"] = t["p50_ns"] / 1e3
    got["touch 4K p99 (us)"] = t["p99_ns"] / 1e3
    got["touch 4K p50 / kernel"] = t["p50_ns"] / t["baseline_p50_ns"]
    got["touch 4K p99 / kernel"] = t["p99_ns"] / t["baseline_p99_ns"]
    got["touch 4K wall / kernel"] = t["wall_ns"] / t["baseline_wall_ns"]
    rows = [r for r in run(binary, GUP) if r["repeat"] >= 1]
    for by in ("pfn", "address"):
        mine = [r for r in rows if r["by"] == by]
        got[f"pin by {by}, 2048 calls (us)"] = statistics.median(r["get_us"] for r in mine)
        got[f"unpin by {by} (us)"] = statistics.median(r["put_us"] for r in mine)
    got["pin by address / by pfn"] = (
        got["pin by address, 2048 calls (us)"] / got["pin by pfn, 2048 calls (us)"]
    )
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    seen = {"old": [], "new": []}
    for i in range(a.rounds):
        order = [("old", a.old), ("new", a.new)]
        if i % 2:
            order.reverse()
        for name, binary in order:
            seen[name].append(figures(binary))
    print(f"{'figure':34} {'old':>10} {'new':>10} {'new/old':>8}")
    for key in seen["old"][0]:
        old = statistics.median(r[key] for r in seen["old"])
        new = statistics.median(r[key] for r in seen["new"])
        print(f"{key:34} {old:10.3f} {new:10.3f} {new / old:8.3f}")


if __name__ == "__main__":
    main()
