"""Issue 30: what each way of keeping an embedding in the index store costs in recall. Exact top 10 of the 200 test
queries by each code against the exact top 10 in float32, over `--photos` synthetic photos (benchmarks/scale.py's
catalog: the test photos' embeddings by the shipped search model plus benchmarks/vector_store.py's noise), with no
first stage, so the loss is the code's alone. float16 and int10 go through the store's own encoding
(wsense/serving/store.py); int8 and 12 bits (one scale a vector) are computed here, as candidates.

    python experiments/embedding_codes.py --photos 1000000 [--folder /tmp/wsense-scale]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from scale import real_embeddings  # noqa: E402
from vector_store import clustered  # noqa: E402

from wsense.serving.store import decode_embeddings, encode_embeddings  # noqa: E402

CHUNK = 100_000


def scaled(bits: int):
    levels = 2 ** (bits - 1) - 1

    def code(vectors: np.ndarray) -> np.ndarray:
        scale = np.abs(vectors).max(axis=1, keepdims=True) / levels
        return np.round(vectors / scale) * scale
    return code


def stored(dtype: str):
    def code(vectors: np.ndarray) -> np.ndarray:
        return decode_embeddings(encode_embeddings(vectors, dtype), dtype, vectors.shape[1])
    return code


CODES = {"float16": (768, stored("float16")), "int8": (388, scaled(8)), "int10": (484, stored("int10")),
         "int12": (580, scaled(12))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--folder", default="/tmp/wsense-scale", help="where the real embeddings are cached")
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    centres, queries, _ = real_embeddings(folder)
    best = {name: (np.full((len(queries), 10), -np.inf), np.zeros((len(queries), 10), np.int64))
            for name in ["float32", *CODES]}
    for start in range(0, args.photos, CHUNK):
        vectors = clustered(np.random.default_rng(start), min(CHUNK, args.photos - start), centres)
        vectors = vectors.astype(np.float32)
        ids = np.arange(start, start + len(vectors))
        for name in best:
            scores = queries @ (vectors if name == "float32" else CODES[name][1](vectors)).T
            top_s, top_i = best[name]
            s = np.hstack([top_s, scores])
            i = np.hstack([top_i, np.broadcast_to(ids, scores.shape)])
            order = np.argsort(-s, axis=1)[:, :10]
            best[name] = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    truth = best["float32"][1]
    for name, (size, _) in CODES.items():
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(best[name][1], truth)])
        print(f"{name:8s} {size:4d} bytes  top-10 overlap with float32 {overlap:.4f}")


if __name__ == "__main__":
    main()
