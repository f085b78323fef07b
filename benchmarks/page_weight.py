"""What a result page costs the browser, and the API's latency in process.

Over the 100 test photos (the index, its thumbnails and the image check as `wsense serve` has them): the bytes of a
24-result page (the HTML and every image it shows: thumbnails, against the originals the grid used to load), then
p50 / p95 of `/api/search` (k=24) and `/api/similar` (k=24) through FastAPI's test client, one request at a time.
Then the same two routes over a synthetic catalog of `--synthetic` photos (the test photos' embeddings plus noise,
so they cluster as real ones do, written as an index and opened as `wsense serve --index-dir` opens one; FAISS
first stage).

    python benchmarks/page_weight.py [--checkpoint runs/final/best] [--queries 50] [--synthetic 100000]
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from fastapi.testclient import TestClient

from wsense.config import load_config
from wsense.data import load_data
from wsense.safety import mentions_child
from wsense.safety.screener import load_or_fit_screener
from wsense.models.checkpoint import model_fingerprint
from wsense.serving.index import CatalogIndex
from wsense.serving.metadata import unknown_metadata
from wsense.serving.search import SearchEngine
from wsense.serving.web import create_app

from search_latency import percentiles  # this folder's latency benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/final/best")
    parser.add_argument("--config", help="search and runtime settings (default: configs/default.yaml)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--synthetic", type=int, nargs="*", default=[100_000], help="synthetic catalog sizes")
    args = parser.parse_args()
    config = load_config(args.config)
    data = load_data(config.data_dir)
    checker = load_or_fit_screener(config)
    engine = SearchEngine(args.checkpoint, data.test_image_dir, settings=config, checker=checker)
    client = TestClient(create_app(engine, max_k=50))
    queries = [q for q in data.test_queries["query_text"].drop_duplicates() if not mentions_child(q)][:args.queries]

    page_bytes, thumb_bytes, original_bytes, shown = [], [], [], []
    for query in queries[:10]:
        html = client.get("/", params={"q": query, "k": 24}).content
        names = [unquote(n) for n in re.findall(r'<img src="/thumbnails/([^"]*)"', html.decode())]
        page_bytes.append(len(html))
        thumb_bytes.append(sum(len(client.get(f"/thumbnails/{name}").content) for name in names))
        original_bytes.append(sum((engine.root / name).stat().st_size for name in names))
        shown.append(len(names))
    print(f"24-result page ({np.mean(shown):.0f} photos shown of {len(engine.images)} searchable, mean of "
          f"{len(page_bytes)} queries): HTML {np.mean(page_bytes) / 1024:.1f} KiB + thumbnails "
          f"{np.mean(thumb_bytes) / 1024:.0f} KiB = {(np.mean(page_bytes) + np.mean(thumb_bytes)) / 1024:.0f} KiB, "
          f"against {np.mean(original_bytes) / 1024 / 1024:.2f} MiB with the originals "
          f"({np.mean(thumb_bytes) / np.mean(original_bytes):.3f} of it)")

    api_latency(engine, client, queries)
    del client
    for size in args.synthetic:
        with tempfile.TemporaryDirectory(prefix="wsense-synthetic-") as folder:
            began = time.perf_counter()
            write_synthetic_index(engine, size, Path(folder), args.checkpoint, checker.version)
            synthetic = SearchEngine(args.checkpoint, index_dir=folder, settings=config, checker=checker)
            print(f"{size} synthetic photos: index written and opened in {time.perf_counter() - began:.0f} s, first "
                  f"stage {synthetic.first_stage.method}")
            api_latency(synthetic, TestClient(create_app(synthetic, max_k=50)), queries)
            del synthetic


def api_latency(engine: SearchEngine, client: TestClient, queries: list[str]) -> None:
    """p50 / p95 of /api/search and /api/similar (k=24), one request at a time; the queries are new to the engine
    (its query cache emptied first), as a busy server's mostly are."""
    engine.scorer.query_cache.clear()
    rng = np.random.default_rng(0)
    for name, request in (("/api/search", lambda q: client.get("/api/search", params={"q": q, "k": 24})),
                          ("/api/similar", lambda q: client.get("/api/similar", params={
                              "image": engine.images[int(rng.integers(len(engine.images)))], "k": 24}))):
        for query in queries[-5:]:
            request(query)  # warm-up
        times = []
        for query in queries[:-5]:
            began = time.perf_counter()
            response = request(query)
            times.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
        print(f"{name} (k=24, {len(engine.images)} photos, {len(times)} requests): {percentiles(times)}")


def write_synthetic_index(engine: SearchEngine, size: int, folder: Path, checkpoint: str, check_version: str) -> None:
    """An index of `size` photos that exist only in it: the engine's photo embeddings plus noise, renormalised."""
    rng = np.random.default_rng(0)
    base = engine.embeddings.numpy()
    vectors = base[rng.integers(0, len(base), size)] + 0.08 * rng.standard_normal((size, base.shape[1]),
                                                                                   dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    allowed = {"version": check_version, "child": False, "reason": "synthetic"}
    entries = [{"path": f"synthetic/{i:07d}.jpg", "size": 0, "mtime_ns": 0, "sha256": f"{i:064x}",
                "meta": unknown_metadata(f"synthetic/{i:07d}.jpg"), "check": allowed, "excluded": None}
               for i in range(size)]
    CatalogIndex(folder, model_fingerprint(checkpoint), entries, vectors).save(folder)


if __name__ == "__main__":
    main()
