"""A NumPy rendering of deepcat's multi-class MLP job, to compare accuracies on the same split.

It trains what `deepcat train TRAIN --test-dir TEST --size 32 --layers 256,128 --optimizer adam
--lr 0.001 --batch-size 64 --epochs 30 --augment flip --seed S` trains: images resized to 32x32
with Pillow's nearest filter and scaled by 1/255; dense 256-ReLU-128-ReLU-softmax; weights
randn/sqrt(fan_in) after np.random.seed(S) (the weights deepcat draws), zero biases; Adam with
bias correction on shuffled mini-batches of 64 (last partial batch kept); each epoch every
training image is mirrored left-right with probability 1/2. float32 throughout.

Only the initial weights are shared with deepcat: batch order and flips come from NumPy's own
generator, so single runs differ; compare means over seeds.

    python bench/mlp_reference.py split DATA OUT [--seed 1]   # OUT/train, OUT/test: 80/20, shuffled
    python bench/mlp_reference.py train TRAIN TEST [--seed 1] [--epochs 30]
    python bench/mlp_reference.py gradcheck

Needs numpy and Pillow (scripts/setup-reference.sh installs them in .venv). Not part of the tests.
"""
import argparse
import os
import shutil
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

F32 = np.float32
SIZE = 32


def class_files(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return classes, [(c, f) for c in classes for f in sorted(os.listdir(os.path.join(root, c)))]


def make_split(data, out, seed):
    _, files = class_files(data)
    order = np.random.default_rng(seed).permutation(len(files))
    n_test = round(0.2 * len(files))
    for part, idx in [("train", order[: len(files) - n_test]), ("test", order[len(files) - n_test:])]:
        for i in idx:
            c, f = files[i]
            os.makedirs(os.path.join(out, part, c), exist_ok=True)
            shutil.copy(os.path.join(data, c, f), os.path.join(out, part, c, f))
    print(f"{len(files) - n_test} training and {n_test} test images under {out}")


def load(root, classes):
    X, y = [], []
    for ci, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, c))):
            im = Image.open(os.path.join(root, c, f)).convert("RGB").resize((SIZE, SIZE), Image.NEAREST)
            X.append((np.asarray(im, dtype=F32) / F32(255)).reshape(-1))  # (row, column, channel)
            y.append(ci)
    return np.stack(X), np.array(y)


def init(seed, sizes, dtype=F32):
    np.random.seed(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [(np.random.randn(fan_out, fan_in) / np.sqrt(fan_in)).astype(dtype), np.zeros(fan_out, dtype)]
    return params


def forward(params, X):
    acts, zs = [X], []
    for layer in range(0, len(params), 2):
        z = acts[-1] @ params[layer].T + params[layer + 1]
        zs.append(z)
        acts.append(np.maximum(z, 0) if layer + 2 < len(params) else z)
    return acts[-1], acts, zs


def loss_and_grads(params, X, y):
    logits, acts, zs = forward(params, X)
    shifted = logits - logits.max(1, keepdims=True)
    e = np.exp(shifted)
    n = len(y)
    loss = -(shifted[np.arange(n), y] - np.log(e.sum(1))).mean()
    dz = e / e.sum(1, keepdims=True)
    dz[np.arange(n), y] -= 1
    dz /= n
    grads = [None] * len(params)
    for layer in range(len(params) - 2, -1, -2):
        grads[layer], grads[layer + 1] = dz.T @ acts[layer // 2], dz.sum(0)
        if layer:
            dz = (dz @ params[layer]) * (zs[layer // 2 - 1] > 0)
    return loss, grads


def accuracy(params, X, y):
    return float((forward(params, X)[0].argmax(1) == y).mean())


def train(a):
    classes, _ = class_files(a.train_dir)
    Xtr, ytr = load(a.train_dir, classes)
    Xte, yte = load(a.test_dir, classes)
    params = init(a.seed, [Xtr.shape[1], 256, 128, len(classes)])
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, eps = F32(0.001), F32(0.9), F32(0.999), F32(1e-8)
    rng = np.random.default_rng(a.seed + 1)
    step, start = 0, time.time()
    for _ in range(a.epochs):
        order = rng.permutation(len(Xtr))
        flip = rng.random(len(Xtr)) < 0.5
        X = Xtr.copy()
        X[flip] = X[flip].reshape(-1, SIZE, SIZE, 3)[:, :, ::-1, :].reshape(-1, SIZE * SIZE * 3)
        for i in range(0, len(X), 64):
            batch = order[i:i + 64]
            _, grads = loss_and_grads(params, X[batch], ytr[batch])
            step += 1
            c1, c2 = F32(1 - 0.9 ** step), F32(1 - 0.999 ** step)
            for p, g, mp, vp in zip(params, grads, m, v):
                mp *= b1
                mp += (1 - b1) * g
                vp *= b2
                vp += (1 - b2) * g * g
                p -= lr * (mp / c1) / (np.sqrt(vp / c2) + eps)
    print(f"seed {a.seed}: train accuracy {accuracy(params, Xtr, ytr):.4f}, "
          f"test accuracy {accuracy(params, Xte, yte):.4f}, {time.time() - start:.1f} s")


def gradcheck():
    rng = np.random.default_rng(0)
    params = init(0, [12, 7, 5, 4], np.float64)
    for p in params[1::2]:
        p += 0.05
    X, y = rng.random((6, 12)), rng.integers(0, 4, 6)
    _, grads = loss_and_grads(params, X, y)
    worst = 0.0
    for p, g in zip(params, grads):
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + 1e-6
            plus = loss_and_grads(params, X, y)[0]
            p[idx] = old - 1e-6
            minus = loss_and_grads(params, X, y)[0]
            p[idx] = old
            numeric = (plus - minus) / 2e-6
            worst = max(worst, abs(numeric - g[idx]) / max(1e-6, abs(numeric) + abs(g[idx])))
    print(f"worst relative gradient error {worst:.1e}")
    assert worst < 1e-5


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("data")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=1)
    t = sub.add_parser("train")
    t.add_argument("train_dir")
    t.add_argument("test_dir")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--epochs", type=int, default=30)
    sub.add_parser("gradcheck")
    a = ap.parse_args()
    if a.cmd == "split":
        make_split(a.data, a.out, a.seed)
    elif a.cmd == "train":
        train(a)
    else:
        gradcheck()
