#!/usr/bin/env bash
# Builds libdevmap, compiles examples/c/devmap_demo.c against include/devmap.h with
# AddressSanitizer (leak checking on), and runs it: any failed check, ASan report or leak
# fails the script. The header is also compiled as C++ to keep it usable from there. Then the
# two-process client example, examples/c/devmap_client_demo.c (static, under ASan too), runs
# against a `devmap serve` that scripts/client-demo.sh starts on a temporary socket over a
# region on /dev/shm and stops with SIGTERM.
#
# Twice: linked with target/debug/libdevmap.a, and the way a C user does after installing,
# with scripts/install-c.sh into a temporary prefix, flags from
# `pkg-config --cflags --libs devmap` and the shared library loaded by its soname
# (libdevmap.so.2: the header's DEVMAP_ABI_VERSION). pkg-config is installed with apt-get
# where it is missing and this runs as root (as CI does); elsewhere without it, the flags are
# read from devmap.pc directly.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -p devmap-ffi --locked
target=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="$target/c-example"
mkdir -p "$out"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
# The soname the shared library must be loaded by: the header's ABI version.
abi=$(sed -n 's/^#define DEVMAP_ABI_VERSION \([0-9][0-9]*\)$/\1/p' include/devmap.h)
if [ -z "$abi" ]; then
    echo "include/devmap.h defines no DEVMAP_ABI_VERSION" >&2
    exit 1
fi
soname="libdevmap.so.$abi"
cflags=(-std=c11 -Wall -Wextra -Werror -fsanitize=address -fno-omit-frame-pointer -g)

echo "== static: libdevmap.a"
cc "${cflags[@]}" -Iinclude examples/c/devmap_demo.c "$target/debug/libdevmap.a" \
    -lpthread -ldl -lm -o "$out/devmap_demo"
echo '#include "devmap.h"' | c++ -std=c++17 -Wall -Werror -fsyntax-only -Iinclude -x c++ -
"$out/devmap_demo"

echo "== two processes through devmap serve: examples/c/devmap_client_demo.c (static, ASan)"
cc "${cflags[@]}" -Iinclude examples/c/devmap_client_demo.c "$target/debug/libdevmap.a" \
    -lpthread -ldl -lm -o "$out/devmap_client_demo"
bash scripts/client-demo.sh "$out/devmap_client_demo"

echo "== shared: installed into a prefix, built with pkg-config, loaded as $soname"
prefix="$out/prefix"
rm -rf "$prefix"
bash scripts/install-c.sh --debug "$prefix"
if ! command -v pkg-config >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config >/dev/null
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
if command -v pkg-config >/dev/null; then
    pkg-config --exists --print-errors devmap
    read -r -a pc_cflags <<<"$(pkg-config --cflags devmap)"
    read -r -a pc_libs <<<"$(pkg-config --libs devmap)"
else
    echo "pkg-config is not installed: reading devmap.pc directly"
    pc() {
        python3 - "$prefix/lib/pkgconfig/devmap.pc" "$1" <<'PY'
import re, sys
variables, fields = {}, {}
expand = lambda v: re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], v)
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if m := re.match(r"(\w+)=(.*)", line):
        variables[m.group(1)] = expand(m.group(2).strip())
    elif m := re.match(r"([\w.]+):\s*(.*)", line):
        fields[m.group(1)] = expand(m.group(2).strip())
print(fields[sys.argv[2]])
PY
    }
    read -r -a pc_cflags <<<"$(pc Cflags)"
    read -r -a pc_libs <<<"$(pc Libs)"
fi
echo "cflags: ${pc_cflags[*]}   libs: ${pc_libs[*]}"
cc "${cflags[@]}" "${pc_cflags[@]}" examples/c/devmap_demo.c "${pc_libs[@]}" \
    -o "$out/devmap_demo_shared"
# Linked against the shared library, by its soname, not the archive beside it.
needed=$(readelf -d "$out/devmap_demo_shared" | grep NEEDED | grep -cF "[$soname]" || true)
if [ "$needed" != 1 ]; then
    echo "devmap_demo_shared does not load $soname:" >&2
    readelf -d "$out/devmap_demo_shared" | grep NEEDED >&2
    exit 1
fi
LD_LIBRARY_PATH="$prefix/lib" "$out/devmap_demo_shared"
