"""The first stage (wsense/serving/first_stage.py): FAISS finds what exact search finds, inside the engine and on
its own, and both rank by the cosine minus the query-bank offsets."""
from __future__ import annotations

import numpy as np
import pytest

from wsense.errors import WsenseError
from wsense.serving.first_stage import FirstStage

QUERIES = ["a dog", "a man climbing a rock", "snowy mountains under a blue sky", "a red bicycle on the street"]


@pytest.mark.parametrize("candidates", [3, 6])
def test_faiss_first_stage_finds_what_the_exact_one_finds(faiss_engine, exact_engine, candidates, monkeypatch):
    # candidates below the catalog's 8 photos, or the whole catalog is re-ranked and no first stage runs at all
    monkeypatch.setattr(faiss_engine.ranker, "candidates", candidates)
    monkeypatch.setattr(exact_engine.ranker, "candidates", candidates)
    assert faiss_engine.catalog.first_stage.method == "faiss" and faiss_engine.catalog.first_stage.index is not None
    assert exact_engine.catalog.first_stage.method == "exact"
    assert faiss_engine.images == exact_engine.images
    calls = []
    search = faiss_engine.catalog.first_stage.search
    monkeypatch.setattr(faiss_engine.catalog.first_stage, "search",
                        lambda queries, k, **options: calls.append(k) or search(queries, k, **options))
    for query in QUERIES:
        faiss = faiss_engine.search(query, top_k=5).results
        exact = exact_engine.search(query, top_k=5).results
        assert len(faiss) == 5
        assert [r["image"] for r in faiss] == [r["image"] for r in exact], query
        assert all(abs(f["score"] - e["score"]) <= 1e-5 for f, e in zip(faiss, exact)), query
    assert calls and all(k == max(candidates, 5) for k in calls)  # FAISS really shortlisted


def test_faiss_first_stage_agrees_with_exact_search():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((50, 32))
    vectors = centers[rng.integers(0, 50, 5000)] + 0.3 * rng.standard_normal((5000, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:20] + 0.05 * rng.standard_normal((20, 32))
    exact = FirstStage(vectors, "exact")
    approximate = FirstStage(vectors, "faiss", nprobe=16)
    assert approximate.method == "faiss" and exact.method == "exact"
    assert FirstStage(vectors, "auto", faiss_threshold=1000).method == "faiss"
    _, e = exact.search(queries, 10)
    scores, a = approximate.search(queries, 10)
    recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(e, a)])
    assert recall >= 0.9
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    with pytest.raises(WsenseError, match="unknown first stage"):
        FirstStage(vectors, "annoy")


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("method", ["exact", "faiss"])
def test_first_stage_ranks_by_cosine_minus_offsets(method):
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((40, 24))
    vectors = unit(centers[rng.integers(0, 40, 4000)] + 0.3 * rng.standard_normal((4000, 24))).astype(np.float32)
    offsets = rng.uniform(0, 0.3, 4000).astype(np.float32)
    queries = unit(vectors[:20] + 0.05 * rng.standard_normal((20, 24))).astype(np.float32)
    stage = FirstStage(vectors, method, nprobe=16, offsets=offsets)
    scores, rows = stage.search(queries, 10)
    truth = np.argsort(-(queries @ vectors.T - offsets), axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)])
    assert overlap == 1.0 if method == "exact" else overlap > 0.9
    if method == "exact":
        assert np.allclose(scores, np.take_along_axis(queries @ vectors.T - offsets, rows, axis=1), atol=1e-5)
