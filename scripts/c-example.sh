#!/usr/bin/env bash
# Builds libdevmap.a, compiles examples/c/devmap_demo.c against include/devmap.h with
# AddressSanitizer (leak checking on), and runs it: any failed check, ASan report or leak
# fails the script. The header is also compiled as C++ to keep it usable from there.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -p devmap-ffi --locked
target=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="$target/c-example"
mkdir -p "$out"

cc -std=c11 -Wall -Wextra -Werror -fsanitize=address -fno-omit-frame-pointer -g -Iinclude \
    examples/c/devmap_demo.c "$target/debug/libdevmap.a" -lpthread -ldl -lm \
    -o "$out/devmap_demo"
echo '#include "devmap.h"' | c++ -std=c++17 -Wall -Werror -fsyntax-only -Iinclude -x c++ -

ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "$out/devmap_demo"
