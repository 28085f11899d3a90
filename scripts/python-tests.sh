#!/usr/bin/env bash
# Builds the Python module (crates/devmap-py) the way a user installs it, into a venv under
# target/, and runs its pytest suite. Needs only the Rust toolchain and python3 (>= 3.11);
# maturin and pytest come from PyPI. Fails if the build fails, if pytest fails, or if it
# collects no test.
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
# pytest exits 5 when it collects nothing: that fails this script too.
"$venv/bin/python" -m pytest -q -p no:cacheprovider crates/devmap-py/tests "$@"
