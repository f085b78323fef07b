"""Thumbnails of catalog photos, about 320 px on the longer side, for the result grid.

They are kept in `cache_dir/thumbnails/`, one JPEG per photo content (named by its sha256), so a photo shared by
several catalogs or indexes is reduced once, a changed photo gets a new one, and an index rebuild keeps them. Each
is written atomically. Only photos the legal filter allows get one.
"""
from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from PIL import Image, ImageOps
from tqdm.auto import tqdm

from wsense.data import load_image
from wsense.errors import WsenseError
from wsense.io import atomic_path

THUMBNAIL_SIDE = 320
QUALITY = 82


def thumbnail_path(cache_dir: str | Path, sha256: str) -> Path:
    return Path(cache_dir) / "thumbnails" / sha256[:2] / f"{sha256}-{THUMBNAIL_SIDE}.jpg"


def make_thumbnail(source: str | Path, target: str | Path) -> Path:
    """Write the thumbnail of photo `source` to `target` (upright by its EXIF orientation); a WsenseError names an
    unreadable photo."""
    try:
        with Image.open(source) as image:
            # JPEG: decode at the smallest scale whose longer side is still twice the thumbnail's (1/8 of a 24 MP
            # file), not one whose shorter side is: that is one scale larger, and twice the cost.
            scale = 2 * THUMBNAIL_SIDE / max(image.size)
            if scale < 1:
                image.draft("RGB", tuple(math.ceil(side * scale) for side in image.size))
            image = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError):
        image = load_image(Path(source))  # raises the one-line error naming the file
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    with atomic_path(target) as tmp:
        image.save(tmp, format="JPEG", quality=QUALITY, optimize=True, progressive=True)
    return Path(target)


def ensure_thumbnails(root: Path, entries: Iterable[dict], cache_dir: str | Path, progress: bool = True) -> int:
    """Make the missing thumbnails of index entries (path, sha256) under `root`; returns how many were made. A photo
    that cannot be reduced is reported and left without one (the page then shows its original)."""
    missing = [entry for entry in entries if not thumbnail_path(cache_dir, entry["sha256"]).is_file()]

    def make(entry: dict) -> None:
        try:
            make_thumbnail(root / entry["path"], thumbnail_path(cache_dir, entry["sha256"]))
        except WsenseError as error:
            print(f"warning: no thumbnail: {error}", file=sys.stderr)

    # One thread a core: PIL decodes, reduces and encodes without holding Python's lock.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, tqdm(
            total=len(missing), desc="thumbnails", unit="photo", file=sys.stderr,
            disable=not progress or not missing) as bar:
        for _ in pool.map(make, missing):
            bar.update(1)
    return len(missing)
