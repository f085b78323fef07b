"""Model towers: pluggable image backbones (timm) and the MiniLM text encoder, loaded on first use: the serving side
of the package (wsense.models.serving) runs without torch, and importing any wsense.models module must not pull it
in."""
from __future__ import annotations

from importlib import import_module

_TOWERS = {
    "ImageBackbone": "wsense.models.image", "ImageTower": "wsense.models.image",
    "create_image_backbone": "wsense.models.image",
    "TextEncoder": "wsense.models.text", "create_text_encoder": "wsense.models.text",
}
__all__ = sorted(_TOWERS)


def __getattr__(name: str):
    if name in _TOWERS:
        return getattr(import_module(_TOWERS[name]), name)
    raise AttributeError(f"module 'wsense.models' has no attribute {name!r}")
