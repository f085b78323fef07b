"""Photo embedding throughput in one process against Ray with local CPU workers, on the test photos.

Only the photo path is timed (decode, the five views, the image tower, the projection): the image check and the
index's bookkeeping are the same either way. Ray's start-up (the local cluster and the actors loading the model)
is timed apart from the photos/s of its run.

    python benchmarks/ray_index.py [--checkpoint runs/final/best] [--workers 2] [--repeat 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from wsense.config import load_config
from wsense.data import load_data
from wsense.serving.ray_index import RayPhotoBatches
from wsense.serving.scoring import RelevanceScorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/final/best")
    parser.add_argument("--config", help="runtime settings (default: configs/default.yaml)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="times over the photos (Ray's start-up counted once)")
    args = parser.parse_args()
    config = load_config(args.config)
    data = load_data(config.data_dir)
    paths = [data.test_image_dir / name for name in data.test_images] * args.repeat

    scorer = RelevanceScorer.from_checkpoint(args.checkpoint, config)
    began = time.perf_counter()
    one = {str(p): v for done, vectors, _, _ in scorer.photo_batches(paths, progress=False)
           for p, v in zip(done, vectors.numpy())}
    alone = time.perf_counter() - began
    print(f"one process, {torch.get_num_threads()} torch threads: {len(paths) / alone:.1f} photos/s "
          f"({len(paths)} photos)")

    ray = RayPhotoBatches(args.checkpoint, config, workers=args.workers, batch_size=config.embedding.image_batch_size)
    began, first, after_first = time.perf_counter(), None, 0
    found = {}
    for done, vectors, _, _ in ray(paths, progress=False):
        if first is None:
            first = time.perf_counter()
        else:
            after_first += len(done)
        found.update((str(p), v) for p, v in zip(done, vectors.numpy()))
    total = time.perf_counter() - began
    print(f"Ray, {args.workers} local workers: {after_first / (began + total - first):.1f} photos/s once running, "
          f"{len(paths) / total:.1f} with start-up ({total:.0f} s in all; first batch after {first - began:.0f} s); "
          f"max |difference| from one process {max(np.abs(found[p] - v).max() for p, v in one.items()):.1e}")


if __name__ == "__main__":
    main()
