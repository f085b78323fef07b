"""Speed of the image-side legal check: photos per second for the check alone (face detection, ages, people,
frozen image features, verdict) and for indexing with it, from empty caches, on the 100 test photos.

    python benchmarks/image_check.py [--checkpoint runs/final/best] [--photos 100]

Indexing hands the frozen search model's pooled features to the check, so the image backbone runs once per
photo; the check's own cost there is the face analysis. Needs the fitted check (fitted on first use).
"""
from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time
from pathlib import Path

from wsense.config import load_config
from wsense.data import load_data
from wsense.safety.screener import PhotoScreener, load_or_fit_screener
from wsense.safety.faces import FaceAnalyzer, FaceCache, analyze_photos
from wsense.serving.search import SearchEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/final/best")
    parser.add_argument("--config", help="settings (default: configs/default.yaml)")
    parser.add_argument("--photos", type=int, default=100, help="how many test photos")
    args = parser.parse_args()
    config = load_config(args.config)
    load_or_fit_screener(config)
    data = load_data(config.data_dir, check_images=False)
    names = data.test_images[:args.photos]
    paths = [data.test_image_dir / name for name in names]
    FaceAnalyzer()  # first load (model files, ONNX sessions) outside the timings

    with tempfile.TemporaryDirectory() as empty:
        fresh = copy.deepcopy(config)
        fresh.cache_dir = empty
        start = time.perf_counter()
        list(analyze_photos(paths, FaceCache(empty), progress=False))
        faces = time.perf_counter() - start
        checker = PhotoScreener.from_config(fresh)
        start = time.perf_counter()
        checker.screen_photos(paths, progress=False)  # faces cached now: image features and verdicts
        features = time.perf_counter() - start
    print(f"check alone, {len(paths)} photos: {len(paths) / (faces + features):.1f} photos/s "
          f"(faces, ages and people {len(paths) / faces:.1f}/s; frozen image features and verdict "
          f"{len(paths) / features:.1f}/s)")

    with tempfile.TemporaryDirectory() as empty:
        catalog = Path(empty) / "photos"
        catalog.mkdir()
        for path in paths:
            shutil.copy(path, catalog / path.name)  # a link leading out of a catalog is not part of it
        fresh = copy.deepcopy(config)
        fresh.cache_dir = str(Path(empty) / "cache")
        start = time.perf_counter()
        engine = SearchEngine(args.checkpoint, catalog, None, index_dir=Path(empty) / "index", settings=fresh,
                              checker=PhotoScreener.from_config(fresh))
        with_check = time.perf_counter() - start
    shared = "shared with the search model" if engine.scorer.config.training.mode == "frozen" else "computed apart"
    print(f"indexing with the check, {len(paths)} photos: {len(paths) / with_check:.1f} photos/s "
          f"({len(engine.index.excluded)} kept out; image features {shared}; includes loading the checkpoint)")


if __name__ == "__main__":
    main()
