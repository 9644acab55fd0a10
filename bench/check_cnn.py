"""An independent NumPy forward pass over a deepcat model file, checked against `deepcat predict`.

    python bench/check_cnn.py --deepcat ./target/release/deepcat MODEL IMAGE... [--tolerance 1e-4]

It reads the safetensors file itself (8-byte little-endian header length, JSON header, raw
little-endian data; no safetensors package), rebuilds the network from the metadata and
computes every image's class probabilities in float64:

- format_version 2: the `layers` list (conv, batchnorm, relu, maxpool, gap, dropout, dense; the
  last entry is the head) and `head` (sigmoid or softmax). Tensors are numbered per kind
  (conv1.weight (c_out, c_in, k, k), batchnorm1.weight/bias/running_mean/running_var,
  dense1.weight (units_out, units_in), ...). Activations are kept height x width x channels, so
  a dense layer after a spatial layer reads its input channels last, as deepcat does.
- format_version 1: `layer_sizes` and dense1..N with ReLU between (or the `activations` list)
  and a sigmoid or softmax output.

Then it runs `deepcat predict MODEL IMAGE... --json` and prints, per image and overall, the
largest absolute difference between the two sets of probabilities (every class). Exit status:
0 when the overall largest difference is at most the tolerance, 1 when it is larger (or deepcat
gave no answer for an image), 2 when the check cannot be made (unreadable model, an image that
is not image_size x image_size, deepcat failing to run).

Images must already be image_size x image_size: resizing is refused so that no difference
between two resize implementations can creep in. PNG decodes identically in Pillow and deepcat;
a JPEG may differ by the decoders' rounding (a note is printed). Needs numpy and Pillow only.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
from PIL import Image, ImageOps

BN_EPS = 1e-5
SIZES_OF = {"F32": 4}
MAX_HEADER = 100 * 1024 * 1024


class CheckError(Exception):
    """A reason the check cannot be made."""


# --- the model file ---------------------------------------------------------------------------


def read_safetensors(path):
    """Returns (metadata dict, {name: float64 array}) from a safetensors file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > MAX_HEADER:
                raise CheckError(f"{path}: implausible header length {n}")
            raw = f.read(n)
            if len(raw) < n:
                raise CheckError(f"{path}: the header claims {n} bytes but the file ends first")
            data = f.read()
    except OSError as e:
        raise CheckError(f"{path}: {e.strerror or e}") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckError(f"{path}: the header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckError(f"{path}: the header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SIZES_OF:
            raise CheckError(f"{path}: tensor {name} has dtype {dtype}; only F32 is expected")
        count = math.prod(shape)
        if end - start != count * SIZES_OF[dtype] or start < 0 or end > len(data):
            raise CheckError(f"{path}: tensor {name}'s offsets {start}..{end} do not fit shape {shape} "
                             f"or the {len(data)} data bytes")
        arr = np.frombuffer(data, dtype="<f4", count=count, offset=start).reshape(shape)
        tensors[name] = arr.astype(np.float64)
    return meta, tensors


def meta_json(meta, key, path):
    if key not in meta:
        raise CheckError(f"{path}: metadata has no {key!r}")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise CheckError(f"{path}: metadata {key!r} is not JSON: {meta[key]!r}") from e


def tensor(tensors, name, shape, path):
    if name not in tensors:
        raise CheckError(f"{path}: tensor {name} is missing")
    t = tensors[name]
    if shape is not None and list(t.shape) != list(shape):
        raise CheckError(f"{path}: tensor {name} has shape {list(t.shape)}, expected {list(shape)}")
    return t


def build_layers(meta, tensors, path):
    """The network as a list of (kind, settings dict, tensor dict) and the output head name."""
    version = meta.get("format_version")
    size = int(meta.get("image_size", "0"))
    if size <= 0:
        raise CheckError(f"{path}: metadata image_size is missing or not positive")
    layers = []
    if version == "1":
        sizes = meta_json(meta, "layer_sizes", path)
        acts = meta_json(meta, "activations", path) if "activations" in meta else \
            ["relu"] * (len(sizes) - 2) + ["sigmoid" if sizes[-1] == 1 else "softmax"]
        if sizes[0] != size * size * 3:
            raise CheckError(f"{path}: layer_sizes starts with {sizes[0]}, not {size}x{size}x3")
        if len(acts) != len(sizes) - 1:
            raise CheckError(f"{path}: {len(acts)} activations for {len(sizes) - 1} dense layers")
        for i, (fan_in, units) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            w = tensor(tensors, f"dense{i}.weight", (units, fan_in), path)
            b = tensor(tensors, f"dense{i}.bias", (units,), path)
            layers.append(("dense", {"units": units}, {"weight": w, "bias": b}))
            if i < len(sizes) - 1:
                if acts[i - 1] != "relu":
                    raise CheckError(f"{path}: hidden activation {acts[i - 1]!r} is not supported")
                layers.append(("relu", {}, {}))
        head = acts[-1]
    elif version == "2":
        specs = meta_json(meta, "layers", path)
        head = meta.get("head")
        counters = {}
        geometry = (size, size, 3)  # (height, width, channels); (units,) once flat
        for spec in specs:
            kind = spec["kind"]
            counters[kind] = counters.get(kind, 0) + 1
            prefix = f"{kind}{counters[kind]}"
            ts = {}
            if kind == "conv":
                if len(geometry) != 3:
                    raise CheckError(f"{path}: {prefix} follows a flat layer")
                h, w_, c = geometry
                k, s, co = spec["kernel"], spec["stride"], spec["channels"]
                ts["weight"] = tensor(tensors, f"{prefix}.weight", (co, c, k, k), path)
                ts["bias"] = tensor(tensors, f"{prefix}.bias", (co,), path)
                pad = k // 2
                geometry = ((h + 2 * pad - k) // s + 1, (w_ + 2 * pad - k) // s + 1, co)
            elif kind == "batchnorm":
                c = geometry[-1]
                for t in ("weight", "bias", "running_mean", "running_var"):
                    ts[t] = tensor(tensors, f"{prefix}.{t}", (c,), path)
            elif kind == "dense":
                fan_in = math.prod(geometry)
                ts["weight"] = tensor(tensors, f"{prefix}.weight", (spec["units"], fan_in), path)
                ts["bias"] = tensor(tensors, f"{prefix}.bias", (spec["units"],), path)
                geometry = (spec["units"],)
            elif kind == "maxpool":
                if len(geometry) != 3:
                    raise CheckError(f"{path}: {prefix} follows a flat layer")
                geometry = (geometry[0] // 2, geometry[1] // 2, geometry[2])
            elif kind == "gap":
                geometry = (geometry[-1],)
            elif kind not in ("relu", "dropout"):
                raise CheckError(f"{path}: unknown layer kind {kind!r}")
            layers.append((kind, spec, ts))
        if not specs or specs[-1]["kind"] != "dense":
            raise CheckError(f"{path}: the last layer (the head) is not dense")
    else:
        raise CheckError(f"{path}: format_version {version!r} is not 1 or 2 (is this a deepcat model?)")
    if head not in ("sigmoid", "softmax"):
        raise CheckError(f"{path}: head {head!r} is not sigmoid or softmax")
    return size, layers, head


# --- the forward pass -------------------------------------------------------------------------


def conv2d(x, w, b, stride):
    """x (n, h, w, c_in), w (c_out, c_in, k, k) -> (n, h_out, w_out, c_out): cross-correlation
    with k // 2 zeros on every side, as a sum over kernel offsets of shifted matrix products."""
    n, h, wd, _ = x.shape
    co, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
    out = np.zeros((n, ho, wo, co))
    for i in range(k):
        for j in range(k):
            window = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            out += window @ w[:, :, i, j].T
    return out + b


def forward(layers, head, x):
    """x (n, size, size, 3) in [0, 1] -> probabilities (n, outputs before the head's meaning)."""
    for kind, spec, ts in layers:
        if kind == "conv":
            x = conv2d(x, ts["weight"], ts["bias"], spec["stride"])
        elif kind == "batchnorm":
            # Over the last axis: channels of an image, or units of a flat layer.
            x = (x - ts["running_mean"]) / np.sqrt(ts["running_var"] + BN_EPS) * ts["weight"] + ts["bias"]
        elif kind == "relu":
            x = np.maximum(x, 0.0)
        elif kind == "maxpool":
            n, h, w, c = x.shape
            h2, w2 = h // 2, w // 2
            x = x[:, :2 * h2, :2 * w2, :].reshape(n, h2, 2, w2, 2, c).max(axis=(2, 4))
        elif kind == "gap":
            x = x.mean(axis=(1, 2))
        elif kind == "dropout":
            pass  # identity at inference
        elif kind == "dense":
            x = x.reshape(x.shape[0], -1) @ ts["weight"].T + ts["bias"]  # (h, w, c) order
    if head == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_probabilities(meta, head, out, path):
    """{class: probability} per image from the network's outputs."""
    classes = meta_json(meta, "classes", path)
    if head == "sigmoid":
        if len(classes) != 2 or out.shape[1] != 1:
            raise CheckError(f"{path}: a sigmoid head needs two classes and one output")
        pos = meta.get("positive", "")
        if pos not in classes:
            raise CheckError(f"{path}: positive class {pos!r} is not one of {classes}")
        other = classes[1 - classes.index(pos)]
        return [{pos: float(p), other: float(1.0 - p)} for p in out[:, 0]]
    if out.shape[1] != len(classes):
        raise CheckError(f"{path}: {out.shape[1]} outputs for {len(classes)} classes")
    return [dict(zip(classes, map(float, row))) for row in out]


# --- images and deepcat -----------------------------------------------------------------------


def load_image(path, size, exif):
    try:
        with Image.open(path) as im:
            fmt = im.format
            if exif:
                im = ImageOps.exif_transpose(im)
            if im.size != (size, size):
                raise CheckError(f"{path}: the image is {im.size[0]}x{im.size[1]}, but the model "
                                 f"takes {size}x{size}; resize it first (no resizing here, so that "
                                 f"two resize implementations cannot differ)")
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise CheckError(f"{path}: {im.mode} images are converted to RGB differently by "
                                 f"Pillow and deepcat; use 8-bit images")
            arr = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    except CheckError:
        raise
    except (OSError, ValueError) as e:
        raise CheckError(f"{path}: not a readable image ({e})") from e
    if fmt != "PNG":
        print(f"note: {path} is {fmt}, not PNG: decoders may round differently", file=sys.stderr)
    return arr


def run_deepcat(binary, model, images):
    cmd = [binary, "predict", model, *images, "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise CheckError(f"cannot run {binary}: {e.strerror or e}") from e
    answers = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            answers[obj["path"]] = obj
    if proc.returncode != 0 and not answers:
        raise CheckError(f"deepcat predict failed (status {proc.returncode}): {proc.stderr.strip()}")
    if proc.stderr.strip():
        print(proc.stderr.strip(), file=sys.stderr)
    return answers


def expand(paths):
    """Image files as given, and every non-hidden file under folders (sorted), as deepcat would
    find them; the expanded list is what deepcat is given, so its `path` fields match."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            for dirpath, dirnames, names in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files += [os.path.join(dirpath, n) for n in sorted(names) if not n.startswith(".")]
        else:
            files.append(p)
    return files


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deepcat", default="./target/release/deepcat", help="the deepcat binary")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference")
    ap.add_argument("--batch", type=int, default=16, help="images per forward pass")
    ap.add_argument("model")
    ap.add_argument("images", nargs="+", help="image files (or folders of them)")
    args = ap.parse_args(argv)
    args.images = expand(args.images)
    if not args.images:
        ap.error("no image files found")
    try:
        meta, tensors = read_safetensors(args.model)
        size, layers, head = build_layers(meta, tensors, args.model)
        exif = meta.get("orientation") == "exif"
        if meta.get("pixel_layout", "hwc_rgb") != "hwc_rgb" or \
                meta.get("normalisation", "divide_by_255") != "divide_by_255":
            raise CheckError(f"{args.model}: unexpected pixel_layout or normalisation")
        ours = []
        for start in range(0, len(args.images), args.batch):
            chunk = args.images[start:start + args.batch]
            x = np.stack([load_image(p, size, exif) for p in chunk])
            ours += class_probabilities(meta, head, forward(layers, head, x), args.model)
        theirs = run_deepcat(args.deepcat, args.model, args.images)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    worst, missing = 0.0, 0
    for path, mine in zip(args.images, ours):
        answer = theirs.get(path)
        if answer is None:
            print(f"{path}: no answer from deepcat")
            missing += 1
            continue
        probs = answer["probabilities"]
        if set(probs) != set(mine):
            print(f"{path}: deepcat's classes {sorted(probs)} are not the model's {sorted(mine)}")
            missing += 1
            continue
        diff = max(abs(mine[c] - probs[c]) for c in mine)
        if not math.isfinite(diff):
            diff = math.inf  # a NaN must fail the check, not vanish in max()
        worst = max(worst, diff)
        ours_class = max(mine, key=mine.get)
        agree = "same class" if ours_class == answer["class"] else \
            f"CLASS DIFFERS (numpy {ours_class}, deepcat {answer['class']})"
        print(f"{path}: max |diff| {diff:.3e}  ({agree}; deepcat {answer['class']} "
              f"{answer['probability']:.6f})")
    ok = missing == 0 and worst <= args.tolerance
    print(f"overall: {len(args.images)} images, max |diff| {worst:.3e}, tolerance {args.tolerance:g}"
          f"{f', {missing} without a usable answer' if missing else ''}: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
