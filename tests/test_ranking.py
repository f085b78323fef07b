"""The score a list shows is the ranking's own, calibrated: it never rises down a list, and the cut-off cuts on it."""
from pathlib import Path

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

