"""Two processes sharing a namespace through `devmap serve`, from Python.

    python3 client_demo.py write SOCKET NAME MESSAGE   # one process
    python3 client_demo.py read SOCKET NAME MESSAGE    # another, while the writer runs

The writer connects to the service on SOCKET, opens namespace NAME, maps its first leaf and
writes MESSAGE (NUL-terminated) at byte 4096 through a memoryview; it prints one line and
keeps its mapping until its stdin closes. The reader, another process, maps the same bytes,
checks it reads MESSAGE there, pins the leaf in the service and prints the extents a DMA
registration would take, then says how many clients map the namespace. Any mismatch exits 1.

scripts/client-demo.sh runs both against a `devmap serve` it starts (scripts/python-tests.sh
does, with the module built into target/pyenv); examples/c/devmap_client_demo.c is the same
in C, and either reads what the other wrote.
"""

import os
import sys

import devmap

AT = 4096


def write(socket: str, name: str, message: str) -> None:
    with devmap.connect(socket) as client:
        ns = client.open(name)
        m = ns.map(0, ns.align)
    view = memoryview(m)
    data = message.encode() + b"\0"
    view[AT : AT + len(data)] = data  # the first touch of the leaf is resolved by the service
    view.release()
    print(f"writer {os.getpid()}: wrote {len(data)} bytes at offset {AT} of {name} "
          f"(mapped at {m.addr:#x})", flush=True)
    sys.stdin.read()  # hold the mapping until told to go
    m.close()
    ns.close()
    print(f"writer {os.getpid()}: unmapped", flush=True)


def read(socket: str, name: str, message: str) -> None:
    client = devmap.connect(socket)
    with client.open(name) as ns, ns.map(0, ns.align) as m:
        got = m.read(AT, len(message) + 1)
        text = got.rstrip(b"\0").decode(errors="replace")
        print(f"reader {os.getpid()}: read {text!r} at offset {AT} (mapped at {m.addr:#x})")
        if got != message.encode() + b"\0":
            print(f"reader: wanted {message!r}", file=sys.stderr)
            sys.exit(1)
        with m.pin(m.addr, ns.align // devmap.PAGE_SIZE, folios=True) as pins:
            print(f"reader {os.getpid()}: pinned {pins.nr_pages} pages in "
                  f"{len(pins.extents())} extent(s)")
            for e in pins.extents():
                print(f"  extent addr={e.addr:#x} offset={e.offset} pfn={e.pfn:#x} "
                      f"length={e.length}")
        entry = next(e for e in client.list() if e["name"] == name)
        print(f"reader {os.getpid()}: {entry['clients']} client(s) map {name}")
        if entry["clients"] < 2:
            print("reader: the writer's mapping is missing from the service's list",
                  file=sys.stderr)
            sys.exit(1)
    client.close()


def main() -> None:
    if len(sys.argv) != 5 or sys.argv[1] not in ("write", "read"):
        sys.exit(f"usage: {sys.argv[0]} write|read SOCKET NAME MESSAGE")
    role, socket, name, message = sys.argv[1:]
    (write if role == "write" else read)(socket, name, message)


if __name__ == "__main__":
    main()
