"""A photo's views in numpy: the squares each image backbone sees (image_backbone.views), cut from a PIL image.

The one definition of the views for decoded photos: the torch photo path (wsense.models.image.ImageViews) takes its
pixels from here, and so does the ONNX photo path of a serving process without torch (OnnxPhotoPath). The resizes and
crops are PIL's, as torchvision does them on a PIL image (bicubic, antialiased; the same sizes and offsets), so
both paths get the same pixels to the bit. A GPU's decoded tensors are cut by torchvision in wsense.models.image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from wsense.data import load_image
from wsense.errors import WsenseError


def _resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """The shorter side to `size`, the longer in proportion (rounded down), as torchvision's resize(image, size)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new = (new_short, new_long) if width <= height else (new_long, new_short)
    return image if new == (width, height) else image.resize(new, Image.BICUBIC)


def _crop(image: Image.Image, top: int, left: int, size: int) -> Image.Image:
    return image.crop((left, top, left + size, top + size))


def _square_end(image: Image.Image, size: int, last: bool, resize=_resize_shorter) -> Image.Image:
    """The square at one end of the longer side, after resizing the shorter side to `size`."""
    image = resize(image, size)
    width, height = image.size
    if width >= height:
        return _crop(image, 0, width - size if last else 0, size)
    return _crop(image, height - size if last else 0, 0, size)


def _center(image: Image.Image, size: int, resize=_resize_shorter) -> Image.Image:
    """The ImageNet eval crop: shorter side resized to size / 0.875, centre square of `size`."""
    image = resize(image, round(size / 0.875))
    width, height = image.size
    return _crop(image, int(round((height - size) / 2.0)), int(round((width - size) / 2.0)), size)


def _full(image: Image.Image, size: int, resize=_resize_shorter) -> Image.Image:
    return image if image.size == (size, size) else image.resize((size, size), Image.BICUBIC)


# A photo's views, each a square of the training size. The centre crop alone misses the sides of a landscape
# photo, where captions often find their subject; averaging the pooled features of views that together cover
# the whole photo gave grouped CV Spearman 0.78 against 0.765 (see configs/default.yaml). `resize` makes the
# shorter side a given length (view_pixels passes one that makes each length once for all of a photo's views).
VIEWS = {
    "center": _center,
    "flip": lambda image, size, resize=_resize_shorter: _center(image, size, resize).transpose(
        Image.Transpose.FLIP_LEFT_RIGHT),
    "full": _full,
    "first": lambda image, size, resize=_resize_shorter: _square_end(image, size, False, resize),
    "last": lambda image, size, resize=_resize_shorter: _square_end(image, size, True, resize),
}


def check_views(views) -> list[str]:
    views = list(views)
    unknown = [view for view in views if view not in VIEWS]
    if not views or unknown:
        raise WsenseError(f"image_backbone.views: {', '.join(unknown) or 'none given'}: expected a list of "
                          f"{', '.join(VIEWS)}")
    return views


def view_pixels(image: Image.Image, size: int, views: Sequence[str], mean, std) -> np.ndarray:
    """The views of an RGB image as float32 (views, 3, size, size), scaled to [0, 1] and normalised by the
    backbone's mean and std (the same float32 operations as torchvision's to_tensor and normalize)."""
    made: dict[int, Image.Image] = {}

    def resize(photo: Image.Image, side: int) -> Image.Image:  # the centre and its mirror, both ends: one resize each
        if side not in made:
            made[side] = _resize_shorter(photo, side)
        return made[side]

    crops = np.stack([np.asarray(VIEWS[view](image, size, resize), dtype=np.uint8) for view in views])
    # Channels first while still bytes: the float arrays are then made in the order the backbones read them.
    pixels = np.ascontiguousarray(crops.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)
    mean, std = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return (pixels - mean) / std


def decode_side(sizes: Sequence[int]) -> int:
    """The shorter side a photo is decoded at for views of these backbone sizes: 1.5 times the largest resize its
    views make (the centre crop's shorter side). A camera file's JPEG is decoded at the smallest DCT scale still that
    large; the antialiased resizes keep what they kept from a full decode (embeddings agree to a cosine of 0.9997
    on 24-megapixel files), at a fraction of its cost."""
    return round(1.5 * max(round(size / 0.875) for size in sizes))


class OnnxPhotoPath:
    """Photo files -> pooled features, without torch: views per backbone (view_pixels), each backbone's exported
    graph (OnnxImagePath), the mean over a photo's views, the backbones' features side by side. `towers`: per
    backbone its size, mean and std; `views`: image_backbone.views."""

    def __init__(self, onnx_paths: list, towers: list[dict], views: Sequence[str]):
        self.onnx_paths, self.towers, self.views = onnx_paths, towers, check_views(views)
        self.decode_side = decode_side([tower["size"] for tower in towers])

    def features(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Pooled features (photos, features) of photo files, in order; an unreadable photo is a WsenseError."""
        images = [load_image(Path(path), shorter_side=self.decode_side) for path in paths]
        parts = []
        for onnx, tower in zip(self.onnx_paths, self.towers):
            views = np.stack([view_pixels(image, tower["size"], self.views, tower["mean"], tower["std"])
                              for image in images])
            parts.append(onnx.features(views))
        return np.concatenate(parts, axis=-1)
