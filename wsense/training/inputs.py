"""Model inputs held in memory for a training run, gathered into batches by index.

Frozen mode keeps the towers' outputs (cached on disk by wsense.features); partial and full modes keep
images decoded once at training resolution as uint8 tensors (augmented on tensors, never decoded again)
and captions tokenised once.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch
from torchvision.transforms import v2
from tqdm.auto import tqdm

from wsense.config import Config
from wsense.data import load_image
from wsense.features import FrozenFeatures
from wsense.models.relevance import RelevanceModel


class FrozenInputs:
    """Cached pooled image features, ImageNet label probabilities and sentence embeddings."""

    def __init__(self, config: Config, image_paths: dict[str, Path], texts: Sequence[str]):
        features = FrozenFeatures(config)
        self.image_names = list(image_paths)
        self.image_index = {name: i for i, name in enumerate(self.image_names)}
        pooled = features.images([image_paths[name] for name in self.image_names])
        self.image_features = torch.from_numpy(pooled)
        self.label_probabilities = torch.from_numpy(features.label_probabilities(pooled))
        self.texts = list(dict.fromkeys(texts))
        self.text_index = {text: i for i, text in enumerate(self.texts)}
        self.text_features = torch.from_numpy(features.texts(self.texts))

    def image_batch(self, index: torch.Tensor, *, train: bool) -> dict[str, torch.Tensor]:
        index = index.cpu()
        return {"image_features": self.image_features[index], "label_probabilities": self.label_probabilities[index]}

    def text_batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text_features": self.text_features[index.cpu()]}


class PixelInputs:
    """Images decoded once (shorter side resized, centre square crop) and captions tokenised once."""

    def __init__(self, config: Config, model: RelevanceModel, image_paths: dict[str, Path], texts: Sequence[str]):
        size = config.image_backbone.image_size
        self.stored = round(size / 0.875)
        self.image_names = list(image_paths)
        self.image_index = {name: i for i, name in enumerate(self.image_names)}
        decode = v2.Compose([v2.PILToTensor(), v2.Resize(self.stored, antialias=True), v2.CenterCrop(self.stored)])
        self.pixels = torch.empty((len(self.image_names), 3, self.stored, self.stored), dtype=torch.uint8)
        for i, name in enumerate(tqdm(self.image_names, desc="decoding images", unit="image", file=sys.stderr)):
            self.pixels[i] = decode(load_image(image_paths[name]))
        mean, std = model.image_backbone.spec.mean, model.image_backbone.spec.std
        normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        self.train_transform = v2.Compose(
            ([v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip()]
             if config.training.augment else [v2.CenterCrop(size)]) + normalise
        )
        self.eval_transform = v2.Compose([v2.CenterCrop(size)] + normalise)
        self.texts = list(dict.fromkeys(texts))
        self.text_index = {text: i for i, text in enumerate(self.texts)}
        tokens = model.text_encoder.tokenize(self.texts)
        self.input_ids, self.attention_mask = tokens["input_ids"], tokens["attention_mask"]

    def image_batch(self, index: torch.Tensor, *, train: bool) -> dict[str, torch.Tensor]:
        pixels = self.pixels[index.cpu()]
        transform = self.train_transform if train else self.eval_transform
        # One random crop per image: a batched v2 transform would share one crop across the batch.
        return {"pixels": torch.stack([transform(p) for p in pixels]) if train else transform(pixels)}

    def text_batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = self.attention_mask[index.cpu()]
        length = int(mask.sum(1).max())
        return {"input_ids": self.input_ids[index.cpu(), :length], "attention_mask": mask[:, :length]}
