"""The one path from photo files to pooled image features.

A photo is decoded, cut into the configured views (image_backbone.views) at the backbone's size, run through the
backbone (torch, or ONNX Runtime on the CPU: embedding.image_runtime, chosen once here) and averaged over its
views. The frozen features of training and the baselines, the catalog index and checkpoint evaluation all take
their photos through PhotoEncoder; a relevance model projects the features it returns.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from wsense.config import IMAGE_RUNTIMES, ImageBackboneConfig
from wsense.data import load_image
from wsense.errors import WsenseError
from wsense.models.image import ImageBackbone, image_transform


class PhotoEncoder:
    def __init__(self, backbone: ImageBackbone, image_config: ImageBackboneConfig, *, runtime: str = "torch",
                 onnx_dir: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 32):
        self.backbone = backbone.eval()
        self.transform = image_transform(backbone.spec, image_config)  # a photo -> its views
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.onnx = None  # an OnnxImagePath where the backbone runs in ONNX Runtime
        if runtime not in IMAGE_RUNTIMES:
            raise WsenseError(f"unknown image runtime '{runtime}' (expected {' or '.join(IMAGE_RUNTIMES)})")
        if runtime == "onnx":
            if self.device.type != "cpu":
                raise WsenseError(f"embedding.image_runtime: onnx runs on the CPU, not on {self.device}; use torch")
            if onnx_dir is None:
                raise WsenseError("the ONNX image tower needs a folder to keep its export in")
            from wsense.models.image_onnx import OnnxImagePath

            self.onnx = OnnxImagePath(backbone, onnx_dir, self.transform.size)

    def pixels(self, path: str | Path) -> torch.Tensor:
        """One photo's normalised views, (views, 3, size, size); a WsenseError names an unreadable file."""
        return self.transform(load_image(Path(path)))

    @torch.inference_mode()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled features (n, dim) of transformed photos (n, views, 3, size, size), averaged over the views."""
        if self.onnx is not None:
            return self.onnx(pixels).float()
        return self.backbone(pixels.to(self.device)).float().cpu()

    def encode(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Pooled features of a batch of photo files, one row each, in order."""
        return self.features(torch.stack([self.pixels(p) for p in paths]))

    def batches(self, paths: Sequence[str | Path], *, skip_unreadable: bool = False, desc: str = "embedding photos",
                progress: bool = True) -> Iterator[tuple[list, torch.Tensor, list[tuple[str | Path, str]]]]:
        """(paths read, their pooled features, [(unreadable path, why)]) per batch, with a progress bar; an
        unreadable photo stops the run unless `skip_unreadable`."""
        with tqdm(total=len(paths), desc=desc, unit="photo", file=sys.stderr,
                  disable=not progress or not paths) as bar:
            for start in range(0, len(paths), self.batch_size):
                chunk = paths[start:start + self.batch_size]
                good, pixels, skipped = [], [], []
                for path in chunk:
                    try:
                        pixels.append(self.pixels(path))
                        good.append(path)
                    except WsenseError as error:
                        if not skip_unreadable:
                            raise
                        skipped.append((path, str(error).split(": ", 1)[-1]))
                features = self.features(torch.stack(pixels)) if pixels else torch.zeros(0, self.backbone.num_features)
                bar.update(len(chunk))
                yield good, features, skipped
