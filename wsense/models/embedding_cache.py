"""Frozen embeddings of images and texts, batched, with a progress bar and an on-disk cache.

The cache holds one file per model fingerprint, mapping the sha256 of an image file's bytes (or of a
text) to its vector: a second run is instant and a changed file is embedded again.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from wsense.io import ShardFolder, file_sha256, text_sha256
from wsense.models.photos import PhotoEncoder


class EmbeddingCache:
    """Vectors of one model, keyed by content hash, in a folder of .npz shards (`path` without its suffix,
    wsense.io.ShardFolder): a save costs what it adds, not the whole cache (indexing adds after every batch)."""

    MAX_SHARDS = 32

    def __init__(self, path: Path):
        self.path = Path(path)
        self._vectors, self._damaged = _shard_folder(self.path).load()
        for shard in self._damaged:  # a damaged cache is only lost time: start again without it
            print(f"warning: {shard}: unreadable embedding cache, rebuilding it", file=sys.stderr)
        self._new: dict[str, np.ndarray] = {}  # added since the last save

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.stack([self._vectors[k] for k in keys])

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        added = dict(zip(keys, np.asarray(vectors, dtype=np.float32)))
        self._vectors.update(added)
        self._new.update(added)

    def save(self) -> None:
        for shard in self._damaged:
            shard.unlink(missing_ok=True)
        self._damaged = []
        _shard_folder(self.path).add(self._new)
        self._new = {}

    @classmethod
    def add(cls, path: Path, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors to the cache at `path` without reading it."""
        _shard_folder(Path(path)).add(dict(zip(keys, np.asarray(vectors, dtype=np.float32))))


def _shard_folder(path: Path) -> ShardFolder:
    return ShardFolder(path, _read_shard, _write_shard, EmbeddingCache.MAX_SHARDS)


def _read_shard(shard: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(shard, allow_pickle=False) as stored:
            return dict(zip(stored["keys"].tolist(), stored["vectors"]))
    except (OSError, ValueError, KeyError):
        return None


def _write_shard(file: Path, vectors: dict[str, np.ndarray]) -> None:
    with open(file, "wb") as handle:
        np.savez(handle, keys=np.array(list(vectors), dtype="U64"), vectors=np.stack(list(vectors.values())))


def _embed_cached(
    keys: list[str],
    items: list,
    encode_batch: Callable[[list], torch.Tensor],
    cache: EmbeddingCache,
    batch_size: int,
    what: str,
) -> np.ndarray:
    missing = sorted({k: i for k, i in zip(keys, items) if k not in cache}.items())
    if missing:
        start = time.perf_counter()
        with tqdm(total=len(missing), desc=f"embedding {what}", unit=what.rstrip("s"), file=sys.stderr) as bar:
            for offset in range(0, len(missing), batch_size):
                chunk = missing[offset:offset + batch_size]
                with torch.inference_mode():
                    vectors = encode_batch([item for _, item in chunk]).float().cpu().numpy()
                cache.put([k for k, _ in chunk], vectors)
                bar.update(len(chunk))
        elapsed = time.perf_counter() - start
        print(f"embedded {len(missing)} {what} in {elapsed:.1f}s ({len(missing) / elapsed:.1f}/s); "
              f"{len(set(keys)) - len(missing)} from cache", file=sys.stderr)
        cache.save()
    return cache.get(keys) if keys else np.zeros((0, 0), np.float32)


def embed_images(paths: Sequence[Path], encoder: PhotoEncoder, cache: EmbeddingCache, batch_size: int = 32,
                 keys: Sequence[str] | None = None) -> np.ndarray:
    """Pooled backbone features for each image file (rows in the order of `paths`); `keys`: the files' sha256
    where the caller has them already."""
    paths = [Path(p) for p in paths]
    keys = list(keys) if keys is not None else [file_sha256(p) for p in paths]
    return _embed_cached(keys, paths, encoder.encode, cache, batch_size, "images")


def embed_texts(texts: Sequence[str], encoder, cache: EmbeddingCache, batch_size: int = 128) -> np.ndarray:
    """L2-normalised sentence embeddings for each text (rows in the order of `texts`)."""
    texts = list(texts)
    keys = [text_sha256(t) for t in texts]
    return _embed_cached(keys, texts, encoder.encode, cache, batch_size, "texts")
