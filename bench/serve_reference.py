"""The Python rendering of `deepcat serve`'s prediction route, for the load benchmark.

    .venv/bin/python bench/serve_reference.py MODEL [--host 127.0.0.1] [--port 8081] [--workers N]
        [--engine torch|numpy]

FastAPI on uvicorn, Pillow, and PyTorch or NumPy: `POST /api/predict` with the raw image as the
body answers the same JSON object as deepcat (path null, class, probability, probabilities,
top); `GET /healthz` answers {"status": "ok"}. The model file is read by bench/check_cnn.py
(format versions 1 and 2: dense, conv, batch norm, ReLU, max pool, global average pool,
dropout). With `--engine torch` (the default) the same network is built as torch.nn modules
holding the file's float32 weights, put in eval mode and run under torch.inference_mode(), one
intra-op thread per worker process; at start its probabilities are checked against the NumPy
forward pass on a few inputs (largest difference at most 1e-4, or it refuses to start). With
`--engine numpy` the NumPy forward pass itself serves, in float32. Each image is preprocessed as
the model records: EXIF orientation, RGB, resize to image_size with the recorded filter (nearest
by default), HWC order, / 255. One image per request, as a typical Python service runs;
`--workers` uvicorn processes (default: one per CPU).

Install with `scripts/setup-reference.sh --serve --torch`; examples/serve_bench.rs starts it.
"""
import argparse
import io
import os
import sys

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_cnn import build_layers, class_probabilities, forward, read_safetensors  # noqa: E402

FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


BN_EPS = 1e-5
# Largest difference allowed between the torch network's probabilities and NumPy's at start.
ENGINE_TOLERANCE = 1e-4


def torch_network(layers):
    """The check_cnn layer list as torch modules (eval mode) holding the same float32 weights.
    Images enter as (n, 3, h, w); a dense layer after a spatial one reads channels last, as
    deepcat stores its weights."""
    import torch
    from torch import nn

    class ChannelsLastFlatten(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x

    def load(module, ts):
        for name, value in ts.items():
            getattr(module, name).data.copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))
        return module

    mods, spatial = [], True
    for kind, spec, ts in layers:
        if kind == "conv":
            co, ci, k, _ = ts["weight"].shape
            mods.append(load(nn.Conv2d(ci, co, k, stride=spec["stride"], padding=k // 2), ts))
        elif kind == "batchnorm":
            norm = nn.BatchNorm2d if spatial else nn.BatchNorm1d
            mods.append(load(norm(ts["weight"].shape[0], eps=BN_EPS), ts))
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "maxpool":
            mods.append(nn.MaxPool2d(2, 2))
        elif kind == "gap":
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
            spatial = False
        elif kind == "dropout":
            mods.append(nn.Dropout(0.5))  # the identity in eval mode, whatever its rate
        elif kind == "dense":
            if spatial:
                mods.append(ChannelsLastFlatten())
                spatial = False
            units_out, units_in = ts["weight"].shape
            mods.append(load(nn.Linear(units_in, units_out), ts))
    return nn.Sequential(*mods).eval()


class Classifier:
    """A deepcat model file, ready to classify one image's bytes."""

    def __init__(self, path, engine="torch"):
        self.meta, tensors = read_safetensors(path)
        _, self.layers, self.head = build_layers(self.meta, tensors, path)
        self.layers = [(kind, spec, {k: v.astype(np.float32) for k, v in ts.items()})
                       for kind, spec, ts in self.layers]
        self.engine = engine
        if engine == "torch":
            import torch

            torch.set_num_threads(1)
            self.torch = torch
            self.net = torch_network(self.layers)
        self.size = int(self.meta["image_size"])
        self.filter = FILTERS[self.meta.get("resize", "nearest")]
        self.exif = self.meta.get("orientation") == "exif"
        self.path = path
        classes = len(class_probabilities(self.meta, self.head, self.outputs_for_check(), path)[0])
        self.top = 2 if classes == 2 else min(3, classes)
        if engine == "torch":
            self.check_engine()

    def outputs_for_check(self):
        return forward(self.layers, self.head, np.zeros((1, self.size, self.size, 3), np.float32))

    def check_engine(self):
        """Refuses to serve if the torch network and the NumPy forward pass disagree."""
        x = np.random.default_rng(0).random((4, self.size, self.size, 3), dtype=np.float32)
        want = forward([(k, s, {n: v.astype(np.float64) for n, v in ts.items()})
                        for k, s, ts in self.layers], self.head, x.astype(np.float64))
        got = self.outputs(x)
        worst = float(np.abs(got - want).max())
        if not worst <= ENGINE_TOLERANCE:
            raise SystemExit(f"{self.path}: the torch network differs from NumPy's by {worst:.2e}")

    def outputs(self, x):
        """Probabilities (n, outputs) for images x (n, size, size, 3) in [0, 1]."""
        if self.engine == "numpy":
            return forward(self.layers, self.head, x)
        torch = self.torch
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(x).permute(0, 3, 1, 2))
            out = torch.sigmoid(logits) if self.head == "sigmoid" else torch.softmax(logits, dim=1)
        return out.double().numpy()

    def pixels(self, data):
        with Image.open(io.BytesIO(data)) as im:
            if self.exif:
                im = ImageOps.exif_transpose(im)
            im = im.convert("RGB").resize((self.size, self.size), self.filter)
            return np.asarray(im, dtype=np.float32)[None] / np.float32(255.0)

    def predict(self, data):
        probs = class_probabilities(self.meta, self.head, self.outputs(self.pixels(data)), self.path)[0]
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        best = ranked[0][0]
        return {
            "path": None,
            "class": best,
            "probability": probs[best],
            "probabilities": probs,
            "top": [{"class": c, "probability": p} for c, p in ranked[: self.top]],
        }


def make_app(model_path, engine):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    classifier = Classifier(model_path, engine)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.post("/api/predict")
    async def predict(request: Request):
        data = await request.body()
        if not data:
            return JSONResponse({"error": "empty body"}, status_code=400)
        try:
            return await run_in_threadpool(classifier.predict, data)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            return JSONResponse({"error": f"cannot decode: {e}"}, status_code=422)

    return app


def app_factory():
    return make_app(os.environ["DEEPCAT_SERVE_MODEL"], os.environ.get("DEEPCAT_SERVE_ENGINE", "torch"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--engine", choices=["torch", "numpy"], default="torch")
    a = p.parse_args()
    import uvicorn

    os.environ["DEEPCAT_SERVE_MODEL"] = os.path.abspath(a.model)
    os.environ["DEEPCAT_SERVE_ENGINE"] = a.engine
    Classifier(a.model, a.engine)  # fail here, once, on a model that cannot be used
    uvicorn.run("serve_reference:app_factory", factory=True, host=a.host, port=a.port,
                workers=a.workers, log_level="warning", app_dir=os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    main()
