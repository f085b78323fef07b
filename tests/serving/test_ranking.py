"""Ranking (wsense/serving/ranking.py): the score a list shows is the ranking's own, calibrated (it never rises down a
list, and the cut-off cuts on it); the fusion head re-ranks the first stage's shortlist; the first stage widens
until a page is full; near duplicates fold into the best-ranked one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import settings, write_image
from wsense.models.calibration import ScoreCalibration
from wsense.serving.metadata import MetadataFilter
from wsense.serving.search import SearchEngine

QUERY = "a dog swimming in a lake"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ranking") / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(12):
        write_image(root / ("sub" if i % 3 == 0 else ".") / f"photo{i}.jpg", 700 + i, size=(64, 48))
    return root


@pytest.fixture(scope="module", params=["cosine", "fusion"])
def engine(request, checkpoint, photos, tmp_path_factory) -> SearchEngine:
    return SearchEngine(checkpoint, photos, None, index_dir=tmp_path_factory.mktemp("ix") / "ix",
                        settings=settings(search__ranking=request.param, search__candidates=5))


REQUESTS = [dict(query=QUERY), dict(query=QUERY, like="photo2.jpg"), dict(query=QUERY, negatives=["snow"]),
            dict(like="photo2.jpg"), dict(query=QUERY, filters=MetadataFilter.parse("sub")),
            dict(query=QUERY, min_score=0.0), dict(query=QUERY, offset=3)]


@pytest.mark.parametrize("request_options", REQUESTS, ids=lambda o: "+".join(o))
def test_scores_never_rise_down_a_list(engine, request_options):
    options = dict(request_options)
    result = engine.search(options.pop("query", ""), 8, **options)
    scores = [item["score"] for item in result.results]
    assert scores and scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores) or result.score == "similarity"


def test_a_query_texts_score_is_its_ranking_score_through_the_calibration(engine, monkeypatch):
    # A steep known curve: the score shown must be exactly the ranking score mapped through it.
    curve = ScoreCalibration(engine.ranker.ranking, [-1.0, 1.0], [0.0, 1.0])
    monkeypatch.setattr(engine.ranker, "calibration", curve)
    v = engine.scorer.embed_texts([QUERY])
    raw = (v @ engine.embeddings.T)[0] if engine.ranker.ranking == "cosine" else engine.scorer.relevance(
        v, engine.embeddings)[0]
    expected = {name: round(float(curve(float(raw[i]))), 4) for i, name in enumerate(engine.images)}
    result = engine.search(QUERY, 5)
    assert [item["score"] for item in result.results] == pytest.approx(
        [expected[item["image"]] for item in result.results], abs=2e-4)
    relevance = engine.scorer.relevance(v, engine.embeddings)[0]
    assert all(item["relevance"] == pytest.approx(float(relevance[engine.images.index(item["image"])]), abs=1e-4)
               for item in result.results)  # the fusion head's reading stays, under its own name


def test_the_cut_off_cuts_on_the_score_shown(engine, monkeypatch):
    monkeypatch.setattr(engine.ranker, "calibration", ScoreCalibration(engine.ranker.ranking, [-1.0, 1.0],
                                                                        [0.0, 1.0]))
    full = engine.search(QUERY, 12).results
    cut = full[len(full) // 2]["score"]
    kept = engine.search(QUERY, 12, min_score=cut)
    assert kept.results == [item for item in full if item["score"] >= cut] and kept.total == len(kept.results)


def test_a_flat_stretch_of_the_curve_keeps_the_rankings_order(engine, monkeypatch):
    """Ties in the score shown (the isotonic curve is flat in places) leave the order to the ranking score."""
    flat = ScoreCalibration(engine.ranker.ranking, [-1.0, 1.0], [0.5, 0.5])
    before = [item["image"] for item in engine.search(QUERY, 8).results]
    monkeypatch.setattr(engine.ranker, "calibration", flat)
    after = engine.search(QUERY, 8).results
    assert [item["image"] for item in after] == before and {item["score"] for item in after} == {0.5}


@pytest.mark.parametrize("candidates", [1, 2, 100])
def test_the_fusion_head_reranks_the_first_stage_shortlist(tiny_data, checkpoint, candidates):
    engine = SearchEngine(checkpoint, tiny_data / "test_images", None, candidates=candidates,
                          index_dir=tiny_data.parent / "index", settings=settings())
    query = "a dog swimming in a lake"
    v = engine.scorer.embed_texts([query])
    cosine_order = np.argsort(-(v @ engine.embeddings.T)[0], kind="stable")
    shortlist = cosine_order[:max(candidates, 3)]
    relevance = engine.scorer.relevance(v, engine.embeddings[shortlist])[0]
    calibrated = engine.ranker.calibration(relevance)  # the score shown: the fusion ranking's, calibrated
    expected = [(engine.images[int(shortlist[i])], pytest.approx(float(calibrated[i]), abs=2e-4))
                for i in np.argsort(-relevance, kind="stable")]
    found = [(item["image"], item["score"]) for item in engine.search(query, top_k=3).results]
    assert found == expected
    engine.ranker.candidates = candidates  # top-1: only the first stage's best `candidates` photos are re-ranked
    shortlist = cosine_order[:candidates]
    relevance = engine.scorer.relevance(v, engine.embeddings[shortlist])[0]
    best = engine.images[int(shortlist[int(relevance.argmax())])]
    assert engine.search(query).results[0]["image"] == best


QUERIES = ["a dog", "a man climbing a rock", "snowy mountains under a blue sky", "a red bicycle on the street"]


def test_search_re_ranks_the_cosine_shortlist_by_fusion_relevance(exact_engine):
    engine = exact_engine
    assert engine.ranker.candidates == 3
    assert engine.catalog.first_stage.method == "exact" and len(engine.images) == 8
    for query in QUERIES:
        v = engine.scorer.embed_texts([query])
        cosine = (v @ engine.embeddings.T)[0]
        rows = np.argsort(-cosine, kind="stable")[:3]
        relevance = engine.scorer.relevance(v, engine.embeddings[rows])[0]
        expected = [(engine.images[int(rows[i])], round(float(relevance[i]), 4))
                    for i in np.argsort(-relevance, kind="stable")]
        found = [(r["image"], r["relevance"]) for r in engine.search(query, top_k=3).results]
        assert found == expected, query
        assert len(engine.search(query, top_k=5).results) == 5  # the shortlist grows to top_k


def test_top_k_above_the_shortlist_re_ranks_the_cosine_top_k(exact_engine):
    engine = exact_engine
    assert engine.ranker.candidates == 3
    query = QUERIES[0]
    v = engine.scorer.embed_texts([query])
    rows = np.argsort(-(v @ engine.embeddings.T)[0], kind="stable")[:5]
    relevance = engine.scorer.relevance(v, engine.embeddings[rows])[0]
    expected = [engine.images[int(rows[i])] for i in np.argsort(-relevance, kind="stable")]
    assert [r["image"] for r in engine.search(query, top_k=5).results] == expected


def names(result) -> list[str]:
    return [item["image"] for item in result.results]


def test_min_score_widens_the_first_stage_until_the_page_is_full(features_engine, monkeypatch):
    # candidates 4 of 8 photos: a cut-off that leaves fewer than k of the first 4 must look further
    monkeypatch.setattr(features_engine.ranker, "candidates", 2)
    result = features_engine.search(QUERY, 5, min_score=0.0)
    assert names(result) == names(features_engine.search(QUERY, 5)) and result.total >= 5
    narrow = features_engine.search(QUERY, 1, min_score=0.0)
    assert narrow.total == 2 and not narrow.total_exact  # only the first stage's 2 best were scored


def test_near_duplicates_fold_into_the_best_ranked_one(features_engine, monkeypatch):
    plain = features_engine.search(QUERY, 8)
    vectors = features_engine.embeddings
    names_in_order = [item["image"] for item in plain.results]
    rows = [features_engine.images.index(name) for name in names_in_order]
    similarity = vectors[rows] @ vectors[rows].T
    # a threshold between the pairs: some photos fold, others stay
    threshold = float(np.quantile(similarity[np.triu(np.ones((8, 8), dtype=bool), 1)], 0.9))
    monkeypatch.setattr(features_engine.ranker, "duplicate_threshold", threshold)
    folded = features_engine.search(QUERY, 8)
    shown = [item["image"] for item in folded.results]
    hidden = [s["image"] for item in folded.results for s in item.get("similar", [])]
    assert hidden and sorted(shown + hidden) == sorted(names_in_order) and folded.total == len(shown)
    assert shown == [name for name in names_in_order if name not in hidden]  # the ranking of what stays is kept
    for item in folded.results:
        lead = features_engine.images.index(item["image"])
        for other in item.get("similar", []):
            row = features_engine.images.index(other["image"])
            assert float(vectors[lead] @ vectors[row]) >= threshold - 1e-6
            assert names_in_order.index(other["image"]) > names_in_order.index(item["image"])
    # no photo that stays is that similar to one above it
    for a in range(len(shown)):
        for b in range(a):
            assert float(vectors[features_engine.images.index(shown[a])]
                         @ vectors[features_engine.images.index(shown[b])]) < threshold
    # pages keep the order of what stays (a page lists the duplicates among the photos its search looked at)
    pages = [features_engine.search(QUERY, 2, offset=offset).results for offset in range(0, len(shown), 2)]
    assert [item["image"] for item in sum(pages, [])] == shown
