"""The catalog index (wsense/serving/index.py): incremental, atomic, per model, with the legal filter applied to
every photo, and the progress shards an interrupted run leaves."""
from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import wsense.serving.store as store_module
from conftest import make_check, settings, write_image
from wsense.errors import WsenseError
from wsense.models.checkpoint import model_fingerprint
from wsense.safety.screener import PhotoScreener
from wsense.serving.index import PROGRESS_DIR, CatalogIndex, described_children, index_exists, update_index
from wsense.serving.metadata import unknown_metadata
from wsense.serving.scoring import RelevanceScorer
from wsense.serving.search import SearchEngine
from wsense.serving.store import STORE_FILE, IndexStore


@pytest.fixture(scope="module")
def checkpoints(checkpoint, tmp_path_factory):
    """The session checkpoint, and a copy whose fusion head differs (another model)."""
    other = tmp_path_factory.mktemp("other") / "best"
    shutil.copytree(checkpoint, other, ignore=shutil.ignore_patterns("*.onnx", "*.npz"))
    state = load_file(other / "model.safetensors")
    state["fusion.net.0.weight"] += 0.01
    save_file(state, other / "model.safetensors")
    return checkpoint, other


@pytest.fixture(scope="module")
def scorer(checkpoint):
    scorer = RelevanceScorer.from_checkpoint(checkpoint, settings())
    return scorer, scorer.config


@pytest.fixture(scope="module")
def checker():
    return PhotoScreener.from_config(settings())


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "b.jpeg", "sub/c.png", "sub/d.JPG"]):
        write_image(root / name, i)
    (root / "notes.txt").write_text("not a photo")
    return root


def test_incremental_index_embeds_only_new_and_changed_photos(photos, tmp_path, scorer, checkpoints, checker):
    scorer, config = scorer
    fingerprint = model_fingerprint(checkpoints[0])
    directory = tmp_path / "index"
    index, report = update_index(photos, directory, scorer, fingerprint, checker)
    assert [e["path"] for e in index.entries] == ["a.jpg", "b.jpeg", "sub/c.png", "sub/d.JPG"]
    assert (report.added, report.changed, report.removed, report.unchanged) == (4, 0, 0, 0)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1, atol=1e-5)
    first = index.embeddings.copy()

    write_image(photos / "e.jpg", 10)  # add
    write_image(photos / "b.jpeg", 11)  # change
    (photos / "sub" / "c.png").unlink()  # delete
    index, report = update_index(photos, directory, scorer, fingerprint, checker)
    assert (report.added, report.changed, report.removed, report.unchanged) == (1, 1, 1, 2)
    paths = [e["path"] for e in index.entries]
    assert paths == ["a.jpg", "b.jpeg", "e.jpg", "sub/d.JPG"]
    assert np.allclose(index.embeddings[0], first[0])  # a.jpg reused, not re-embedded
    assert not np.allclose(index.embeddings[1], first[1])  # b.jpeg re-embedded

    (photos / "a.jpg").touch()  # new mtime, same bytes: hashed, not re-embedded
    _, report = update_index(photos, directory, scorer, fingerprint, checker)
    assert (report.added, report.changed, report.unchanged) == (0, 0, 4)
    assert CatalogIndex.load(directory, fingerprint).entries[1]["path"] == "b.jpeg"


def test_an_index_keeps_its_embeddings_as_the_config_says(photos, tmp_path, scorer, checkpoints, checker,
                                                           monkeypatch):
    scorer, config = scorer
    monkeypatch.setattr(scorer.config.embedding, "index_dtype", "int10")
    fingerprint = model_fingerprint(checkpoints[0])
    index, _ = update_index(photos, tmp_path / "index", scorer, fingerprint, checker)
    loaded = CatalogIndex.load(tmp_path / "index", fingerprint)
    assert IndexStore(tmp_path / "index").info()["dtype"] == "int10"
    np.testing.assert_allclose(loaded.embeddings, index.embeddings, atol=1e-3)


def test_corrupt_photos_are_reported_and_skipped(photos, tmp_path, scorer, checkpoints, checker):
    scorer, config = scorer
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    index, report = update_index(photos, tmp_path / "index", scorer, model_fingerprint(checkpoints[0]), checker)
    assert [path for path, _ in report.skipped] == ["broken.jpg"]
    assert "broken.jpg" not in [e["path"] for e in index.entries] and len(index.entries) == 4
    assert "skipped broken.jpg" in str(report)


