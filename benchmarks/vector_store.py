"""Which first stage at which catalog size: memory per photo, recall@10 against exact search and p50 per query.

Synthetic catalogs of `--sizes` photos (unit vectors of the model's width, clustered around 4,096 centres as real
photo embeddings cluster), written chunk by chunk to a float32 file (memory-mapped: a 10M catalog is 15 GB),
with `--queries` queries from the same distribution, one query at a time on this CPU:

- FAISS IVF-Flat (wsense's `first_stage: faiss`): sqrt(n) lists, nprobe 64; float32 vectors in memory.
- FAISS IVF-PQ: the same lists, 48 sub-vectors of 8 bits (48 bytes a photo): the codes alone, and the codes with
  their top 100 or 400 re-scored exactly from the memory-mapped vectors (the search re-ranks its shortlist from
  the embeddings anyway).
- Milvus Lite (`first_stage: milvus`, a local file) at `--milvus-sizes`: its own file's bytes per photo.

    python benchmarks/vector_store.py [--sizes 1000000 10000000] [--milvus-sizes 100000] [--queries 200]
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from search_latency import percentiles  # this folder's latency benchmark

CHUNK = 250_000


def write_catalog(path: Path, size: int, dim: int, centres: np.ndarray) -> np.memmap:
    vectors = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size, dim))
    for start in range(0, size, CHUNK):
        vectors[start:start + CHUNK] = clustered(np.random.default_rng(start), min(CHUNK, size - start), centres)
    vectors.flush()
    return np.load(path, mmap_mode="r")


def clustered(rng, n: int, centres: np.ndarray) -> np.ndarray:
    noise = rng.standard_normal((n, centres.shape[1]), dtype=np.float32) / math.sqrt(centres.shape[1])
    vectors = centres[rng.integers(0, len(centres), n)] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best = np.zeros((len(queries), 10), np.int64)
    for start in range(0, len(vectors), CHUNK):
        scores = queries @ np.asarray(vectors[start:start + CHUNK]).T
        scores = np.hstack([best_scores, scores])
        ids = np.hstack([best, np.arange(start, start + scores.shape[1] - 10)[None].repeat(len(queries), 0)])
        top = np.argsort(-scores, axis=1)[:, :10]
        best_scores, best = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return best


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t)) / 10 for f, t in zip(found, truth)]))


def timed(search, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    found, times = [], []
    for query in queries:
        began = time.perf_counter()
        found.append(search(query[None]))
        times.append(time.perf_counter() - began)
    return np.vstack(found), times


def ivf(vectors: np.ndarray, index, nlist: int, nprobe: int) -> float:
    """Train on a sample, add in chunks; the seconds it took."""
    began = time.perf_counter()
    sample = np.asarray(vectors[np.sort(np.random.default_rng(0).choice(len(vectors), min(len(vectors), 64 * nlist),
                                                                         replace=False))])
    index.train(sample)
    for start in range(0, len(vectors), CHUNK):
        index.add(np.ascontiguousarray(vectors[start:start + CHUNK]))
    index.nprobe = min(nprobe, nlist)
    return time.perf_counter() - began


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", type=int, default=[1_000_000])
    parser.add_argument("--milvus-sizes", nargs="*", type=int, default=[100_000])
    parser.add_argument("--dim", type=int, default=384, help="embedding width (the model's projection: 384)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", type=int, default=64)
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where the synthetic vectors are written")
    parser.add_argument("--ivf-flat-max", type=int, default=2_000_000,
                        help="largest catalog to hold as float32 in memory for IVF-Flat")
    args = parser.parse_args()
    centres = np.random.default_rng(2).standard_normal((4096, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = clustered(np.random.default_rng(10**9 + 1), args.queries, centres)
    print(f"CPU threads {faiss.omp_get_max_threads()}, dim {args.dim}, {args.queries} queries one at a time")

    for size in args.sizes:
        path = Path(args.folder) / f"wsense-vectors-{size}.npy"
        began = time.perf_counter()
        vectors = write_catalog(path, size, args.dim, centres)
        truth = exact_top10(vectors, queries)
        print(f"{size:>10,} photos: vectors written and exact top 10 in {time.perf_counter() - began:.0f} s")
        nlist = max(1, min(int(math.sqrt(size)), size // 39))
        if size <= args.ivf_flat_max:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(args.dim), args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            build = ivf(vectors, index, nlist, args.nprobe)
            found, times = timed(lambda q: index.search(q, 10)[1], queries)
            print(f"{size:>10,}  FAISS IVF-Flat   {4 * args.dim + 8:>5} B/photo  recall@10 {recall(found, truth):.3f}  "
                  f"{percentiles(times)}  (built in {build:.0f} s)")
            index = None  # freed before the next index is built
        else:
            print(f"{size:>10,}  FAISS IVF-Flat   {4 * args.dim + 8:>5} B/photo  not built: "
                  f"{(4 * args.dim + 8) * size / 2**30:.1f} GiB in memory")
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(args.dim), args.dim, nlist, 48, 8, faiss.METRIC_INNER_PRODUCT)
        build = ivf(vectors, index, nlist, args.nprobe)
        found, times = timed(lambda q: index.search(q, 10)[1], queries)
        print(f"{size:>10,}  FAISS IVF-PQ48   {48 + 8:>5} B/photo  recall@10 {recall(found, truth):.3f}  "
              f"{percentiles(times)}  (built in {build:.0f} s)")

        for depth in (100, 400):
            def refined(q, depth=depth):
                shortlist = np.sort(index.search(q, depth)[1][0])
                shortlist = shortlist[shortlist >= 0]
                return shortlist[np.argsort(-(np.asarray(vectors[shortlist]) @ q[0]))[:10]][None]

            found, times = timed(refined, queries)
            print(f"{size:>10,}  IVF-PQ48 + exact re-score of {depth} from the file  recall@10 "
                  f"{recall(found, truth):.3f}  {percentiles(times)}  (in memory: {48 + 8} B/photo; on disk "
                  f"{4 * args.dim} B/photo)")
        index = vectors = None
        os.unlink(path)

    for size in args.milvus_sizes:
        from wsense.serving.milvus_store import MilvusFirstStage, _clients

        vectors = clustered(np.random.default_rng(5), size, centres)
        truth = exact_top10(vectors, queries)
        entries = [{"path": f"p{i:08d}.jpg", "sha256": f"{i:064x}", "excluded": None, "meta": {}} for i in range(size)]
        with tempfile.TemporaryDirectory(prefix="wsense-milvus-") as folder:
            began = time.perf_counter()
            stage = MilvusFirstStage(str(Path(folder) / "m.db"), "photos", "bench", entries, vectors, list(range(size)))
            build = time.perf_counter() - began
            found, times = timed(lambda q: stage.search(q, 10)[1], queries)
            disk = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
            print(f"{size:>10,}  Milvus Lite      {disk / size:>5.0f} B/photo  recall@10 {recall(found, truth):.3f}  "
                  f"{percentiles(times)}  (upserted in {build:.0f} s)")
            _clients.clear()


if __name__ == "__main__":
    main()
