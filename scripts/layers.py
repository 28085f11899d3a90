#!/usr/bin/env python3
"""Prints every place where a module of the devmap library names a module above it in the
layer order of DESIGN.md section 2, and every circle between modules. Exit 1 if it found any.

Usage: python3 scripts/layers.py [path/to/crates/devmap/src]

A reference is any `crate::NAME` in a file (imports and paths alike). Files whose name ends in
`tests.rs` are skipped (unit tests may reach anywhere); stress suites and cross-layer models must
live in a module placed above what they use (list it in ORDER). Edit ORDER when DESIGN §2 changes.
"""
import os
import re
import sys

# Lowest first, as in DESIGN.md section 2. Modules on one line share a floor.
ORDER = [
    ["primitive", "addr"],
    ["backing"],
    ["desc"],
    ["memmap"],
    ["init"],
    ["pgmap"],
    ["folio"],
    ["gup"],
    ["dax", "fsdax"],
    ["memory_failure"],
    ["namespace"],
    ["errno"],
    ["stress", "test_support"],
]
FLOOR = {m: i for i, names in enumerate(ORDER) for m in names}


def module_of(root, path):
    rel = os.path.relpath(path, root)
    head = rel.split(os.sep)[0]
    return head[:-3] if head.endswith(".rs") else head


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "crates/devmap/src"
    if not os.path.isdir(root):
        print(f"layers: no such folder {root}")
        return 2
    refs = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs") or f.endswith("tests.rs") or f == "lib.rs":
                continue
            path = os.path.join(dirpath, f)
            mod = module_of(root, path)
            text = open(path, encoding="utf-8", errors="replace").read()
            for n, line in enumerate(text.splitlines(), 1):
                if line.lstrip().startswith("//"):
                    continue
                for m in re.findall(r"\bcrate::(\w+)", line):
                    if m != mod:
                        refs.setdefault((mod, m), []).append(f"{os.path.relpath(path, root)}:{n}")
    bad = 0
    for (a, b), where in sorted(refs.items()):
        fa, fb = FLOOR.get(a), FLOOR.get(b)
        if fa is None or fb is None:
            print(f"unplaced module: {a if fa is None else b} (add it to ORDER in this script and to DESIGN §2)")
            bad += 1
        elif fb > fa:
            print(f"upward: {a} -> {b} at {', '.join(where[:3])}{' …' if len(where) > 3 else ''}")
            bad += 1
    for (a, b) in sorted(refs):
        if a < b and (b, a) in refs:
            print(f"circle: {a} <-> {b}")
            bad += 1
    if bad == 0:
        print("layers: every reference points down or sideways; no circle")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
