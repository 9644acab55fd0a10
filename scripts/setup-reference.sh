#!/usr/bin/env bash
# Sets up the Python environment for the NumPy/Pillow reference (bench/reference.py):
# a virtual environment at .venv in the repository root with bench/requirements.txt installed.
# Safe to run again; works from any directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt

echo "$root/.venv/bin/python"
