"""A PyTorch rendering of deepcat's `cnn` and `resnet` presets and their training recipes.

For speed and accuracy comparisons with `deepcat train ... --arch cnn|resnet`.

    python bench/cnn_reference.py speed DATA_DIR --size 64 --threads 2 --epochs 1 --warmup-batches 5
    python bench/cnn_reference.py speed DATA_DIR --size 64 --epochs 1 --device cuda   # on a GPU
    python bench/cnn_reference.py train DATA_DIR [--test-dir DIR] --size 64 --seed 1 [--epochs 40]
    (both take --arch SPEC and --recipe cnn|resnet; train also --test-split 0.2,
    --split-json FILE and --threads N)

    # the resnet preset on deepcat's own split (the split depends only on the file list,
    # --seed and --test-split, so a tiny 1-iteration run prints it):
    deepcat train DATA --size 8 --iterations 1 --seed S --json --model /tmp/x.safetensors \
        --no-cache > split_S.json
    python bench/cnn_reference.py train DATA --split-json split_S.json --arch resnet \
        --size 64 --seed S --epochs 80 --threads 1
    python bench/cnn_reference.py train data/catvnoncat/train --test-dir data/catvnoncat/test \
        --arch resnet --size 64 --seed S --epochs 80 --threads 1
    python bench/cnn_reference.py speed DATA --arch resnet --size 64 --threads 2 --epochs 1

What it renders:
- images: class = sub-folder name (sorted; label = index), searched recursively, hidden files
  skipped; for two classes the positive class is one named cat/cats if present, else the
  second. Decoded with Pillow (EXIF orientation applied), RGB, resized to SIZE x SIZE, /255,
  stored height x width x channels. The resize filter is the recipe's: nearest (cnn) or
  Pillow's BILINEAR (resnet), which widens its support when shrinking (antialiased), as
  deepcat's `--resize bilinear` (a convolution resize) does.
- the network: the `--arch` text form deepcat reads (conv<N>[k<K>][s<S>], bn, relu, pool, gap,
  dense<N>, dropout<P>, block<N> = conv<N> bn relu pool, res<N>[s<S>], or a preset name:
  `cnn` = block16 block32 block64 block64 gap dropout0.3,
  `resnet` = conv32 bn relu pool res32 res64s2 res128s2 gap dropout0.3),
  then a dense head: 1 unit, sigmoid and binary cross-entropy for two classes; one unit per
  class, softmax and cross-entropy for more.
  Conv: "same" zero padding k // 2, bias (a stride-S conv gives ceil(side / S)). bn: BatchNorm
  (eps 1e-5, momentum 0.1, gamma 1, beta 0). pool: 2x2 max-pool stride 2. gap: global average.
  res<N>[s<S>] (S default 1): a basic block, ReLU(body(x) + shortcut(x)) with body = conv3x3(N,
  stride S, pad 1) bn relu conv3x3(N, stride 1, pad 1) bn and shortcut = identity when the
  input has N channels and S = 1, else conv1x1(N, stride S, pad 0) bn: torchvision's BasicBlock
  with biases on the convs. A dense layer after a spatial layer reads channels last, as deepcat
  does. He-normal weights (std sqrt(2 / fan_in)) for every conv and dense, zero biases.
- both recipes: batches of 32 reshuffled every epoch (the last, partial batch kept), each drawn
  image mirrored left-right with probability 1/2 then shifted by a uniform integer in
  [-round(size/8), round(size/8)] in x and y with edge pixels repeated (deepcat's
  src/data/augment.rs flip + crop).
- the cnn recipe (--recipe cnn, the default except with --arch resnet): Adam lr 1e-3 (0.9, 0.999,
  1e-8), cosine decay lr * 0.5 * (1 + cos(pi * step / steps_per_epoch / epochs)) set before each
  step, no label smoothing, nearest resize.
- the resnet recipe (--recipe resnet, the default for --arch resnet): torch.optim.AdamW lr 2e-3
  (0.9, 0.999, 1e-8) in two parameter groups: weight decay 5e-4 (decoupled: w -= lr * 5e-4 * w)
  on conv and dense weights, none on biases and batch-norm gamma/beta; the lr follows
  OneCycleLR(max_lr=2e-3, total_steps=epochs * steps_per_epoch, pct_start=0.3,
  anneal_strategy='cos', div_factor=25, final_div_factor=1e4, cycle_momentum=False), stepped
  after every batch (2e-3 / 25 at the first step, 2e-3 after 30% of them, 8e-9 at the last);
  label smoothing 0.1 (sigmoid: BCE-with-logits against y * 0.9 + 0.05; softmax:
  CrossEntropyLoss(label_smoothing=0.1)); bilinear resize; 80 epochs by default.
- evaluation: eval() mode (running batch-norm statistics, no dropout), p > 0.5 for sigmoid,
  argmax for softmax. test_accuracy_tta averages the probabilities of each test image and its
  left-right mirror; test_accuracy_no_tta does not; test_accuracy is the recipe's (resnet: with
  flip averaging, cnn: without). train_accuracy: no flip averaging.

Only the recipe is shared with deepcat, not its random streams (initial weights, batch order,
augmentation): compare means over seeds. The split with --split-json is deepcat's own (the
`test_files` of `deepcat train ... --json`; every other image under DATA_DIR trains). Without
it or --test-dir the split is shuffled and holds out ceil(test_split * n) images, as deepcat's,
but not the same ones.

`speed` prints {"images_per_second", "seconds", "images", "threads", "memory_format",
"inference_images_per_second", ...}, the timed epochs using the recipe's optimiser, schedule and
loss (its one-cycle spans the warm-up batches and the timed epochs), then the trained network's
eval-mode forward over the same images (best of three passes, batches of 256); `train` prints {"test_accuracy", "test_accuracy_tta",
"test_accuracy_no_tta", "train_accuracy", "seconds", ...} (seconds: training only).
Needs torch, numpy and Pillow (scripts/setup-reference.sh --torch). Not part of the tests.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

PRESETS = {"cnn": "block16 block32 block64 block64 gap dropout0.3",
           "resnet": "conv32 bn relu pool res32 res64s2 res128s2 gap dropout0.3"}
BATCH = 32
LR = 1e-3
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
EPOCHS = 40
RESNET_EPOCHS = 80  # the resnet recipe trains twice as long, as deepcat's
SHIFT_FRACTION = 0.125
# The resnet recipe (--recipe resnet, the default for --arch resnet).
RESNET_LR = 2e-3
RESNET_WEIGHT_DECAY = 5e-4
RESNET_PCT_START = 0.3
RESNET_DIV_FACTOR = 25.0
RESNET_FINAL_DIV_FACTOR = 1e4
LABEL_SMOOTHING = 0.1
# Memory format: channels_last is the faster here, so it is the default. Measured with `speed
# data --size 64 --threads 2` (1685 images, one epoch), torch 2.15 CPU (oneDNN) on this project's
# 2-core AMD EPYC (Zen 4) machine, nothing else running: channels_last 395 and 402 images/s,
# contiguous NCHW 304 and 336 images/s. Both timings include the batch's layout: the batch is
# gathered NHWC, so its permuted view already is channels_last; contiguous copies it per batch.
DEFAULT_MEMORY_FORMAT = "channels_last"


# --- the architecture's text form -------------------------------------------------------------


def parse_arch(text):
    """The body as a list of (kind, settings) from deepcat's --arch text form."""
    text = PRESETS.get(text.strip(), text.strip())
    body = []
    for token in text.replace(",", " ").lower().split():
        body += parse_token(token)
    if not body:
        raise ValueError("--arch is empty")
    return body


