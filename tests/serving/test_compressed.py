"""The compressed first stage (wsense/serving/compressed.py) over an index store: what it returns is what exact search
over the same allowed photos returns, filters pushed into its scan allow what MetadataFilter.allows allows, and a
stage built for an older version of the index is refused."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from wsense.errors import WsenseError
from wsense.serving.compressed import CompressedStage, build_compressed_stage, filter_sql
from wsense.serving.index import CatalogIndex
from wsense.serving.metadata import MetadataFilter
from wsense.serving.store import IndexStore

PHOTOS, DIM = 1200, 32
SMALL = {"sub_vectors": 8, "bits": 4}  # codes that train in a moment
CAMERAS = ("Canon EOS R5", "Nikon Z 9", "Leica Q3", None)


def offsets_of(vectors: np.ndarray) -> np.ndarray:
    return 0.2 * vectors[:, 0]


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """k-means on a few points spends its time waiting for a second thread on a busy 2-core machine."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, one_faiss_thread):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, DIM))
    vectors = centres[rng.integers(0, 40, PHOTOS)] + 0.5 * rng.standard_normal((PHOTOS, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    entries = []
    for i in range(PHOTOS):
        folder = ("", "trips", "trips/alps", "tripsnot")[i % 4]
        taken = None if i % 7 == 0 else (dt.datetime(2020, 1, 1) + dt.timedelta(days=i % 900)).isoformat()
        entries.append({"path": f"{folder}/p{i:05d}.jpg".lstrip("/"), "size": i, "mtime_ns": i, "sha256": f"{i:064x}",
                        "meta": {"folder": folder, "width": 60, "height": 40 + 20 * (i % 3),
                                 "orientation": ("landscape", "square", "portrait")[i % 3], "taken": taken,
                                 "camera": CAMERAS[i % 4 if i % 11 else 2], "lens": None},
                        "check": {"version": "v", "child": i % 5 == 0, "reason": ""},
                        "excluded": "image check: x" if i % 5 == 0 else None})
    order = sorted(range(PHOTOS), key=lambda i: entries[i]["path"])
    entries, vectors = [entries[i] for i in order], vectors[order]
    directory = tmp_path_factory.mktemp("compressed") / "index"
    CatalogIndex(directory, "model-a", entries, vectors).save(directory)
    build_compressed_stage(directory, offsets_of, **SMALL)
    return directory, entries, vectors


def exact(entries, vectors, query, allowed, k=10) -> list[str]:
    scores = vectors @ query - offsets_of(vectors)
    scores[~allowed] = -np.inf
    return [entries[i]["path"] for i in np.argsort(-scores)[:k] if np.isfinite(scores[i])]


FILTERS = [MetadataFilter(), MetadataFilter.parse(camera="leica"), MetadataFilter.parse(folder="trips"),
           MetadataFilter.parse(orientation="portrait", taken_from="2021-03-01", taken_to="2021-12-31"),
           MetadataFilter.parse(lens="anything")]


def test_filters_in_sql_allow_what_the_filters_allow(catalog):
    directory, entries, _ = catalog
    with IndexStore(directory).reader() as db:
        for filters in FILTERS:
            where, params = filter_sql(filters)
            found = {path for (path,) in db.execute(f"SELECT path FROM photos WHERE {where}", params)}
            assert found == {e["path"] for e in entries if not e["excluded"] and filters.allows(e["meta"])}, filters


@pytest.mark.parametrize("filters", FILTERS, ids=["none", "camera", "folder", "orientation+dates", "no match"])
def test_results_are_exact_searchs_over_the_allowed_photos(catalog, filters):
    directory, entries, vectors = catalog
    stage = CompressedStage(directory, nprobe=8, depth=100)
    allowed = np.array([not e["excluded"] and filters.allows(e["meta"]) for e in entries])
    hits = total = 0
    for query in vectors[np.random.default_rng(1).choice(PHOTOS, 20, replace=False)]:
        scores, ids = stage.search(query, 10, filters=filters)
        paths = stage.paths(ids)
        want = exact(entries, vectors, query, allowed)
        assert len(paths) == len(want) and all(np.diff(scores) <= 0)
        assert all(allowed[[e["path"] for e in entries].index(p)] for p in paths)
        hits, total = hits + len(set(paths) & set(want)), total + len(want)
    assert total == 0 or hits / total >= 0.9


def test_a_stage_of_an_older_index_version_is_refused(catalog, tmp_path):
    directory, entries, vectors = catalog
    copy = tmp_path / "index"
    CatalogIndex(copy, "model-a", entries, vectors).save(copy)
    build_compressed_stage(copy, **SMALL)
    CatalogIndex(copy, "model-a", entries[:-1], vectors[:-1]).save(copy)
    with pytest.raises(WsenseError, match="first stage of index version 1, the index is at 2; build it again"):
        CompressedStage(copy)
    build_compressed_stage(copy, **SMALL)
    assert len(CompressedStage(copy).search(vectors[0], 3)[1]) == 3


def test_a_stage_reads_the_version_it_was_built_for_while_the_next_is_committed(catalog, tmp_path):
    directory, entries, vectors = catalog
    copy = tmp_path / "index"
    CatalogIndex(copy, "model-a", entries, vectors).save(copy)
    build_compressed_stage(copy, **SMALL)
    stage = CompressedStage(copy)
    _, ids = stage.search(vectors[3], 5)
    before = stage.paths(ids)
    changed = [dict(e, size=e["size"] + 1) for e in entries]  # every row rewritten: new row ids
    CatalogIndex(copy, "model-a", changed[1:], vectors[1:]).save(copy)
    assert stage.paths(ids) == before  # the old rows, as the stage knew them
    with pytest.raises(WsenseError, match="build it again"):
        CompressedStage(copy)


def test_the_engine_over_the_compressed_stage_answers_as_over_the_exact_one(checkpoint, catalog_photos, catalog_index,
                                                                           exact_engine):
    from conftest import settings
    from wsense.serving.search import SearchEngine

    engine = SearchEngine(checkpoint, catalog_photos, None, index_dir=catalog_index,
                          settings=settings(search__first_stage="compressed", search__candidates=3))
    assert engine.catalog.first_stage.method == "compressed" and list(engine.images) == exact_engine.images
    assert_same_answers(engine, exact_engine)


def test_a_server_opens_the_stored_catalog_without_loading_the_index(checkpoint, catalog_photos, catalog_index,
                                                                     exact_engine, monkeypatch):
    from conftest import settings
    from wsense.serving.search import SearchEngine

    SearchEngine(checkpoint, catalog_photos, None, index_dir=catalog_index,  # the stage, built once
                 settings=settings(search__first_stage="compressed"))
    monkeypatch.setattr(CatalogIndex, "load", lambda *args, **kwargs: pytest.fail("the index was loaded"))
    monkeypatch.setattr(IndexStore, "read", lambda *args, **kwargs: pytest.fail("the store was read whole"))
    engine = SearchEngine(checkpoint, index_dir=catalog_index,
                          settings=settings(search__first_stage="compressed", search__candidates=3))
    catalog, name = engine.catalog, exact_engine.images[2]
    assert len(engine.images) == len(exact_engine.images) and name in engine.images and "nope.jpg" not in engine.images
    assert catalog.meta(name) == exact_engine.catalog.meta(name) and catalog.meta("nope.jpg") is None
    assert engine.sha256.get(name) == exact_engine.sha256[name]
    np.testing.assert_allclose(engine.embeddings[[2, 0]], exact_engine.embeddings[[2, 0]], atol=1e-6)
    assert catalog.check_versions() == exact_engine.catalog.check_versions()
    assert_same_answers(engine, exact_engine)
    camera = MetadataFilter.parse(orientation="landscape")
    got, want = engine.search("a dog", 3, filters=camera), exact_engine.search("a dog", 3, filters=camera)
    assert [r["image"] for r in got.results] == [r["image"] for r in want.results] and got.total == want.total
    from fastapi.testclient import TestClient

    from wsense.serving.web import create_app

    client = TestClient(create_app(engine, max_k=8))
    health = client.get("/healthz").json()
    assert health["photos"] == len(exact_engine.images) and health["kept_out"] == len(exact_engine.catalog.excluded)
    answer = client.get("/api/search", params={"q": "a dog", "k": 3}).json()
    assert [r["image"] for r in answer["results"]] == [r["image"] for r in exact_engine.search("a dog", 3).results]
    assert client.get(f"/thumbnails/{name}").status_code == 200 and client.get("/images/nope.jpg").status_code == 404
    assert "a dog" in client.get("/", params={"q": "a dog"}).text


def assert_same_answers(engine, exact_engine):
    for query in ("a dog", "a man climbing a rock", "snowy mountains under a blue sky"):
        got, want = engine.search(query, top_k=5).results, exact_engine.search(query, top_k=5).results
        assert [r["image"] for r in got] == [r["image"] for r in want], query
        assert all(abs(g["score"] - w["score"]) <= 1e-5 for g, w in zip(got, want)), query
    like = exact_engine.images[0]
    assert engine.search(like=like, top_k=3).results == exact_engine.search(like=like, top_k=3).results
