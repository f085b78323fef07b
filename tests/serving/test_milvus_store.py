"""The Milvus first stage on Milvus Lite (a local file, no server): the same top 10 as exact search, deletes,
the legal exclusion and filters pushed down, a restart, and clear errors."""
import datetime as dt

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pip install 'wsense[milvus]'")

from wsense.errors import WsenseError  # noqa: E402
from wsense.serving import milvus_store  # noqa: E402
from wsense.serving.first_stage import FirstStage  # noqa: E402
from wsense.serving.metadata import MetadataFilter  # noqa: E402
from wsense.serving.milvus_store import MilvusFirstStage, filter_expression  # noqa: E402


def entries_for(n: int, excluded=(), folders=None) -> list[dict]:
    return [{"path": f"{(folders or {}).get(i, '')}p{i:04d}.jpg".lstrip("/"), "sha256": f"{i:064x}",
             "excluded": "kept out" if i in excluded else None,
             "meta": {"folder": (folders or {}).get(i, "").strip("/"), "orientation": "landscape",
                      "camera": "Canon EOS R5" if i % 2 else None, "lens": None,
                      "taken": f"2024-06-{1 + i % 28:02d}T10:00:00"}} for i in range(n)]


def unit(rng, n, dim=16):
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("with_offsets", [False, True])
def test_same_top_10_as_exact_search(tmp_path, with_offsets):
    rng = np.random.default_rng(0)
    vectors, queries = unit(rng, 400), unit(rng, 20)
    offsets = rng.uniform(0, 0.3, 400).astype(np.float32) if with_offsets else None
    stage = MilvusFirstStage(str(tmp_path / "m.db"), "photos", "fp", entries_for(400), vectors, list(range(400)),
                             offsets)
    exact = FirstStage(vectors, "exact", offsets=offsets)
    weights = np.array([1.0, 0.0] * 10, np.float32)  # offsets counted for text queries, not for example photos
    scores, rows = stage.search(queries, 10, offset_weight=weights)
    truth_scores, truth = exact.search(queries, 10, offset_weight=weights)
    assert (rows == truth).mean() == 1.0
    np.testing.assert_allclose(scores, truth_scores, atol=1e-4)


def test_exclusions_filters_deletes_and_a_restart(tmp_path):
    rng = np.random.default_rng(1)
    vectors, query = unit(rng, 60), unit(rng, 1)
    folders = {i: "trips/2024/" for i in range(0, 60, 3)}
    entries = entries_for(60, excluded={5, 7}, folders=folders)
    searchable = [i for i in range(60) if i not in (5, 7)]
    uri = str(tmp_path / "m.db")
    stage = MilvusFirstStage(uri, "photos", "fp", entries, vectors, searchable)
    assert (stage.upserted, stage.deleted) == (60, 0)  # the kept-out photos too, marked
    _, rows = stage.search(query, 60)
    assert sorted(rows[0][rows[0] >= 0]) == list(range(58))  # every searchable photo, and no kept-out one

    trips = MetadataFilter.parse(folder="trips", camera="eos", taken_from="2024-06-10")
    _, rows = stage.search(np.vstack([query, query]), 60, filters=[trips, None])
    allowed = [row for row, i in enumerate(searchable) if trips.allows(entries[i]["meta"])]
    assert sorted(rows[0][rows[0] >= 0]) == allowed and len(allowed) >= 3
    assert (rows[1] >= 0).sum() == 58

    milvus_store._clients.clear()  # a restart: a new client opens the file, the collection is loaded again
    kept = [i for i in range(60) if i != 10]
    stage = MilvusFirstStage(uri, "photos", "fp", [entries[i] for i in kept], vectors[kept],
                             [n for n, i in enumerate(kept) if i not in (5, 7)])
    assert (stage.upserted, stage.deleted) == (0, 1)  # nothing embedded again; the photo removed is deleted
    _, rows = stage.search(query, 60)
    assert (rows[0] >= 0).sum() == 57


def test_a_collection_of_another_model_and_an_unreachable_server(tmp_path):
    vectors = unit(np.random.default_rng(2), 5)
    uri = str(tmp_path / "m.db")
    MilvusFirstStage(uri, "photos", "model-a", entries_for(5), vectors, list(range(5)))
    with pytest.raises(WsenseError, match="built by another model"):
        MilvusFirstStage(uri, "photos", "model-b", entries_for(5), vectors, list(range(5)))
    with pytest.raises(WsenseError, match="cannot reach Milvus at http://127.0.0.1:1"):
        MilvusFirstStage("http://127.0.0.1:1", "photos", "model-a", entries_for(5), vectors, list(range(5)))


def test_filter_expression_quotes_what_a_user_typed():
    wanted = MetadataFilter.parse(folder='a"b', camera='x" or excluded == true or "', taken_to="2024-01-31")
    expression = filter_expression(wanted)
    assert expression.startswith("excluded == false and ")
    assert 'folder == "a\\"b"' in expression and 'camera like "%x\\" or excluded == true or \\"%"' in expression
    assert "taken <= 20240131" in expression and "taken > 0" in expression
    assert filter_expression(None) == "excluded == false"
    assert dt.date(2024, 1, 31) == wanted.taken_to
