"""The search engine (wsense/serving/search.py): a catalog ranked for a query with the legal filter on every query
and example, query threads, paging, a relevance cut-off, more like a photo, combined and negative queries, and
clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TEST_IMAGES, settings
from wsense.errors import WsenseError
from wsense.serving.requests import MAX_QUERY_CHARS, UnknownPhoto
from wsense.serving.search import SearchEngine


def test_search_ranks_the_catalog_and_keeps_described_children_out(engine):
    # The session engine: the tiny test photos, TEST_IMAGES[1] described as "Two boys play football ."
    assert engine.images == [TEST_IMAGES[0], TEST_IMAGES[2]]
    result = engine.search("a dog swimming in a lake", top_k=5)
    assert not result.refused and len(result.results) == 2
    scores = [item["score"] for item in result.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert {item["image"] for item in result.results} == {TEST_IMAGES[0], TEST_IMAGES[2]}
    assert len(engine.search("a dog").results) == 1  # top-1 by default


@pytest.mark.parametrize("query", ["two boys on the beach", "ДЕВОЧКА с шариком", "a 7-year-old at the fair",
                                   "toddler", "kids playing", "малыши в парке", "newborn photo shoot"])
def test_refused_queries_never_show_an_image(engine, query):
    result = engine.search(query, top_k=10)
    assert result.refused and result.results == [] and result.reason


def test_a_query_runs_on_query_threads_and_restores_the_setting(engine, monkeypatch):
    assert engine.query_threads == 2  # the default
    monkeypatch.setattr(engine, "query_threads", 1)
    embed, seen = engine.scorer._embed_texts, []  # the torch text tower (tests' search.text_runtime)
    monkeypatch.setattr(engine.scorer, "_embed_texts",
                        lambda *args: seen.append(torch.get_num_threads()) or embed(*args))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert engine.search("a dog in a lake, on query threads").results
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_bad_queries_are_clear_errors(engine, checkpoint, tiny_data):
    with pytest.raises(WsenseError, match="empty query"):
        engine.search("   ")
    with pytest.raises(WsenseError, match="query too long"):
        engine.search("dog " * MAX_QUERY_CHARS)
    with pytest.raises(WsenseError, match="image folder not found"):
        SearchEngine(checkpoint, tiny_data / "nowhere", settings=settings())


QUERY = "a dog swimming in a lake"


def names(result) -> list[str]:
    return [item["image"] for item in result.results]


def cosine_order(engine, direction: np.ndarray, leave_out: str | None = None) -> list[str]:
    order = np.argsort(-(engine.embeddings @ (direction / np.linalg.norm(direction))), kind="stable")
    return [engine.images[int(i)] for i in order if engine.images[int(i)] != leave_out]


def test_pages_are_slices_of_one_ranking_with_the_total(features_engine):
    full = features_engine.search(QUERY, 8)
    assert len(features_engine.images) == 8 and full.total == 8 and full.total_exact and len(full.results) == 8
    pages = [features_engine.search(QUERY, 3, offset=offset) for offset in (0, 3, 6)]
    assert sum((page.results for page in pages), []) == full.results
    assert [page.offset for page in pages] == [0, 3, 6] and all(page.total == 8 for page in pages)
    assert features_engine.search(QUERY, 3, offset=8).results == []


def test_min_score_leaves_out_lower_scores_and_counts_the_rest(features_engine):
    full = features_engine.search(QUERY, 8).results
    cut = sorted(item["score"] for item in full)[4]  # a cut-off that keeps some photos and drops others
    kept = [item for item in full if item["score"] >= cut]
    assert 0 < len(kept) < 8
    result = features_engine.search(QUERY, 8, min_score=cut)
    assert result.results == kept and result.total == len(kept) and result.total_exact
    assert features_engine.search(QUERY, 1, offset=1, min_score=cut).results == kept[1:2]
    assert features_engine.search(QUERY, 8, min_score=1.0).results == [] or all(i["score"] == 1.0 for i in full)


def test_more_like_a_catalog_photo_ranks_by_cosine_to_it_and_leaves_it_out(features_engine):
    example = "sub/photo3.jpg"
    result = features_engine.search(like=example, top_k=8)
    u = features_engine.embeddings[features_engine.images.index(example)]
    assert names(result) == cosine_order(features_engine, u, leave_out=example)
    assert result.score == "similarity" and result.total == 7 and result.like == example
    for item in result.results:
        expected = float(features_engine.embeddings[features_engine.images.index(item["image"])] @ u)
        assert item["score"] == pytest.approx(expected, abs=1e-4)
    assert names(features_engine.search(like="./sub/photo3.jpg", top_k=8)) == names(result)


def test_an_example_kept_out_by_the_legal_filter_is_refused_and_a_stranger_is_unknown(features_engine):
    refused = features_engine.search(like="photo1.jpg", top_k=8)
    assert refused.refused and refused.results == [] and "legal filter" in refused.reason
    with pytest.raises(UnknownPhoto, match="nowhere.jpg: not a photo of this catalog"):
        features_engine.search(like="nowhere.jpg")
    with pytest.raises(UnknownPhoto):
        features_engine.search(like="../photos/photo2.jpg")


def test_text_and_example_combine_and_negative_terms_push_away(features_engine):
    v = features_engine.scorer.embed_texts([QUERY, "snow on a mountain"])
    example = "photo2.jpg"
    u = features_engine.embeddings[features_engine.images.index(example)]
    both = features_engine.search(QUERY, 8, like=example, like_weight=0.7)
    assert names(both) == cosine_order(features_engine, v[0] + 0.7 * u, leave_out=example)
    relevance = features_engine.scorer.relevance(v[:1], features_engine.embeddings)[0]
    assert both.score == "relevance" and all(
        item["relevance"] == pytest.approx(float(relevance[features_engine.images.index(item["image"])]), abs=1e-4)
        for item in both.results)
    scores = [item["score"] for item in both.results]
    assert scores == sorted(scores, reverse=True)  # the score shown follows the ranking
    away = features_engine.search(QUERY, 8, negatives=["snow on a mountain"], negative_weight=2.0)
    assert names(away) == cosine_order(features_engine, v[0] - 2.0 * v[1])
    assert names(away) != names(features_engine.search(QUERY, 8))


@pytest.mark.parametrize("options", [{"negatives": ["two kids"]}, {"like": "photo2.jpg", "query": "a boy"}])
def test_every_text_goes_through_the_legal_filter(features_engine, options):
    query = options.pop("query", QUERY)
    result = features_engine.search(query, 8, **options)
    assert result.refused and result.results == []


@pytest.mark.parametrize("options, message", [({"top_k": 0}, "k must be"), ({"offset": -1}, "offset"),
                                              ({"min_score": 1.5}, "min_score"), ({"negatives": [" "]}, "empty")])
def test_bad_paging_and_terms_are_clear_errors(features_engine, options, message):
    from wsense.errors import WsenseError

    with pytest.raises(WsenseError, match=message):
        features_engine.search(QUERY, **{"top_k": 3, **options})


def test_the_query_checks_verdict_is_kept_with_the_query(engine, monkeypatch):
    import wsense.serving.search as search_module

    asked = []
    check = search_module.check_query
    monkeypatch.setattr(search_module, "check_query", lambda text: asked.append(text) or check(text))
    first = engine.search("a lighthouse on a cliff at dusk", 2).to_dict()
    assert engine.search("a lighthouse on a cliff at dusk", 2).to_dict() == first
    assert engine.search("a boy on a lighthouse", 2).refused and engine.search("a boy on a lighthouse", 2).refused
    assert asked == ["a lighthouse on a cliff at dusk", "a boy on a lighthouse"]  # each checked once
    monkeypatch.setattr(engine.scorer, "query_cache_size", 0)
    engine.search("a red kite over the sea", 1)
    engine.search("a red kite over the sea", 1)
    assert asked[2:] == ["a red kite over the sea"] * 2  # no cache: every search asks
    assert "a red kite over the sea" not in engine.verdicts