def parse_token(token):
    def number(s):
        if not s.isdigit():
            raise ValueError(f"{token!r}: {s!r} is not a whole number")
        return int(s)

    simple = {"bn": "batchnorm", "batchnorm": "batchnorm", "relu": "relu", "pool": "maxpool",
              "maxpool": "maxpool", "gap": "gap"}
    if token in simple:
        return [(simple[token], {})]
    if token.startswith("res"):
        rest, stride = token[3:], 1
        if "s" in rest:
            rest, s = rest.split("s", 1)
            stride = number(s)
        channels = number(rest)
        if channels == 0 or not 1 <= stride <= 4:
            raise ValueError(f"{token!r}: channels >= 1, stride 1 to 4")
        return [("res", {"channels": channels, "stride": stride})]
    if token.startswith("block"):
        c = number(token[5:])
        return [("conv", {"channels": c, "kernel": 3, "stride": 1}), ("batchnorm", {}),
                ("relu", {}), ("maxpool", {})]
    if token.startswith("conv"):
        rest, stride = token[4:], 1
        if "s" in rest:
            rest, s = rest.split("s", 1)
            stride = number(s)
        kernel = 3
        if "k" in rest:
            rest, k = rest.split("k", 1)
            kernel = number(k)
        channels = number(rest)
        if channels == 0 or kernel % 2 == 0 or kernel > 15 or not 1 <= stride <= 4:
            raise ValueError(f"{token!r}: channels >= 1, an odd kernel <= 15, stride 1 to 4")
        return [("conv", {"channels": channels, "kernel": kernel, "stride": stride})]
    if token.startswith("dense"):
        units = number(token[5:])
        if units == 0:
            raise ValueError(f"{token!r}: a dense layer needs at least one unit")
        return [("dense", {"units": units})]
    if token.startswith("dropout"):
        try:
            p = float(token[7:])
        except ValueError:
            raise ValueError(f"{token!r}: not a probability such as 0.3") from None
        if not 0 < p < 1:
            raise ValueError(f"{token!r}: the probability must be above 0 and below 1")
        return [("dropout", {"p": p})]
    raise ValueError(f"unknown layer {token!r}; use conv<N>[k<K>][s<S>], bn, relu, pool, gap, "
                     "dense<N>, dropout<P>, block<N>, res<N>[s<S>] or a preset (cnn, resnet)")


