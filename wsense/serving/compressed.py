"""A first stage for catalogs of millions of photos: product-quantised codes in memory-mapped files, the shortlist
re-scored from the store's full embeddings, the metadata filters pushed into the scan.

Built from an index store (wsense.serving.store) beside it in the index folder, for the store's committed version:
- `first_stage.faiss`: FAISS IVF-PQ over the searchable photos (96 bytes a photo), ids the store's row ids. With
  query-bank offsets, each vector carries -offset as one more dimension (zero-padded to a multiple of the codes'
  sub-vectors), as wsense.serving.first_stage does.
- `offsets.npy`: each row id's query-bank offset (float32; NaN for a photo that is not searchable), so that a
  server never computes them at start.
- `rows.npy`: the searchable photos' row ids, ascending: a photo's place in it is its row in the catalog served
  (wsense.serving.stored_catalog).
- `first_stage.json`: the store version it was built from, and its settings.

Opening maps the files; nothing grows with the catalog but the pages the queries touch. A search takes the
`depth` best photos by their codes, reads their embeddings from the store by row id and ranks them exactly (the
cosine minus the weighted offset). Filters become SQL over the store's columns; the photos they allow become a
bitmap the IVF scan consults, and the lists probed grow as the filter narrows (a filter that allows 5% probes
4.5 times as many).
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from wsense.errors import WsenseError
from wsense.io import atomic_path, atomic_write_text
from wsense.serving.metadata import MetadataFilter
from wsense.serving.store import IndexStore, decode_embeddings

STAGE_FILE, OFFSETS_FILE, ROWS_FILE, STAGE_INFO = "first_stage.faiss", "offsets.npy", "rows.npy", "first_stage.json"
SUB_VECTORS, CHUNK, MASKS_KEPT = 96, 100_000, 16


def filter_sql(filters: MetadataFilter | None) -> tuple[str, list]:
    """The store's rows a search may show, as an SQL condition over `photos` and its parameters: the searchable
    photos, and those the filters allow (the same rules as MetadataFilter.allows)."""
    clauses, params = ["excluded IS NULL"], []
    if filters is not None and filters.folder:
        clauses.append("(folder = ? OR substr(folder, 1, ?) = ?)")
        params += [filters.folder, len(filters.folder) + 1, filters.folder + "/"]
    if filters is not None and filters.orientation:
        clauses.append("orientation = ?")
        params.append(filters.orientation)
    for column in ("camera", "lens"):
        wanted = getattr(filters, column, None) if filters is not None else None
        if wanted:
            clauses.append(f"instr(lower({column}), ?) > 0")
            params.append(wanted.lower())
    if filters is not None and filters.taken_from:
        clauses.append("substr(taken, 1, 10) >= ?")
        params.append(filters.taken_from.isoformat())
    if filters is not None and filters.taken_to:
        clauses.append("substr(taken, 1, 10) <= ?")
        params.append(filters.taken_to.isoformat())
    return " AND ".join(clauses), params


def build_compressed_stage(directory: str | Path, offsets_of: Callable[[np.ndarray], np.ndarray] | None = None,
                           seed: int = 0, progress: bool = False, sub_vectors: int = SUB_VECTORS,
                           bits: int = 8) -> dict:
    """Write the compressed first stage of the store in `directory` (each file atomically, the info last: a kill
    leaves the previous stage, which the version it names marks as stale). `offsets_of`: the photos' query-bank
    offsets (e.g. RelevanceScorer.photo_offsets); None: plain cosine. `sub_vectors` codes of `bits` bits a photo."""
    import faiss
    from tqdm import tqdm

    directory = Path(directory)
    store = IndexStore(directory)
    version = store.committed_version()
    if version == 0:
        raise WsenseError(f"{directory}: no index here to build a first stage from")
    info = store.info()
    dim, dtype = int(info["dim"]), info.get("dtype", "float32")
    with store.reader() as db:
        count, top = db.execute("SELECT count(*), max(rowid) FROM photos WHERE excluded IS NULL").fetchone()
    if not count:
        raise WsenseError(f"{directory}: no searchable photos to build a first stage from")
    width = dim + (offsets_of is not None)
    padded = math.ceil(width / sub_vectors) * sub_vectors
    nlist = max(1, min(int(math.sqrt(count)), count // 39))
    offsets = np.full(top + 1, np.nan, np.float32)

    def chunks(sample_every: int = 1):
        with store.reader() as db:
            cursor = db.execute("SELECT rowid, embedding FROM photos WHERE excluded IS NULL AND rowid % ? = 0 "
                                "ORDER BY rowid", (sample_every,))
            while rows := cursor.fetchmany(CHUNK):
                ids = np.fromiter((rowid for rowid, _ in rows), np.int64, len(rows))
                yield ids, decode_embeddings([blob for _, blob in rows], dtype, dim)

    def coded(ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        out = np.zeros((len(vectors), padded), np.float32)
        out[:, :dim] = vectors
        if offsets_of is not None:
            offsets[ids] = offsets_of(vectors)
            out[:, dim] = -offsets[ids]
        return out

    # FAISS wants >= 39 training points a list; 64 a list is enough for k-means to settle.
    sample = np.concatenate([coded(ids, vectors) for ids, vectors in chunks(max(1, count // (64 * nlist)))])
    bits = max(1, min(bits, int(math.log2(max(count, 2)))))  # k-means of 2^bits centres wants as many points
    if len(sample) < 2 ** bits:
        sample = np.resize(sample, (2 ** bits, padded))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(padded), padded, nlist, sub_vectors, bits, faiss.METRIC_INNER_PRODUCT)
    index.train(sample[np.random.default_rng(seed).permutation(len(sample))[:64 * nlist]])
    rows = []
    for ids, vectors in tqdm(chunks(), total=math.ceil(count / CHUNK), desc="first stage", disable=not progress):
        index.add_with_ids(coded(ids, vectors), ids)
        rows.append(ids)
    with atomic_path(directory / STAGE_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    for name, array in ((OFFSETS_FILE, offsets), (ROWS_FILE, np.concatenate(rows))):
        with atomic_path(directory / name) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
    info = {"version": version, "photos": count, "dim": dim, "dtype": dtype, "padded": padded, "nlist": nlist,
            "offsets": offsets_of is not None}
    atomic_write_text(directory / STAGE_INFO, json.dumps(info))
    return info


class CompressedStage:
    """The compressed first stage of an index folder, memory-mapped; `search` answers in the store's row ids."""

    def __init__(self, directory: str | Path, nprobe: int = 64, depth: int = 600):
        import faiss

        self.directory = Path(directory)
        self.store = IndexStore(self.directory)
        try:
            self.info = json.loads((self.directory / STAGE_INFO).read_text(encoding="utf-8"))
            self.index = faiss.read_index(str(self.directory / STAGE_FILE), faiss.IO_FLAG_MMAP)
            self.offsets = np.load(self.directory / OFFSETS_FILE, mmap_mode="r")
            self.rows = np.load(self.directory / ROWS_FILE, mmap_mode="r")
        except (OSError, ValueError, RuntimeError) as error:  # faiss reports a bad file as RuntimeError
            raise WsenseError(f"{self.directory}: no usable compressed first stage ({type(error).__name__}); "
                              "build it again") from None
        # Read-only use; the lock keeps a server's threads (a search, a thumbnail's hash) from using it at once. One
        # read transaction for the stage's life: its reads see the version it was built for while a refresh commits
        # the next one and builds its stage (WAL keeps the snapshot), not rows that have moved since.
        self.db = sqlite3.connect(self.store.path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        self.db.execute("BEGIN")
        version = int(self.db.execute("SELECT value FROM info WHERE key = 'version'").fetchone()[0])
        if self.info["version"] != version:
            self.db.close()
            raise WsenseError(f"{self.directory}: compressed first stage of index version {self.info['version']}, "
                              f"the index is at {version}; build it again")
        self.nprobe, self.depth = min(nprobe, self.info["nlist"]), depth
        self.masks: OrderedDict[tuple, tuple[int, object, np.ndarray]] = OrderedDict()

    def allowed(self, filters: MetadataFilter | None):
        """(photos allowed, FAISS selector, bitmap by row id, mask by place in `rows`) for the filters (the last
        MASKS_KEPT kept)."""
        import faiss

        where, params = filter_sql(filters)
        key = (where, tuple(params))
        if key not in self.masks:
            if len(self.masks) >= MASKS_KEPT:
                self.masks.popitem(last=False)
            with self.lock:
                rows = np.fromiter((r for (r,) in self.db.execute(f"SELECT rowid FROM photos WHERE {where}", params)),
                                   np.int64)
            mask = np.zeros(len(self.offsets), bool)
            mask[rows[rows < len(mask)]] = True
            bits = np.packbits(mask, bitorder="little")
            self.masks[key] = (int(mask.sum()), faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits)), bits,
                               mask[np.asarray(self.rows)])
        self.masks.move_to_end(key)
        return self.masks[key]

    def search(self, query: np.ndarray, k: int, offset_weight: float = 1.0,
               filters: MetadataFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) of the k best photos the filters allow, best first: the cosine minus `offset_weight`
        times the photo's query-bank offset, computed exactly for the `depth` best by their codes."""
        import faiss

        query = np.asarray(query, np.float32).reshape(-1)
        dim, padded = self.info["dim"], self.info["padded"]
        coded = np.zeros((1, padded), np.float32)
        coded[0, :dim] = query
        if self.info["offsets"]:
            coded[0, dim] = offset_weight
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        if filters:
            allowed, selector, _, _ = self.allowed(filters)
            # Lists probed grow with 1/sqrt(share), not 1/share: the shortlist holds far more photos than a page,
            # so the allowed photos of the nearer lists already hold the filtered top 10 (docs/experiments.md).
            share = allowed / max(self.info["photos"], 1)
            params = faiss.SearchParametersIVF(sel=selector, nprobe=min(self.info["nlist"], math.ceil(
                self.nprobe / math.sqrt(max(share, 1e-12)))))
        _, found = self.index.search(coded, max(self.depth, k), params=params)
        ids = np.sort(found[0][found[0] >= 0])
        if not len(ids):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = self.embeddings(ids) @ query
        if self.info["offsets"]:
            scores = scores - offset_weight * np.asarray(self.offsets[ids])
        best = np.argsort(-scores, kind="stable")[:k]
        return scores[best], ids[best]

    def paths(self, ids) -> list[str]:
        """The photos' paths of row ids, in their order."""
        return [path for (path,) in self._by_id("path", ids)]

    def embeddings(self, ids) -> np.ndarray:
        """The photos' embeddings (float32, rows x dim) of row ids, in their order."""
        blobs = [blob for (blob,) in self._by_id("embedding", ids)]
        return decode_embeddings(blobs, self.info["dtype"], self.info["dim"])

    def _by_id(self, columns: str, ids) -> list[tuple]:
        ids = [int(i) for i in ids]
        with self.lock:
            found = {row[0]: row[1:] for row in self.db.execute(
                f"SELECT rowid, {columns} FROM photos WHERE rowid IN ({', '.join('?' * len(ids))})", ids)}
        return [found[i] for i in ids]


