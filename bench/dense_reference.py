"""A PyTorch rendering of the tutorial's dense network, for `deepcat bench`'s speed ratios of
the dense paths: one full-batch gradient-descent iteration, and one Adam epoch in batches of 64.

    python bench/dense_reference.py speed DATA_DIR --threads 2 --images 1348 [--iterations 10]

What it renders: images as in bench/cnn_reference.py (Pillow, nearest resize to 128 x 128, RGB,
/255, height x width x channels, flattened: 49152 features), the network 49152-20-7-5-1 with
ReLU and a sigmoid output trained on binary cross-entropy from logits, weights
N(0, 1)/sqrt(fan_in) and zero biases (the tutorial's), float32 on the CPU.
- the full-batch iteration: forward, backward, SGD step (lr 0.0075) on all images; as deepcat's
  direct path it computes no gradient for the images. Mean over --iterations after 2 warm-up
  iterations.
- the Adam epoch: Adam (lr 1e-3, 0.9, 0.999, 1e-8), batches of 64 in a shuffled order (the
  last, partial batch kept), gathered from the float32 data each step. One epoch after a
  warm-up of 5 batches.

Prints one JSON object: {"direct_iteration_seconds", "adam_epoch_seconds", "images", ...}.
Needs torch, numpy and Pillow (scripts/setup-reference.sh --torch). Not part of the tests.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cnn_reference import class_files, load_images, targets  # noqa: E402

HIDDEN = (20, 7, 5)
GD_LR = 0.0075
ADAM_LR = 1e-3
BATCH = 64


def network(features):
    sizes = (features,) + HIDDEN + (1,)
    mods = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        lin = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            lin.weight.normal_(0.0, 1.0).div_(math.sqrt(fan_in))
            lin.bias.zero_()
        mods.append(lin)
        if i < len(HIDDEN):
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def step(net, opt, loss, x, y):
    opt.zero_grad(set_to_none=True)
    loss(net(x), y).backward()
    opt.step()


def cmd_speed(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    classes, files = class_files(args.data_dir)
    if args.images and args.images < len(files):
        keep = sorted(rng.choice(len(files), args.images, replace=False))
        files = [files[i] for i in keep]
    x, labels = load_images(files, 128)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    x = x.reshape(x.shape[0], -1).contiguous().to(device)
    y = targets(labels, classes).float().to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if y.dim() == 1:
        sys.exit("dense_reference.py renders the two-class (sigmoid) network only")
    n = x.shape[0]
    loss = nn.BCEWithLogitsLoss()

    net = network(x.shape[1]).to(device)
    gd = torch.optim.SGD(net.parameters(), lr=GD_LR)
    for _ in range(2):
        step(net, gd, loss, x, y)
    sync()
    start = time.perf_counter()
    for _ in range(args.iterations):
        step(net, gd, loss, x, y)
    sync()
    direct = (time.perf_counter() - start) / args.iterations

    net = network(x.shape[1]).to(device)
    adam = torch.optim.Adam(net.parameters(), lr=ADAM_LR, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(5):
        idx = torch.from_numpy(rng.choice(n, min(BATCH, n), replace=False)).to(device)
        step(net, adam, loss, x[idx], y[idx])
    sync()
    start = time.perf_counter()
    order = torch.from_numpy(rng.permutation(n)).to(device)
    for i in range(0, n, BATCH):
        idx = order[i:i + BATCH]
        step(net, adam, loss, x[idx], y[idx])
    sync()
    epoch = time.perf_counter() - start

    print(json.dumps({"direct_iteration_seconds": direct, "adam_epoch_seconds": epoch,
                      "images": n, "features": x.shape[1], "threads": args.threads,
                      "iterations": args.iterations, "device": args.device,
                      "torch": torch.__version__}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("data_dir")
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--images", type=int, default=0,
                    help="time on this many images, drawn at random (deepcat's training part)")
    sp.add_argument("--iterations", type=int, default=10)
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where to train: cuda times PyTorch on the GPU (fp32, no TF32)")
    args = ap.parse_args(argv)
    cmd_speed(args)


if __name__ == "__main__":
    main()
