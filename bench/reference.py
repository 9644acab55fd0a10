#!/usr/bin/env python3
"""NumPy + Pillow reference for benchmarking deepcat.

Two subcommands, each ending its stdout with ONE JSON object (progress goes to stderr):

  load  DATA_DIR  -- a plain Pillow image loader doing what the Rust loader does.
  train DATA_DIR  -- the article's "cat or no cat" L-layer network, written out in float32 NumPy.

Set it up with scripts/setup-reference.sh, then run e.g.
  .venv/bin/python bench/reference.py train data --time-only 5
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

F32 = np.float32
FILTERS = {
    "nearest": Image.Resampling.NEAREST,  # what Keras load_img(target_size=...) uses
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- loading

def scan(root):
    """Class folders (sorted, non-hidden) and, per class, its files (recursive, sorted by path)."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            rel = path.relative_to(root / name)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                files.append((path, label))
    return classes, files


def load(root, size, filt):
    """Decode, convert to RGB, resize and scale every image into one (m, size*size*3) float32 matrix.

    Rows are images, each in HWC order (the flattening Keras' img_to_array + reshape gives).
    Deliberately a single process: this is the honest baseline of a plain Pillow loader,
    i.e. what a user writing this loop gets without adding multiprocessing.
    Returns (X, labels, classes, skipped, seconds).
    """
    start = time.perf_counter()
    classes, files = scan(root)
    features = size * size * 3
    X = np.empty((len(files), features), dtype=F32)  # preallocated, trimmed at the end
    labels = np.empty(len(files), dtype=np.int64)
    n = skipped = 0
    for path, label in files:
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB").resize((size, size), FILTERS[filt])
                pixels = np.asarray(rgb, dtype=np.uint8).reshape(-1)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            # UnidentifiedImageError and truncated-file errors are OSErrors.
            log(f"skipping {path}: {e}")
            skipped += 1
            continue
        # uint8 / float32 scalar, written straight into the row: the arithmetic stays float32.
        np.divide(pixels, F32(255), out=X[n], dtype=F32)
        labels[n] = label
        n += 1
    seconds = time.perf_counter() - start
    return X[:n], labels[:n], classes, skipped, seconds


# ---------------------------------------------------------------- the network (article's algorithm)
# Layout follows the article: X is (features, m), one example per COLUMN; activations are (units, m).
# Everything is float32; every scalar that touches an array is np.float32 so nothing upcasts.

def init_params(dims, seed):
    # np.random.seed(seed) then the article's randn/sqrt(fan_in): the weights deepcat draws for --seed.
    legacy = np.random.RandomState(seed)
    params = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        W = (legacy.randn(fan_out, fan_in) / np.sqrt(fan_in)).astype(F32)
        b = np.zeros((fan_out, 1), dtype=F32)
        params.append([W, b])
    return params


def forward(X, params):
    """ReLU on every layer but the last, sigmoid on the last. Caches (A_prev, Z) per layer."""
    A, caches = X, []
    for l, (W, b) in enumerate(params):
        Z = W @ A + b
        caches.append((A, Z))
        A = 1 / (1 + np.exp(-Z)) if l == len(params) - 1 else np.maximum(0, Z)
    return A, caches


def cost(AL, Y, inv_m):
    # The article's cross-entropy, unguarded maths: log(0) at saturation gives inf/nan,
    # errstate only silences the warnings.
    with np.errstate(divide="ignore", invalid="ignore"):
        c = -inv_m * np.sum(Y @ np.log(AL).T + (1 - Y) @ np.log(1 - AL).T)
    return float(c)


def backward(AL, Y, params, caches, inv_m):
    """Gradients as the article computes them, dA_prev = W^T dZ at EVERY layer.

    At the first layer that is dA0 = W1^T dZ1, the gradient with respect to the input images:
    useless for the update, but the article computes it, so the reference pays for it too.
    """
    grads = [None] * len(params)
    with np.errstate(divide="ignore", invalid="ignore"):
        dA = -(Y / AL - (1 - Y) / (1 - AL))  # dCost/dAL
    for l in reversed(range(len(params))):
        A_prev, Z = caches[l]
        W, _ = params[l]
        if l == len(params) - 1:  # sigmoid backward, s recomputed from Z like the article
            s = 1 / (1 + np.exp(-Z))
            dZ = dA * s * (1 - s)
        else:  # relu backward
            dZ = dA.copy()
            dZ[Z <= 0] = 0
        dW = inv_m * (dZ @ A_prev.T)
        db = inv_m * np.sum(dZ, axis=1, keepdims=True)
        dA = W.T @ dZ  # computed for l == 0 too (dA0), on purpose
        grads[l] = (dW, db)
    return grads


