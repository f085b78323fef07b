"""Issue 30: which on-disk store carries a catalog of millions of photos. Two candidates at `--photos` synthetic
photos (benchmarks/vector_store.py's clustered unit vectors, 384 wide), 40% kept out by the legal filter, a camera
column whose rarest value keeps about 5%:

- lance: one Lance dataset (pylance): the rows with their columns and the embedding as float16; an IVF-PQ index
  (48 sub-vectors of 8 bits) with the shortlist re-scored from the stored vectors (`refine_factor`), filters as
  SQL pushed before the vector search (`prefilter`).
- faiss: FAISS IVF-PQ (the same lists and codes) read memory-mapped, over the searchable photos only; the
  shortlist re-scored from a memory-mapped float16 matrix; the camera filter as an IDSelectorBitmap inside the
  IVF scan, from a memory-mapped column of camera codes. (The rows themselves would sit in SQLite: read only for
  the 10 results, not measured here.)

Each is searched in a fresh process (start: open and first query; RSS after the queries), one query at a time;
recall@10 is against exact search over the same allowed photos.

    pip install pylance   # the Lance candidate only: not a dependency of wsense
    python experiments/scale_store.py --photos 1000000 [--which lance faiss] [--folder /tmp/wsense-scale-exp]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM, CAMERAS, CHUNK = 384, 20, 250_000
EXACT_LIMIT = 100_000  # a filter that allows at most so many photos is searched exactly (faiss variant)


def clustered(*args):
    # benchmarks/vector_store.py's: imported only here, as its module imports torch (the serving side must not).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from vector_store import clustered

    return clustered(*args)


def synthetic(folder: Path, photos: int) -> None:
    """vectors.npy (float32, memory-mapped), kept.npy (bool), camera.npy (int16: camera 0 on ~5%), queries.npy."""
    folder.mkdir(parents=True, exist_ok=True)
    centres = np.random.default_rng(2).standard_normal((4096, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(photos, DIM))
    for start in range(0, photos, CHUNK):
        vectors[start:start + CHUNK] = clustered(np.random.default_rng(start), min(CHUNK, photos - start), centres)
    vectors.flush()
    rng = np.random.default_rng(7)
    np.save(folder / "kept.npy", rng.random(photos) >= 0.4)
    np.save(folder / "camera.npy", np.where(rng.random(photos) < 0.05, 0, rng.integers(1, CAMERAS, photos))
            .astype(np.int16))
    np.save(folder / "queries.npy", clustered(np.random.default_rng(10**9 + 1), 200, centres))


def exact(folder: Path, allowed: np.ndarray, queries: np.ndarray) -> np.ndarray:
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    best_s = np.full((len(queries), 10), -np.inf, np.float32)
    best = np.zeros((len(queries), 10), np.int64)
    for start in range(0, len(vectors), CHUNK):
        part = np.asarray(vectors[start:start + CHUNK])
        scores = queries @ part.T
        scores[:, ~allowed[start:start + len(part)]] = -np.inf
        scores = np.hstack([best_s, scores])
        ids = np.hstack([best, np.broadcast_to(np.arange(start, start + len(part)), (len(queries), len(part)))])
        top = np.argsort(-scores, axis=1)[:, :10]
        best_s, best = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return best


def build_lance(folder: Path, store: Path, nlist: int) -> None:
    import lance
    import pyarrow as pa

    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    kept, camera = np.load(folder / "kept.npy"), np.load(folder / "camera.npy")

    def batches():
        for start in range(0, len(vectors), CHUNK):
            part = np.asarray(vectors[start:start + CHUNK], np.float16)
            stop = start + len(part)
            yield pa.record_batch({
                "id": pa.array(np.arange(start, stop)),
                "path": pa.array([f"folder{i % 100}/photo{i:09d}.jpg" for i in range(start, stop)]),
                "camera": pa.array([f"camera {c}" for c in camera[start:stop]]),
                "excluded": pa.array(~kept[start:stop]),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel(), pa.float16()), DIM)})

    schema = next(batches()).schema
    lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), str(store), max_rows_per_file=CHUNK * 4)
    dataset = lance.dataset(str(store))
    dataset.create_index("embedding", "IVF_PQ", metric="dot", num_partitions=nlist, num_sub_vectors=48)
    dataset.create_scalar_index("camera", "BITMAP")
    dataset.create_scalar_index("excluded", "BITMAP")


def build_faiss(folder: Path, store: Path, nlist: int) -> None:
    import faiss

    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    kept = np.load(folder / "kept.npy")
    rows = np.flatnonzero(kept)
    store.mkdir(parents=True, exist_ok=True)
    np.save(store / "rows.npy", rows)
    np.save(store / "camera.npy", np.load(folder / "camera.npy")[rows])
    half = np.lib.format.open_memmap(store / "vectors16.npy", mode="w+", dtype=np.float16, shape=(len(rows), DIM))
    for start in range(0, len(rows), CHUNK):
        half[start:start + CHUNK] = vectors[rows[start:start + CHUNK]]
    half.flush()
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(DIM), DIM, nlist, 48, 8, faiss.METRIC_INNER_PRODUCT)
    sample = np.sort(np.random.default_rng(0).choice(len(rows), min(len(rows), 64 * nlist), replace=False))
    index.train(np.asarray(half[sample], np.float32))
    for start in range(0, len(rows), CHUNK):
        index.add(np.asarray(half[start:start + CHUNK], np.float32))
    faiss.write_index(index, str(store / "ivfpq.faiss"))


def serve(which: str, store: Path, folder: Path, nprobe: int, depth: int) -> dict:
    """Runs in its own process: open, search the queries (all allowed photos, then camera 0), report."""
    began = time.perf_counter()
    queries = np.load(folder / "queries.npy")
    if which == "lance":
        import lance

        dataset = lance.dataset(str(store))

        def search(q, camera):
            where = "excluded = false" + (" AND camera = 'camera 0'" if camera else "")
            table = dataset.to_table(columns=["id"], filter=where, prefilter=True, nearest={
                "column": "embedding", "q": q.astype(np.float32), "k": 10, "nprobes": nprobe,
                "refine_factor": depth // 10})
            return table["id"].to_numpy()
    else:
        import faiss

        index = faiss.read_index(str(store / "ivfpq.faiss"), faiss.IO_FLAG_MMAP)
        index.nprobe = nprobe
        rows = np.load(store / "rows.npy", mmap_mode="r")
        cameras = np.load(store / "camera.npy", mmap_mode="r")
        half = np.load(store / "vectors16.npy", mmap_mode="r")
        masks: dict = {}

        def search(q, camera_filter):
            params = None
            if camera_filter and "allowed" not in masks:
                masks["allowed"] = np.flatnonzero(np.asarray(cameras) == 0)
            if camera_filter and len(masks["allowed"]) <= EXACT_LIMIT:
                allowed = masks["allowed"]
                scores = np.asarray(half[allowed], np.float32) @ q
                return np.asarray(rows[allowed[np.argsort(-scores)[:10]]])
            if camera_filter:
                if "camera" not in masks:  # the product keeps the last filters' masks, as Catalog.allowed does
                    bits = np.packbits(np.asarray(cameras) == 0, bitorder="little")
                    masks["camera"] = (bits, faiss.IDSelectorBitmap(len(cameras), faiss.swig_ptr(bits)))
                params = faiss.SearchParametersIVF(sel=masks["camera"][1], nprobe=nprobe)
            _, found = index.search(q[None], depth, params=params)
            found = np.sort(found[0][found[0] >= 0])
            best = found[np.argsort(-(np.asarray(half[found], np.float32) @ q))[:10]]
            return np.asarray(rows[best])

    search(queries[0], False)
    start_s = time.perf_counter() - began
    out = {"start_s": round(start_s, 2)}
    for name, camera in (("", False), ("filtered_", True)):
        found, times = [], []
        for q in queries:
            t = time.perf_counter()
            found.append(search(q, camera))
            times.append(time.perf_counter() - t)
        ms = np.array(times) * 1000
        out[f"{name}p50_ms"] = round(float(np.percentile(ms, 50)), 2)
        out[f"{name}p95_ms"] = round(float(np.percentile(ms, 95)), 2)
        np.save(store.parent / f"{which}-{name}found.npy", np.array([np.pad(f, (0, 10 - len(f)), constant_values=-1)
                                                                   for f in found]))
    rss = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmRSS"))
    out["rss_mb"] = round(rss / 1024)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--which", nargs="*", default=["faiss", "lance"])
    parser.add_argument("--folder", default="/tmp/wsense-scale-exp")
    parser.add_argument("--nprobe", type=int, default=64)
    parser.add_argument("--depth", type=int, default=400, help="shortlist re-scored from the stored vectors")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder) / str(args.photos)
    if args.serve:
        print(json.dumps(serve(args.serve, folder / args.serve, folder, args.nprobe, args.depth)))
        return
    if not (folder / "queries.npy").is_file():
        began = time.perf_counter()
        synthetic(folder, args.photos)
        print(f"synthetic catalog of {args.photos:,} in {time.perf_counter() - began:.0f} s", flush=True)
    kept, camera = np.load(folder / "kept.npy"), np.load(folder / "camera.npy")
    queries = np.load(folder / "queries.npy")
    truth = {"": exact(folder, kept, queries), "filtered_": exact(folder, kept & (camera == 0), queries)}
    nlist = max(1, min(int(math.sqrt(args.photos * 0.6)), args.photos // 39))
    for which in args.which:
        store = folder / which
        shutil.rmtree(store, ignore_errors=True)
        began = time.perf_counter()
        (build_lance if which == "lance" else build_faiss)(folder, store, nlist)
        build_s = time.perf_counter() - began
        disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        answer = subprocess.run([sys.executable, __file__, "--photos", str(args.photos), "--folder", args.folder,
                                 "--nprobe", str(args.nprobe), "--depth", str(args.depth), "--serve", which],
                                capture_output=True, text=True, check=True)
        result = {"store": which, "photos": args.photos, "build_s": round(build_s, 1),
                  "disk_bytes_per_photo": round(disk / args.photos), **json.loads(answer.stdout.splitlines()[-1])}
        for name, want in truth.items():
            found = np.load(folder / f"{which}-{name}found.npy")
            result[f"{name}recall_at_10"] = round(float(np.mean([len(set(f) & set(t)) / 10
                                                                 for f, t in zip(found, want)])), 3)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
