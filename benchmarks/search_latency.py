"""Search speed: index throughput (decode and model time apart, the photo backbone in ONNX Runtime and in torch)
and end-to-end query latency p50/p95.

Latency covers the whole query path: legal check, text tower, first stage, fusion re-rank of the top
candidates. Catalogs: the 100 real test images, with the text tower in torch, in ONNX Runtime and in ONNX
Runtime with int8 weights (search.text_runtime) taking turns of 25 queries, so all see the same machine load;
then 100k and 1M synthetic embeddings (real image embeddings plus noise, so they cluster as real catalogs do)
through FAISS, with the FAISS first stage's recall@10 against exact search.

    python benchmarks/search_latency.py [--checkpoint runs/final/best] [--sizes 100000 1000000] [--compile]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from wsense.config import load_config
from wsense.data import load_data
from wsense.models.image import stack_pixels
from wsense.models.photos import PhotoEncoder
from wsense.safety import mentions_child
from wsense.serving.first_stage import FirstStage
from wsense.safety.screener import load_or_fit_screener
from wsense.serving.scoring import read_translations
from wsense.serving.search import SearchEngine, torch_threads


def percentiles(times: list[float]) -> str:
    ms = np.array(times) * 1000
    return f"p50 {np.percentile(ms, 50):6.2f} ms, p95 {np.percentile(ms, 95):6.2f} ms"


def russian_latency(engine: SearchEngine, config, count: int) -> None:
    """Russian queries (USE, the map, and the gloss through the English tower) with the gloss and without it."""
    search = engine.scorer.config.search
    queries = [q for q in read_translations(config.data.russian_queries) if not mentions_child(q)]
    queries = (queries * (count // len(queries) + 1))[:count]
    configured = search.multilingual_gloss
    times: dict[float, list[float]] = {configured: [], 0.0: []}
    engine.search(queries[0])
    for i, block in enumerate(range(0, len(queries), 25)):
        for weight in list(times)[::1 if i % 2 else -1]:
            search.multilingual_gloss = weight
            for query in queries[block:block + 25]:
                start = time.perf_counter()
                engine.search(query, top_k=1)
                times[weight].append(time.perf_counter() - start)
    search.multilingual_gloss = configured
    for weight, measured in times.items():
        print(f"{len(engine.images):>9} real images, Russian queries, text tower {search.text_runtime}, "
              f"multilingual_gloss {weight:g}: {percentiles(measured)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/final/best")
    parser.add_argument("--config", help="search and runtime settings (default: configs/default.yaml)")
    parser.add_argument("--sizes", nargs="*", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--query-threads", type=int, help="torch threads per query (default: search.query_threads)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the torch text tower first (as serve --compile with text_runtime: torch)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    config = load_config(args.config)
    config.search.query_cache = 0  # every query through the text tower: the latency of a new query
    data = load_data(config.data_dir)
    engine = SearchEngine(args.checkpoint, data.test_image_dir, index_dir="/tmp/wsense-bench-index", rebuild=True,
                          settings=config, checker=load_or_fit_screener(config))
    scorer = engine.scorer
    engine.query_threads = args.query_threads or engine.query_threads
    from wsense.models.text_onnx import OnnxTextPath

    onnx = OnnxTextPath(scorer.model, args.checkpoint)
    onnx_int8 = OnnxTextPath(scorer.model, args.checkpoint, int8=True)
    scorer.onnx_text = None
    if args.compile:
        scorer.compile_text_tower()
    runtimes = {f"torch ({'compiled' if args.compile else 'eager'})": None, "onnx": onnx, "onnx_int8": onnx_int8}

    paths = [data.test_image_dir / name for name in data.test_images]
    start = time.perf_counter()
    pixels = stack_pixels([scorer.photos.pixels(p) for p in paths])
    decode = time.perf_counter() - start
    # The photo backbone in each image runtime, in alternating turns (same machine load for both).
    backbone, image_config = scorer.model.image_backbone, scorer.config.image_backbone
    image_runtimes = {"onnx": PhotoEncoder(backbone, image_config, runtime="onnx", onnx_dir=args.checkpoint),
                      "torch": PhotoEncoder(backbone, image_config)}
    model_times: dict[str, float] = {name: 0.0 for name in image_runtimes}
    for turn in range(2):
        for name in list(image_runtimes)[::1 if turn % 2 else -1]:
            start = time.perf_counter()
            scorer.embed_features(image_runtimes[name].features(pixels))
            model_times[name] += (time.perf_counter() - start) / 2
    views = len(scorer.photos.transform.views)
    tower = " + ".join(f"{b.name}@{b.image_size}" for b in backbone.backbones)
    for name, model in model_times.items():
        print(f"index throughput, image_runtime {name} ({tower}, {len(paths)} images, {views} views each, CPU "
              f"{torch.get_num_threads()} threads): {len(paths) / (decode + model):.1f} images/s; decode+views "
              f"{len(paths) / decode:.1f}/s, model {len(paths) / model:.1f}/s")
    print(f"image backbone: onnx takes {model_times['onnx'] / model_times['torch']:.2f} of torch's time")

    queries = [q for q in data.test_queries["query_text"] if not mentions_child(q)]
    queries = (queries * (args.queries // len(queries) + 1))[:args.queries]
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    embedded, top = {}, {}
    for name, text_path in runtimes.items():
        scorer.onnx_text = text_path
        engine.search(queries[0])
        embedded[name] = scorer.embed_texts(queries)
        top[name] = [engine.search(query, top_k=1).results[0]["image"] for query in queries]
    # Turns of 25 queries, first one runtime then the other: both see the same machine load, and neither
    # runs with the other's weights just pushed through the caches (as per-query turns would do).
    for i, block in enumerate(range(0, len(queries), 25)):
        for name in list(runtimes)[::1 if i % 2 else -1]:
            scorer.onnx_text = runtimes[name]
            for query in queries[block:block + 25]:
                start = time.perf_counter()
                engine.search(query, top_k=1)
                times[name].append(time.perf_counter() - start)
    print(f"query path: torch {engine.query_threads} thread(s), ONNX Runtime {onnx.threads} (search.query_threads, "
          "torch threads)")
    for name in runtimes:
        print(f"{len(engine.images):>9} real images, exact first stage, ranking {engine.ranker.ranking}, text tower "
              f"{name:>16}: {percentiles(times[name])}")
    reference = list(runtimes)[0]
    for name in list(runtimes)[1:]:
        ratio = np.percentile(times[name], 50) / np.percentile(times[reference], 50)
        same = sum(x == y for x, y in zip(top[name], top[reference]))
        print(f"{name} / torch p50 {ratio:.2f}; query embeddings max |difference| "
              f"{np.abs(embedded[name] - embedded[reference]).max():.1e}; same top result for {same} of "
              f"{len(queries)} queries")
    default = engine.config.search.text_runtime  # the Russian queries and the synthetic catalogs: the configured one
    scorer.onnx_text = runtimes.get(default)
    if config.data.russian_queries and scorer.text_map is not None:
        russian_latency(engine, config, args.queries)

    rng = np.random.default_rng(0)
    base = engine.embeddings
    query_vectors = scorer.embed_texts(queries)
    for size in args.sizes:
        vectors = base[rng.integers(0, len(base), size)] + 0.08 * rng.standard_normal((size, base.shape[1]),
                                                                                       dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        # As SearchEngine: under ranking qb_cosine the first stage subtracts the photos' query-bank offsets and its
        # top 10 are the results (fusion relevance for those 10 only); under fusion it re-ranks `candidates`.
        qb = engine.ranker.ranking != "fusion"
        offsets = scorer.photo_offsets(vectors) if engine.ranker.ranking == "qb_cosine" else None
        depth = 10 if qb else engine.ranker.candidates
        start = time.perf_counter()
        stage = FirstStage(vectors, "faiss", nprobe=config.search.faiss_nprobe, offsets=offsets)
        build = time.perf_counter() - start
        exact = FirstStage(vectors, "exact", offsets=offsets)
        _, truth = exact.search(query_vectors[:50], 10)
        _, found = stage.search(query_vectors[:50], 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
        embeddings = vectors
        times = []
        for query in queries:
            start = time.perf_counter()
            with torch_threads(engine.query_threads):  # as SearchEngine.search
                v = scorer.embed_texts([query])
                _, shortlist = stage.search(v, depth)
                scorer.relevance(v, embeddings[shortlist[0]])
            times.append(time.perf_counter() - start)
        ranker = engine.ranker
        what = f"ranking {ranker.ranking}, fusion score of the top 10" if qb else f"re-rank top {ranker.candidates}"
        print(f"{size:>9} synthetic, FAISS IVF (built in {build:.0f}s), {what}, {default}: "
              f"{percentiles(times)}; recall@10 vs exact {recall:.3f}")
        del vectors, exact, stage, embeddings


if __name__ == "__main__":
    main()