def step(X, Y, params, lr, inv_m):
    AL, caches = forward(X, params)
    c = cost(AL, Y, inv_m)
    grads = backward(AL, Y, params, caches, inv_m)
    for p, (dW, db) in zip(params, grads):
        p[0] = p[0] - lr * dW
        p[1] = p[1] - lr * db
    return c


def accuracy(X, Y, params):
    AL, _ = forward(X, params)
    return float(np.mean((AL > 0.5) == (Y == 1)))


def positive_class(classes):
    if len(classes) != 2:
        sys.exit(f"error: need exactly two class folders, found {len(classes)}: {classes}")
    for i, name in enumerate(classes):
        if name.lower() in ("cat", "cats"):
            return i
    return 1


def train(args):
    layers = [int(s) for s in args.layers.split(",") if s.strip()]
    X_all, labels, classes, skipped, load_seconds = load(args.data_dir, args.size, args.filter)
    pos = positive_class(classes)
    m, features = X_all.shape
    y = (labels == pos).astype(F32)
    log(f"loaded {m} images ({skipped} skipped) in {load_seconds:.2f}s; positive class {classes[pos]!r}")

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(m)
    n_test = math.ceil(args.test_split * m)
    test_idx, train_idx = order[:n_test], order[n_test:]
    # Article layout: build the (m, features) row matrix, then transpose. The result is a
    # (features, m) view in Fortran order, exactly like the article's reshape(m, -1).T.
    X_train, X_test = X_all[train_idx].T, X_all[test_idx].T
    Y_train, Y_test = y[train_idx].reshape(1, -1), y[test_idx].reshape(1, -1)
    del X_all
    assert X_train.dtype == F32 and X_train.flags.f_contiguous

    params = init_params([features] + layers + [1], args.seed)
    lr, inv_m = F32(args.lr), F32(1.0 / X_train.shape[1])

    costs = []
    if args.time_only is not None:
        step(X_train, Y_train, params, lr, inv_m)  # untimed warm-up
        iterations = args.time_only
        start = time.perf_counter()
        for _ in range(iterations):
            step(X_train, Y_train, params, lr, inv_m)
        train_seconds = time.perf_counter() - start
        train_acc = test_acc = None
    else:
        iterations = args.iterations
        start = time.perf_counter()
        for i in range(iterations):
            c = step(X_train, Y_train, params, lr, inv_m)  # cost computed every iteration, as in the article
            if i % 100 == 0:
                costs.append(c if math.isfinite(c) else None)  # nan/inf -> null (valid JSON)
                log(f"iteration {i}: cost {c}")
        train_seconds = time.perf_counter() - start
        train_acc = accuracy(X_train, Y_train, params)
        test_acc = accuracy(X_test, Y_test, params) if n_test else None

    return {
        "load_seconds": load_seconds,
        "train_size": int(X_train.shape[1]),
        "test_size": int(X_test.shape[1]),
        "features": int(features),
        "iterations": iterations,
        "seconds_per_iteration": train_seconds / iterations if iterations else None,
        "train_seconds": train_seconds,
        "costs": costs,
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("load", "train"):
        p = sub.add_parser(name)
        p.add_argument("data_dir")
        p.add_argument("--size", type=int, default=128)
        p.add_argument("--filter", choices=sorted(FILTERS), default="nearest")
    t = sub.choices["train"]
    t.add_argument("--layers", default="20,7,5", help="hidden layer sizes")
    t.add_argument("--lr", type=float, default=0.0075)
    t.add_argument("--iterations", type=int, default=2500)
    t.add_argument("--test-split", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--time-only", type=int, metavar="K", help="time K iterations (after 1 warm-up) and stop")
    args = ap.parse_args()

    if args.cmd == "load":
        X, _, _, skipped, seconds = load(args.data_dir, args.size, args.filter)
        out = {"images": int(X.shape[0]), "skipped": skipped, "features": int(X.shape[1]), "seconds": seconds}
    else:
        out = train(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
