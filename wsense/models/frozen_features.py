"""Frozen features of the data set from the configured towers, cached on disk (see wsense.models.embedding_cache).

torch and the towers load on first use: the image check's screener imports this module in a serving process that
may never embed a photo."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from wsense.config import Config
from wsense.io import file_sha256


def backbone_fingerprints(config: Config) -> list[str]:
    """What each backbone's pooled features depend on (its weights, view size and the views), first one first: its
    frozen features are cached under this name, apart from the other backbones'."""
    views = "" if list(config.image_backbone.views) == ["center"] else "-" + "+".join(config.image_backbone.views)
    names = []
    for cfg in config.image_backbone.backbones():
        weights = "pretrained" if cfg.pretrained else "random-seed0"
        if cfg.weights_file:
            weights = "file-" + file_sha256(cfg.weights_file)[:16]
        names.append(f"image-{cfg.name}-{weights}-{cfg.image_size}{views}")
    return names


def feature_runtime(runtime: str) -> str:
    """The image runtime frozen features are computed in: the configured one, at float32 (openvino_bf16 runs as
    openvino), so that what is fitted on them (the search model's heads, the image check) comes out the same on any
    CPU. Indexing keeps bfloat16: its verdicts and rankings do not change (docs/experiments.md)."""
    return "openvino" if runtime == "openvino_bf16" else runtime


def image_fingerprint(config: Config) -> str:
    """What the image tower's pooled features depend on: its backbones' fingerprints, joined by " + "."""
    return " + ".join(backbone_fingerprints(config))


def text_fingerprint(config: Config) -> str:
    cfg = config.text_model
    source = cfg.name if not cfg.path else "path-" + Path(cfg.path).expanduser().resolve().as_posix().replace("/", "_")
    return f"text-{source}-{cfg.max_length}"


def per_backbone(vectors: np.ndarray, widths: Sequence[int] | None) -> list[np.ndarray]:
    """The tower's pooled features (photos, sum of widths) split into each backbone's columns; widths None: a tower
    of one backbone, whose features are all its own."""
    if widths is None:
        return [np.asarray(vectors)]
    return np.split(np.asarray(vectors), np.cumsum(widths)[:-1], axis=1)


class TowerCaches:
    """The tower's backbones' caches as one: a photo is cached when every backbone has it, and the tower's features
    (the backbones' side by side) are stored split into each backbone's cache."""

    def __init__(self, caches: list, widths: Sequence[int] | None):
        self.caches, self.widths = caches, widths

    def __contains__(self, key: str) -> bool:
        return all(key in cache for cache in self.caches)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.concatenate([cache.get(keys) for cache in self.caches], axis=1)

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        for cache, part in zip(self.caches, per_backbone(vectors, self.widths)):
            cache.put(keys, part)

    def save(self) -> None:
        for cache in self.caches:
            cache.save()


class FrozenFeatures:
    """Image features, ImageNet label probabilities and text embeddings, each computed once and cached."""

    def __init__(self, config: Config):
        self.config = config
        self.cache_dir = Path(config.cache_dir) / "embeddings"

    @cached_property
    def image_backbone(self):
        from wsense.models.image import create_image_backbone

        return create_image_backbone(self.config.image_backbone)

    @property
    def widths(self) -> list[int] | None:
        """Each backbone's feature width, to split the tower's features by backbone; None for a tower of one backbone,
        which needs no split and no model built to find its width (loading it costs indexing about a second)."""
        if len(self.config.image_backbone.backbones()) == 1:
            return None
        return self.image_backbone.widths

    @cached_property
    def text_encoder(self):
        from wsense.models.text import create_text_encoder

        return create_text_encoder(self.config.text_model)

    def _caches(self) -> list:
        """One EmbeddingCache per backbone of the tower, in order."""
        from wsense.models.embedding_cache import EmbeddingCache

        return [EmbeddingCache(self.cache_dir / f"{name}.npz") for name in backbone_fingerprints(self.config)]

    def images(self, paths: Sequence[Path], keys: Sequence[str] | None = None) -> np.ndarray:
        """Pooled features of photo files, each backbone's cached apart (a backbone shared by two towers is run
        once); `keys`: the files' sha256 where the caller has them already."""
        from wsense.models.embedding_cache import embed_images
        from wsense.models.photos import PhotoEncoder

        keys = list(keys) if keys is not None else [file_sha256(p) for p in paths]
        caches = TowerCaches(self._caches(), self.widths)
        if keys and all(key in caches for key in keys):  # indexing handed them over: no model to build
            return caches.get(keys)
        # Exporting a backbone to ONNX takes a few seconds: only when some photo is not cached yet.
        runtime = feature_runtime(self.config.embedding.image_runtime) if any(key not in caches for key in keys) \
            else "torch"
        # The whole tower in one pass: each photo is decoded and cut into views once for all its backbones.
        encoder = PhotoEncoder(self.image_backbone, self.config.image_backbone, runtime=runtime,
                               onnx_dir=Path(self.config.cache_dir) / "onnx")
        return embed_images(paths, encoder, caches, self.config.embedding.image_batch_size, keys)

    def encode(self, paths: Sequence[Path]) -> np.ndarray:
        """Pooled features of photo files, computed now and kept nowhere (uploads)."""
        import torch

        with torch.inference_mode():
            return self.encoder.encode(paths).float().numpy()

    @cached_property
    def encoder(self):
        from wsense.models.photos import PhotoEncoder

        return PhotoEncoder(self.image_backbone, self.config.image_backbone,
                            runtime=feature_runtime(self.config.embedding.image_runtime),
                            onnx_dir=Path(self.config.cache_dir) / "onnx")

    def remember(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store pooled features computed elsewhere by the same tower (keys: the photos' sha256): a shard added to
        each backbone's cache, which is not read for it (indexing hands features over batch after batch)."""
        from wsense.models.embedding_cache import EmbeddingCache

        for name, part in zip(backbone_fingerprints(self.config), per_backbone(vectors, self.widths)):
            EmbeddingCache.add(self.cache_dir / f"{name}.npz", keys, part)

    def label_probabilities(self, image_features: np.ndarray) -> np.ndarray:
        """ImageNet class probabilities from pooled features: each backbone's own classifier, averaged."""
        import torch

        with torch.inference_mode():
            return self.image_backbone.label_probabilities(torch.from_numpy(image_features)).numpy()

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        from wsense.models.embedding_cache import EmbeddingCache, embed_texts

        cache = EmbeddingCache(self.cache_dir / f"{text_fingerprint(self.config)}.npz")
        return embed_texts(texts, self.text_encoder, cache, self.config.embedding.text_batch_size)
