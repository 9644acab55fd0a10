"""The Python rendering of `deepcat serve`'s prediction route, for the load benchmark.

    .venv/bin/python bench/serve_reference.py MODEL [--host 127.0.0.1] [--port 8081] [--workers N]

FastAPI on uvicorn, Pillow and NumPy: `POST /api/predict` with the raw image as the body answers
the same JSON object as deepcat (path null, class, probability, probabilities, top);
`GET /healthz` answers {"status": "ok"}. The model file is read and the network rebuilt by
bench/check_cnn.py (every layer kind deepcat saves), with its weights in float32 as deepcat
computes; each image is preprocessed as the model records: EXIF orientation, RGB, resize to
image_size with the recorded filter (nearest by default), HWC order, / 255. One image per
request, as a typical Python service runs; `--workers` uvicorn processes (default: one per CPU).

Install with `scripts/setup-reference.sh --serve`; examples/serve_bench.rs starts it.
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


class Classifier:
    """A deepcat model file, ready to classify one image's bytes."""

    def __init__(self, path):
        self.meta, tensors = read_safetensors(path)
        _, self.layers, self.head = build_layers(self.meta, tensors, path)
        self.layers = [(kind, spec, {k: v.astype(np.float32) for k, v in ts.items()})
                       for kind, spec, ts in self.layers]
        self.size = int(self.meta["image_size"])
        self.filter = FILTERS[self.meta.get("resize", "nearest")]
        self.exif = self.meta.get("orientation") == "exif"
        self.path = path
        classes = len(class_probabilities(self.meta, self.head, self.outputs_for_check(), path)[0])
        self.top = 2 if classes == 2 else min(3, classes)

    def outputs_for_check(self):
        return forward(self.layers, self.head, np.zeros((1, self.size, self.size, 3), np.float32))

    def pixels(self, data):
        with Image.open(io.BytesIO(data)) as im:
            if self.exif:
                im = ImageOps.exif_transpose(im)
            im = im.convert("RGB").resize((self.size, self.size), self.filter)
            return np.asarray(im, dtype=np.float32)[None] / np.float32(255.0)

    def predict(self, data):
        probs = class_probabilities(self.meta, self.head, forward(self.layers, self.head, self.pixels(data)),
                                    self.path)[0]
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        best = ranked[0][0]
        return {
            "path": None,
            "class": best,
            "probability": probs[best],
            "probabilities": probs,
            "top": [{"class": c, "probability": p} for c, p in ranked[: self.top]],
        }


def make_app(model_path):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    classifier = Classifier(model_path)
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
    return make_app(os.environ["DEEPCAT_SERVE_MODEL"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    import uvicorn

    os.environ["DEEPCAT_SERVE_MODEL"] = os.path.abspath(a.model)
    Classifier(a.model)  # fail here, once, on a model that cannot be used
    uvicorn.run("serve_reference:app_factory", factory=True, host=a.host, port=a.port,
                workers=a.workers, log_level="warning", app_dir=os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    main()
