"""The catalog index: incremental, atomic, per model, with the legal filter applied to every photo."""
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import settings, write_image
from wsense.errors import WsenseError
from wsense.models.checkpoint import model_fingerprint
from wsense.serving.first_stage import FirstStage
from wsense.serving.index import CatalogIndex, update_index
from wsense.serving.scoring import RelevanceScorer
from wsense.serving.search import SearchEngine


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


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "b.jpeg", "sub/c.png", "sub/d.JPG"]):
        write_image(root / name, i)
    (root / "notes.txt").write_text("not a photo")
    return root


def test_incremental_index_embeds_only_new_and_changed_photos(photos, tmp_path, scorer, checkpoints):
    scorer, config = scorer
    fingerprint = model_fingerprint(checkpoints[0])
    directory = tmp_path / "index"
    index, report = update_index(photos, directory, scorer, fingerprint, config.search)
    assert [e["path"] for e in index.entries] == ["a.jpg", "b.jpeg", "sub/c.png", "sub/d.JPG"]
    assert (report.added, report.changed, report.removed, report.unchanged) == (4, 0, 0, 0)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1, atol=1e-5)
    first = index.embeddings.copy()

    write_image(photos / "e.jpg", 10)  # add
    write_image(photos / "b.jpeg", 11)  # change
    (photos / "sub" / "c.png").unlink()  # delete
    index, report = update_index(photos, directory, scorer, fingerprint, config.search)
    assert (report.added, report.changed, report.removed, report.unchanged) == (1, 1, 1, 2)
    paths = [e["path"] for e in index.entries]
    assert paths == ["a.jpg", "b.jpeg", "e.jpg", "sub/d.JPG"]
    assert np.allclose(index.embeddings[0], first[0])  # a.jpg reused, not re-embedded
    assert not np.allclose(index.embeddings[1], first[1])  # b.jpeg re-embedded

    (photos / "a.jpg").touch()  # new mtime, same bytes: hashed, not re-embedded
    _, report = update_index(photos, directory, scorer, fingerprint, config.search)
    assert (report.added, report.changed, report.unchanged) == (0, 0, 4)
    assert CatalogIndex.load(directory, fingerprint).entries[1]["path"] == "b.jpeg"


def test_corrupt_photos_are_reported_and_skipped(photos, tmp_path, scorer, checkpoints):
    scorer, config = scorer
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    index, report = update_index(photos, tmp_path / "index", scorer, model_fingerprint(checkpoints[0]), config.search)
    assert [path for path, _ in report.skipped] == ["broken.jpg"]
    assert "broken.jpg" not in [e["path"] for e in index.entries] and len(index.entries) == 4
    assert "skipped broken.jpg" in str(report)


def test_index_of_another_model_is_refused_with_how_to_rebuild(photos, tmp_path, scorer, checkpoints):
    scorer, config = scorer
    update_index(photos, tmp_path / "index", scorer, model_fingerprint(checkpoints[0]), config.search)
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


def test_described_children_and_image_check_keep_photos_out(photos, tmp_path, scorer, checkpoints):
    import pandas as pd

    scorer, config = scorer
    descriptions = pd.DataFrame({"image": ["b.jpeg"], "text": ["a toddler on a swing"]})
    index, report = update_index(photos, tmp_path / "i1", scorer, model_fingerprint(checkpoints[0]), config.search,
                                 descriptions)
    assert report.excluded_by_description == 1
    assert "b.jpeg" not in [index.entries[i]["path"] for i in index.searchable]
    search = settings().search
    prompts = scorer.embed_texts(search.child_prompts)
    child_score = scorer.relevance(prompts, torch.from_numpy(index.embeddings)).max(dim=0).values.numpy()
    order = np.argsort(-child_score)
    # Between the second and third highest child score: exactly two photos resemble the prompts.
    search.child_threshold = float(child_score[order[1:3]].mean())
    index, report = update_index(photos, tmp_path / "i2", scorer, model_fingerprint(checkpoints[0]), search)
    assert report.excluded_by_image_check == 2
    kept_out = {index.entries[i]["path"] for i in range(4) if index.entries[i]["excluded"]}
    assert kept_out == {index.entries[i]["path"] for i in order[:2]}
    search.child_threshold = 0.0  # every photo resembles the prompts at threshold 0
    index, report = update_index(photos, tmp_path / "i3", scorer, model_fingerprint(checkpoints[0]), search)
    assert report.excluded_by_image_check == 4 and index.searchable == []


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
