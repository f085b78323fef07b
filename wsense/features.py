"""Frozen features of the data set from the configured towers, cached on disk (see wsense.embeddings)."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from wsense.config import Config
from wsense.embeddings import EmbeddingCache, embed_images, embed_texts
from wsense.io import file_sha256
from wsense.models import create_image_backbone, create_text_encoder
from wsense.models.photos import PhotoEncoder


def image_fingerprint(config: Config) -> str:
    cfg = config.image_backbone
    weights = "pretrained" if cfg.pretrained else "random-seed0"
    if cfg.weights_file:
        weights = "file-" + file_sha256(cfg.weights_file)[:16]
    views = "" if list(cfg.views) == ["center"] else "-" + "+".join(cfg.views)
    return f"image-{cfg.name}-{weights}-{cfg.image_size}{views}"


def text_fingerprint(config: Config) -> str:
    cfg = config.text_model
    source = cfg.name if not cfg.path else "path-" + Path(cfg.path).expanduser().resolve().as_posix().replace("/", "_")
    return f"text-{source}-{cfg.max_length}"


class FrozenFeatures:
    """Image features, ImageNet label probabilities and text embeddings, each computed once and cached."""

    def __init__(self, config: Config):
        self.config = config
        self.cache_dir = Path(config.cache_dir) / "embeddings"

    @cached_property
    def image_backbone(self):
        # Random init is seeded so that cached features stay valid across runs.
        torch.manual_seed(0)
        return create_image_backbone(self.config.image_backbone)

    @cached_property
    def text_encoder(self):
        return create_text_encoder(self.config.text_model)

    def images(self, paths: Sequence[Path], keys: Sequence[str] | None = None) -> np.ndarray:
        """Pooled features of photo files; `keys`: their sha256 where the caller has them already."""
        cache = EmbeddingCache(self.cache_dir / f"{image_fingerprint(self.config)}.npz")
        keys = list(keys) if keys is not None else [file_sha256(p) for p in paths]
        # Exporting the backbone to ONNX takes a few seconds: only when some photo is not cached yet.
        encoder = self.encoder if any(key not in cache for key in keys) else self._encoder("torch")
        return embed_images(paths, encoder, cache, self.config.embedding.image_batch_size, keys)

    def encode(self, paths: Sequence[Path]) -> np.ndarray:
        """Pooled features of photo files, computed now and kept nowhere (uploads)."""
        with torch.inference_mode():
            return self.encoder.encode(paths).float().numpy()

    @cached_property
    def encoder(self) -> PhotoEncoder:
        return self._encoder(self.config.embedding.image_runtime)

    def _encoder(self, runtime: str) -> PhotoEncoder:
        return PhotoEncoder(self.image_backbone, self.config.image_backbone, runtime=runtime,
                            onnx_dir=Path(self.config.cache_dir) / "onnx")

    def remember(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store pooled features computed elsewhere by the same backbone (keys: the photos' sha256)."""
        cache = EmbeddingCache(self.cache_dir / f"{image_fingerprint(self.config)}.npz")
        if any(key not in cache for key in keys):
            cache.put(keys, vectors)
            cache.save()

    def label_probabilities(self, image_features: np.ndarray) -> np.ndarray:
        """ImageNet class probabilities from pooled features through the backbone's own classifier."""
        with torch.inference_mode():
            logits = self.image_backbone.classify(torch.from_numpy(image_features))
        return logits.softmax(-1).numpy()

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        cache = EmbeddingCache(self.cache_dir / f"{text_fingerprint(self.config)}.npz")
        return embed_texts(texts, self.text_encoder, cache, self.config.embedding.text_batch_size)
