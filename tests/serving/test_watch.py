"""Live catalog: SearchEngine.refresh and the watcher of `wsense serve --watch` (added, changed and removed photos,
checked before they are searchable; a failed refresh leaves the catalog served and the index on disk as they were)."""
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from conftest import make_check, settings, write_image
from wsense.errors import WsenseError
from wsense.safety.screener import PhotoScreener
from wsense.serving import index as index_module
from wsense.serving.index import CatalogIndex
from wsense.serving.store import IndexStore
from wsense.serving.search import SearchEngine
from wsense.serving.web import create_app

DESCRIPTIONS = pd.DataFrame({"image": ["girl.jpg"], "text": ["A little girl on a swing ."]})


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        write_image(root / f"photo{i}.jpg", 700 + i, size=(64, 48))
    return root


@pytest.fixture
def engine(checkpoint, folder, tmp_path):
    # The index inside the photo folder: the watcher must not take its own writes for changes to the catalog.
    return SearchEngine(checkpoint, folder, DESCRIPTIONS, index_dir=folder / "index", settings=settings())


def flagging(checker: PhotoScreener, flagged, allowed) -> PhotoScreener:
    """A check whose classifier keeps out the photo `flagged` and allows the photos `allowed`, by their image
    features."""
    features = checker.features.images([flagged, *allowed])
    direction = features[0] - features[1:].mean(axis=0)
    logits = features @ direction
    threshold = float(logits[0] + logits[1:].max()) / 2
    coef = np.concatenate([direction, np.zeros(len(checker.check.coef) - len(direction))])
    return PhotoScreener(make_check(coef=coef, intercept=-threshold, thresholds={"photo": 0.5, "uncertain": 0.5}),
                        settings())


def test_refresh_adds_changes_and_removes_photos(engine, folder):
    before = engine.search("a dog", 3)
    write_image(folder / "new.jpg", 1, size=(64, 48))
    report = engine.refresh()
    assert (report.added, report.unchanged) == (1, 3) and "new.jpg" in engine.images
    assert engine.search("a dog", 4).total == 4
    assert CatalogIndex.load(engine.index_dir).entries[-1]["path"] == "photo2.jpg"  # saved: sorted, with new.jpg
    assert "new.jpg" in [e["path"] for e in CatalogIndex.load(engine.index_dir).entries]

    old = engine.embeddings[engine.images.index("photo0.jpg")].copy()
    write_image(folder / "photo0.jpg", 99, size=(64, 48))  # the same name, another photo
    assert engine.refresh().changed == 1
    assert not np.allclose(engine.embeddings[engine.images.index("photo0.jpg")], old)

    (folder / "new.jpg").unlink()
    assert engine.refresh().removed == 1 and "new.jpg" not in engine.images
    assert engine.search("a dog", 4).total == 3 and before.total == 3


def test_new_photos_are_checked_before_they_are_searchable(engine, folder, tmp_path):
    write_image(folder / "girl.jpg", 2, size=(64, 48))  # described as a child
    report = engine.refresh()
    assert report.excluded_by_description == 1 and "girl.jpg" not in engine.images
    client = TestClient(create_app(engine))
    assert client.get("/images/girl.jpg").status_code == 404

    write_image(tmp_path / "flagged.jpg", 3, size=(64, 48))
    engine.live.checker = flagging(engine.live.checker, tmp_path / "flagged.jpg", [folder / n for n in engine.images])
    shutil.copy(tmp_path / "flagged.jpg", folder / "flagged.jpg")
    report = engine.refresh()
    assert report.excluded_by_image_check == 1 and "flagged.jpg" not in engine.images
    assert sorted(engine.images) == ["photo0.jpg", "photo1.jpg", "photo2.jpg"]
    assert client.get("/thumbnails/flagged.jpg").status_code == 404
    reply = client.get("/api/similar", params={"image": "flagged.jpg"}).json()
    assert reply["refused"] is True and reply["results"] == []


