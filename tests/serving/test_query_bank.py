"""Query-bank normalisation (wsense/serving/query_bank.py): the offsets, and search ranked by them, showing that
score calibrated."""
import numpy as np
import pytest

from conftest import TEST_IMAGES, settings
from wsense.serving.query_bank import BANK_FILE, bank_offsets, bank_texts
from wsense.serving.search import SearchEngine


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_offsets_are_the_inverted_softmax_log_partition_and_mark_hubs():
    rng = np.random.default_rng(0)
    bank = unit(rng.standard_normal((300, 16)) + 2.0 * np.eye(16)[0])  # captions leaning one way
    photos = unit(rng.standard_normal((5, 16)))
    photos[0] = np.eye(16)[0]  # a hub: close to most captions
    offsets = bank_offsets(bank, photos, beta=20, chunk=2)
    naive = np.log(np.exp(20 * photos @ bank.T).sum(axis=1)) / 20
    assert np.allclose(offsets, naive, atol=1e-4)
    assert offsets.argmax() == 0


def test_bank_texts_leave_out_child_captions_and_held_out_photos():
    import pandas as pd

    captions = pd.DataFrame({"query_text": ["A dog runs .", "Two boys play .", "A man climbs .", "A dog runs ."],
                             "image": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]})
    assert bank_texts(captions) == ["A dog runs .", "A man climbs ."]
    assert bank_texts(captions, exclude_images=["c.jpg"]) == ["A dog runs ."]


def test_search_ranks_by_the_query_bank_and_shows_that_score_calibrated(exported_checkpoint_copy, shared_data,
                                                                         tmp_path, monkeypatch):
    monkeypatch.setenv("WSENSE_DATA_DIR", str(shared_data))  # the bank's captions: the checkpoint's data set
    config = settings(search__ranking="qb_cosine")
    engine = SearchEngine(exported_checkpoint_copy, shared_data / "test_images", None, index_dir=tmp_path / "index",
                          settings=config)
    # built on first use from the training captions (child ones out)
    assert (exported_checkpoint_copy / BANK_FILE).is_file()
    assert len(np.load(exported_checkpoint_copy / BANK_FILE)) == 5
    scorer = engine.scorer
    result = engine.search("a dog swimming in a lake", top_k=3)
    v = scorer.embed_texts(["a dog swimming in a lake"])
    corrected = (v @ engine.embeddings.T)[0] - scorer.photo_offsets(engine.embeddings)
    assert [r["image"] for r in result.results] == [engine.images[i] for i in np.argsort(-corrected)]
    calibrated = engine.ranker.calibration(corrected)
    assert [r["score"] for r in result.results] == pytest.approx(
        [calibrated[engine.images.index(r["image"])] for r in result.results], abs=2e-4)
    relevance = scorer.relevance(v, engine.embeddings)[0]
    assert all(r["relevance"] == round(float(relevance[engine.images.index(r["image"])]), 4) for r in result.results)
    assert {r["image"] for r in result.results} == set(TEST_IMAGES)
    mtime = (exported_checkpoint_copy / BANK_FILE).stat().st_mtime_ns
    SearchEngine(exported_checkpoint_copy, index_dir=tmp_path / "index", settings=config)  # the stored bank is reused
    assert (exported_checkpoint_copy / BANK_FILE).stat().st_mtime_ns == mtime


def test_a_zero_bank_weight_is_the_plain_cosine(exported_checkpoint_copy, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WSENSE_DATA_DIR", str(shared_data))
    plain = SearchEngine(exported_checkpoint_copy, shared_data / "test_images", None, index_dir=tmp_path / "index",
                         settings=settings(search__ranking="cosine"))
    weightless = SearchEngine(exported_checkpoint_copy, index_dir=tmp_path / "index",
                              settings=settings(search__ranking="qb_cosine", search__bank_weight=0.0))
    for query in ("a dog", "a man on a mountain", "snow"):  # the same ranking (each shows its own calibration)
        assert [(r["image"], r["relevance"]) for r in plain.search(query, 3).results] == [
            (r["image"], r["relevance"]) for r in weightless.search(query, 3).results]
    assert np.array_equal(plain.embeddings, weightless.embeddings)
