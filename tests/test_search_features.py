"""Photographers' search features through the engine, the CLI, the API and the page: paging, a relevance cut-off,
more like a photo (of the catalog or uploaded, through the image check), combined and negative queries."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import make_check, settings, visible_text, write_image
from wsense.cli import main
from wsense.safety.screener import PhotoScreener
from wsense.serving import web
from wsense.serving.requests import UnknownPhoto
from wsense.serving.search import SearchEngine
from wsense.serving.web import create_app

QUERY = "a dog swimming in a lake"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("features") / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(9):
        write_image(root / ("sub" if i % 3 == 0 else ".") / f"photo{i}.jpg", 900 + i, size=(96, 72))
    return root


@pytest.fixture(scope="module")
def descriptions():
    import pandas as pd

    return pd.DataFrame({"image": ["photo1.jpg"], "text": ["A little girl on a swing ."]})


@pytest.fixture(scope="module")
def engine(checkpoint, photos, descriptions, tmp_path_factory) -> SearchEngine:
    """Eight searchable photos (photo1 is kept out by its description), ranked by the cosine, candidates 4."""
    return SearchEngine(checkpoint, photos, descriptions, index_dir=tmp_path_factory.mktemp("ix") / "ix",
                        settings=settings(search__ranking="cosine", search__candidates=4))


def names(result) -> list[str]:
    return [item["image"] for item in result.results]


def cosine_order(engine, direction: torch.Tensor, leave_out: str | None = None) -> list[str]:
    order = torch.argsort(engine.embeddings @ torch.nn.functional.normalize(direction, dim=0), descending=True)
    return [engine.images[int(i)] for i in order if engine.images[int(i)] != leave_out]


def test_pages_are_slices_of_one_ranking_with_the_total(engine):
    full = engine.search(QUERY, 8)
    assert len(engine.images) == 8 and full.total == 8 and full.total_exact and len(full.results) == 8
    pages = [engine.search(QUERY, 3, offset=offset) for offset in (0, 3, 6)]
    assert sum((page.results for page in pages), []) == full.results
    assert [page.offset for page in pages] == [0, 3, 6] and all(page.total == 8 for page in pages)
    assert engine.search(QUERY, 3, offset=8).results == []


def test_min_score_leaves_out_lower_scores_and_counts_the_rest(engine):
    full = engine.search(QUERY, 8).results
    cut = sorted(item["score"] for item in full)[4]  # a cut-off that keeps some photos and drops others
    kept = [item for item in full if item["score"] >= cut]
    assert 0 < len(kept) < 8
    result = engine.search(QUERY, 8, min_score=cut)
    assert result.results == kept and result.total == len(kept) and result.total_exact
    assert engine.search(QUERY, 1, offset=1, min_score=cut).results == kept[1:2]
    assert engine.search(QUERY, 8, min_score=1.0).results == [] or all(i["score"] == 1.0 for i in full)


def test_min_score_widens_the_first_stage_until_the_page_is_full(engine, monkeypatch):
    # candidates 4 of 8 photos: a cut-off that leaves fewer than k of the first 4 must look further
    monkeypatch.setattr(engine.ranker, "candidates", 2)
    result = engine.search(QUERY, 5, min_score=0.0)
    assert names(result) == names(engine.search(QUERY, 5)) and result.total >= 5
    narrow = engine.search(QUERY, 1, min_score=0.0)
    assert narrow.total == 2 and not narrow.total_exact  # only the first stage's 2 best were scored


def test_more_like_a_catalog_photo_ranks_by_cosine_to_it_and_leaves_it_out(engine):
    example = "sub/photo3.jpg"
    result = engine.search(like=example, top_k=8)
    u = engine.embeddings[engine.images.index(example)]
    assert names(result) == cosine_order(engine, u, leave_out=example)
    assert result.score == "similarity" and result.total == 7 and result.like == example
    for item in result.results:
        expected = float(engine.embeddings[engine.images.index(item["image"])] @ u)
        assert item["score"] == pytest.approx(expected, abs=1e-4)
    assert names(engine.search(like="./sub/photo3.jpg", top_k=8)) == names(result)


def test_an_example_kept_out_by_the_legal_filter_is_refused_and_a_stranger_is_unknown(engine):
    refused = engine.search(like="photo1.jpg", top_k=8)
    assert refused.refused and refused.results == [] and "legal filter" in refused.reason
    with pytest.raises(UnknownPhoto, match="nowhere.jpg: not a photo of this catalog"):
        engine.search(like="nowhere.jpg")
    with pytest.raises(UnknownPhoto):
        engine.search(like="../photos/photo2.jpg")


def test_text_and_example_combine_and_negative_terms_push_away(engine):
    v = engine.scorer.embed_texts([QUERY, "snow on a mountain"])
    example = "photo2.jpg"
    u = engine.embeddings[engine.images.index(example)]
    both = engine.search(QUERY, 8, like=example, like_weight=0.7)
    assert names(both) == cosine_order(engine, v[0] + 0.7 * u, leave_out=example)
    relevance = engine.scorer.relevance(v[:1], engine.embeddings)[0]
    assert both.score == "relevance" and all(
        item["relevance"] == pytest.approx(float(relevance[engine.images.index(item["image"])]), abs=1e-4)
        for item in both.results)
    scores = [item["score"] for item in both.results]
    assert scores == sorted(scores, reverse=True)  # the score shown follows the ranking
    away = engine.search(QUERY, 8, negatives=["snow on a mountain"], negative_weight=2.0)
    assert names(away) == cosine_order(engine, v[0] - 2.0 * v[1])
    assert names(away) != names(engine.search(QUERY, 8))


@pytest.mark.parametrize("options", [{"negatives": ["two kids"]}, {"like": "photo2.jpg", "query": "a boy"}])
def test_every_text_goes_through_the_legal_filter(engine, options):
    query = options.pop("query", QUERY)
    result = engine.search(query, 8, **options)
    assert result.refused and result.results == []


@pytest.mark.parametrize("options, message", [({"top_k": 0}, "k must be"), ({"offset": -1}, "offset"),
                                              ({"min_score": 1.5}, "min_score"), ({"negatives": [" "]}, "empty")])
def test_bad_paging_and_terms_are_clear_errors(engine, options, message):
    from wsense.errors import WsenseError

    with pytest.raises(WsenseError, match=message):
        engine.search(QUERY, **{"top_k": 3, **options})


def jpeg(seed: int, size=(96, 72)) -> bytes:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine, max_k=8))


def test_api_pages_cuts_and_negates_as_the_engine(client, engine):
    body = client.get("/api/search", params={"q": QUERY, "k": 3, "offset": 3}).json()
    assert body == engine.search(QUERY, 3, offset=3).to_dict() and body["total"] == 8
    cut = engine.search(QUERY, 8).results[3]["score"]
    body = client.get("/api/search", params={"q": QUERY, "k": 8, "min_score": cut}).json()
    assert body == engine.search(QUERY, 8, min_score=cut).to_dict()
    params = [("q", QUERY), ("k", "8"), ("not", "snow"), ("not", "a red car"), ("not_weight", "1")]
    body = client.get("/api/search", params=params).json()
    assert body == engine.search(QUERY, 8, negatives=["snow", "a red car"], negative_weight=1.0).to_dict()
    for params, message in [({"offset": "x"}, "offset"), ({"min_score": "2"}, "min_score"),
                            ({"not_weight": "-1"}, "not_weight")]:
        response = client.get("/api/search", params={"q": QUERY, **params})
        assert response.status_code == 400 and message in response.json()["detail"]


def test_api_similar_by_catalog_photo(client, engine):
    body = client.get("/api/similar", params={"image": "sub/photo3.jpg", "k": 4}).json()
    assert body == engine.search(like="sub/photo3.jpg", top_k=4).to_dict()
    refused = client.get("/api/similar", params={"image": "photo1.jpg"}).json()
    assert refused["refused"] is True and refused["results"] == []
    missing = client.get("/api/similar", params={"image": "../etc/passwd"})
    assert missing.status_code == 404 and "not a photo of this catalog" in missing.json()["detail"]
    assert client.get("/api/similar").status_code == 400


def cache_files(engine) -> dict[Path, bytes]:
    folder = Path(engine.config.cache_dir)
    return {path: path.read_bytes() for path in [*folder.glob("faces/*"), *folder.glob("embeddings/*")]}


def test_api_similar_by_upload_is_checked_first_and_kept_nowhere(client, engine, monkeypatch, tmp_path):
    data = jpeg(7)
    (tmp_path / "same.jpg").write_bytes(data)
    before = cache_files(engine)
    body = client.post("/api/similar", params={"k": 8}, content=data, headers={"content-type": "image/jpeg"}).json()
    assert body["refused"] is False and body["like"] == "upload" and body["total"] == 8 and len(body["results"]) == 8
    assert "photo1.jpg" not in [item["image"] for item in body["results"]]
    # scored as any photo is embedded (the one photo path), by cosine to the upload
    u = engine.scorer.embed_images([tmp_path / "same.jpg"], progress=False)[0]
    assert [item["image"] for item in body["results"]] == cosine_order(engine, u)
    combined = client.post("/api/similar", params={"k": 2, "q": QUERY}, content=data,
                           headers={"content-type": "image/jpeg"}).json()
    assert combined["score"] == "relevance" and len(combined["results"]) == 2
    monkeypatch.setattr(engine.live, "checker", PhotoScreener(make_check(intercept=8.0), engine.config))
    refused = client.post("/api/similar", content=data, headers={"content-type": "image/jpeg"}).json()
    assert refused["refused"] is True and refused["results"] == [] and refused["reason"].startswith("image check")
    assert cache_files(engine) == before  # neither the faces nor the features of an upload are kept


@pytest.mark.parametrize("body, kind, status, message", [
    (b"", "image/jpeg", 400, "empty upload"),
    (b"not a photo at all", "image/jpeg", 400, "the uploaded photo"),
    (b"GIF89a", "image/gif", 415, "Content-Type"),
    (None, "image/png", 413, "too large"),
])
def test_bad_uploads_are_4xx_naming_what_is_wrong(client, monkeypatch, body, kind, status, message):
    if body is None:
        monkeypatch.setattr(web, "MAX_UPLOAD_BYTES", 1000)
        body = jpeg(1, size=(200, 200))
    response = client.post("/api/similar", content=body, headers={"content-type": kind})
    assert response.status_code == status and message in response.json()["detail"], response.text


def test_page_links_more_like_this_and_the_next_page(client, engine):
    page = client.get("/", params={"q": QUERY, "k": 3}).text
    assert f"Results for “{QUERY}”: 1–3 of 8" in visible_text(page)
    assert len(re.findall(r'class="like" href="/\?like=', page)) == 3
    following = re.search(r'rel="next" href="([^"]*)"', page).group(1).replace("&amp;", "&")
    second = client.get(following).text
    assert "4–6 of 8" in visible_text(second) and 'rel="prev"' in second
    expected = names(engine.search(QUERY, 3, offset=3))
    assert re.findall(r'<img src="/thumbnails/([^"]*)"', second) == expected
    similar = client.get("/", params={"like": "sub/photo3.jpg", "k": 3}).text
    assert "photos like sub/photo3.jpg" in similar and 'name="like" value="sub/photo3.jpg"' in similar
    assert client.get("/", params={"like": "nope.jpg"}).status_code == 404
    kept_out = client.get("/", params={"like": "photo1.jpg"}).text
    assert "<img" not in kept_out and 'role="alert"' in kept_out


def test_the_next_results_come_as_a_fragment_for_the_page_to_add(client, engine):
    part = client.get("/", params={"q": QUERY, "k": 3, "offset": 3, "fragment": 1})
    assert part.status_code == 200 and "<html" not in part.text and "<form" not in part.text
    assert re.findall(r'<img src="/thumbnails/([^"]*)"', part.text) == names(engine.search(QUERY, 3, offset=3))
    assert 'class="last">6</span>' in part.text and "offset=6" in part.text
    assert part.headers["content-security-policy"].count("connect-src 'self'") == 1
    bad = client.get("/", params={"q": "x" * 600, "fragment": 1})
    assert bad.status_code == 400 and "<html" not in bad.text and "query too long" in bad.text


def test_the_page_upload_button_gets_results_in_place(client, engine, monkeypatch):
    page = client.get("/").text
    assert '<input type="file" name="photo"' in page and 'accept="image/jpeg,image/png,image/webp"' in page
    part = client.post("/similar", params={"k": 3}, content=jpeg(7), headers={"content-type": "image/jpeg"})
    assert part.status_code == 200 and "<html" not in part.text
    assert "Results for photos like your photo" in visible_text(part.text) and "1–3 of 8" in visible_text(part.text)
    assert len(re.findall(r'<img src="/thumbnails/', part.text)) == 3 and 'rel="next"' not in part.text
    wrong = client.post("/similar", content=b"GIF89a", headers={"content-type": "image/gif"})
    assert wrong.status_code == 415 and 'class="error"' in wrong.text and "Content-Type" in wrong.text
    broken = client.post("/similar", content=b"not a photo", headers={"content-type": "image/jpeg"})
    assert broken.status_code == 400 and "the uploaded photo" in broken.text
    monkeypatch.setattr(engine.live, "checker", PhotoScreener(make_check(intercept=8.0), engine.config))
    refused = client.post("/similar", content=jpeg(7), headers={"content-type": "image/jpeg"})
    assert refused.status_code == 200 and "<img" not in refused.text and "image check" in refused.text


def test_cli_like_not_min_score_and_offset(engine, photos, checkpoint, tmp_path, capsys):
    config = tmp_path / "wsense.yaml"
    config.write_text("search:\n  multilingual: none\n  text_runtime: torch\n  ranking: cosine\n"
                      "  duplicate_threshold: null\n"
                      f"  candidates: 4\nsafety:\n  check: {settings().safety.check}\n", encoding="utf-8")
    common = ["--checkpoint", str(checkpoint), "--index-dir", str(engine.index_dir), "--config", str(config), "--json"]
    assert main(["search", "--like", str(photos / "sub" / "photo3.jpg"), "--top-k", "3", "--offset", "1", *common]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == engine.search(like="sub/photo3.jpg", top_k=3, offset=1).to_dict()
    assert main(["search", QUERY, "--not", "snow", "--min-score", "0.2", "--top-k", "8", *common]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == engine.search(QUERY, 8, negatives=["snow"], min_score=0.2).to_dict()
    outside = tmp_path / "mine.jpg"
    write_image(outside, 31, size=(96, 72))
    assert main(["search", "--like", str(outside), "--top-k", "2", *common]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["like"] == str(outside) and len(line["results"]) == 2 and not line["refused"]
    assert main(["search", "--like", "missing.jpg", *common]) == 2
    assert "not a photo of this catalog" in capsys.readouterr().err


def test_queries_waiting_together_run_as_one_batch_with_their_own_results(engine):
    import threading

    from wsense.errors import WsenseError
    from wsense.serving.batching import QueryBatcher
    from wsense.serving.requests import SearchRequest

    release, calls = threading.Event(), []

    class HeldEngine:  # the first batch waits until every other request has queued up behind it
        def search_many(self, requests):
            calls.append(len(requests))
            if len(calls) == 1:
                release.wait(10)
            return engine.search_many(requests)

    batcher = QueryBatcher(HeldEngine(), max_batch=64)
    requests = [SearchRequest(QUERY, 3), SearchRequest("a red car", 2, offset=1), SearchRequest("two kids", 3),
                SearchRequest(QUERY, 0), SearchRequest(like="sub/photo3.jpg", top_k=2),
                SearchRequest("a man", 8, negatives=["snow"], min_score=0.1)]
    futures = [batcher.submit(requests[0])]
    while not calls:
        pass
    futures += [batcher.submit(request) for request in requests[1:]]
    release.set()
    assert futures[1].result(10).results == engine.search("a red car", 2, offset=1).results
    assert calls == [1, 5] and batcher.batches == 2 and batcher.requests == 6
    assert futures[0].result().to_dict() == engine.search(QUERY, 3).to_dict()
    assert futures[2].result().refused and futures[2].result().results == []
    with pytest.raises(WsenseError, match="k must be"):
        futures[3].result()
    assert futures[4].result().to_dict() == engine.search(like="sub/photo3.jpg", top_k=2).to_dict()
    assert futures[5].result().to_dict() == engine.search("a man", 8, negatives=["snow"], min_score=0.1).to_dict()


def test_a_batch_embeds_its_texts_once_and_matches_one_by_one(engine, monkeypatch):
    from wsense.serving.requests import SearchRequest

    requests = [SearchRequest(QUERY, 8), SearchRequest("a red car", 8, negatives=["snow", "rain"]),
                SearchRequest("", 3, like="photo2.jpg")]
    alone = [engine.search_many([request])[0].to_dict() for request in requests]
    seen = []
    embed = engine.scorer.embed_texts
    monkeypatch.setattr(engine.scorer, "embed_texts", lambda texts: seen.append(list(texts)) or embed(texts))
    together = [result.to_dict() for result in engine.search_many(requests)]
    assert seen == [[QUERY, "a red car", "snow", "rain"]]
    for one, other in zip(alone, together):
        assert [r["image"] for r in one["results"]] == [r["image"] for r in other["results"]]
        assert all(abs(a["score"] - b["score"]) <= 2e-4 for a, b in zip(one["results"], other["results"]))



def test_thumbnails_are_made_for_allowed_photos_once_and_served_small(engine, photos, client):
    from wsense.serving.thumbnails import THUMBNAIL_SIDE, ensure_thumbnails, thumbnail_path

    cache = engine.config.cache_dir
    allowed = [entry for entry in engine.index.entries if not entry["excluded"]]
    assert ensure_thumbnails(engine.root, allowed, cache) == 0  # the index made them all already
    for name in engine.images:
        path = thumbnail_path(cache, engine.sha256[name])
        assert path.is_file(), name
        with Image.open(path) as thumb:
            assert max(thumb.size) <= THUMBNAIL_SIDE and thumb.format == "JPEG"
    kept_out = next(entry for entry in engine.index.entries if entry["path"] == "photo1.jpg")
    assert not thumbnail_path(cache, kept_out["sha256"]).exists()  # a photo the legal filter keeps out gets none
    response = client.get("/thumbnails/sub/photo3.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == thumbnail_path(cache, engine.sha256["sub/photo3.jpg"]).read_bytes()
    assert client.get("/thumbnails/photo1.jpg").status_code == 404
    assert client.get("/thumbnails/../photos/photo2.jpg").status_code == 404
    # a thumbnail gone from the cache is made again on demand
    thumbnail_path(cache, engine.sha256["photo2.jpg"]).unlink()
    assert client.get("/thumbnails/photo2.jpg").status_code == 200
    assert thumbnail_path(cache, engine.sha256["photo2.jpg"]).is_file()


def test_a_thumbnail_is_upright_and_an_unreadable_photo_gets_none(tmp_path):
    from wsense.serving.thumbnails import make_thumbnail

    big = Image.fromarray((np.random.default_rng(3).random((600, 900, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: the photo is shown rotated by 90 degrees
    big.save(tmp_path / "turned.jpg", format="JPEG", exif=exif)
    with Image.open(make_thumbnail(tmp_path / "turned.jpg", tmp_path / "t.jpg")) as thumb:
        assert thumb.size[1] == 320 and thumb.size[0] in (213, 214)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    from wsense.errors import WsenseError

    with pytest.raises(WsenseError, match="bad.jpg"):
        make_thumbnail(tmp_path / "bad.jpg", tmp_path / "t2.jpg")
    assert not (tmp_path / "t2.jpg").exists()


def test_repeated_queries_skip_the_text_tower_and_the_cache_stays_bounded(checkpoint, monkeypatch):
    from wsense.serving.scoring import RelevanceScorer

    scorer = RelevanceScorer.from_checkpoint(checkpoint, settings(search__query_cache=3))
    fresh = scorer.embed_english(["a dog", "a cat", "a red car", "snow"])
    calls = []
    embed = scorer._embed_texts
    monkeypatch.setattr(scorer, "_embed_texts", lambda texts, size: calls.append(list(texts)) or embed(texts, size))
    first = scorer.embed_texts(["a dog", "a cat", "a dog"])
    assert calls == [["a dog", "a cat"]] and torch.allclose(first, fresh[[0, 1, 0]], atol=1e-6)
    again = scorer.embed_texts(["a cat", "a red car"])
    assert calls[-1] == ["a red car"] and torch.allclose(again, fresh[[1, 2]], atol=1e-6)
    scorer.embed_texts(["snow"])  # four texts seen, three kept: the least recently used ("a dog") goes
    assert list(scorer.query_cache) == ["a cat", "a red car", "snow"]
    off = RelevanceScorer.from_checkpoint(checkpoint, settings(search__query_cache=0))
    off.embed_texts(["a dog"])
    assert not off.query_cache


def test_near_duplicates_fold_into_the_best_ranked_one(engine, monkeypatch):
    plain = engine.search(QUERY, 8)
    vectors = engine.embeddings
    names_in_order = [item["image"] for item in plain.results]
    rows = [engine.images.index(name) for name in names_in_order]
    similarity = vectors[rows] @ vectors[rows].T
    # a threshold between the pairs: some photos fold, others stay
    threshold = float(torch.quantile(similarity[torch.triu(torch.ones(8, 8, dtype=torch.bool), 1)], 0.9))
    monkeypatch.setattr(engine.ranker, "duplicate_threshold", threshold)
    folded = engine.search(QUERY, 8)
    shown = [item["image"] for item in folded.results]
    hidden = [s["image"] for item in folded.results for s in item.get("similar", [])]
    assert hidden and sorted(shown + hidden) == sorted(names_in_order) and folded.total == len(shown)
    assert shown == [name for name in names_in_order if name not in hidden]  # the ranking of what stays is kept
    for item in folded.results:
        lead = engine.images.index(item["image"])
        for other in item.get("similar", []):
            row = engine.images.index(other["image"])
            assert float(vectors[lead] @ vectors[row]) >= threshold - 1e-6
            assert names_in_order.index(other["image"]) > names_in_order.index(item["image"])
    # no photo that stays is that similar to one above it
    for a in range(len(shown)):
        for b in range(a):
            assert float(vectors[engine.images.index(shown[a])] @ vectors[engine.images.index(shown[b])]) < threshold
    # pages keep the order of what stays (a page lists the duplicates among the photos its search looked at)
    pages = [engine.search(QUERY, 2, offset=offset).results for offset in range(0, len(shown), 2)]
    assert [item["image"] for item in sum(pages, [])] == shown


def test_the_page_marks_folded_duplicates_and_expands_them(engine, client, monkeypatch):
    monkeypatch.setattr(engine.ranker, "duplicate_threshold", 0.0)  # every photo folds into the first
    result = engine.search(QUERY, 3)
    assert len(result.results) == 1 and len(result.results[0]["similar"]) == 7 and result.total == 1
    page = client.get("/", params={"q": QUERY, "k": 3}).text
    assert '<details class="similar"><summary>7 similar</summary>' in page
    assert len(re.findall(r'<img src="/thumbnails/', page)) == 8 and "1–1 of 1" in visible_text(page)
