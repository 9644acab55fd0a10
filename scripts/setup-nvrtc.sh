#!/usr/bin/env bash
# Installs NVIDIA's run-time CUDA compiler (NVRTC, PyPI's nvidia-cuda-nvrtc wheel: about 120 MB,
# no GPU or driver needed) into a virtual environment at target/nvrtc-venv, and prints the folder
# that holds libnvrtc.so*. CI points LD_LIBRARY_PATH at it so that tests/cuda/ can compile
# every CUDA kernel of src/cuda/kernels/ for sm_90 on a machine without a GPU:
#
#   lib="$(bash scripts/setup-nvrtc.sh)"
#   LD_LIBRARY_PATH="$lib" DEEPCAT_REQUIRE_NVRTC=1 cargo test --release --features cuda --test cuda
#
# Safe to run again (an installed wheel is left alone); works from any directory. Installs
# Debian's python3-venv and python3-pip with apt-get when python3 cannot make a venv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/nvrtc-venv"

if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt-get update -qq >&2 && apt-get install -y -qq python3-venv python3-pip >&2
    fi
    python3 -m venv "$venv" >&2
fi
# CUDA 13's NVRTC: the version deepcat's cudarc bindings are built for (cuda-13000).
if ! "$venv/bin/python" -m pip show nvidia-cuda-nvrtc >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        'nvidia-cuda-nvrtc>=13,<14' >&2
fi
lib="$(find "$venv" -name 'libnvrtc.so*' -not -name '*builtins*' -print -quit)"
if [ -z "$lib" ]; then
    echo "setup-nvrtc.sh: the nvidia-cuda-nvrtc wheel holds no libnvrtc.so under $venv" >&2
    exit 1
fi
dir="$(dirname "$lib")"
# cudarc looks for libnvrtc.so or libnvrtc.so.13; the wheel may ship only the versioned name.
if [ ! -e "$dir/libnvrtc.so" ]; then
    ln -s "$(basename "$lib")" "$dir/libnvrtc.so"
fi
echo "$dir"