class ChannelsLastFlatten(nn.Module):
    """(n, c, h, w) -> (n, h * w * c): a dense layer after a spatial one reads channels last."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


class BasicBlock(nn.Module):
    """res<N>[s<S>]: ReLU(body(x) + shortcut(x)), body = conv3x3(N, stride S) bn relu conv3x3(N)
    bn; shortcut = identity when the channels and the side stay, else conv1x1(N, stride S) bn.
    torchvision's BasicBlock with biases on the convolutions, as deepcat has them."""

    def __init__(self, inputs, channels, stride):
        super().__init__()
        bn = lambda: nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)  # noqa: E731
        self.body = nn.Sequential(
            nn.Conv2d(inputs, channels, 3, stride=stride, padding=1, bias=True), bn(), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=True), bn())
        self.shortcut = (nn.Identity() if inputs == channels and stride == 1 else nn.Sequential(
            nn.Conv2d(inputs, channels, 1, stride=stride, padding=0, bias=True), bn()))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def build_network(body, size, outputs):
    """nn.Sequential for the body and a dense head of `outputs` units, He-normal initialised."""
    mods = []
    c, h, w = 3, size, size
    spatial = True
    units = None
    for kind, s in body:
        if kind == "conv":
            if not spatial:
                raise ValueError("a conv layer cannot follow a flat layer")
            k, st = s["kernel"], s["stride"]
            mods.append(nn.Conv2d(c, s["channels"], k, stride=st, padding=k // 2, bias=True))
            c = s["channels"]
            h, w = (h + 2 * (k // 2) - k) // st + 1, (w + 2 * (k // 2) - k) // st + 1
        elif kind == "res":
            if not spatial:
                raise ValueError("a residual block cannot follow a flat layer")
            st = s["stride"]
            mods.append(BasicBlock(c, s["channels"], st))
            c = s["channels"]
            h, w = (h - 1) // st + 1, (w - 1) // st + 1  # ceil(side / stride)
        elif kind == "batchnorm":
            mods.append(nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM) if spatial
                        else nn.BatchNorm1d(units, eps=BN_EPS, momentum=BN_MOMENTUM))
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "maxpool":
            if not spatial or h < 2 or w < 2:
                raise ValueError("2x2 max-pooling needs an image of at least 2x2 pixels")
            mods.append(nn.MaxPool2d(2, 2))
            h, w = h // 2, w // 2
        elif kind == "gap":
            if spatial:
                mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
                spatial, units = False, c
        elif kind == "dropout":
            mods.append(nn.Dropout(s["p"]))
        elif kind == "dense":
            fan_in = h * w * c if spatial else units
            if spatial:
                mods.append(ChannelsLastFlatten())
            mods.append(nn.Linear(fan_in, s["units"]))
            spatial, units = False, s["units"]
    if spatial:
        mods.append(ChannelsLastFlatten())
        units = h * w * c
    mods.append(nn.Linear(units, outputs))
    net = nn.Sequential(*mods)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
                m.bias.zero_()
    return net


# --- data -------------------------------------------------------------------------------------


def class_files(root):
    """Sorted class names and [(path, label)] for every non-hidden file under each class folder."""
    classes = sorted(d for d in os.listdir(root)
                     if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    if len(classes) < 2:
        sys.exit(f"{root}: needs at least two class folders, found {classes}")
    files = []
    for label, c in enumerate(classes):
        found = []
        for dirpath, dirnames, names in os.walk(os.path.join(root, c)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, n) for n in names if not n.startswith(".")]
        files += [(p, label) for p in sorted(found)]
    return classes, files


def positive_index(classes):
    if len(classes) != 2:
        return None
    for i, c in enumerate(classes):
        if c.lower() in ("cat", "cats"):
            return i
    return 1


RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}


def load_images(files, size, resize="nearest"):
    """(n, size, size, 3) float32 tensor in [0, 1] and the labels; unreadable files skipped.
    Pillow's BILINEAR resize is a convolution whose support widens when shrinking (antialiased),
    like deepcat's `--resize bilinear`."""
    xs, ys = [], []
    for path, label in files:
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im).convert("RGB").resize((size, size),
                                                                       RESAMPLE[resize])
                xs.append(np.asarray(im, dtype=np.uint8))
                ys.append(label)
        except (OSError, ValueError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
    x = torch.from_numpy(np.stack(xs)).float().div_(255.0)
    return x, torch.tensor(ys, dtype=torch.long)


def split_from_json(files, json_path):
    """deepcat's split: the images its `train --json` listed as test_files are the test set,
    every other image found is training data."""
    with open(json_path) as f:
        listed = json.load(f)["test_files"]
    key = lambda p: os.path.realpath(p)  # noqa: E731
    wanted = {key(p) for p in listed}
    test = [(p, label) for p, label in files if key(p) in wanted]
    if len(test) != len(wanted):
        sys.exit(f"{json_path}: {len(wanted) - len(test)} of its {len(wanted)} test_files are "
                 "not images under DATA_DIR")
    return [(p, label) for p, label in files if key(p) not in wanted], test


def targets(labels, classes):
    """What the loss compares with: 0/1 floats for sigmoid (1 = positive), indices for softmax."""
    pos = positive_index(classes)
    return (labels == pos).float().unsqueeze(1) if pos is not None else labels


# --- training ---------------------------------------------------------------------------------


class Trainer:
    """The cnn recipe: Adam, cosine decay set before each step, plain (binary) cross-entropy."""

    tta = False  # whether the reported test accuracy averages each image and its mirror

    def __init__(self, net, sigmoid, size, rng, memory_format, total_steps):
        self.net = net
        self.sigmoid = sigmoid
        self.size = size
        self.rng = rng
        self.channels_last = memory_format == "channels_last"
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.opt, self.sched = self.optimizer(total_steps)
        self.loss = nn.BCEWithLogitsLoss() if sigmoid else nn.CrossEntropyLoss()
        self.max_shift = int(math.floor(size * SHIFT_FRACTION + 0.5))  # f32::round, half up

    def optimizer(self, total_steps):
        """The optimiser and a per-batch scheduler (None: lr_at sets the rate)."""
        return torch.optim.Adam(self.net.parameters(), lr=LR, betas=BETAS, eps=ADAM_EPS), None

    def lr_at(self, done):
        """The learning rate at `done` (0 to 1) of training."""
        return LR * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))

    def to_input(self, x):
        """(n, h, w, c) contiguous -> the network's (n, c, h, w) in the chosen memory format.
        The permuted view of an NHWC tensor already is channels_last: no copy then."""
        x = x.permute(0, 3, 1, 2)
        return x if self.channels_last else x.contiguous()

    def augment(self, x):
        """Flip (p = 1/2) then shift by (dx, dy) with edge pixels repeated, as one gather."""
        n, s = x.shape[0], self.size
        flip = self.rng.random(n) < 0.5
        m = self.max_shift
        dx = self.rng.integers(-m, m + 1, n)
        dy = self.rng.integers(-m, m + 1, n)
        grid = np.arange(s)
        rows = np.clip(grid[None, :] - dy[:, None], 0, s - 1)
        cols = np.clip(grid[None, :] - dx[:, None], 0, s - 1)
        cols = np.where(flip[:, None], s - 1 - cols, cols)
        rows, cols = torch.from_numpy(rows).to(x.device), torch.from_numpy(cols).to(x.device)
        n_index = torch.arange(n, device=x.device)
        return x[n_index[:, None, None], rows[:, :, None], cols[:, None, :]]

    def step(self, x_all, y_all, idx, lr=None):
        """One batch; `lr` (when not None) is set first, a scheduler steps after."""
        if lr is not None:
            for g in self.opt.param_groups:
                g["lr"] = lr
        idx = torch.from_numpy(idx).to(x_all.device)
        x = self.to_input(self.augment(x_all[idx]))
        y = y_all[idx]
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(x), y)
        loss.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return loss

    def epoch(self, x_all, y_all, epoch, epochs):
        n = x_all.shape[0]
        steps = math.ceil(n / BATCH)
        order = self.rng.permutation(n)
        for i in range(steps):
            done = (epoch * steps + i) / steps / epochs
            self.step(x_all, y_all, order[i * BATCH:(i + 1) * BATCH], self.lr_at(done))

    @torch.inference_mode()
    def probabilities(self, x_all, mirrored=False):
        """eval() mode: P(positive) (n,) for sigmoid, softmax (n, classes) for more; of the
        left-right mirrored images when `mirrored`."""
        self.net.eval()
        out = []
        for start in range(0, x_all.shape[0], 256):
            x = x_all[start:start + 256]
            if mirrored:
                x = x.flip(2)  # (n, h, w, c): w
            z = self.net(self.to_input(x))
            out.append(torch.sigmoid(z[:, 0]) if self.sigmoid else torch.softmax(z, 1))
        self.net.train()
        return torch.cat(out)

    def accuracy(self, x_all, labels, classes, tta=False):
        """Share of correct predictions: p > 0.5 for sigmoid, argmax for softmax; with `tta`
        the probabilities of each image and its mirror are averaged first."""
        p = self.probabilities(x_all)
        if tta:
            p = (p + self.probabilities(x_all, mirrored=True)) / 2
        pos = positive_index(classes)
        pred = torch.where(p > 0.5, pos, 1 - pos) if pos is not None else p.argmax(1)
        return int((pred == labels).sum()) / x_all.shape[0]


