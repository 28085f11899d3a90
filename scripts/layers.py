#!/usr/bin/env python3
"""Checks the import structure of the devmap workspace. Exit 1 if it finds a fault.

Usage: python3 scripts/layers.py [WORKSPACE_ROOT | CRATE_SRC ...]   (default: the current directory,
       every crate; a crate's src folder, one holding lib.rs or main.rs, checks that crate)

Two checks:

1. Layers (the library, crates/devmap/src): every `crate::NAME` reference in a module points
   down DESIGN §2's layer order, or sideways within one floor. ORDER below is that list; it
   must name exactly the library's top-level modules.
2. Circles (every crate: crates/*/src): no two source files depend on each other, directly or
   through other files. A file depends on another when it names an item that the other file
   defines, through `crate::`, `super::` or `self::` paths, in `use` trees or inline. Names
   re-exported by a `pub use` are followed to the file that defines them, so importing
   `crate::dax::DaxDevice` depends on dax/device.rs, not on dax/mod.rs. The crate root
   (lib.rs, main.rs) is the composition root: its own references (declaring modules,
   re-exporting, registering them) are not dependencies, and a `mod.rs`'s `mod` and `pub use`
   lines are not either; their other code is.

Files whose name ends in `tests.rs`, and `tests/` folders, are skipped (unit tests may reach
anywhere). An item under `#[cfg(test)]`, `#[cfg(all(test, ...))]` or `#[cfg(doc)]` is skipped as well.
"""
import os
import re
import sys

# Lowest first, as in DESIGN.md section 2. Modules on one line share a floor.
ORDER = [
    ["primitive", "addr", "units", "wire"],
    ["backing"],
    ["desc"],
    ["memmap"],
    ["init"],
    ["pgmap"],
    ["folio"],
    ["gup"],
    ["dax"],
    ["memory_failure"],
    ["namespace"],
    ["errno"],
    ["service", "client"],
    ["stress", "test_support"],
]
FLOOR = {m: i for i, names in enumerate(ORDER) for m in names}

CRATES = ["crates/devmap", "crates/devmap-cli", "crates/devmap-ffi", "crates/devmap-py"]
LIBRARY = "crates/devmap"


def skipped(path):
    parts = path.split(os.sep)
    return path.endswith("tests.rs") or "tests" in parts[:-1]


def module_files(src):
    """{module path tuple: file} for every source file under src (tests excluded)."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)
            if skipped(rel):
                continue
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            mods[tuple(parts)] = path
    return mods


def strip(text):
    """The text without comments, string literals and `#[cfg(test)]` items."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
        out.append(line.split("//")[0])
    lines, kept, i = out, [], 0
    while i < len(lines):
        if re.match(r"\s*#\[cfg\((all\()?(test|doc)\b", lines[i]):
            # Skip the item that follows: to its `;` or the close of its braces.
            depth, j, opened = 0, i + 1, False
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                opened = opened or "{" in lines[j]
                if (opened and depth <= 0) or (not opened and lines[j].rstrip().endswith(";")):
                    break
                j += 1
            kept.extend([""] * (j + 1 - i))
            i = j + 1
            continue
        kept.append(lines[i])
        i += 1
    return kept


def expand_use(tree):
    """Paths of a use tree: `a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.replace(" ", "").replace("\n", "")
    depth, start, parts = 0, 0, []
    for k, ch in enumerate(tree):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(tree[start:k])
            start = k + 1
    parts.append(tree[start:])
    paths = []
    for p in parts:
        if not p:
            continue
        b = p.find("{")
        if b == -1:
            paths.append(re.sub(r"\bas\w+$", "", p))
        else:
            prefix = p[:b]
            for sub in expand_use(p[b + 1 : p.rfind("}")]):
                paths.append(prefix + sub)
    return paths


def absolute(path, module):
    """A `crate::`/`super::`/`self::` path as a tuple of segments from the crate root."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        return tuple(segs[1:])
    base = list(module)
    if segs[0] == "self":
        return tuple(base + segs[1:])
    if segs[0] == "super":
        while segs and segs[0] == "super":
            if not base:
                return None
            base.pop()
            segs = segs[1:]
        return tuple(base + segs)
    return None


