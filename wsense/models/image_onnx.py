"""The image backbone's ONNX export, for embedding photos on CPU (embedding.image_runtime: onnx, run by ONNX
Runtime; openvino and openvino_bf16, by OpenVINO: wsense.models.image_openvino).

Pixels (n, 3, h, w) -> pooled features, the same numbers as the torch backbone (within 1e-5), in about a quarter
of its time on 2 CPU cores (EfficientNet-Lite0's depthwise convolutions are slow in eager torch). Indexing runs
one backbone pass per view of a photo, so this is most of an index's time. Each backbone of the image tower is
exported apart, kept beside the checkpoint as `image_tower-<backbone>-<key>.onnx`, the key a hash of its weights
and input size; a new export replaces only the same backbone's older ones.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from wsense.io import atomic_path
from wsense.models.onnx_path import OnnxPath, require_onnx, weights_key

EXPORT_FORMAT = "wsense-image-onnx-1"
FILE_PREFIX = "image_tower-"
SETTING = "embedding.image_runtime"
CHUNK = 20  # images (views) per ONNX Runtime run
# A correct export agrees within about 1e-5 on pooled features of magnitude ~1; a damaged one is far off.
TOLERANCE = 1e-3


def probe_pixels(size: int) -> np.ndarray:
    """A fixed, photo-like input: smooth colour gradients (two images, to exercise the batch axis)."""
    grid = np.linspace(-1.5, 1.5, size, dtype=np.float32)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    one = np.stack([x, y, x * y])
    return np.ascontiguousarray(np.stack([one, one[..., ::-1]]), dtype=np.float32)


def image_path_key(backbone, size: int) -> str:
    return weights_key(EXPORT_FORMAT, {"image_backbone.": backbone}, extra=str(size))


def export_image_path(backbone, path: str | Path, size: int) -> Path:
    """Export pixels -> pooled features (dynamic batch), written atomically."""
    import torch

    require_onnx(SETTING, "image tower")
    example = torch.from_numpy(probe_pixels(size))
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(backbone.eval(), (example,), str(tmp), dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "images"}, "features": {0: "images"}})
    return Path(path)


class OnnxImagePath(OnnxPath):
    """Callable like ImageBackbone: pixels (n, 3, size, size), or (n, views, 3, size, size) -> pooled features
    (the mean over each image's views)."""

    what, setting = "image tower", SETTING

    def __init__(self, backbone, directory: str | Path, threads: int | None = None, runtime: str = "onnx"):
        """The export of the torch `backbone` in `directory`, made or made again where needed, run by `runtime`
        (onnx: ONNX Runtime; openvino, openvino_bf16: OpenVINO, wsense.models.image_openvino)."""
        import torch

        self.runtime = runtime
        self.chunk = CHUNK
        if runtime != "onnx":
            from wsense.models import image_openvino

            image_openvino.check_runtime(runtime)  # before the export is judged: a missing OpenVINO is no damage
            self.chunk = image_openvino.CHUNK
        size = backbone.image_size
        self.file_prefix = f"{FILE_PREFIX}{backbone.name}-"
        path = Path(directory) / f"{self.file_prefix}{image_path_key(backbone, size)}.onnx"
        probe = probe_pixels(size)
        with torch.inference_mode():
            reference = backbone.eval()(torch.from_numpy(probe)).float().numpy()
        super().__init__(path, {"pixels": probe}, reference, TOLERANCE,
                         lambda: export_image_path(backbone, path, size), threads=threads)

    @classmethod
    def exported(cls, path: str | Path, size: int, reference: np.ndarray, threads: int | None = None
                 ) -> "OnnxImagePath":
        """An export made before, without the torch backbone: it must reproduce `reference` (the backbone's features
        of probe_pixels(size), kept when it was exported); a missing or damaged file is a WsenseError."""
        self = cls.__new__(cls)
        self.runtime, self.chunk = "onnx", CHUNK
        self.file_prefix = Path(path).name.rsplit("-", 1)[0] + "-"
        OnnxPath.__init__(self, Path(path), {"pixels": probe_pixels(size)}, reference, TOLERANCE, None,
                          threads=threads)
        return self

    def __call__(self, pixels):
        """torch pixels (n, 3, s, s) or views (n, views, 3, s, s) -> torch pooled features, the mean over views."""
        import torch

        views = pixels if pixels.dim() == 5 else pixels[:, None]
        return torch.from_numpy(self.features(views.cpu().numpy()))

    def features(self, views: np.ndarray) -> np.ndarray:
        """Pooled features (n, dim) of views (n, views, 3, s, s): each image's mean over its views."""
        found = self.run(views.reshape(-1, *views.shape[2:]))
        return found.reshape(len(views), views.shape[1], -1).mean(1)

    def new_session(self, threads: int):
        if self.runtime == "onnx":
            return super().new_session(threads)
        from wsense.models.image_openvino import OpenVinoSession

        return OpenVinoSession(self.path, self.runtime, threads)

    def agrees(self, found: np.ndarray, reference: np.ndarray) -> bool:
        if self.runtime == "openvino_bf16":
            from wsense.models.image_openvino import agrees_in_bf16

            return agrees_in_bf16(found, reference)
        return super().agrees(found, reference)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        # In chunks: ONNX Runtime keeps its peak activation memory (about 30 MB an image at 224 px), so one run
        # over a whole catalog batch's views would hold gigabytes (OpenVINO's own chunk: image_openvino.CHUNK).
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return np.concatenate([self.session.run(None, {"pixels": pixels[start:start + self.chunk]})[0]
                               for start in range(0, len(pixels), self.chunk)])