class SmoothedBCEWithLogits(nn.Module):
    """Binary cross-entropy on logits against label-smoothed targets y (1 - e) + e / 2."""

    def __init__(self, smoothing):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits, y):
        target = y * (1.0 - self.smoothing) + self.smoothing / 2
        return nn.functional.binary_cross_entropy_with_logits(logits, target)


class ResnetTrainer(Trainer):
    """The resnet recipe: AdamW (weight decay on conv and dense weights only), one-cycle
    schedule stepped per batch, label smoothing 0.1, test-time flip averaging."""

    tta = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss = (SmoothedBCEWithLogits(LABEL_SMOOTHING) if self.sigmoid
                     else nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING))

    def optimizer(self, total_steps):
        decay, no_decay = [], []
        for m in self.net.modules():
            for name, p in m.named_parameters(recurse=False):
                weight = isinstance(m, (nn.Conv2d, nn.Linear)) and name == "weight"
                (decay if weight else no_decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": RESNET_WEIGHT_DECAY},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=RESNET_LR, betas=BETAS, eps=ADAM_EPS)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=RESNET_LR, total_steps=total_steps, pct_start=RESNET_PCT_START,
            anneal_strategy="cos", div_factor=RESNET_DIV_FACTOR,
            final_div_factor=RESNET_FINAL_DIV_FACTOR, cycle_momentum=False)
        return opt, sched

    def lr_at(self, done):
        return None  # the one-cycle scheduler sets it


