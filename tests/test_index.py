
import numpy as np
import pytest
import torch

from wsense.config import load_config
from wsense.errors import WsenseError
from wsense.index import CatalogIndex, model_fingerprint, update_index
from wsense.models.relevance import build_relevance_model
from wsense.retrieval import FirstStage
from wsense.scoring import RelevanceScorer
from wsense.search import SearchEngine
from wsense.training import load_checkpoint, save_checkpoint
from conftest import write_image


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    config = load_config()
    root = tmp_path_factory.mktemp("ckpts")
    model = build_relevance_model(config)
    first = save_checkpoint(model, config, root / "a", {"epoch": 0})
    with torch.no_grad():
        model.fusion.net[0].weight.add_(0.01)
    second = save_checkpoint(model, config, root / "b", {"epoch": 1})
    return first, second


@pytest.fixture(scope="module")
def scorer(checkpoints):
    model, config, _ = load_checkpoint(checkpoints[0])
    return RelevanceScorer(model, config.image_backbone), config


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
        SearchEngine(checkpoints[1], index_dir=tmp_path / "index")
    engine = SearchEngine(checkpoints[1], photos, index_dir=tmp_path / "index", rebuild=True)
    assert len(engine.images) == 4


def test_damaged_index_is_a_clear_error(tmp_path, checkpoints):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "index.json").write_text("{broken")
    (tmp_path / "index" / "embeddings.npy").write_bytes(b"x")
    with pytest.raises(WsenseError, match="damaged index"):
        SearchEngine(checkpoints[0], index_dir=tmp_path / "index")
    with pytest.raises(WsenseError, match="no index here"):
        SearchEngine(checkpoints[0], index_dir=tmp_path / "none")


def test_described_children_and_image_check_keep_photos_out(photos, tmp_path, scorer, checkpoints):
    import pandas as pd

    scorer, config = scorer
    descriptions = pd.DataFrame({"image": ["b.jpeg"], "text": ["a toddler on a swing"]})
    index, report = update_index(photos, tmp_path / "i1", scorer, model_fingerprint(checkpoints[0]), config.search,
                                 descriptions)
    assert report.excluded_by_description == 1
    assert "b.jpeg" not in [index.entries[i]["path"] for i in index.searchable]
    config.search.child_threshold = 0.0  # every photo resembles the prompts at threshold 0
    index, report = update_index(photos, tmp_path / "i2", scorer, model_fingerprint(checkpoints[0]), config.search)
    assert report.excluded_by_image_check == 4 and index.searchable == []
    config.search.child_threshold = 1.01
    index, report = update_index(photos, tmp_path / "i3", scorer, model_fingerprint(checkpoints[0]), config.search)
    assert report.excluded_by_image_check == 0 and len(index.searchable) == 4


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
