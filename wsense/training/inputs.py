"""Model inputs held in memory for a training run, gathered into batches by index.

Frozen mode keeps the towers' outputs (cached on disk by wsense.models.frozen_features); partial and full modes keep
each photo's views (image_backbone.views, as search embeds it) decoded once at training resolution as uint8 tensors
on the training device (augmented there in batches, never decoded again) and captions tokenised once.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from wsense.config import Config
from wsense.data import load_image
from wsense.models.frozen_features import FrozenFeatures
from wsense.models.views import VIEWS, check_views
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


def random_resized_crops(pixels: torch.Tensor | Sequence[torch.Tensor], size: int | Sequence[int],
                         scale: tuple[float, float] = (0.6, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                         flip: bool = True):
    """An independent random resized crop (and horizontal flip) for every image of a batch, in one
    bilinear resampling on the batch's device: float (n, 3, s, s) in, float (n, 3, size, size) out. Given a list
    of batches of the same images (one per backbone, each with its own size), every image's crop is the same box
    in each of them, and a list comes out.

    torchvision's v2 transforms draw one crop for a whole batch; a Python loop over images is too slow to
    feed a GPU. Crop boxes are drawn as RandomResizedCrop draws them (area share and log aspect ratio),
    clamped to the image instead of re-drawn."""
    if isinstance(pixels, torch.Tensor):
        return random_resized_crops([pixels], [size], scale, ratio, flip)[0]
    n, device = pixels[0].shape[0], pixels[0].device
    area = torch.empty(n, device=device).uniform_(*scale)
    log_ratio = torch.empty(n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)   # shares of the image side
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    centre_x = (torch.rand(n, device=device) * 2 - 1) * (1 - width)  # in [-1, 1] coordinates
    centre_y = (torch.rand(n, device=device) * 2 - 1) * (1 - height)
    sign = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=device)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = width * sign, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    crops = []
    for part, side in zip(pixels, size):
        grid = nn.functional.affine_grid(theta, [n, part.shape[1], side, side], align_corners=False)
        crops.append(nn.functional.grid_sample(part, grid, mode="bilinear", padding_mode="border",
                                               align_corners=False))
    return crops


class PixelInputs:
    """Each photo's views decoded once into uint8 tensors (photos x views x 3 x size x size, one tensor per image
    backbone at its size) on the training device; captions tokenised once. Training takes one random view per
    photo, augmented in batches (random resized crop and flip, the same for every backbone); evaluation takes every
    view, which the backbones average, exactly as search does."""

    def __init__(self, config: Config, model: RelevanceModel, image_paths: dict[str, Path], texts: Sequence[str],
                 device: str | torch.device = "cpu"):
        backbones = model.image_backbone.backbones
        self.sizes = [backbone.image_size for backbone in backbones]
        views = check_views(config.image_backbone.views)
        self.augment = config.training.augment
        self.image_names = list(image_paths)
        self.image_index = {name: i for i, name in enumerate(self.image_names)}
        pixels = [torch.empty((len(self.image_names), len(views), 3, size, size), dtype=torch.uint8)
                  for size in self.sizes]
        for i, name in enumerate(tqdm(self.image_names, desc="decoding images", unit="image", file=sys.stderr)):
            image = load_image(image_paths[name])
            for part, size in zip(pixels, self.sizes):
                part[i] = torch.stack([v2.functional.pil_to_tensor(VIEWS[view](image, size)) for view in views])
        self.pixels = [part.to(device) for part in pixels]
        self.mean = [torch.tensor(b.spec.mean, device=device).view(1, 3, 1, 1) * 255 for b in backbones]
        self.std = [torch.tensor(b.spec.std, device=device).view(1, 3, 1, 1) * 255 for b in backbones]
        self.texts = list(dict.fromkeys(texts))
        self.text_index = {text: i for i, text in enumerate(self.texts)}
        tokens = model.text_encoder.tokenize(self.texts)
        self.input_ids, self.attention_mask = tokens["input_ids"], tokens["attention_mask"]

    def image_batch(self, index: torch.Tensor, *, train: bool) -> dict[str, tuple[torch.Tensor, ...]]:
        """Normalised pixels, per image backbone: (n, 3, size, size), one view per photo, for training;
        (n, views, 3, size, size) otherwise."""
        index = index.to(self.pixels[0].device)
        if not train:
            return {"pixels": tuple((part[index].float() - mean[None]) / std[None]
                                    for part, mean, std in zip(self.pixels, self.mean, self.std))}
        view = torch.randint(self.pixels[0].shape[1], (len(index),), device=index.device)
        pixels = [part[index, view].float() for part in self.pixels]
        if self.augment:
            pixels = random_resized_crops(pixels, self.sizes)
        return {"pixels": tuple((part - mean) / std for part, mean, std in zip(pixels, self.mean, self.std))}

    def text_batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = self.attention_mask[index.cpu()]
        length = int(mask.sum(1).max())
        return {"input_ids": self.input_ids[index.cpu(), :length], "attention_mask": mask[:, :length]}