def test_index_of_another_model_is_refused_with_how_to_rebuild(photos, tmp_path, scorer, checkpoints, checker):
    scorer, config = scorer
    update_index(photos, tmp_path / "index", scorer, model_fingerprint(checkpoints[0]), checker)
    with pytest.raises(WsenseError, match="built by another model.*--rebuild"):
        SearchEngine(checkpoints[1], index_dir=tmp_path / "index", settings=settings())
    engine = SearchEngine(checkpoints[1], photos, index_dir=tmp_path / "index", rebuild=True, settings=settings())
    assert len(engine.images) == 4


def test_damaged_index_is_a_clear_error(tmp_path, checkpoints):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "index.json").write_text("{broken")
    (tmp_path / "index" / "embeddings.npy").write_bytes(b"x")
    with pytest.raises(WsenseError, match="damaged index"):
        SearchEngine(checkpoints[0], index_dir=tmp_path / "index", settings=settings())
    with pytest.raises(WsenseError, match="no index here"):
        SearchEngine(checkpoints[0], index_dir=tmp_path / "none", settings=settings())


def test_described_children_and_image_check_keep_photos_out(photos, tmp_path, scorer, checkpoints, checker):
    import pandas as pd

    scorer, config = scorer
    fingerprint = model_fingerprint(checkpoints[0])
    descriptions = pd.DataFrame({"image": ["b.jpeg"], "text": ["a toddler on a swing"]})
    index, report = update_index(photos, tmp_path / "i1", scorer, fingerprint, checker, descriptions)
    assert report.excluded_by_description == 1 and report.excluded_by_image_check == 0
    assert "b.jpeg" not in [index.entries[i]["path"] for i in index.searchable]
    assert {e["check"]["version"] for e in index.entries} == {checker.version}

    # A check whose classifier scores exactly two photos over its threshold, by their image features.
    flagging, order = _check_flagging_two(photos, index, checker)
    index, report = update_index(photos, tmp_path / "i1", scorer, fingerprint, flagging, descriptions)
    assert report.checked == 4 and (report.added, report.changed, report.unchanged) == (0, 0, 4)
    kept_out = {e["path"]: e["excluded"] for e in index.entries if e["excluded"]}
    flagged = {index.entries[i]["path"] for i in order[:2]}
    assert flagged | {"b.jpeg"} == set(kept_out)
    assert all(kept_out[p].startswith("image check: photo classifier: child score") for p in flagged - {"b.jpeg"})
    assert kept_out["b.jpeg"] == "description mentions a child"  # the description wins where both apply
    assert [e["path"] for e in index.excluded] == sorted(kept_out)


def _check_flagging_two(photos, index, checker):
    from wsense.safety.screener import PhotoScreener

    features = checker.features.images([photos / e["path"] for e in index.entries])
    direction = np.random.default_rng(0).standard_normal(features.shape[1])
    logits = features @ direction
    order = np.argsort(-logits)
    middle = float(logits[order[1:3]].mean())
    check = make_check(coef=np.concatenate([direction, np.zeros(len(checker.check.coef) - len(direction))]),
                       intercept=-middle, thresholds={"photo": 0.5, "uncertain": 0.5})
    return PhotoScreener(check, settings()), order


def test_a_changed_check_rechecks_photos_without_embedding_them_again(photos, tmp_path, scorer, checkpoints,
                                                                       checker, monkeypatch, capsys):
    scorer, config = scorer
    fingerprint = model_fingerprint(checkpoints[0])
    index, report = update_index(photos, tmp_path / "ix", scorer, fingerprint, checker)
    assert report.checked == 4 and index.excluded == []
    embedded = []
    original = scorer.embed_photos
    monkeypatch.setattr(scorer, "embed_photos", lambda paths, **kw: embedded.extend(paths) or original(paths, **kw))
    flagging, _ = _check_flagging_two(photos, index, checker)
    index, report = update_index(photos, tmp_path / "ix", scorer, fingerprint, flagging)
    assert embedded == [] and report.checked == 4 and report.excluded_by_image_check == 2
    assert flagging.version in str(report)
    _, report = update_index(photos, tmp_path / "ix", scorer, fingerprint, flagging)
    assert report.checked == 0 and report.excluded_by_image_check == 2  # verdicts of this version are kept
    capsys.readouterr()
    SearchEngine(checkpoints[0], index_dir=tmp_path / "ix", settings=settings())  # opened as it is: a warning
    assert "checked by another version of the image check" in capsys.readouterr().err
    config = settings(safety__uncertain="exclude")  # another policy is another version: checked again
    _, report = update_index(photos, tmp_path / "ix", scorer, fingerprint, PhotoScreener(flagging.check, config))
    assert report.checked == 4 and embedded == []


