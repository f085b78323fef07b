"""Query batching (wsense/serving/batching.py): queries waiting together run as one batch, each with its own results."""
from __future__ import annotations

import pytest

QUERY = "a dog swimming in a lake"


def test_queries_waiting_together_run_as_one_batch_with_their_own_results(features_engine):
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
            return features_engine.search_many(requests)

    batcher = QueryBatcher(HeldEngine(), max_batch=64)
    requests = [SearchRequest(QUERY, 3), SearchRequest("a red car", 2, offset=1), SearchRequest("two kids", 3),
                SearchRequest(QUERY, 0), SearchRequest(like="sub/photo3.jpg", top_k=2),
                SearchRequest("a man", 8, negatives=["snow"], min_score=0.1)]
    futures = [batcher.submit(requests[0])]
    while not calls:
        pass
    futures += [batcher.submit(request) for request in requests[1:]]
    release.set()
    assert futures[1].result(10).results == features_engine.search("a red car", 2, offset=1).results
    assert calls == [1, 5] and batcher.batches == 2 and batcher.requests == 6
    assert futures[0].result().to_dict() == features_engine.search(QUERY, 3).to_dict()
    assert futures[2].result().refused and futures[2].result().results == []
    with pytest.raises(WsenseError, match="k must be"):
        futures[3].result()
    assert futures[4].result().to_dict() == features_engine.search(like="sub/photo3.jpg", top_k=2).to_dict()
    assert (futures[5].result().to_dict()
            == features_engine.search("a man", 8, negatives=["snow"], min_score=0.1).to_dict())


def test_a_batch_embeds_its_texts_once_and_matches_one_by_one(features_engine, monkeypatch):
    from wsense.serving.requests import SearchRequest

    requests = [SearchRequest(QUERY, 8), SearchRequest("a red car", 8, negatives=["snow", "rain"]),
                SearchRequest("", 3, like="photo2.jpg")]
    alone = [features_engine.search_many([request])[0].to_dict() for request in requests]
    seen = []
    embed = features_engine.scorer.embed_texts
    monkeypatch.setattr(features_engine.scorer, "embed_texts", lambda texts: seen.append(list(texts)) or embed(texts))
    together = [result.to_dict() for result in features_engine.search_many(requests)]
    assert seen == [[QUERY, "a red car", "snow", "rain"]]
    for one, other in zip(alone, together):
        assert [r["image"] for r in one["results"]] == [r["image"] for r in other["results"]]
        assert all(abs(a["score"] - b["score"]) <= 2e-4 for a, b in zip(one["results"], other["results"]))
