"""Thumbnails (wsense/serving/thumbnails.py): made once for the photos the legal filter allows, served small and
upright."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def test_thumbnails_are_made_for_allowed_photos_once_and_served_small(features_engine, features_photos,
                                                                       features_client):
    from wsense.serving.thumbnails import THUMBNAIL_SIDE, ensure_thumbnails, thumbnail_path

    cache = features_engine.config.cache_dir
    allowed = [entry for entry in features_engine.index.entries if not entry["excluded"]]
    assert ensure_thumbnails(features_engine.root, allowed, cache) == 0  # the index made them all already
    for name in features_engine.images:
        path = thumbnail_path(cache, features_engine.sha256[name])
        assert path.is_file(), name
        with Image.open(path) as thumb:
            assert max(thumb.size) <= THUMBNAIL_SIDE and thumb.format == "JPEG"
    kept_out = next(entry for entry in features_engine.index.entries if entry["path"] == "photo1.jpg")
    assert not thumbnail_path(cache, kept_out["sha256"]).exists()  # a photo the legal filter keeps out gets none
    response = features_client.get("/thumbnails/sub/photo3.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == thumbnail_path(cache, features_engine.sha256["sub/photo3.jpg"]).read_bytes()
    assert features_client.get("/thumbnails/photo1.jpg").status_code == 404
    assert features_client.get("/thumbnails/../photos/photo2.jpg").status_code == 404
    # a thumbnail gone from the cache is made again on demand
    thumbnail_path(cache, features_engine.sha256["photo2.jpg"]).unlink()
    assert features_client.get("/thumbnails/photo2.jpg").status_code == 200
    assert thumbnail_path(cache, features_engine.sha256["photo2.jpg"]).is_file()


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