class CompressedFirstStage:
    """The compressed stage as the engine's first stage (search.first_stage: compressed): the interface of
    wsense.serving.first_stage.FirstStage, in rows of the catalog it serves (wsense.serving.stored_catalog: a
    searchable photo's place among the stage's row ids). The stage is built (again) where it is missing or was
    built for another version of the index."""
    method = "compressed"

    def __init__(self, directory: str | Path, offsets_of: Callable[[np.ndarray], np.ndarray] | None = None,
                 nprobe: int = 64):
        try:
            self.stage = CompressedStage(directory, nprobe)
            if self.stage.info["offsets"] != (offsets_of is not None):
                raise WsenseError("built for another ranking")
        except WsenseError:
            build_compressed_stage(directory, offsets_of)
            self.stage = CompressedStage(directory, nprobe)

    def search(self, queries: np.ndarray, k: int, offset_weight: float | np.ndarray = 1.0, filters=None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (queries x k), best first, row -1 where fewer photos qualify; each query's filters
        are pushed into the scan."""
        queries = np.atleast_2d(queries)
        weights = np.broadcast_to(np.asarray(offset_weight, np.float32).reshape(-1), (len(queries),))
        filters = filters if filters is not None else [None] * len(queries)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for j, (query, weight, wanted) in enumerate(zip(queries, weights, filters)):
            found, ids = self.stage.search(query, k, float(weight), wanted)
            scores[j, :len(ids)], rows[j, :len(ids)] = found, np.searchsorted(self.stage.rows, ids)
        return scores, rows
