"""Face analysis (wsense/safety/faces.py): cached by content, unreadable and too small photos named (a missing or
damaged face detector network: tests/safety/test_mtcnn.py)."""
import json

import pytest
from PIL import Image

from conftest import write_image
from wsense.errors import WsenseError
from wsense.safety.faces import ANALYZER_VERSION, FaceCache, PhotoFaces, analyze_photos


def test_face_analysis_of_a_generated_photo_is_cached_by_content(tmp_path):
    write_image(tmp_path / "noise.jpg", 0, (160, 200))
    cache = FaceCache(tmp_path / "cache")
    [(path, faces, why)] = analyze_photos([tmp_path / "noise.jpg"], cache, progress=False)
    assert why is None and (faces.width, faces.height) == (160, 200) and faces.faces == []
    reopened = FaceCache(tmp_path / "cache")
    [shard] = reopened.shards.shards()
    assert json.loads(shard.read_text())["version"] == ANALYZER_VERSION
    # Cached: no analyzer is needed (one that fails would be noticed).
    [(_, again, _)] = analyze_photos([tmp_path / "noise.jpg"], reopened, analyzer=object(), progress=False)
    assert again == faces


def test_the_face_cache_saves_what_it_adds_and_reads_the_earlier_single_file(tmp_path):
    cache = FaceCache(tmp_path / "cache")
    faces = PhotoFaces(100, 80, [], [([1, 2, 30, 60], 0.9)])
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text(json.dumps({"version": ANALYZER_VERSION, "photos": {"old": faces.to_dict()}}))
    (cache.path.parent / "faces-0.json").write_text("{}")  # another analyzer's file: not read
    cache = FaceCache(tmp_path / "cache")
    assert "old" in cache and cache.get("old") == faces
    cache.put("a", faces)
    cache.save()
    cache.put("b", faces)
    cache.save()
    added = [json.loads(shard.read_text())["photos"] for shard in cache.shards.shards()[1:]]
    assert [list(photos) for photos in added] == [["a"], ["b"]]  # each save: what it added, not the whole cache
    cache.shards.shards()[-1].write_text("{not json")
    reopened = FaceCache(tmp_path / "cache")
    assert "old" in reopened and "a" in reopened and "b" not in reopened
    reopened.save()  # the damaged shard goes; its photo is analysed again when met
    assert len(reopened.shards.shards()) == 2


def test_unreadable_and_too_small_photos_are_named(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (20, 300)).save(tmp_path / "thin.png")
    cache = FaceCache(tmp_path / "cache")
    results = list(analyze_photos([tmp_path / "broken.jpg", tmp_path / "thin.png"], cache, skip_unreadable=True,
                                  progress=False))
    assert results[0][1] is None and "not a readable image" in results[0][2]
    assert results[1][1] is None and "photo too small to check (20x300 px" in results[1][2]
    with pytest.raises(WsenseError, match="thin.png: photo too small"):
        list(analyze_photos([tmp_path / "thin.png"], cache, progress=False))


def test_an_analysis_without_people_is_cached_so_and_completed_when_people_are_asked_for(tmp_path):
    from types import SimpleNamespace

    write_image(tmp_path / "noise.jpg", 1, (160, 200))
    cache = FaceCache(tmp_path / "cache")
    [(_, faces, _)] = analyze_photos([tmp_path / "noise.jpg"], cache, progress=False, people=False)
    assert faces.people is None and FaceCache(tmp_path / "cache").get(next(iter(cache))).people is None
    asked = []
    [(_, faces, _)] = analyze_photos([tmp_path / "noise.jpg"], FaceCache(tmp_path / "cache"), progress=False,
                                     people=lambda key, faces: asked.append(key) or False)
    assert faces.people is None and len(asked) == 1  # the caller said no: still not looked for
    found = SimpleNamespace(find_people=lambda image: asked.append(image.size) or [([1, 2, 65, 130], 0.8)])
    asked.clear()
    [(_, faces, _)] = analyze_photos([tmp_path / "noise.jpg"], FaceCache(tmp_path / "cache"), found, progress=False,
                                     people=lambda key, faces: asked.append(key) or True)
    assert faces.people == [([1, 2, 65, 130], 0.8)] and asked[1:] == [(160, 200)]  # on the photo as analysed
    assert len(asked) == 2  # the caller was asked once (its answer can be used up: the features handed over)
    [(_, again, _)] = analyze_photos([tmp_path / "noise.jpg"], FaceCache(tmp_path / "cache"), object(), progress=False)
    assert again == faces  # completed in the cache