def test_failed_index_save_keeps_the_old_index(checkpoint, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        write_image(photos / f"p{i}.jpg", 300 + i)
    config = settings()
    scorer = RelevanceScorer.from_checkpoint(checkpoint, config)
    fingerprint = model_fingerprint(checkpoint)
    directory = tmp_path / "cache" / "index"
    index, _ = update_index(photos, directory, scorer, fingerprint, PhotoScreener.from_config(config))
    version = IndexStore(directory).committed_version()
    changed = CatalogIndex(index.root, fingerprint, [dict(e, excluded="x") for e in index.entries],
                           index.embeddings[::-1].copy())

    def disk_full(*args, **kwargs):  # the failure comes after some rows of the new version were written
        raise OSError("disk full")

    real = store_module._row
    monkeypatch.setattr(store_module, "_row", lambda entry, *args: (
        disk_full() if entry["path"] == "p1.jpg" else real(entry, *args)))
    with pytest.raises(OSError, match="disk full"):
        changed.save(directory)
    monkeypatch.undo()
    loaded = CatalogIndex.load(directory, fingerprint)
    assert loaded.entries == index.entries and IndexStore(directory).committed_version() == version
    assert np.array_equal(loaded.embeddings, index.embeddings)


def test_a_save_rewrites_only_the_rows_that_changed(tmp_path):
    entries = [{"path": f"p{i}.jpg", "size": i, "mtime_ns": i, "sha256": f"{i:064x}", "excluded": None,
                "meta": unknown_metadata(f"p{i}.jpg"), "check": {"version": "v1", "child": False, "reason": ""}}
               for i in range(3)]
    vectors = np.eye(3, 4, dtype=np.float32)
    first = CatalogIndex(tmp_path, "model-a", entries, vectors).save(tmp_path / "ix")
    entries[1] = dict(entries[1], excluded="image check: a child")
    second = CatalogIndex(tmp_path, "model-a", entries[:2], vectors[:2]).save(tmp_path / "ix")
    with sqlite3.connect(tmp_path / "ix" / STORE_FILE) as db:
        written = dict(db.execute("SELECT path, version FROM photos"))
    assert second == first + 1 and written == {"p0.jpg": first, "p1.jpg": second}
    loaded = CatalogIndex.load(tmp_path / "ix", "model-a")
    assert loaded.entries == entries[:2] and np.array_equal(loaded.embeddings, vectors[:2])


@pytest.mark.parametrize("dtype, within", [("float16", 2e-3), ("int10", 1e-3)])
def test_a_store_made_with_smaller_embeddings_keeps_them_so(tmp_path, dtype, within):
    entries = [{"path": f"p{i}.jpg", "size": i, "mtime_ns": i, "sha256": f"{i:064x}", "excluded": None}
               for i in range(3)]
    vectors = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    store = IndexStore(tmp_path)
    store.write_chunks(tmp_path, "model-a", [(entries[:2], vectors[:2]), (entries[2:], vectors[2:])], dtype)
    CatalogIndex(tmp_path, "model-a", entries, vectors[::-1]).save(tmp_path)  # a later save keeps the type
    loaded = CatalogIndex.load(tmp_path, "model-a")
    assert store.info()["dtype"] == dtype and loaded.embeddings.dtype == np.float32
    norms = np.linalg.norm(vectors, axis=1)[::-1, None]
    np.testing.assert_allclose(loaded.embeddings / norms, vectors[::-1] / norms, atol=within)
    assert not np.array_equal(loaded.embeddings, vectors[::-1])


def test_an_index_of_the_earlier_format_moves_into_the_store_on_first_open(tmp_path, capsys):
    entries = [{"path": "a.jpg", "size": 1, "mtime_ns": 2, "sha256": "ab" * 32, "excluded": None,
                "check": {"version": "v1", "child": False, "reason": "no face"}},  # from before metadata
               {"path": "sub/b.jpg", "size": 3, "mtime_ns": 4, "sha256": "cd" * 32, "excluded": "image check: x",
                "meta": unknown_metadata("sub/b.jpg") | {"camera": "X100", "width": 64},
                "check": {"version": "v1", "child": True, "reason": "x"}}]
    vectors = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    legacy = tmp_path / "ix"
    (legacy / PROGRESS_DIR).mkdir(parents=True)
    np.save(legacy / "embeddings.npy", vectors)
    (legacy / "index.json").write_text(json.dumps({"format": "wsense-index-1", "fingerprint": "model-a",
                                                   "root": str(tmp_path), "entries": entries}))
    assert index_exists(legacy)
    loaded = CatalogIndex.load(legacy, "model-a")
    assert loaded.entries == entries and np.array_equal(loaded.embeddings, vectors)
    assert sorted(p.name for p in legacy.iterdir() if not p.name.startswith(STORE_FILE)) == []
    assert "index moved into index.sqlite (2 photos)" in capsys.readouterr().err
    again = CatalogIndex.load(legacy, "model-a")  # from the store now
    assert again.entries == entries and again.root == tmp_path.resolve()
    with pytest.raises(WsenseError, match="built by another model.*--rebuild"):
        CatalogIndex.load(legacy, "model-b")


def test_a_damaged_or_foreign_store_is_a_clear_error(tmp_path):
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / STORE_FILE).write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    (tmp_path / "foreign").mkdir()
    with sqlite3.connect(tmp_path / "foreign" / STORE_FILE) as db:
        db.execute("CREATE TABLE info (key TEXT, value TEXT)")
        db.execute("INSERT INTO info VALUES ('format', 'someone-else-7')")
    for folder in ("torn", "foreign"):
        with pytest.raises(WsenseError, match="damaged or foreign index.*--rebuild") as error:
            CatalogIndex.load(tmp_path / folder)
        assert "\n" not in str(error.value)


