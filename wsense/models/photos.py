"""The one path from photo files to pooled image features.

A photo is decoded, cut into the configured views (image_backbone.views) at each backbone's size, run through the
tower's backbones (torch, or on the CPU their ONNX export in ONNX Runtime or OpenVINO: embedding.image_runtime,
chosen once here), averaged over its views, and the backbones' features are put side by side. The frozen features
of training and the baselines, the catalog index and checkpoint evaluation all take their photos through
PhotoEncoder; a relevance model projects the features it returns.

On a GPU (embedding.device) the same path is fed for throughput: loader processes read the files, JPEGs are decoded
on the GPU (nvJPEG) and cut into the same views there, and the backbones run under autocast (fp16 by default) on
large batches. Its features agree with the CPU path's to a cosine of about 0.999 (tests/test_photo_device.py).
"""
from __future__ import annotations

import copy
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from wsense.config import IMAGE_RUNTIMES, PRECISIONS, ImageBackboneConfig
from wsense.data import load_image, read_image_file
from wsense.errors import WsenseError
from wsense.models.image import ImageTower, Pixels, TowerViews, pixels_to, stack_pixels

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
JPEG_MAGIC = b"\xff\xd8"
FIRST_BATCH = 4  # photos in the first batch of a CPU run


def photo_device(setting: str) -> torch.device:
    """embedding.device as a torch device: auto is a CUDA GPU where one is visible, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise WsenseError("embedding.device: cuda, but torch sees no CUDA GPU here; use auto or cpu")
    return torch.device(setting)


class _RawJpeg:
    """A JPEG file's bytes, to be decoded on the device."""

    def __init__(self, data: bytes):
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8)


class PhotoReader:
    """Photo files -> what the backbone's batch takes: the views of a photo decoded by PIL, or, where the device
    decodes JPEGs, the file's bytes (_RawJpeg). No model inside: loader processes get a copy."""

    def __init__(self, transform, decode_on_device: bool = False):
        self.transform, self.decode_on_device = transform, decode_on_device

    def pixels(self, path: str | Path, data: bytes | None = None) -> Pixels:
        """One photo's normalised views, per backbone (views, 3, size, size); a WsenseError names an unreadable file.
        `data`: the file's bytes where they have been read already."""
        return self.transform(load_image(Path(path), data, shorter_side=self.transform.decode_side))

    def load(self, path: str | Path, on_device: bool = True):
        """Views, a _RawJpeg (`on_device`, where the device decodes JPEGs), or the WsenseError saying why the photo
        cannot be read."""
        try:
            if self.decode_on_device and on_device:
                data = read_image_file(Path(path))
                return _RawJpeg(data) if data[:2] == JPEG_MAGIC else self.pixels(path, data)
            return self.pixels(path)
        except WsenseError as error:
            return error


class _PhotoFiles(Dataset):
    def __init__(self, paths: Sequence[str | Path], reader: PhotoReader):
        self.paths, self.reader = paths, reader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.reader.load(self.paths[i])


