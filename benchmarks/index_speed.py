"""Indexing speed on the data set's 500 px photos and on 24-megapixel camera files: photos per second of
`wsense index` (image check included) from empty caches, and the milliseconds per photo of each stage.

    python benchmarks/index_speed.py [--checkpoint runs/final/best] [--photos 100] [--camera-photos 20]

The camera files are made from test photos (6000 x 4000, JPEG quality 92), so the two sets show the same scenes.
The stages are timed one by one on the same photos, outside indexing: read (the bytes, hashed), decode (at the size
each consumer needs: the views' and the face analysis's), views, backbones, faces (MTCNN), ages, people (HOG),
classifier (frozen features' verdict), thumbnail and metadata.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from wsense.config import load_config
from wsense.data import load_data, load_image, read_image_file
from wsense.models.checkpoint import model_fingerprint
from wsense.models.image import stack_pixels
from wsense.safety.faces import MAX_SIDE, FaceAnalyzer
from wsense.safety.screener import PhotoScreener, load_or_fit_screener
from wsense.serving.index import update_index
from wsense.serving.metadata import photo_metadata
from wsense.serving.scoring import RelevanceScorer
from wsense.serving.thumbnails import make_thumbnail

CAMERA_SIZE = (6000, 4000)


def camera_files(sources: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for source in sources:
        with Image.open(source) as image:
            big = image.convert("RGB").resize(CAMERA_SIZE, Image.Resampling.BICUBIC)
        made.append(folder / source.name)
        big.save(made[-1], quality=92)
    return made


def copied(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    for path in paths:
        (folder / path.name).write_bytes(path.read_bytes())
    return [folder / path.name for path in paths]


def index_rate(paths: list[Path], scorer: RelevanceScorer, checkpoint: str, config) -> tuple[float, int]:
    """Photos per second of a whole index update (embedding, image check, metadata, thumbnails, save) from empty
    caches, and how many photos the people detector ran on (only where it could change the verdict)."""
    with tempfile.TemporaryDirectory() as empty:
        fresh = copy.deepcopy(config)
        fresh.cache_dir = empty
        scorer.config.cache_dir = empty
        screener = PhotoScreener.from_config(fresh)
        start = time.perf_counter()
        update_index(paths[0].parent, Path(empty) / "index", scorer, model_fingerprint(checkpoint), screener)
        rate = len(paths) / (time.perf_counter() - start)
        looked = sum(screener.face_cache.get(key).people is not None for key in screener.face_cache)
        return rate, looked


def stage_times(paths: list[Path], scorer: RelevanceScorer, screener: PhotoScreener) -> dict[str, float]:
    """Milliseconds per photo of each stage, run one after the other on the same photos."""
    encoder, analyzer = scorer.photos, FaceAnalyzer()
    times = {name: 0.0 for name in ("read", "decode", "views", "backbones", "faces", "ages", "people",
                                    "classifier", "thumbnail", "metadata")}
    detect, predict, people = analyzer.detector.detect, analyzer.ages.predict, analyzer.people.detectMultiScale

    def timed(name, function):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times[name] += time.perf_counter() - start
        return run

    analyzer.analyze(load_image(paths[0], longer_side=MAX_SIDE))  # the age model loads on its first face, untimed
    analyzer.detector.detect = timed("faces", detect)
    analyzer.ages.predict = timed("ages", predict)
    analyzer.people = SimpleNamespace(detectMultiScale=timed("people", people))  # cv2's own is read-only
    with tempfile.TemporaryDirectory() as folder:
        for path in paths:
            start = time.perf_counter()
            data = read_image_file(path)
            hashlib.sha256(data).hexdigest()
            times["read"] += time.perf_counter() - start
            start = time.perf_counter()
            image = load_image(path, data, shorter_side=encoder.transform.decode_side)
            for_faces = load_image(path, data, longer_side=MAX_SIDE)
            times["decode"] += time.perf_counter() - start
            start = time.perf_counter()
            pixels = encoder.transform(image)
            times["views"] += time.perf_counter() - start
            start = time.perf_counter()
            encoder.features(stack_pixels([pixels]))
            times["backbones"] += time.perf_counter() - start
            faces = analyzer.analyze(for_faces)
            check_features = np.asarray(screener.features.encode([path]))  # indexing hands these over (frozen mode)
            start = time.perf_counter()
            screener.check.verdicts(check_features, [faces])
            times["classifier"] += time.perf_counter() - start
            start = time.perf_counter()
            make_thumbnail(path, Path(folder) / f"{path.stem}.jpg")
            times["thumbnail"] += time.perf_counter() - start
            start = time.perf_counter()
            photo_metadata(path.parent, path.name)
            times["metadata"] += time.perf_counter() - start
    return {name: 1000 * total / len(paths) for name, total in times.items()}


def cpu_name() -> str:
    """The CPU's model and whether it has bfloat16 units (AMX, AVX-512 BF16): openvino_bf16 needs them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    bf16 = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]
    return f"{os.cpu_count()} x {model}, bfloat16 units: {', '.join(bf16) or 'none'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/final/best")
    parser.add_argument("--config", help="settings (default: configs/default.yaml)")
    parser.add_argument("--photos", type=int, default=100,
                        help="500 px photos to index: the test photos, then the training ones (1100: all)")
    parser.add_argument("--camera-photos", type=int, default=20, help="camera files to index, made from test photos")
    parser.add_argument("--agreement", type=int, default=0, metavar="N",
                        help="also: do the image check's verdicts on the first N test photos hold on their camera "
                             "files?")
    args = parser.parse_args()
    config = load_config(args.config)
    load_or_fit_screener(config)
    data = load_data(config.data_dir, check_images=False)
    # The test photos first, then the training photos: --photos 1100 indexes the whole data set
    small = ([data.test_image_dir / name for name in data.test_images]
             + [data.train_image_dir / name for name in data.train_images])[:args.photos]
    scorer = RelevanceScorer.from_checkpoint(args.checkpoint, config)
    screener = PhotoScreener.from_config(config)
    print(f"embedding.image_runtime: {config.embedding.image_runtime}; {cpu_name()}")
    with tempfile.TemporaryDirectory() as folder:
        camera = camera_files(small[:args.camera_photos], Path(folder) / "camera")
        sets = {"500 px (data set)": small, "24 MP (6000 x 4000)": camera}
        for name, paths in sets.items():
            if not paths:
                continue
            with tempfile.TemporaryDirectory() as copy_dir:  # folders of their own: the index takes a whole folder
                own = copied(paths, Path(copy_dir) / "all")
                # the models' first loads, outside the timing
                index_rate(copied(paths[:2], Path(copy_dir) / "first"), scorer, args.checkpoint, config)
                rate, looked = index_rate(own, scorer, args.checkpoint, config)
            stages = stage_times(paths[:5], scorer, screener)
            parts = ", ".join(f"{stage} {ms:.0f}" for stage, ms in stages.items())
            print(f"{name}: {len(paths)} photos, wsense index with the check {rate:.2f} photos/s (people detector on "
                  f"{looked} of them); ms per photo (stages alone): {parts}")
        if args.agreement:
            agreement(data, args.agreement, config, Path(folder) / "agreement")


def agreement(data, count: int, config, folder: Path) -> None:
    """The image check's verdicts on test photos and on their camera files, from empty caches."""
    photos = [data.test_image_dir / name for name in data.test_images[:count]]
    with tempfile.TemporaryDirectory() as empty:
        fresh = copy.deepcopy(config)
        fresh.cache_dir = empty
        screener = PhotoScreener.from_config(fresh)
        small = screener.screen_photos(photos, progress=False)
        large = screener.screen_photos(camera_files(photos, folder), progress=False)
    same = sum(a.verdict.child == b.verdict.child for a, b in zip(small, large))
    differ = [(a.path.name, a.verdict.child, b.verdict.reason) for a, b in zip(small, large)
              if a.verdict.child != b.verdict.child]
    kept_out = (sum(a.verdict.child for a in small), sum(b.verdict.child for b in large))
    print(f"image check verdicts, {count} test photos against their 24 MP versions: {same} agree "
          f"(kept out: {kept_out[0]} at 500 px, {kept_out[1]} at 24 MP)")
    for name, child, reason in differ:
        print(f"  {name}: {'kept out' if child else 'allowed'} at 500 px; at 24 MP: {reason}")


if __name__ == "__main__":
    main()
