"""The image backbone's ONNX export run by OpenVINO, for indexing on CPU (embedding.image_runtime: openvino or
openvino_bf16).

The same file ONNX Runtime runs (wsense.models.image_onnx), checked there against the torch backbone first. OpenVINO
compiles it for the CPU at hand; on a CPU with bfloat16 units (Intel AMX or AVX-512 BF16), openvino_bf16 runs the
convolutions in bfloat16. Figures: benchmarks/README.md. A server keeps ONNX Runtime for uploads: one photo at a
time gains little, and OpenVINO's libraries would add to its memory.
"""
from __future__ import annotations

import numpy as np

from wsense.errors import WsenseError
from wsense.models.image_onnx import OnnxImagePath

PRECISION_HINTS = {"openvino": "f32", "openvino_bf16": "bf16"}
# Images per run: one photo's five views. Smaller runs stay in the CPU's caches (Lite0 in bf16: 1.8 ms an image in
# runs of 5, 2.0 in runs of 20, 2.2 in runs of 100).
CHUNK = 5
# fp32 reproduces ONNX Runtime's features within about 1e-5; bf16 within a cosine of about 0.998 on photos and 0.986
# on the synthetic probe (Lite2). Far below that, the compiled model is not the backbone.
MIN_PROBE_COSINE = 0.95


def require_openvino(runtime: str):
    try:
        import openvino
    except ImportError:
        raise WsenseError(f"embedding.image_runtime: {runtime} needs OpenVINO (pip install openvino), or set "
                          "embedding.image_runtime: onnx") from None
    return openvino


class OpenVinoImagePath:
    """Callable like OnnxImagePath: pixels (n, 3, s, s) or views (n, views, 3, s, s) -> pooled features (the mean
    over each image's views), computed by OpenVINO from `checked`'s export."""

    def __init__(self, checked: OnnxImagePath, runtime: str = "openvino_bf16"):
        if runtime not in PRECISION_HINTS:
            raise WsenseError(f"unknown OpenVINO runtime '{runtime}' (expected {' or '.join(PRECISION_HINTS)})")
        openvino = require_openvino(runtime)
        self.path, self.runtime = checked.path, runtime
        # LATENCY: one stream using every thread for each batch (THROUGHPUT would split the CPU into streams that a
        # single caller leaves idle: 2 to 4 times slower here).
        self.compiled = openvino.Core().compile_model(str(self.path), "CPU", {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[runtime], "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": checked.threads})
        self.request = self.compiled.create_infer_request()
        found = self.run(checked.probe["pixels"])
        cosine = (found * checked.reference).sum(1) / (
            np.linalg.norm(found, axis=1) * np.linalg.norm(checked.reference, axis=1) + 1e-12)
        if found.shape != checked.reference.shape or cosine.min() < MIN_PROBE_COSINE:
            raise WsenseError(f"{self.path}: OpenVINO ({runtime}) disagrees with the torch image tower (probe cosine "
                              f"{cosine.min():.3f}); set embedding.image_runtime: onnx")

    def __call__(self, pixels):
        """torch pixels (n, 3, s, s) or views (n, views, 3, s, s) -> torch pooled features, the mean over views."""
        import torch

        views = pixels if pixels.dim() == 5 else pixels[:, None]
        return torch.from_numpy(self.features(views.cpu().numpy()))

    def features(self, views: np.ndarray) -> np.ndarray:
        """Pooled features (n, dim) of views (n, views, 3, s, s): each image's mean over its views."""
        found = self.run(views.reshape(-1, *views.shape[2:]))
        return found.reshape(len(views), views.shape[1], -1).mean(1)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        # Runs of one size: a shape OpenVINO has not seen costs it a first, slower run.
        return np.concatenate([self.request.infer({0: pixels[start:start + CHUNK]})[self.compiled.output(0)].copy()
                               for start in range(0, len(pixels), CHUNK)])