def test_reviews_overrule_the_image_check_both_ways_and_follow_a_renamed_photo(checkpoint, folder, tmp_path):
    from wsense.io import file_sha256
    from wsense.safety.reviews import new_reviews, record_reviews

    reviews = tmp_path / "reviews.csv"
    engine = SearchEngine(checkpoint, folder, DESCRIPTIONS, index_dir=folder / "index",
                          settings=settings(safety__reviews=str(reviews)))
    write_image(tmp_path / "flagged.jpg", 3, size=(64, 48))
    engine.live.checker = flagging(engine.live.checker, tmp_path / "flagged.jpg", [folder / n for n in engine.images])
    shutil.copy(tmp_path / "flagged.jpg", folder / "flagged.jpg")
    assert engine.refresh().excluded_by_image_check == 1 and "flagged.jpg" not in engine.images

    record_reviews(reviews, new_reviews([("flagged.jpg", file_sha256(folder / "flagged.jpg"))], "no_child", "Ana"))
    record_reviews(reviews, new_reviews([("photo1.jpg", file_sha256(folder / "photo1.jpg"))], "child", "Ben"))
    report = engine.refresh()
    assert (report.released_by_review, report.excluded_by_review, report.excluded_by_image_check) == (1, 1, 0)
    assert "1 by a review; 1 shown that the check keeps out, by a review" in str(report)
    assert sorted(engine.images) == ["flagged.jpg", "photo0.jpg", "photo2.jpg"]
    kept_out = {e["path"]: e["excluded"] for e in CatalogIndex.load(engine.index_dir).entries if e["excluded"]}
    assert kept_out["photo1.jpg"].startswith("review: reviewed by Ben on ")

    (folder / "flagged.jpg").rename(folder / "renamed.jpg")  # the review is the photo's, not its name's
    engine.refresh()
    assert "renamed.jpg" in engine.images and "photo1.jpg" not in engine.images

    reviews.write_text(reviews.read_text(encoding="utf-8") + "not,a,review,,,\n", encoding="utf-8")
    write_image(folder / "new.jpg", 4, size=(64, 48))
    embedded = []
    engine.live.scorer.photo_batches = lambda *a, **k: embedded.append(1) or iter(())
    with pytest.raises(WsenseError, match="reviews.csv:4: sha256 must be 64 hex digits"):
        engine.refresh()
    assert not embedded and "renamed.jpg" in engine.images  # named before any photo is embedded; still served


def test_a_failed_refresh_keeps_the_catalog_and_the_index_as_they_were(engine, folder, monkeypatch):
    saved = CatalogIndex.load(engine.index_dir)
    version = IndexStore(engine.index_dir).committed_version()
    write_image(folder / "new.jpg", 1, size=(64, 48))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "ensure_thumbnails", broken)  # fails after embedding, before saving
    with pytest.raises(OSError, match="disk full"):
        engine.refresh()
    assert "new.jpg" not in engine.images and engine.search("a dog", 5).total == 3
    assert IndexStore(engine.index_dir).committed_version() == version
    assert CatalogIndex.load(engine.index_dir).entries == saved.entries
    assert not [p for p in engine.index_dir.parent.iterdir() if p.name.startswith(".")]  # no half-written folder


def test_an_emptied_folder_serves_no_photos(engine, folder):
    for photo in folder.glob("*.jpg"):
        photo.unlink()
    engine.refresh()
    result = engine.search("a dog", 3)
    assert result.total == 0 and result.results == []
    assert engine.search("a dog", 3, negatives=["snow"], min_score=0.5, offset=2).results == []
    assert TestClient(create_app(engine)).get("/", params={"q": "a dog"}).status_code == 200


def test_an_index_opened_alone_cannot_be_refreshed_or_watched(engine, checkpoint):
    alone = SearchEngine(checkpoint, index_dir=engine.index_dir, settings=settings())
    with pytest.raises(WsenseError, match="without its image folder"):
        alone.refresh()
    with pytest.raises(WsenseError, match="--images"):
        create_app(alone, watch=True)


def wait_for(condition, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the watcher did not pick the change up in time"
        time.sleep(0.2)


def test_serving_with_watch_follows_the_folder(engine, folder, tmp_path):
    app = create_app(engine, watch=True)
    with TestClient(app) as client:  # the lifespan starts and stops the watcher
        status = client.get("/api/catalog").json()
        assert status["photos"] == 3 and status["watching"] is True and status["refreshes"] == 0

        write_image(tmp_path / "new.jpg", 1, size=(64, 48))
        shutil.copy(tmp_path / "new.jpg", folder / "new.jpg")
        wait_for(lambda: client.get("/api/catalog").json()["photos"] == 4)
        names = [item["image"] for item in client.get("/api/search", params={"q": "a dog", "k": 4}).json()["results"]]
        assert "new.jpg" in names and client.get("/images/new.jpg").status_code == 200

        (folder / "photo1.jpg").unlink()
        wait_for(lambda: client.get("/api/catalog").json()["photos"] == 3)
        assert client.get("/images/photo1.jpg").status_code == 404
        refreshes = app.state.watcher.refreshes

        (folder / "notes.txt").write_text("not a photo")  # neither a photo nor the index's own files
        (engine.index_dir / "stray.npy").write_bytes(b"")
        time.sleep(3)
        assert app.state.watcher.refreshes == refreshes and app.state.watcher.last_error is None
    assert not app.state.watcher._thread.is_alive()
