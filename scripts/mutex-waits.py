#!/usr/bin/env python3
"""How long threads waited on hugetlb fault mutexes in a `perf` trace of scheduler switches,
and how often the zero-ahead pool's thread was switched out while clearing a page.

A wait is a switch out in state D with `__mutex_lock` and a hugetlb function on the kernel
stack, until the same thread is switched in again. The pool (thread `devmap-dax-zero`) is
counted as holding a fault mutex when it is switched out while runnable with
`folio_zero_user` on its stack (the clear under `hugetlbfs_fallocate`).

Usage:
  perf record -q -e sched:sched_switch -g -o p.data -- \\
      target/release/devmap touch-test --size 256M --backing hugetlb --threads 2 \\
      --init sync --zero-ahead 8
  perf script -i p.data > p.txt
  scripts/mutex-waits.py p.txt
"""

import re
import sys

SWITCH = re.compile(
    r"(\d+\.\d+): sched:sched_switch: prev_comm=(\S+) prev_pid=\d+ prev_prio=\d+ "
    r"prev_state=(\S+) ==> next_comm=(\S+) next_pid=\d+"
)


def switches(text):
    """(time s, prev thread, prev state, next thread, kernel stack symbols) per switch."""
    for block in text.split("\n\n"):
        lines = block.strip().split("\n")
        m = SWITCH.search(lines[0]) if lines else None
        if m:
            stack = [l.split()[1] for l in lines[1:] if len(l.split()) > 1]
            yield float(m.group(1)), m.group(2), m.group(3), m.group(4), stack


def main():
    ev = list(switches(open(sys.argv[1]).read()))
    waits = []
    for i, (t, prev, state, _, stack) in enumerate(ev):
        mutex = any("__mutex_lock" in s for s in stack)
        if state == "D" and mutex and any("hugetlb" in s for s in stack):
            back = next((t2 for t2, _, _, nxt, _ in ev[i + 1 :] if nxt == prev), None)
            if back is not None:
                waits.append(((back - t) * 1e6, prev))
    held = sum(
        1
        for _, prev, state, _, stack in ev
        if prev.startswith("devmap-dax-zero")
        and state.startswith("R")
        and any("folio_zero_user" in s for s in stack)
    )
    longest = max((w for w, _ in waits), default=0)
    print(
        f"hugetlb fault-mutex waits: {len(waits)}, {sum(w for w, _ in waits):.0f} us in all, "
        f"the longest {longest:.0f} us; pool switched out inside a clear: {held} times"
    )


if __name__ == "__main__":
    main()
