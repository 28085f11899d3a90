#!/usr/bin/env bash
# Runs a two-process client example against a real `devmap serve`:
#   bash scripts/client-demo.sh PROGRAM [ARGS...]
# PROGRAM ARGS is a client example (examples/c/devmap_client_demo.c built, or
# `python3 examples/python/client_demo.py`) taking `write SOCKET NAME MESSAGE` and
# `read SOCKET NAME MESSAGE`. This script makes a region file on tmpfs (/dev/shm) holding
# namespace `demo`, starts `devmap serve` over it on a socket in a temporary folder, runs the
# writer (which writes MESSAGE into the namespace and keeps its mapping until its stdin closes)
# and, while the writer still maps it, the reader, another process (which maps the same
# namespace, checks it reads MESSAGE, pins it and prints the extents). Then it closes the
# writer's stdin, stops the service with SIGTERM and checks every exit status is 0 and the
# service disabled `demo` cleanly. Any failure fails the script; the service is killed and the
# files removed on the way out.
#
# The service is the `devmap` binary in $DEVMAP_BIN, else target/debug/devmap, built first
# with `cargo build -p devmap-cli` when DEVMAP_BIN is unset.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
    echo "usage: $0 PROGRAM [ARGS...]: a client example taking write|read SOCKET NAME MESSAGE" >&2
    exit 2
fi
if [ -z "${DEVMAP_BIN:-}" ]; then
    cargo build -p devmap-cli --locked --quiet
    target=$(cargo metadata --format-version 1 --no-deps --locked \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    DEVMAP_BIN="$target/debug/devmap"
fi
if [ ! -x "$DEVMAP_BIN" ]; then
    echo "$DEVMAP_BIN is not an executable devmap binary: build it with cargo build -p devmap-cli" >&2
    exit 1
fi

dir=$(mktemp -d /tmp/devmap-demo.XXXXXX)
region=/dev/shm/devmap-demo-$$.img
socket="$dir/devmap.sock"
message="hello from process $$'s writer, through devmap serve"
serve_pid=
cleanup() {
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        kill -KILL "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$dir" "$region"
}
trap cleanup EXIT

"$DEVMAP_BIN" create-region --path "$region" --size 128M >/dev/null
"$DEVMAP_BIN" create-namespace -r "$region" -s 64M -a 2M -n demo >/dev/null
"$DEVMAP_BIN" serve --socket "$socket" -r "$region" --enable demo >"$dir/serve.out" &
serve_pid=$!
for _ in $(seq 1 300); do
    grep -q '^devmap serve: ready on' "$dir/serve.out" && break
    kill -0 "$serve_pid" 2>/dev/null || { echo "devmap serve exited before it was ready" >&2; exit 1; }
    sleep 0.1
done
if ! grep -q '^devmap serve: ready on' "$dir/serve.out"; then
    echo "devmap serve printed no ready line within 30 s" >&2
    exit 1
fi
head -n 1 "$dir/serve.out"

# The writer keeps its mapping until its stdin closes: a coprocess, whose first line says it
# wrote. The reader then runs while both processes map the namespace.
coproc writer { exec "$@" write "$socket" demo "$message"; }
writer_pid=$writer_PID
# Its output is read through a copy of the descriptor: bash forgets the coprocess's own once
# it exits.
exec {writer_out}<&"${writer[0]}"
if ! IFS= read -r line <&"$writer_out"; then
    echo "the writer ended without saying it wrote" >&2
    exit 1
fi
echo "$line"
"$@" read "$socket" demo "$message"
eval "exec ${writer[1]}>&-"
cat <&"$writer_out"
wait "$writer_pid"

kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
serve_pid=
tail -n 1 "$dir/serve.out"
if [ "$rc" != 0 ]; then
    echo "devmap serve exited $rc after SIGTERM, not 0" >&2
    exit 1
fi
if ! tail -n 1 "$dir/serve.out" | grep -q 'disabled cleanly: demo'; then
    echo "devmap serve did not say it disabled demo cleanly" >&2
    exit 1
fi
echo "client demo ok: $*"
