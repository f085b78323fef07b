"""A catalog of N photos on one machine (issue 30): build its index store and compressed first stage, serve queries
from it in a separate process, and print, last, one JSON line: photos, build_s, disk_bytes_per_photo, start_s,
rss_mb, p50_ms, p95_ms, recall_at_10, filtered_p50_ms, filtered_recall_at_10.

The catalog is synthetic: the 100 test photos' real embeddings (the shipped search model's) as centres, plus
benchmarks/vector_store.py's noise, so photos cluster as real ones do; random metadata (folder, orientation, date,
lens, one of 20 cameras; the camera filter's keeps about 5%); about 40% of the photos kept out by the legal filter.
It is written chunk by chunk, so N may exceed memory: rows into the index store (wsense.serving.store, what
`wsense index` writes), then the compressed first stage from it (wsense.serving.compressed: IVF-PQ, the query-bank
offsets of the default ranking, qb_cosine, as one more dimension).

The server process imports neither torch nor this benchmark's builder: it opens the store and the stage
(start_s: from the process's first line to the first answer), answers the 200 test queries' embeddings one at a
time without filter and with the camera filter (pushed into the scan), and reports its resident memory after them.
Recall@10 is against exact search (the same score: cosine minus offset) over the same allowed photos.

    python benchmarks/scale.py --photos 1000000 [--folder /tmp/wsense-scale] [--keep] [--depth 400]
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()  # a server's start counts from here: imports included

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

CAMERA, CAMERAS = "Leica Q3", ("Canon EOS R5", "Nikon Z 9", "Sony A7 IV", "Fujifilm X-T5", "Canon EOS 5D Mark IV",
                               "Nikon D850", "Sony A1", "Panasonic S5", "Olympus OM-1", "Pentax K-3", "Ricoh GR III",
                               "Hasselblad X2D", "Sony RX100", "Canon EOS R6", "Nikon Z 6II", "Fujifilm GFX 100S",
                               "Sigma fp", "Apple iPhone 15 Pro", "Google Pixel 8")
LENSES = ("24-70mm F2.8", "50mm F1.8", "85mm F1.4", "16-35mm F4", "70-200mm F2.8", None)
CHUNK, KEPT_OUT, CAMERA_SHARE = 100_000, 0.4, 0.05


def real_embeddings(folder: Path) -> tuple[np.ndarray, np.ndarray, object]:
    """(photos, queries, scorer): the 100 test photos' and 200 test queries' embeddings by the shipped search model
    (kept in `folder`), and the scorer whose query bank gives the offsets."""
    from wsense.config import load_config
    from wsense.data import load_data
    from wsense.models.shipped import copy_shipped_model
    from wsense.safety import mentions_child
    from wsense.serving.scoring import RelevanceScorer

    checkpoint = folder / "model"
    if not checkpoint.is_dir():
        copy_shipped_model(checkpoint)
    config = load_config(None)
    scorer = RelevanceScorer.from_checkpoint(checkpoint, config)
    cache = folder / "real.npz"
    if not cache.is_file() or "texts" not in np.load(cache):
        data = load_data(config.data_dir, check_images=False)
        queries = [q for q in dict.fromkeys(data.test_queries["query_text"]) if not mentions_child(q)][:200]
        _, photos, _ = scorer.embed_photos([data.test_image_dir / name for name in data.test_images],
                                           skip_unreadable=True)
        np.savez(cache, photos=np.asarray(photos, np.float32), queries=scorer.embed_texts(queries),
                 texts=np.array(queries))
    real = np.load(cache)
    (folder / "queries.json").write_text(json.dumps(real["texts"].tolist()), encoding="utf-8")
    return real["photos"], real["queries"], scorer


def catalog_chunks(photos: int, centres: np.ndarray):
    """(entries, embeddings) chunk by chunk, the same for the same arguments."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from vector_store import clustered  # this folder's synthetic catalogs

    for start in range(0, photos, CHUNK):
        rng = np.random.default_rng(start)
        n = min(CHUNK, photos - start)
        vectors = clustered(rng, n, centres).astype(np.float32)
        kept_out = rng.random(n) < KEPT_OUT
        camera = np.where(rng.random(n) < CAMERA_SHARE, -1, rng.integers(0, len(CAMERAS), n))
        orientation = rng.integers(0, 3, n)
        days = rng.integers(0, 3650, n)
        lens = rng.integers(0, len(LENSES), n)
        entries = []
        for j in range(n):
            i = start + j
            folder = f"shoot{i % 500:03d}"
            child = bool(kept_out[j])
            entries.append({
                "path": f"{folder}/photo{i:09d}.jpg", "size": 2_000_000 + i % 997, "mtime_ns": 1_700_000_000 + i,
                "sha256": f"{i:064x}",
                "meta": {"folder": folder, "width": 6000 if orientation[j] != 1 else 4000,
                         "height": 4000 if orientation[j] == 0 else 6000 if orientation[j] == 1 else 6000,
                         "orientation": ("landscape", "portrait", "square")[orientation[j]],
                         "taken": str(np.datetime64("2015-01-01") + int(days[j])) + "T10:00:00",
                         "camera": CAMERA if camera[j] < 0 else CAMERAS[camera[j]], "lens": LENSES[lens[j]]},
                "check": {"version": "synthetic", "child": child, "reason": "synthetic" if child else ""},
                "excluded": "image check: synthetic" if child else None})
        yield entries, vectors


