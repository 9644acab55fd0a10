#!/usr/bin/env bash
# The README's residual results table, deepcat's side: `deepcat train --arch resnet` on each
# set, seeds 1-3, one JSON line per run (set, seed, test accuracy, train accuracy, seconds).
#
#   bench/resnet_accuracy.sh [OUT.jsonl] [SET ...]
#
# SET is one of cats-vs-dogs, cats-vs-random, natural_images, catvnoncat (default: all four),
# read from ../shared/data. Uses $DEEPCAT or target/release/deepcat (cargo build --release first).
# PyTorch's side: bench/cnn_reference.py train --arch resnet --split-json (see the README).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-resnet_accuracy.jsonl}"
shift || true
sets=("$@")
[ ${#sets[@]} -eq 0 ] && sets=(catvnoncat cats-vs-random natural_images cats-vs-dogs)
data="$root/../shared/data"
deepcat="${DEEPCAT:-$root/target/release/deepcat}"
[ -x "$deepcat" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for set in "${sets[@]}"; do
    case "$set" in
        cats-vs-dogs) args=("$data/cats-vs-dogs" --size 64) ;;
        cats-vs-random) args=("$data/cats-vs-random" --size 64) ;;
        natural_images) args=("$data/natural_images" --size 32) ;;
        catvnoncat) args=("$data/catvnoncat/train" --test-dir "$data/catvnoncat/test" --size 64) ;;
        *) echo "unknown set $set" >&2; exit 2 ;;
    esac
    for seed in 1 2 3; do
        "$deepcat" train "${args[@]}" --arch resnet --seed "$seed" --json --quiet \
            --model "$work/m.safetensors" > "$work/run.json"
        python3 - "$set" "$seed" "$work/run.json" >> "$out" <<'PY'
import json, sys
r = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
print(json.dumps({"set": sys.argv[1], "seed": int(sys.argv[2]), "test_accuracy": r["test_accuracy"],
                  "train_accuracy": r["train_accuracy"], "train_seconds": r["train_seconds"],
                  "tta": r["tta"]}))
PY
        tail -1 "$out"
    done
done
