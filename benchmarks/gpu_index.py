"""Photo embedding throughput on a GPU (issue 17's target: 2,000 photos/s with five views on one H100/H200), with
the decode rate apart, and the agreement of the GPU path's features with the CPU path's.

    python benchmarks/gpu_index.py [--images DIR] [--photos 20000] [--config configs/default.yaml] [--out DIR]
    python benchmarks/gpu_index.py --device cpu --photos 64        # a dry run of the same code on the CPU

The catalog is the JPEGs of --images (default: the data set's 100 test photos, as they are, 500 x 375 or so)
listed over and over up to --photos, so after the first pass the files come from the page cache: the figures are
the decode and model rates, not a disk's. Measured, each after a warm-up batch:
  1. decode: file bytes to RGB tensors on the device (torchvision's nvJPEG, a batch per call), photos/s;
  2. decode and views: the same plus the configured views (embedding.gpu_decode), photos/s;
  3. the whole photo path of `wsense index` (PhotoEncoder as RelevanceScorer builds it from embedding.*:
     loader processes, views, backbone under autocast), photos/s, and the backbone alone on ready pixels;
  4. agreement: the pooled features of the first 100 photos against the CPU path's (PIL views, fp32 torch):
     the least and the median cosine.
Prints a table; writes gpu_index.json to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from wsense.config import load_config
from wsense.models.image import create_image_backbone, stack_pixels
from wsense.models.photos import PhotoEncoder, photo_device


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="wsense config (its image_backbone and embedding sections)")
    parser.add_argument("--images", help="a folder of JPEG photos (default: the data set's test photos)")
    parser.add_argument("--photos", type=int, default=20_000, help="photos to embed (the folder's, repeated)")
    parser.add_argument("--device", help="override embedding.device (cpu for a dry run)")
    parser.add_argument("--batch", type=int, help="override embedding.gpu_batch_size")
    parser.add_argument("--workers", type=int, help="override embedding.loader_workers")
    parser.add_argument("--out", default="benchmarks/out", help="folder for gpu_index.json")
    args = parser.parse_args()
    config = load_config(args.config)
    settings = config.embedding
    device = photo_device(args.device or settings.device)
    batch = args.batch or settings.gpu_batch_size
    workers = settings.loader_workers if args.workers is None else args.workers
    folder = Path(args.images) if args.images else config.data_dir / "test_images"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"{folder}: no JPEG photos")
    paths = [files[i % len(files)] for i in range(args.photos)]
    backbone = create_image_backbone(config.image_backbone)
    views = len(config.image_backbone.views)
    encoder = PhotoEncoder(backbone, config.image_backbone, device=device, batch_size=batch,
                           precision=settings.gpu_precision, decode_on_device=settings.gpu_decode, workers=workers)
    figures = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
               "photos": len(paths), "distinct_files": len(files), "views": views, "batch": batch,
               "loader_workers": workers, "precision": settings.gpu_precision, "decode_on_device": settings.gpu_decode,
               "backbones": [f"{b.name}@{b.image_size}" for b in config.image_backbone.backbones()]}
    from torchvision.io import ImageReadMode, decode_jpeg

    raw = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    sample = [raw[i % len(raw)] for i in range(min(len(paths), 10 * batch))]

    def decode_all(with_views: bool) -> float:
        decode_jpeg(sample[:batch], mode=ImageReadMode.RGB, device=device)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for first in range(0, len(sample), batch):
            images = decode_jpeg(sample[first:first + batch], mode=ImageReadMode.RGB, device=device)
            if with_views:
                stack_pixels([encoder.transform(image) for image in images])
        synchronize(device)
        return rate(len(sample), time.perf_counter() - start)

    figures["decode_photos_per_s"] = decode_all(False)
    figures["decode_and_views_photos_per_s"] = decode_all(True)

    pixels = stack_pixels([encoder.pixels(p) for p in files[:min(batch, 64)]])
    repeat = max(1, batch // len(pixels[0]))
    pixels = tuple(part.repeat(repeat, 1, 1, 1, 1).to(device) for part in pixels)
    encoder.features(pixels)  # warm-up (cuDNN picks its kernels)
    synchronize(device)
    start, rounds = time.perf_counter(), 5
    for _ in range(rounds):
        encoder.features(pixels)
    synchronize(device)
    figures["backbone_photos_per_s"] = rate(rounds * len(pixels[0]), time.perf_counter() - start)

    for _ in encoder.batches(paths[:batch], progress=False):
        pass  # warm-up: loader processes, kernels
    start = time.perf_counter()
    embedded = 0
    for good, _, _ in encoder.batches(paths, progress=True, desc="embedding"):
        embedded += len(good)
    figures["index_photos_per_s"] = rate(embedded, time.perf_counter() - start)

    check = files[:100]
    reference = PhotoEncoder(backbone, config.image_backbone)  # the CPU path: PIL views, fp32 torch
    expected = torch.cat([features for _, features, _ in reference.batches(check, progress=False)])
    got = torch.cat([features for _, features, _ in encoder.batches(check, progress=False)])
    cosine = torch.nn.functional.cosine_similarity(got, expected).numpy()
    figures["agreement_photos"] = len(check)
    figures["cosine_min"], figures["cosine_median"] = float(cosine.min()), float(np.median(cosine))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_index.json").write_text(json.dumps(figures, indent=1))
    print(f"| photo path on {figures['device']} ({views} views, {settings.gpu_precision}, batch {batch}, "
          f"{workers} loader workers) | photos/s |")
    print("|---|---|")
    for key, name in [("decode_photos_per_s", "decode alone (file bytes to RGB on the device)"),
                      ("decode_and_views_photos_per_s", "decode and views"),
                      ("backbone_photos_per_s", "backbone alone, on ready pixels"),
                      ("index_photos_per_s", f"the whole photo path of wsense index, {embedded} photos")]:
        print(f"| {name} | {figures[key]:,.1f} |")
    print(f"features against the CPU path, {len(check)} photos: cosine min {figures['cosine_min']:.5f}, "
          f"median {figures['cosine_median']:.6f}")


if __name__ == "__main__":
    main()
