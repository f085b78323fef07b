"""First-stage retrieval: the catalog images nearest to a query by cosine of the projected embeddings.

Small catalogs use an exact matrix product; large ones a FAISS inverted-file index (IVF, inner product),
which looks at `nprobe` of its clusters instead of every image. With per-photo `offsets` the score is
cosine - offset (query-bank normalisation): FAISS gets it as an inner product by giving each photo one more
dimension, -offset, and each query a 1 there.
"""
from __future__ import annotations

import math

import numpy as np

from wsense.errors import WsenseError


class FirstStage:
    def __init__(self, embeddings: np.ndarray, method: str = "auto", faiss_threshold: int = 50_000,
                 nprobe: int = 32, seed: int = 0, offsets: np.ndarray | None = None):
        self.with_offsets = offsets is not None
        if self.with_offsets:
            embeddings = np.hstack([embeddings, -np.asarray(offsets, np.float32).reshape(-1, 1)])
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if method == "auto":
            method = "faiss" if len(self.embeddings) >= faiss_threshold else "exact"
        if method not in ("exact", "faiss"):
            raise WsenseError(f"unknown first stage '{method}' (expected auto, exact or faiss)")
        self.method = method
        self.index = None
        if method == "faiss" and len(self.embeddings):
            self.index = self._build_ivf(nprobe, seed)

    def _build_ivf(self, nprobe: int, seed: int):
        import faiss

        n, dim = self.embeddings.shape
        # sqrt(n) lists keeps both k-means training and each probe cheap; FAISS wants >= 39 points per list.
        nlist = max(1, min(int(math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = self.embeddings
        if n > 64 * nlist:
            sample = self.embeddings[np.random.default_rng(seed).choice(n, 64 * nlist, replace=False)]
        index.train(sample)
        index.add(self.embeddings)
        index.nprobe = min(nprobe, nlist)
        return index

    def search(self, queries: np.ndarray, k: int, offset_weight: float | np.ndarray = 1.0, filters=None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each (queries x k'), k' = min(k, catalog size), best first; the photos' offsets count
        `offset_weight` times (0: the plain cosine), one weight for all queries or one each. `filters` (one per
        query) are not pushed down here: the engine applies them to what comes back."""
        queries = np.atleast_2d(queries)
        if self.with_offsets:
            weights = np.broadcast_to(np.asarray(offset_weight, queries.dtype).reshape(-1, 1), (len(queries), 1))
            queries = np.hstack([queries, weights])
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.embeddings))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.index is not None:
            scores, indices = self.index.search(queries, k)
            return scores, indices
        similarity = queries @ self.embeddings.T
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1)
        indices = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(similarity, indices, axis=1), indices
