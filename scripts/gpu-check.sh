#!/usr/bin/env bash
# The GPU checks of deepcat's CUDA backend, as one short script for a machine with an NVIDIA GPU,
# CUDA 13 and PyTorch but no Rust toolchain. Build the binaries first, on a machine with Rust:
#
#   bash scripts/gpu-check.sh --build     # target/gpu-check/{deepcat,cuda-tests}
#
# then, on the GPU machine, from the repository root (target/gpu-check carried along):
#
#   bash scripts/gpu-check.sh [DATA_DIR]  # default: data (cats vs random images, 1685 JPEGs)
#
# It runs the GPU tests (tests/cuda: layers, optimisers, a short run, predictions against the
# CPU), then times, each on the GPU and on the CPU: the document's dense network (full batch,
# 128x128) against PyTorch's rendering (bench/dense_reference.py), the cnn preset for one epoch
# against bench/cnn_reference.py, and inference (deepcat evaluate). It prints a table; each step
# has its own time limit, and a failing step is reported and skipped, not fatal.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="target/gpu-check"

if [ "${1:-}" = "--build" ]; then
    set -e
    cargo build --release --features cuda
    tests="$(cargo test --release --features cuda --test cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])' | tail -n 1)"
    mkdir -p "$out"
    # Without their line tables (about 20 MB instead of 180: what a device machine is sent).
    strip -o "$out/deepcat" target/release/deepcat
    strip -o "$out/cuda-tests" "$tests"
    ls -l "$out"
    exit 0
fi

data="${1:-data}"
deepcat="$out/deepcat"
[ -x "$deepcat" ] || { echo "gpu-check: no $deepcat; run scripts/gpu-check.sh --build first" >&2; exit 2; }

# CUDA's libraries: the toolkit's, else the ones PyTorch's wheels bring (nvidia/*/lib).
libs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && libs="$libs:$d"
done
py_nvidia="$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)"
if [ -n "$py_nvidia" ]; then
    for d in "$py_nvidia"/nvidia/*/lib; do libs="$libs:$d"; done
fi
export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DEEPCAT_REQUIRE_NVRTC=1

nvidia-smi -L 2>/dev/null || echo "gpu-check: nvidia-smi not found"
rows=()
row() { rows+=("$(printf '%-50s %10s %s' "$1" "${2:-failed}" "${3:-}")"); }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
# `deepcat train --json`'s training seconds.
train_seconds() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read().splitlines()[-1]); print("%.2f" % d["train_seconds"])'; }
field() { python3 -c "import json,sys; print(f'{json.loads(sys.stdin.read().splitlines()[-1])[sys.argv[1]]:.4f}')" "$1"; }

echo "== GPU tests (tests/cuda)"
t=$(now)
if timeout 240 "$out/cuda-tests" --test-threads=1 --nocapture; then
    row "GPU tests (tests/cuda)" "pass" "$(since "$t") s"
else
    row "GPU tests (tests/cuda)" "FAIL" "$(since "$t") s"
fi

tmp="$(mktemp -d)"
dense=(train "$data" --size 128 --iterations 20 --exact-path direct --no-cache --json --quiet)
for device in cuda cpu; do
    echo "== deepcat dense, 20 full-batch iterations, $device"
    s=$(timeout 180 "$deepcat" "${dense[@]}" --device "$device" --model "$tmp/dense-$device.safetensors" | train_seconds)
    row "deepcat dense 128px, s per full-batch iteration" "$([ -n "$s" ] && python3 -c "print(f'{$s/20:.4f}')")" "$device"
done
for device in cuda cpu; do
    echo "== PyTorch dense (bench/dense_reference.py), $device"
    r=$(timeout 180 python3 bench/dense_reference.py speed "$data" --iterations 20 --device "$device" --threads "$(nproc)")
    row "PyTorch dense 128px, s per full-batch iteration" "$(echo "$r" | field direct_iteration_seconds)" "$device"
    row "PyTorch dense 128px, s per Adam epoch (64s)" "$(echo "$r" | field adam_epoch_seconds)" "$device"
done

cnn=(train "$data" --arch cnn --size 64 --epochs 1 --no-cache --json --quiet)
for device in cuda cpu; do
    echo "== deepcat cnn preset, one epoch, $device"
    s=$(timeout 240 "$deepcat" "${cnn[@]}" --device "$device" --model "$tmp/cnn-$device.safetensors" | train_seconds)
    row "deepcat cnn 64px, s per epoch" "$s" "$device"
done
echo "== PyTorch cnn preset (bench/cnn_reference.py), one epoch, cuda"
r=$(timeout 180 python3 bench/cnn_reference.py speed "$data" --size 64 --epochs 1 --device cuda --images 1348)
row "PyTorch cnn 64px, s per epoch (1348 images)" "$(echo "$r" | field seconds)" "cuda"

# Inference: the CPU-trained model, so this runs even if GPU training failed; both devices
# should give the same accuracy (the same classes, to rounding).
for device in cuda cpu; do
    echo "== deepcat evaluate (the cnn model), $device"
    t=$(now)
    acc=$(timeout 120 "$deepcat" evaluate "$tmp/cnn-cpu.safetensors" "$data" --no-cache --json --device "$device" | field accuracy)
    [ -n "$acc" ] && row "deepcat evaluate cnn, s (accuracy $acc)" "$(since "$t")" "$device" ||
        row "deepcat evaluate cnn, s" "" "$device"
done

echo
echo "== gpu-check: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
printf '%s\n' "${rows[@]}"
rm -rf "$tmp"
