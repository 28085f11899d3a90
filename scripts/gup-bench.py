#!/usr/bin/env python3
"""Reproduces the pinning table of BENCHMARKS.md: runs `devmap gup-test` for each row,
interleaving the rows round by round so neighbouring load on a shared machine hits every row
alike, and prints each row's median get/put over all repeats plus the ratios the issue sets
targets for. Usage: scripts/gup-bench.py [--rounds 3] [--repeats 7] [--mb 16384] [--bin PATH]
(build first: cargo build --release)."""

import argparse
import json
import statistics
import subprocess
import sys

ROWS = [
    ("-a --align 4K", "one grab per 4 KiB page: the 'before' baseline"),
    ("-a --align 2M", "one grab per 2 MiB folio"),
    ("-a --align 2M --layout flat", ""),
    ("-a --align 2M --layout vmemmap", ""),
    ("--align 2M", "GUP_FAST, plain references"),
    ("-L --align 2M", "FOLL_LONGTERM"),
    ("-a -F --align 2M", "folio-range API, 512-page calls"),
    ("-a --align 2M -n -1", "page-array API, one call"),
    ("-a -F --align 2M -n -1", "folio-range API, one call"),
    ("-a --align 4K -n -1", ""),
    ("-a --align 1G -n -1", ""),
    ("-a --align 4K --prealloc", "entry buffers allocated before timing, as the selftest's"),
    ("-a --align 2M --prealloc", ""),
    ("-a --align 2M -n -1 --prealloc", ""),
    ("-a -F --align 2M -n -1 --prealloc", ""),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mb", type=int, default=16384)
    ap.add_argument("--bin", default="./target/release/devmap")
    a = ap.parse_args()
    if a.mb <= 0 or a.mb % 1024:
        ap.error(f"--mb {a.mb}: the table has a 1G-align row, so give a multiple of 1024")
    runs = {args: [] for args, _ in ROWS}
    for rnd in range(a.rounds):
        for args, _ in ROWS:
            cmd = [a.bin, "gup-test", "-m", str(a.mb), "-r", str(a.repeats), "--json"]
            out = subprocess.run(cmd + args.split(), check=True, capture_output=True, text=True)
            runs[args] += json.loads(out.stdout)
        print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
    med = {}
    print(f"| command (`devmap gup-test -m {a.mb} -r {a.repeats} …`) | get µs | put µs "
          "| get+put µs | entries |")
    print("|---|---|---|---|---|")
    for args, what in ROWS:
        r = runs[args]
        get = statistics.median(x["get_us"] for x in r)
        put = statistics.median(x["put_us"] for x in r)
        tot = statistics.median(x["get_us"] + x["put_us"] for x in r)
        med[args] = tot
        label = f"`{args}`" + (f" ({what})" if what else "")
        print(f"| {label} | {get:.0f} | {put:.0f} | {tot:.0f} | {r[0]['entries']} |")
    n = a.rounds * a.repeats
    print(f"\nmedians of {n} repeats per row ({a.rounds} rounds of {a.repeats})")

    def ratio(slow, fast, target):
        x = med[slow] / med[fast]
        verdict = "met" if x >= target else "NOT met"
        print(f"`{slow}` / `{fast}` = {med[slow]:.0f} / {med[fast]:.0f} = {x:.1f}x "
              f"(target >= {target}x: {verdict})")

    print("each call allocates its result (the plain pin_pages / pin_folios):")
    ratio("-a --align 4K", "-a --align 2M", 8)
    ratio("-a --align 2M -n -1", "-a -F --align 2M -n -1", 100)
    print("entry buffers allocated before timing (the kernel selftest's method):")
    ratio("-a --align 4K --prealloc", "-a --align 2M --prealloc", 8)
    ratio("-a --align 2M -n -1 --prealloc", "-a -F --align 2M -n -1 --prealloc", 100)


if __name__ == "__main__":
    main()
