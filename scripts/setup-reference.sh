#!/usr/bin/env bash
# Sets up the Python environment for the reference benchmarks: a virtual environment at .venv in
# the repository root with bench/requirements.txt (NumPy, Pillow: bench/reference.py,
# bench/mlp_reference.py, bench/check_cnn.py) installed.
#
#   scripts/setup-reference.sh            # NumPy and Pillow
#   scripts/setup-reference.sh --torch    # also PyTorch (bench/requirements-torch.txt), for
#                                         # bench/cnn_reference.py and bench/dense_reference.py
#   scripts/setup-reference.sh --serve    # also FastAPI and uvicorn (bench/requirements-serve.txt),
#                                         # with PyTorch, which serves the CNN, for
#                                         # bench/serve_reference.py (examples/serve_bench.rs)
#
# --torch installs PyPI's torch wheel, which on Linux pulls in the CUDA libraries: several GB
# of downloads and disk, although the benchmarks only use the CPU.
#
# Safe to run again (pinned requirements already satisfied are left alone); works from any
# directory. Prints the environment's python.
set -euo pipefail

with_torch=0
with_serve=0
for arg in "$@"; do
    case "$arg" in
        --torch) with_torch=1 ;;
        --serve)
            with_serve=1
            with_torch=1
            ;;
        -h | --help)
            sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup-reference.sh: unknown option $arg (the options are --torch and --serve)" >&2
            exit 2
            ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
requirements=(-r bench/requirements.txt)
if [ "$with_torch" = 1 ]; then
    # One resolution for both files, so torch's dependencies cannot move the NumPy/Pillow pins.
    requirements+=(-r bench/requirements-torch.txt)
fi
if [ "$with_serve" = 1 ]; then
    requirements+=(-r bench/requirements-serve.txt)
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${requirements[@]}"

echo "$root/.venv/bin/python"