def exact_top10(photos: int, centres: np.ndarray, queries: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """Row ids (rows are written in order: row id = position + 1) of the exact top 10, all allowed photos and those
    of the filter's camera."""
    best = {name: (np.full((len(queries), 10), -np.inf, np.float32), np.zeros((len(queries), 10), np.int64))
            for name in ("", "filtered_")}
    # The offsets run to the last searchable photo's row id; photos after it are kept out.
    offsets = np.concatenate([offsets, np.full(max(0, photos + 1 - len(offsets)), np.nan, np.float32)])
    for start, (entries, vectors) in zip(range(0, photos, CHUNK), catalog_chunks(photos, centres)):
        ids = np.arange(start + 1, start + 1 + len(vectors))
        allowed = np.array([e["excluded"] is None for e in entries])
        camera = np.array([e["meta"]["camera"] == CAMERA for e in entries])
        scores = queries @ vectors.T - offsets[ids][None]
        for name, keep in (("", allowed), ("filtered_", allowed & camera)):
            top_s, top_i = best[name]
            s = np.hstack([top_s, np.where(keep[None], scores, -np.inf)])
            i = np.hstack([top_i, np.broadcast_to(ids, (len(queries), len(ids)))])
            order = np.argsort(-s, axis=1)[:, :10]
            best[name] = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return {name: ids for name, (_, ids) in best.items()}


def build(folder: Path, photos: int, dtype: str) -> float:
    from tqdm import tqdm

    from wsense.serving.compressed import build_compressed_stage
    from wsense.serving.store import IndexStore

    centres, queries, scorer = real_embeddings(folder)
    np.save(folder / "queries.npy", queries)
    index_dir = folder / "index"
    shutil.rmtree(index_dir, ignore_errors=True)
    began = time.perf_counter()
    chunks = tqdm(catalog_chunks(photos, centres), total=-(-photos // CHUNK), desc="index store", unit="chunk")
    # The shipped model's fingerprint: the search engine opens the index as one of its own.
    IndexStore(index_dir).write_chunks(folder / "photos", scorer.fingerprint, chunks, dtype)
    build_compressed_stage(index_dir, scorer.photo_offsets, progress=True)
    return time.perf_counter() - began


def serve(folder: Path, depth: int | None) -> dict:
    """In its own process: open the index, answer the queries, report."""
    from wsense.serving.compressed import CompressedStage
    from wsense.serving.metadata import MetadataFilter

    stage = CompressedStage(folder / "index", **({"depth": depth} if depth else {}))
    queries = np.load(folder / "queries.npy")
    camera = MetadataFilter.parse(camera=CAMERA)
    stage.paths(stage.search(queries[0], 10)[1])
    out: dict = {"start_s": round(time.perf_counter() - STARTED, 2)}
    stage.allowed(camera)  # the filter's bitmap, made once and kept as the server keeps its last filters'
    for name, filters in (("", None), ("filtered_", camera)):
        times, found = [], []
        for query in queries:
            began = time.perf_counter()
            _, ids = stage.search(query, 10, filters=filters)
            stage.paths(ids)  # what a result shows
            times.append(time.perf_counter() - began)
            found.append(np.pad(ids, (0, 10 - len(ids)), constant_values=-1))
        ms = np.array(times) * 1000
        out[f"{name}p50_ms"], out[f"{name}p95_ms"] = (round(float(np.percentile(ms, q)), 2) for q in (50, 95))
        np.save(folder / f"{name}found.npy", np.array(found))
    out["rss_mb"] = rss_mb()
    out["torch_loaded"] = "torch" in sys.modules
    return out


def rss_mb() -> int:
    """This process's resident memory now."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve_start import status  # this folder's reading of /proc

    return round(status(os.getpid())["VmRSS"])


def serve_engine(folder: Path) -> dict:
    """In its own process: the search engine `wsense serve` runs (search.first_stage: compressed) over the index,
    opened from the index folder alone, answering the queries' texts (the query check and the text tower
    included)."""
    from wsense.config import load_config
    from wsense.serving.search import SearchEngine

    config = load_config(None)
    config.search.first_stage = "compressed"
    engine = SearchEngine(folder / "model", index_dir=folder / "index", settings=config)
    texts = json.loads((folder / "queries.json").read_text(encoding="utf-8"))
    engine.search(texts[0], 10)
    out: dict = {"engine_start_s": round(time.perf_counter() - STARTED, 2)}
    times, found = [], []
    for text in texts:
        began = time.perf_counter()
        result = engine.search(text, 10)
        times.append(time.perf_counter() - began)
        found.append(None if result.refused else [item["image"] for item in result.results])
    out["engine_p50_ms"] = round(float(np.percentile(np.array(times) * 1000, 50)), 2)
    (folder / "engine_found.json").write_text(json.dumps(found), encoding="utf-8")
    out["engine_rss_mb"] = rss_mb()
    out["torch_loaded"] = "torch" in sys.modules
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--folder", default="/tmp/wsense-scale", help="where the catalog's index is written")
    parser.add_argument("--dtype", default="int10", choices=["int10", "float16", "float32"],
                        help="the store's embeddings (embedding.index_dtype; a store's own default is float32)")
    parser.add_argument("--keep", action="store_true", help="keep the index folder afterwards")
    parser.add_argument("--depth", type=int, help="photos re-scored from the store per query (default: the stage's)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-engine", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder)
    if args.serve:
        print(json.dumps(serve(folder, args.depth)))
        return
    if args.serve_engine:
        print(json.dumps(serve_engine(folder)))
        return
    folder.mkdir(parents=True, exist_ok=True)
    build_s = build(folder, args.photos, args.dtype)
    index_dir = folder / "index"
    disk = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
    # The server starts with a cold process but a warm page cache: the files were just written.
    answer = subprocess.run([sys.executable, __file__, "--serve", "--folder", str(folder),
                             *(["--depth", str(args.depth)] if args.depth else [])], capture_output=True, text=True)
    if answer.returncode:
        sys.exit(f"the server failed:\n{answer.stderr[-3000:]}")
    served = json.loads(answer.stdout.splitlines()[-1])
    answer = subprocess.run([sys.executable, __file__, "--serve-engine", "--folder", str(folder)],
                            capture_output=True, text=True)
    if answer.returncode:
        sys.exit(f"the search engine failed:\n{answer.stderr[-3000:]}")
    engine = json.loads(answer.stdout.splitlines()[-1])
    from wsense.serving.compressed import OFFSETS_FILE

    centres = np.load(folder / "real.npz")["photos"]
    truth = exact_top10(args.photos, centres, np.load(folder / "queries.npy"), np.load(index_dir / OFFSETS_FILE))
    recall = {name: float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(np.load(folder / f"{name}found.npy"),
                                                                          truth[name])])) for name in truth}
    answered = [(got, {f"shoot{(i - 1) % 500:03d}/photo{i - 1:09d}.jpg" for i in want})
                for got, want in zip(json.loads((folder / "engine_found.json").read_text(encoding="utf-8")),
                                     truth[""]) if got is not None]
    engine["engine_recall_at_10"] = round(float(np.mean([len(set(got) & want) / 10 for got, want in answered])), 3)
    engine["engine_queries_answered"] = len(answered)
    print(f"store embeddings {args.dtype}; server: {served}; search engine: {engine}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(index_dir)
    print(json.dumps({"photos": args.photos, "build_s": round(build_s, 1),
                      "disk_bytes_per_photo": round(disk / args.photos), "start_s": served["start_s"],
                      "rss_mb": served["rss_mb"], "p50_ms": served["p50_ms"], "p95_ms": served["p95_ms"],
                      "recall_at_10": round(recall[""], 3), "filtered_p50_ms": served["filtered_p50_ms"],
                      "filtered_recall_at_10": round(recall["filtered_"], 3),
                      **{key: value for key, value in engine.items() if key != "torch_loaded"}}))


if __name__ == "__main__":
    main()
