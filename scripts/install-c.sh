#!/usr/bin/env bash
# Builds libdevmap and installs what a C program needs under PREFIX:
#   PREFIX/lib/libdevmap.so.2               the shared library, under its soname (.so.ABI)
#   PREFIX/lib/libdevmap.so -> .so.2        what -ldevmap finds at link time
#   PREFIX/lib/libdevmap.a                  the static library
#   PREFIX/include/devmap.h                 the header
#   PREFIX/lib/pkgconfig/devmap.pc          for pkg-config --cflags --libs devmap
# It also links target/<profile>/libdevmap.so.2 to the built libdevmap.so, so a program
# linked with -L target/<profile> -ldevmap loads from there too (LD_LIBRARY_PATH).
#
# Usage: scripts/install-c.sh [--debug] PREFIX     (a release build unless --debug)
# DESTDIR, if set, is prepended to every installed path (for packaging); the .pc file still
# names PREFIX. Run as root into /usr/local or /usr, it runs ldconfig.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [ "${1:-}" = "--debug" ]; then
    profile=debug
    shift
fi
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 [--debug] PREFIX   (e.g. $0 /usr/local, or \$HOME/.local)" >&2
    exit 2
fi
# The .pc file needs an absolute prefix.
prefix=$(realpath -m -- "$1")
dest="${DESTDIR:-}$prefix"

if [ "$profile" = release ]; then
    cargo build -p devmap-ffi --locked --release
else
    cargo build -p devmap-ffi --locked
fi
meta=$(cargo metadata --format-version 1 --no-deps --locked)
target=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta")
version=$(python3 -c '
import json, sys
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "devmap-ffi"))
' <<<"$meta")
built="$target/$profile"

# The soname the library carries (build.rs sets it from the ABI version): the file is
# installed under it, as the dynamic loader looks it up.
soname=$(python3 - "$built/libdevmap.so" <<'PY'
import re, subprocess, sys
out = subprocess.run(["readelf", "-d", sys.argv[1]], check=True, capture_output=True, text=True)
m = re.search(r"\(SONAME\)\s+Library soname: \[(.+?)\]", out.stdout)
if not m:
    sys.exit(f"{sys.argv[1]} has no soname")
print(m.group(1))
PY
)
abi=${soname#libdevmap.so.}

ln -sfn libdevmap.so "$built/$soname"

install -d "$dest/lib/pkgconfig" "$dest/include"
install -m 0755 "$built/libdevmap.so" "$dest/lib/$soname"
ln -sfn "$soname" "$dest/lib/libdevmap.so"
install -m 0644 "$built/libdevmap.a" "$dest/lib/libdevmap.a"
install -m 0644 include/devmap.h "$dest/include/devmap.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@ABI@|$abi|" \
    crates/devmap-ffi/devmap.pc.in >"$dest/lib/pkgconfig/devmap.pc"
chmod 0644 "$dest/lib/pkgconfig/devmap.pc"

echo "installed libdevmap $version ($soname, $profile build) under $dest:"
echo "  lib/$soname  lib/libdevmap.so -> $soname  lib/libdevmap.a"
echo "  include/devmap.h  lib/pkgconfig/devmap.pc"
if [ -z "${DESTDIR:-}" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null \
    && { [ "$prefix" = /usr/local ] || [ "$prefix" = /usr ]; }; then
    ldconfig
else
    echo "build with: cc prog.c \$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs devmap)"
    echo "run with $prefix/lib on the loader's path (LD_LIBRARY_PATH, or ldconfig as root)"
fi
