"""Indexing on Ray (`wsense index --ray`, `--ray-address`): the photos to embed are a Ray Dataset, and an actor pool
runs the photo path (decode, views, image tower, projection) on them, one actor per worker, each with the model
loaded once. Without an address Ray starts on this machine with that many CPU workers; with one it joins that
cluster, where the same code spreads over its machines. With --ray-gpus each worker holds one GPU and runs the
photo path as on a GPU machine (embedding.device, embedding.gpu_*). What comes back goes through `update_index` as the
single-process batches do: committed to the index's progress as it arrives (a rerun after a crash embeds only the
rest), then checked by the legal filter and the image check, then saved whole.
"""
from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from wsense.config import Config
from wsense.errors import WsenseError


class PhotoEmbedder:
    """One Ray actor: the checkpoint's photo path, loaded once, applied to batches of paths."""

    def __init__(self, checkpoint: str, settings: Config):
        from wsense.serving.scoring import RelevanceScorer

        torch.set_num_threads(1)  # one worker, one core: Ray gives each actor one CPU (and a GPU with --ray-gpus)
        self.scorer = RelevanceScorer.from_checkpoint(checkpoint, settings)

    def __call__(self, batch: dict) -> dict:
        paths = [str(path) for path in batch["path"]]
        done, vectors, skipped = [], [], []
        for good, embedded, bad, _ in self.scorer.photo_batches(paths, skip_unreadable=True, progress=False):
            done += good
            vectors.append(embedded)
            skipped += bad
        dim = self.scorer.dim
        embeddings = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        errors = dict(skipped)
        rows = {path: i for i, path in enumerate(done)}
        return {"path": np.array(paths),
                "embedding": np.stack([embeddings[rows[p]] if p in rows else np.zeros(dim, np.float32)
                                       for p in paths]),
                "error": np.array([errors.get(p, "") for p in paths])}


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, where Ray itself would retry for minutes: host:port must accept connections."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray knows and we do not: Ray's own error then
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise WsenseError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


class RayPhotoBatches:
    """RelevanceScorer.photo_batches on Ray: (paths embedded, embeddings, [(unreadable path, why)], None) per batch
    as the actors finish them (in no fixed order)."""

    def __init__(self, checkpoint: str | Path, settings: Config, address: str | None = None, workers: int = 2,
                 batch_size: int = 32, gpus: bool = False):
        """`gpus`: one GPU per worker (at most as many workers as the cluster has GPUs), where the photo path runs
        as on a GPU machine (embedding.gpu_*); otherwise one CPU each."""
        if workers < 1:
            raise WsenseError(f"--ray-workers must be at least 1, not {workers}")
        self.checkpoint, self.settings = str(checkpoint), settings
        self.address, self.workers, self.batch_size, self.gpus = address, workers, batch_size, gpus

    def _start(self) -> bool:
        """Start Ray here, or join the cluster at `address`; whether this call started it."""
        import ray

        if ray.is_initialized():
            return False
        options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if self.address:
            _check_reachable(self.address)
        try:
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=self.workers, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise WsenseError(f"cannot start or reach {where}: {str(error).splitlines()[0][:300]}") from None
        return True

    def __call__(self, paths: Sequence[str | Path], *, skip_unreadable: bool = False, desc: str = "indexing",
                 progress: bool = True) -> Iterator[tuple[list, np.ndarray, list, None]]:
        if not paths:
            return
        import ray
        import ray.data

        started = self._start()
        try:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            workers, batch_size = self.workers, self.batch_size
            if self.gpus:
                available = int(ray.cluster_resources().get("GPU", 0))
                if not available:
                    raise WsenseError("--ray-gpus: the Ray cluster has no GPU; leave it out to embed on CPU workers")
                workers, batch_size = min(workers, available), self.settings.embedding.gpu_batch_size
            dataset = ray.data.from_items([{"path": str(path)} for path in paths])
            embedded = dataset.map_batches(PhotoEmbedder, fn_constructor_kwargs={"checkpoint": self.checkpoint,
                                                                                 "settings": self.settings},
                                           batch_size=batch_size, concurrency=workers, num_cpus=1,
                                           num_gpus=1 if self.gpus else 0, batch_format="numpy")
            by_name = {str(path): path for path in paths}
            where = f"{workers} {'GPU' if self.gpus else 'CPU'} workers"
            with tqdm(total=len(paths), desc=f"{desc} (Ray, {where})", unit="photo", file=sys.stderr,
                      disable=not progress) as bar:
                for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
                    ok = batch["error"] == ""
                    bad = [(by_name[p], why) for p, why in zip(batch["path"][~ok], batch["error"][~ok])]
                    if bad and not skip_unreadable:
                        raise WsenseError(f"{bad[0][0]}: {bad[0][1]}")
                    bar.update(len(batch["path"]))
                    yield ([by_name[p] for p in batch["path"][ok]], batch["embedding"][ok], bad,
                           None)
        finally:
            if started:
                ray.shutdown()