def test_progress_of_another_model_is_passed_over(tmp_path):
    store = IndexStore(tmp_path)
    store.commit_progress("model-a", [("a.jpg", 10, 1, "ab" * 32), ("b.jpg", 11, 2, "cd" * 32)],
                          np.ones((2, 4), np.float32))
    store.commit_progress("model-b", [("c.jpg", 12, 3, "ef" * 32)], np.zeros((1, 4), np.float32))
    found = IndexStore(tmp_path).progress("model-a")
    assert sorted(found) == ["a.jpg", "b.jpg"] and found["b.jpg"][:3] == (11, 2, "cd" * 32)
    np.testing.assert_array_equal(found["a.jpg"][3], np.ones(4, np.float32))
    assert IndexStore(tmp_path).committed_version() == 0  # progress alone is no index
    with pytest.raises(WsenseError, match="no index here"):
        CatalogIndex.load(tmp_path)


def test_descriptions_as_pairs_or_a_table_keep_out_the_same_photos():
    import pandas as pd

    pairs = [("a.jpg", "a lighthouse"), ("b.jpg", "a toddler on a swing"), ("c.jpg", ""), ("a.jpg", "Ребёнок")]
    table = pd.DataFrame(pairs, columns=["image", "text"])
    assert described_children(pairs) == described_children(table) == {"a.jpg", "b.jpg"}
    assert described_children(None) == described_children([]) == described_children(table[:0]) == set()


def test_indexing_analyses_faces_while_it_embeds(photos, tmp_path, scorer, checkpoints):
    import time

    scorer, config = scorer
    own = settings()
    own.cache_dir = str(tmp_path / "cache")
    checker = PhotoScreener.from_config(own)
    seen_during_embedding = []

    def photo_batches(paths, **kwargs):
        from wsense.io import file_sha256

        keys = [file_sha256(path) for path in paths]
        deadline = time.monotonic() + 60  # the face thread has the photos to itself while this waits
        while not all(key in checker.face_cache for key in keys) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen_during_embedding.append(sum(key in checker.face_cache for key in keys))
        yield from scorer.photo_batches(paths, **kwargs)

    index, report = update_index(photos, tmp_path / "index", scorer, model_fingerprint(checkpoints[0]), checker,
                                 photo_batches=photo_batches)
    assert seen_during_embedding == [4] and report.checked == 4
    assert all(entry["check"]["version"] == checker.version for entry in index.entries)