class PhotoEncoder:
    def __init__(self, tower: ImageTower, image_config: ImageBackboneConfig, *, runtime: str = "torch",
                 onnx_dir: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 32,
                 precision: str = "fp32", decode_on_device: bool = False, workers: int = 0):
        """`precision`: the backbone under autocast (fp32: none); `decode_on_device`: JPEGs are decoded by
        torchvision on `device` and cut into views there; `workers`: loader processes reading the photos."""
        self.device = torch.device(device)
        self.tower = tower.eval()
        if next(tower.parameters()).device.type != self.device.type:
            # The photo path's own copy on the device: the caller's model stays where it keeps it.
            self.tower = copy.deepcopy(tower).to(self.device).eval()
            if self.device.type == "cuda":
                self.tower.to(memory_format=torch.channels_last)
        self.transform = TowerViews(tower, image_config.views)  # a photo -> its views at each backbone's size
        self.batch_size = batch_size
        if precision not in PRECISIONS:
            raise WsenseError(f"unknown precision '{precision}' (expected {', '.join(PRECISIONS)})")
        self.autocast = AUTOCAST[precision]
        self.workers = workers
        self.reader = PhotoReader(self.transform, decode_on_device)
        self.onnx = None  # one OnnxImagePath per backbone where the tower runs from its ONNX export
        if runtime not in IMAGE_RUNTIMES:
            raise WsenseError(f"unknown image runtime '{runtime}' (expected {', '.join(IMAGE_RUNTIMES)})")
        if runtime != "torch":
            if self.device.type != "cpu":
                raise WsenseError(f"embedding.image_runtime: {runtime} runs on the CPU, not on {self.device}; use "
                                  "torch")
            if onnx_dir is None:
                raise WsenseError("the ONNX image tower needs a folder to keep its export in")
            from wsense.models.image_onnx import OnnxImagePath

            self.onnx = [OnnxImagePath(backbone, onnx_dir, runtime=runtime) for backbone in tower.backbones]

    def pixels(self, path: str | Path) -> Pixels:
        """One photo's normalised views per backbone; a WsenseError names an unreadable file."""
        return self.reader.pixels(path)

    def _decode(self, raws: list[_RawJpeg], paths: list) -> list:
        """Views of JPEGs decoded on the device, one batch call; a file nvJPEG refuses goes through PIL instead."""
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [raw.data for raw in raws]
        try:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # one bad file fails the batch call: decode one by one
            images = []
            for one in data:
                try:
                    images.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    images.append(None)
        views = []
        for image, path in zip(images, paths):
            views.append(self.transform(image) if image is not None else self.reader.load(path, on_device=False))
        return views

    @torch.inference_mode()
    def features(self, pixels: Pixels) -> torch.Tensor:
        """Pooled features (n, dim) of transformed photos (per backbone (n, views, 3, size, size)), averaged over
        the views, the backbones' side by side."""
        if self.onnx is not None:
            return torch.cat([onnx(part).float() for onnx, part in zip(self.onnx, pixels)], dim=-1)
        return torch.cat([self._backbone_features(backbone, part)
                          for backbone, part in zip(self.tower.backbones, pixels)], dim=-1)

    def _backbone_features(self, backbone, pixels: torch.Tensor) -> torch.Tensor:
        views = pixels.to(self.device, non_blocking=True)
        views = views if views.dim() == 5 else views[:, None]
        flat = views.flatten(0, 1)
        if self.device.type == "cuda":
            flat = flat.contiguous(memory_format=torch.channels_last)  # the layout cuDNN's half-precision kernels want
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            features = backbone(flat).float()
        return features.view(len(views), views.shape[1], -1).mean(1).cpu()

    def _loaded(self, paths: Sequence[str | Path]) -> Iterator[tuple[list, list, Pixels | None]]:
        """(paths, what load() made of each, the readable ones' views stacked or None) per batch: in this process,
        or from `workers` loader processes."""
        if not self.workers:
            # One thread reads, cuts and stacks the next batch while the backbones run on this one (PIL's decode
            # and resizes and torch's copies let other threads run).
            # The first batch small: the backbones start on it while the next is cut.
            first = min(self.batch_size, FIRST_BATCH)
            chunks = [list(paths[:first])] if paths else []
            chunks += [list(paths[start:start + self.batch_size])
                       for start in range(first, len(paths), self.batch_size)]
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wsense-views") as pool:
                ahead = pool.submit(self._load_stacked, chunks[0]) if chunks else None
                for i, chunk in enumerate(chunks):
                    items, stacked = ahead.result()
                    ahead = pool.submit(self._load_stacked, chunks[i + 1]) if i + 1 < len(chunks) else None
                    yield chunk, items, stacked
            return
        loader = DataLoader(_PhotoFiles(paths, self.reader), batch_size=self.batch_size, num_workers=self.workers,
                            collate_fn=list, prefetch_factor=4, pin_memory=False)
        for start, items in zip(range(0, len(paths), self.batch_size), loader):
            yield list(paths[start:start + self.batch_size]), items, None

    def _load_stacked(self, chunk: list) -> tuple[list, Pixels | None]:
        items = [self.reader.load(path) for path in chunk]
        readable = [item for item in items if not isinstance(item, (WsenseError, _RawJpeg))]
        return items, (stack_pixels(readable) if readable and len(readable) == len(items) else None)

    def encode(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Pooled features of a batch of photo files, one row each, in order."""
        return self.features(stack_pixels([self.pixels(p) for p in paths]))

    def batches(self, paths: Sequence[str | Path], *, skip_unreadable: bool = False, desc: str = "embedding photos",
                progress: bool = True) -> Iterator[tuple[list, torch.Tensor, list[tuple[str | Path, str]]]]:
        """(paths read, their pooled features, [(unreadable path, why)]) per batch, with a progress bar; an
        unreadable photo stops the run unless `skip_unreadable`."""
        with tqdm(total=len(paths), desc=desc, unit="photo", file=sys.stderr,
                  disable=not progress or not paths) as bar:
            for chunk, items, stacked in self._loaded(paths):
                raw = [i for i, item in enumerate(items) if isinstance(item, _RawJpeg)]
                if raw:
                    for i, views in zip(raw, self._decode([items[i] for i in raw], [chunk[i] for i in raw])):
                        items[i] = views
                good, pixels, skipped = [], [], []
                for path, item in zip(chunk, items):
                    if isinstance(item, WsenseError):
                        if not skip_unreadable:
                            raise item
                        skipped.append((path, str(item).split(": ", 1)[-1]))
                    else:
                        pixels.append(pixels_to(item, self.device))
                        good.append(path)
                if stacked is None and pixels:
                    stacked = stack_pixels(pixels)
                features = self.features(stacked) if pixels else torch.zeros(0, self.tower.num_features)
                bar.update(len(chunk))
                yield good, features, skipped
