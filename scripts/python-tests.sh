#!/usr/bin/env bash
# Builds the Python module (crates/devmap-py) the way a user installs it, into a venv under
# target/, and runs its pytest suite, then the two-process client example
# (examples/python/client_demo.py) against a `devmap serve` that scripts/client-demo.sh
# starts. Needs only the Rust toolchain and python3 (>= 3.11); maturin and pytest come from
# PyPI. Fails if the build fails, if pytest fails, if it collects no test, or if the example
# fails.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyenv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# --force-reinstall: the version does not change between commits, the module does.
"$venv/bin/python" -m pip install --quiet --force-reinstall ./crates/devmap-py
# mypy for stubtest: the type stubs are checked against the module.
"$venv/bin/python" -m pip install --quiet pytest mypy
# A few 2 MiB huge pages for the hugetlb test, where this may reserve them (root, as CI is),
# given back at exit; elsewhere the test checks the refusal instead.
hp=/proc/sys/vm/nr_hugepages
if [ -w "$hp" ]; then
    before=$(cat "$hp")
    trap 'echo "$before" > "$hp"' EXIT
    echo $((before + 4)) > "$hp"
fi
# The client tests (tests/test_client.py) and the two-process example run a real
# `devmap serve`: this build's binary, named by DEVMAP_BIN.
cargo build -p devmap-cli --locked
target=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export DEVMAP_BIN="$target/debug/devmap"
# pytest exits 5 when it collects nothing: that fails this script too.
"$venv/bin/python" -m pytest -q -p no:cacheprovider crates/devmap-py/tests "$@"
echo "== two-process example: examples/python/client_demo.py against devmap serve"
bash scripts/client-demo.sh "$venv/bin/python" examples/python/client_demo.py