RECIPES = {"cnn": (Trainer, "nearest"), "resnet": (ResnetTrainer, "bilinear")}


def recipe_of(args):
    """--recipe, or by default resnet for --arch resnet and cnn otherwise."""
    return args.recipe or ("resnet" if args.arch.strip().lower() == "resnet" else "cnn")


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return np.random.default_rng(seed)


def cmd_speed(args):
    torch.set_num_threads(args.threads)
    rng = seed_everything(args.seed)
    classes, files = class_files(args.data_dir)
    if args.images and args.images < len(files):
        # The same number of images as deepcat trains on (its 80/20 split's training part).
        keep = sorted(rng.choice(len(files), args.images, replace=False))
        files = [files[i] for i in keep]
    recipe = recipe_of(args)
    trainer, resize = RECIPES[recipe]
    x, labels = load_images(files, args.size, resize)
    y = targets(labels, classes)
    # --device cuda: the images, the network and every step on the GPU (fp32, no TF32).
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    x, y = x.to(device), y.to(device)
    outputs = 1 if len(classes) == 2 else len(classes)
    n = x.shape[0]
    total_steps = args.warmup_batches + args.epochs * math.ceil(n / BATCH)
    net = build_network(parse_arch(args.arch), args.size, outputs).to(device)
    tr = trainer(net, outputs == 1, args.size, rng, args.memory_format, total_steps)
    tr.net.train()
    for _ in range(args.warmup_batches):
        tr.step(x, y, rng.choice(n, min(BATCH, n), replace=False), tr.lr_at(0.0))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for e in range(args.epochs):
        tr.epoch(x, y, e, args.epochs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # Inference: the trained network in eval mode over the same images, batches of 256, under
    # inference_mode (Trainer.probabilities); one untimed pass, then the best of three.
    tr.probabilities(x)
    passes = []
    for _ in range(3):
        t0 = time.perf_counter()
        tr.probabilities(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        passes.append(time.perf_counter() - t0)
    print(json.dumps({"images_per_second": n * args.epochs / seconds, "seconds": seconds,
                      "inference_images_per_second": n / min(passes),
                      "images": n * args.epochs, "threads": args.threads,
                      "memory_format": args.memory_format, "size": args.size, "epochs": args.epochs,
                      "arch": args.arch, "recipe": recipe, "device": args.device,
                      "torch": torch.__version__}))


def cmd_train(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = seed_everything(args.seed)
    t0 = time.perf_counter()
    classes, files = class_files(args.data_dir)
    if args.test_dir:
        test_classes, test_files = class_files(args.test_dir)
        if test_classes != classes:
            sys.exit(f"{args.test_dir}: classes {test_classes} are not {classes}")
        train_files = files
    elif args.split_json:
        train_files, test_files = split_from_json(files, args.split_json)
    else:
        if not 0 < args.test_split < 1:
            sys.exit("--test-split must be above 0 and below 1")
        order = rng.permutation(len(files))
        k = math.ceil(args.test_split * len(files))
        test_files = [files[i] for i in order[:k]]
        train_files = [files[i] for i in order[k:]]
    recipe = recipe_of(args)
    trainer, resize = RECIPES[recipe]
    x_train, l_train = load_images(train_files, args.size, resize)
    x_test, l_test = load_images(test_files, args.size, resize)
    load_seconds = time.perf_counter() - t0
    y_train = targets(l_train, classes)
    outputs = 1 if len(classes) == 2 else len(classes)
    total_steps = args.epochs * math.ceil(x_train.shape[0] / BATCH)
    tr = trainer(build_network(parse_arch(args.arch), args.size, outputs), outputs == 1,
                 args.size, rng, args.memory_format, total_steps)
    tr.net.train()
    start = time.perf_counter()
    for e in range(args.epochs):
        tr.epoch(x_train, y_train, e, args.epochs)
    seconds = time.perf_counter() - start
    tta = tr.accuracy(x_test, l_test, classes, tta=True)
    no_tta = tr.accuracy(x_test, l_test, classes)
    print(json.dumps({"test_accuracy": tta if tr.tta else no_tta,
                      "test_accuracy_tta": tta, "test_accuracy_no_tta": no_tta,
                      "train_accuracy": tr.accuracy(x_train, l_train, classes),
                      "seconds": seconds, "load_seconds": load_seconds, "seed": args.seed,
                      "epochs": args.epochs, "size": args.size, "arch": args.arch,
                      "classes": classes, "train_size": len(l_train), "test_size": len(l_test),
                      "threads": torch.get_num_threads(), "memory_format": args.memory_format,
                      "recipe": recipe, "resize": resize, "split_json": args.split_json,
                      "test_dir": args.test_dir, "torch": torch.__version__}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("data_dir")
    common.add_argument("--size", type=int, default=64)
    common.add_argument("--arch", default="cnn", help="deepcat's --arch text form (default: cnn)")
    common.add_argument("--memory-format", choices=["channels_last", "contiguous"],
                        default=DEFAULT_MEMORY_FORMAT)
    common.add_argument("--recipe", choices=sorted(RECIPES),
                        help="training recipe (default: resnet for --arch resnet, else cnn)")
    sp = sub.add_parser("speed", parents=[common], help="time training epochs")
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--epochs", type=int, default=1)
    sp.add_argument("--warmup-batches", type=int, default=5)
    sp.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where to train: cuda times PyTorch on the GPU (cuDNN, fp32)")
    sp.add_argument("--images", type=int, default=0,
                    help="train on this many of the images (a seeded subset; default: all)")
    sp.add_argument("--seed", type=int, default=1)
    tp = sub.add_parser("train", parents=[common], help="train and report accuracies")
    tests = tp.add_mutually_exclusive_group()
    tests.add_argument("--test-dir")
    tests.add_argument("--split-json", help="deepcat's `train --json` output: its test_files "
                       "are the test set, the other images under DATA_DIR the training set")
    tp.add_argument("--test-split", type=float, default=0.2)
    tp.add_argument("--seed", type=int, default=1)
    tp.add_argument("--epochs", type=int, default=None,
                    help=f"default: the recipe's ({EPOCHS} for cnn, {RESNET_EPOCHS} for resnet)")
    tp.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    try:
        parse_arch(args.arch)
    except ValueError as e:
        ap.error(f"--arch: {e}")
    if args.epochs is None:
        args.epochs = RESNET_EPOCHS if recipe_of(args) == "resnet" else EPOCHS
    if args.size < 1 or args.epochs < 1:
        ap.error("--size and --epochs must be positive")
    (cmd_speed if args.command == "speed" else cmd_train)(args)


if __name__ == "__main__":
    main()
