"""Filters on what the index knows of each photo: subfolder, orientation (as shown), EXIF camera, lens and date
taken; through the engine, the CLI, the API and the page."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import settings, visible_text
from wsense.cli import main
from wsense.errors import WsenseError
from wsense.serving.metadata import MetadataFilter, photo_metadata
from wsense.serving.search import SearchEngine
from wsense.serving.web import create_app

QUERY = "a dog swimming in a lake"
# name: (size, EXIF orientation, make, model, lens, date taken)
PHOTOS = {
    "trips/alps/a.jpg": ((120, 80), 1, "Canon", "Canon EOS R5", "RF24-105mm F4 L", "2024:07:02 10:00:00"),
    "trips/alps/b.jpg": ((120, 80), 6, "NIKON CORPORATION", "NIKON Z 6", "NIKKOR Z 50mm f/1.8 S",
                         "2024:07:09 18:30:00"),
    "trips/sea/c.jpg": ((80, 120), 1, "Canon", "Canon EOS R5", "RF50mm F1.8", "2023:12:31 23:59:59"),
    "studio/d.jpg": ((96, 96), 1, "FUJIFILM", "X-T5", None, "2025:01:15 09:00:00"),
    "e.jpg": ((100, 70), None, None, None, None, None),
}


def write_photo(path: Path, seed: int, size, orientation, make, model, lens, taken) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    for tag, value in ((0x0112, orientation), (0x010F, make), (0x0110, model)):
        if value is not None:
            exif[tag] = value
    details = {tag: value for tag, value in ((0x9003, taken), (0xA434, lens)) if value is not None}
    if details:
        exif[0x8769] = details
    image.save(path, format="JPEG", exif=exif)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("filters") / "catalog"
    for seed, (name, spec) in enumerate(PHOTOS.items()):
        write_photo(root / name, 40 + seed, *spec)
    return root


@pytest.fixture(scope="module")
def engine(checkpoint, photos, tmp_path_factory) -> SearchEngine:
    return SearchEngine(checkpoint, photos, None, index_dir=tmp_path_factory.mktemp("ix") / "ix",
                        settings=settings(search__ranking="cosine", search__candidates=2))


def test_metadata_from_the_file_header(photos):
    a = photo_metadata(photos, "trips/alps/a.jpg")
    assert a == {"folder": "trips/alps", "width": 120, "height": 80, "orientation": "landscape",
                 "taken": "2024-07-02T10:00:00", "camera": "Canon EOS R5", "lens": "RF24-105mm F4 L"}
    b = photo_metadata(photos, "trips/alps/b.jpg")  # turned by the camera: shown as portrait
    assert (b["width"], b["height"], b["orientation"]) == (80, 120, "portrait")
    assert b["camera"] == "NIKON CORPORATION NIKON Z 6"
    assert photo_metadata(photos, "studio/d.jpg")["orientation"] == "square"
    assert photo_metadata(photos, "e.jpg") == {"folder": "", "width": 100, "height": 70, "orientation": "landscape",
                                               "taken": None, "camera": None, "lens": None}


def test_the_index_keeps_each_photos_metadata(engine):
    entries = {entry["path"]: entry for entry in engine.index.entries}
    assert set(entries) == set(PHOTOS) and entries["trips/sea/c.jpg"]["meta"]["lens"] == "RF50mm F1.8"


@pytest.mark.parametrize("filters, expected", [
    ({"folder": "trips"}, {"trips/alps/a.jpg", "trips/alps/b.jpg", "trips/sea/c.jpg"}),
    ({"folder": "trips/alps/"}, {"trips/alps/a.jpg", "trips/alps/b.jpg"}),
    ({"orientation": "portrait"}, {"trips/alps/b.jpg", "trips/sea/c.jpg"}),
    ({"camera": "eos r5"}, {"trips/alps/a.jpg", "trips/sea/c.jpg"}),
    ({"lens": "nikkor"}, {"trips/alps/b.jpg"}),
    ({"taken_from": "2024-01-01", "taken_to": "2024-12-31"}, {"trips/alps/a.jpg", "trips/alps/b.jpg"}),
    ({"taken_from": "2025-01-15"}, {"studio/d.jpg"}),
    ({"camera": "canon", "orientation": "landscape"}, {"trips/alps/a.jpg"}),
    ({"folder": "nowhere"}, set()),
])
def test_filters_keep_the_ranking_of_the_photos_they_allow(engine, filters, expected):
    full = [item["image"] for item in engine.search(QUERY, 5).results]
    result = engine.search(QUERY, 5, filters=MetadataFilter.parse(**filters))
    assert [item["image"] for item in result.results] == [name for name in full if name in expected]
    assert result.total == len(expected) and result.total_exact
    cut = engine.search(QUERY, 5, min_score=0.0, filters=MetadataFilter.parse(**filters))
    assert cut.results == result.results and cut.total == len(expected)  # candidates 2: the search widened
    assert result.filters == MetadataFilter.parse(**filters).to_dict()


@pytest.mark.parametrize("filters, message", [({"orientation": "round"}, "orientation must be one of"),
                                              ({"taken_from": "2024-13-01"}, "taken_from must be a date"),
                                              ({"folder": "../other"}, "subfolder of the catalog")])
def test_bad_filters_are_clear_errors(filters, message):
    with pytest.raises(WsenseError, match=message):
        MetadataFilter.parse(**filters)


def test_filters_through_the_cli_the_api_and_the_page(engine, checkpoint, tmp_path, capsys):
    config = tmp_path / "wsense.yaml"
    config.write_text("search:\n  multilingual: none\n  text_runtime: torch\n  ranking: cosine\n"
                      "  duplicate_threshold: null\n  candidates: 2\n"
                      f"safety:\n  check: {settings().safety.check}\n", encoding="utf-8")
    assert main(["search", QUERY, "--top-k", "5", "--camera", "canon", "--taken-to", "2024-07-05", "--json",
                 "--checkpoint", str(checkpoint), "--index-dir", str(engine.index_dir), "--config", str(config)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = engine.search(QUERY, 5, filters=MetadataFilter.parse(camera="canon", taken_to="2024-07-05")).to_dict()
    assert line == expected and {item["image"] for item in line["results"]} == {"trips/alps/a.jpg", "trips/sea/c.jpg"}

    client = TestClient(create_app(engine, max_k=5))
    params = {"q": QUERY, "k": 1, "folder": "trips", "orientation": "portrait"}
    body = client.get("/api/search", params=params).json()
    wanted = MetadataFilter.parse(folder="trips", orientation="portrait")
    assert body == engine.search(QUERY, 1, filters=wanted).to_dict()
    assert body["total"] == 2 and body["filters"] == {"folder": "trips", "orientation": "portrait"}
    bad = client.get("/api/search", params={"q": QUERY, "taken_to": "yesterday"})
    assert bad.status_code == 400 and "taken_to must be a date" in bad.json()["detail"]

    page = client.get("/", params=params).text
    assert '<details class="filters" open>' in page and '<option value="portrait" selected>' in page
    assert 'name="folder" value="trips"' in page and "(folder trips, orientation portrait)" in page
    following = re.search(r'rel="next" href="([^"]*)"', page).group(1).replace("&amp;", "&")
    assert "folder=trips" in following and "orientation=portrait" in following
    second = client.get(following).text
    assert "2–2 of 2" in visible_text(second)
    assert client.get("/", params={**params, "orientation": "round"}).status_code == 400


def test_the_page_carries_each_photos_details_for_the_lightbox(engine):
    from wsense.serving.pages import describe

    client = TestClient(create_app(engine, max_k=5))
    page = client.get("/", params={"q": QUERY, "k": 5, "camera": "nikon"}).text
    details = "80 × 120 · NIKON CORPORATION NIKON Z 6 · NIKKOR Z 50mm f/1.8 S · 2024-07-09 18:30:00"
    assert f'<figure data-meta="{details}">' in page
    assert describe({"folder": "", "width": 100, "height": 70}) == "100 × 70" and describe(None) == ""