class Crate:
    def __init__(self, src):
        self.src = src
        self.mods = module_files(src)
        self.lines = {m: strip(open(f, encoding="utf-8", errors="replace").read()) for m, f in self.mods.items()}
        self.reexports = {m: self._reexports(m) for m in self.mods}

    def _uses(self, module):
        """(line number, path, is_pub) of every use tree in a module."""
        text = "\n".join(self.lines[module])
        for m in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", text):
            n = text.count("\n", 0, m.start()) + 1
            for p in expand_use(m.group(2)):
                yield n, p, bool(m.group(1))

    def _reexports(self, module):
        out = {}
        for _, p, is_pub in self._uses(module):
            if not is_pub:
                continue
            target = absolute(p, module)
            if target is None and not p.startswith(("crate", "super", "self")):
                target = tuple(list(module) + [s for s in p.split("::") if s])
            if target:
                alias = re.search(r"\bas(\w+)$", p.replace(" ", ""))
                out[alias.group(1) if alias else target[-1]] = target
        return out

    def resolve(self, segs, seen=0):
        """The module file an absolute path's item is defined in, following re-exports."""
        if seen > 16:
            return None
        for k in range(len(segs), -1, -1):
            prefix = segs[:k]
            if prefix in self.mods:
                rest = segs[k:]
                if rest and rest[0] in self.reexports.get(prefix, {}):
                    target = self.reexports[prefix][rest[0]]
                    if target[: len(prefix) + 1] != prefix + (rest[0],) or True:
                        found = self.resolve(target + rest[1:], seen + 1)
                        if found is not None:
                            return found
                return prefix
        return None

    def edges(self):
        """{(from module, to module): [line, ...]} between distinct files."""
        edges = {}
        for module, lines in self.lines.items():
            if module == ():
                continue  # the crate root wires modules together; it is no dependency
            is_mod_rs = self.mods[module].endswith("mod.rs")
            text = "\n".join(lines)
            refs = []
            for m in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", text):
                if is_mod_rs and m.group(1):
                    continue  # a facade's re-export
                n = text.count("\n", 0, m.start()) + 1
                for p in expand_use(m.group(2)):
                    refs.append((n, p))
            text_wo_use = re.sub(r"\buse\s+[^;]+;", lambda m: "\n" * m.group(0).count("\n"), text)
            for n, line in enumerate(text_wo_use.splitlines(), 1):
                if re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*;", line):
                    continue
                for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", line):
                    refs.append((n, m.group(0)))
            for n, p in refs:
                segs = absolute(p, module)
                if segs is None:
                    continue
                to = self.resolve(segs)
                if to is None or to == module:
                    continue
                edges.setdefault((module, to), []).append(f"{os.path.relpath(self.mods[module])}:{n}")
        return edges


def name(module):
    return "::".join(module) or "crate"


def cycles(nodes, edges):
    """Strongly connected components with more than one file (Tarjan)."""
    graph = {n: [] for n in nodes}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check_layers(crate):
    bad = 0
    top = {m[0] for m in crate.mods if m}
    for m in sorted(top - set(FLOOR)):
        print(f"unplaced module: {m} (add it to ORDER in this script and to DESIGN §2)")
        bad += 1
    for m in sorted(set(FLOOR) - top):
        print(f"ORDER names {m}, which is no module of the library: remove it")
        bad += 1
    refs = {}
    for module, lines in crate.lines.items():
        if not module:
            continue
        for n, line in enumerate(lines, 1):
            for m in re.findall(r"\bcrate::(\w+)", line):
                if m != module[0]:
                    refs.setdefault((module[0], m), []).append(f"{os.path.relpath(crate.mods[module])}:{n}")
    for (a, b), where in sorted(refs.items()):
        fa, fb = FLOOR.get(a), FLOOR.get(b)
        if fa is not None and fb is not None and fb > fa:
            print(f"upward: {a} -> {b} at {', '.join(where[:3])}{' …' if len(where) > 3 else ''}")
            bad += 1
    return bad


def targets(args):
    """(crate name, src folder) pairs to check: every crate of the workspace at a root given
    (default: this folder), or each crate `src` folder given (one holding lib.rs or main.rs)."""
    if not args:
        args = ["."]
    out = []
    for arg in args:
        arg = arg.rstrip("/") or "/"
        if any(os.path.isfile(os.path.join(arg, f)) for f in ("lib.rs", "main.rs")):
            crate = os.path.relpath(os.path.dirname(os.path.abspath(arg)), os.getcwd())
            out.append((crate, arg))
        else:
            out.extend((c, os.path.join(arg, c, "src")) for c in CRATES)
    return out


def main():
    bad = 0
    for c, src in targets(sys.argv[1:]):
        if not os.path.isdir(src):
            print(f"layers: no such folder {src}: give the workspace root or a crate's src folder")
            return 2
        crate = Crate(src)
        if c == LIBRARY or os.path.abspath(src) == os.path.abspath(os.path.join(LIBRARY, "src")):
            bad += check_layers(crate)
        edges = crate.edges()
        for comp in cycles(list(crate.mods), edges):
            members = set(comp)
            print(f"circle in {c}: {' , '.join(name(m) for m in comp)}")
            for (a, b), where in sorted(edges.items()):
                if a in members and b in members:
                    print(f"    {name(a)} -> {name(b)} at {', '.join(where[:2])}{' …' if len(where) > 2 else ''}")
            bad += 1
    if bad == 0:
        print("layers: every library reference points down or sideways; no circle between files")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
