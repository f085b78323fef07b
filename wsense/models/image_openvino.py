"""OpenVINO sessions for the image backbone's ONNX export, for indexing on CPU (embedding.image_runtime: openvino or
openvino_bf16): what OnnxImagePath runs instead of an ONNX Runtime session.

OpenVINO compiles the export for the CPU at hand; on a CPU with bfloat16 units (Intel AMX or AVX-512 BF16),
openvino_bf16 runs the convolutions in bfloat16, elsewhere in float32. Figures: docs/experiments.md. A server keeps
ONNX Runtime for uploads: one photo at a time gains little, and OpenVINO's libraries would add to its memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wsense.errors import WsenseError

PRECISION_HINTS = {"openvino": "f32", "openvino_bf16": "bf16"}
# Images per run: one photo's five views. Smaller runs stay in the CPU's caches (Lite0 in bf16: 1.8 ms an image in
# runs of 5, 2.0 in runs of 20, 2.2 in runs of 100).
CHUNK = 5
# On the synthetic probe, float32 reproduces torch within about 1e-5; bfloat16 within a cosine of about 0.986
# (Lite2; 0.998 on photos). Far below that, the compiled model is not the backbone.
MIN_BF16_PROBE_COSINE = 0.95


def check_runtime(runtime: str):
    """OpenVINO, for `runtime` (openvino or openvino_bf16); a WsenseError where either is missing."""
    if runtime not in PRECISION_HINTS:
        raise WsenseError(f"unknown OpenVINO runtime '{runtime}' (expected {' or '.join(PRECISION_HINTS)})")
    try:
        import openvino
    except ImportError:
        raise WsenseError(f"embedding.image_runtime: {runtime} needs OpenVINO (pip install openvino), or set "
                          "embedding.image_runtime: onnx") from None
    return openvino


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO, run like an ONNX Runtime session: run(None, {"pixels": x}) -> [features]."""

    def __init__(self, path: str | Path, runtime: str, threads: int):
        openvino = check_runtime(runtime)
        # LATENCY: one stream using every thread for each run (THROUGHPUT splits the CPU into streams that a single
        # caller leaves idle: 2 to 4 times slower here).
        self.compiled = openvino.Core().compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[runtime], "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads})
        self.request = self.compiled.create_infer_request()

    def run(self, _outputs, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        found = self.request.infer({0: inputs["pixels"]})
        return [found[self.compiled.output(0)].copy()]


def agrees_in_bf16(found: np.ndarray, reference: np.ndarray) -> bool:
    """Whether bfloat16 features of the probe are the backbone's: each row within MIN_BF16_PROBE_COSINE."""
    cosine = (found * reference).sum(1) / (np.linalg.norm(found, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12)
    return bool(cosine.min() >= MIN_BF16_PROBE_COSINE)
