#!/usr/bin/env python3
"""One `devmap touch-test` configuration run by two binaries (or one), alternating, each run
printed: the device's first-touch p50/p99/max against the kernel's in the same run (the
ratios `touch-test` computes), the wall time of all the touches over the kernel's, and what
the device did (caught touches, leaves faulted around, leaves the zero-ahead pool had ready).
At the end, per binary, the range and median of the p50 ratio, the p99 and the max.

The binaries alternate within each run, and which goes first alternates by run, so load on a
shared machine falls on both alike.

Usage: scripts/touch-ab.py [--old OLD_BIN] NEW_BIN [--runs 3] -- TOUCH_TEST_ARGS...
e.g.   scripts/touch-ab.py --old /tmp/old/devmap target/release/devmap -- \\
           --size 256M --backing hugetlb --threads 2 --init sync
"""

import argparse
import json
import statistics
import subprocess
import sys


def run(binary, args):
    out = subprocess.run(
        [binary, "touch-test", *args, "--json"], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)[0]


def line(name, r):
    us = lambda ns: f"{ns / 1000:.1f}"
    wall = r["wall_ns"] / r["baseline_wall_ns"] if r["baseline_wall_ns"] else 0.0
    return (
        f"{name:4} p50 {us(r['p50_ns']):>8} us ({r['ratio_p50']:.2f}x)  "
        f"p99 {us(r['p99_ns']):>8} us ({r['ratio_p99']:.2f}x)  "
        f"max {us(r['max_ns']):>9} us (kernel {us(r['baseline_max_ns'])})  "
        f"wall {wall:.2f}x  faults {r['user_faults']} around {r['fault_around']} "
        f"ready {r.get('zero_ahead_hits', 0)}"
    )


def main():
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser()
    p.add_argument("--old")
    p.add_argument("new")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv[:cut])
    args = argv[cut + 1 :]
    sides = [("new", a.new)] + ([("old", a.old)] if a.old else [])
    print("touch-test", " ".join(args))
    seen = {name: [] for name, _ in sides}
    for i in range(a.runs):
        order = sides if i % 2 == 0 else list(reversed(sides))
        for name, binary in order:
            r = run(binary, args)
            seen[name].append(r)
            print(f"run {i + 1} " + line(name, r), flush=True)
    for name, rs in seen.items():
        print(summary(name, rs))


def summary(name, rs):
    """Range and median of the p50 ratio, the p99 and the max over `rs`."""

    def spread(values, fmt):
        return f"{fmt(min(values))}-{fmt(max(values))} (median {fmt(statistics.median(values))})"

    x = lambda v: f"{v:.2f}x"
    us = lambda v: f"{v / 1000:.0f} us"
    return (
        f"{name:4} {len(rs)} runs: p50 {spread([r['ratio_p50'] for r in rs], x)}  "
        f"p99 {spread([r['p99_ns'] for r in rs], us)}  max {spread([r['max_ns'] for r in rs], us)}"
    )


if __name__ == "__main__":
    main()
