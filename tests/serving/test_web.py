"""The web page and JSON API (wsense/serving/web.py), through FastAPI's TestClient: over the session engine on the
tiny data set, and over the search-features engine (paging, cut-off, more like a photo, uploads, duplicates)."""
from __future__ import annotations

import io
import re
from html import escape
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import TEST_IMAGES, make_check, settings, visible_text, write_image
from wsense.safety.screener import PhotoScreener
from wsense.serving import web
from wsense.serving.requests import DISCLAIMER_RU, MAX_QUERY_CHARS, disclaimer
from wsense.serving.search import SearchEngine
from wsense.serving.web import create_app

REFUSED = ["two boys playing", "девочка в парке", "a 5-year-old", "Kids at the beach", "малыш на руках"]


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine, max_k=5))


def catalog_imgs(html: str) -> list[str]:
    return re.findall(r'<img[^>]*src="/(?:images|thumbnails)/[^"]*"', html)


def test_api_returns_the_engines_results(client, engine):
    body = client.get("/api/search", params={"q": "a dog swimming in a lake", "k": 5}).json()
    assert body == engine.search("a dog swimming in a lake", 5).to_dict()
    assert body["refused"] is False and body["reason"] is None and body["query"] == "a dog swimming in a lake"
    assert {item["image"] for item in body["results"]} == set(engine.images)
    assert all(set(item) == {"image", "score", "relevance"} and 0 <= item["score"] <= 1 for item in body["results"])
    scores = [item["score"] for item in body["results"]]
    assert scores == sorted(scores, reverse=True)  # the score shown is the ranking's
    assert len(client.get("/api/search", params={"q": "a dog"}).json()["results"]) == 1  # k defaults to 1


@pytest.mark.parametrize("k", ["0", "-1", "6", "1000", "two", "1.5"])
def test_k_out_of_bounds_is_a_clear_error(client, k):
    response = client.get("/api/search", params={"q": "a dog", "k": k})
    assert response.status_code == 400 and "k must be" in response.json()["detail"]
    page = client.get("/", params={"q": "a dog", "k": k})
    assert page.status_code == 400 and "k must be" in page.text and not catalog_imgs(page.text)


@pytest.mark.parametrize("q, message", [(None, "empty query"), ("", "empty query"), ("   ", "empty query"),
                                        ("dog " * MAX_QUERY_CHARS, "query too long")])
def test_bad_queries_are_4xx_with_a_message(client, q, message):
    params = {} if q is None else {"q": q}
    response = client.get("/api/search", params=params)
    assert response.status_code == 400 and message in response.json()["detail"]
    if q is not None:
        page = client.get("/", params=params)
        assert page.status_code == 400 and message in page.text and not catalog_imgs(page.text)


def test_start_page_is_just_the_search_box(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta charset="utf-8">' in page.text and '<form method="get" action="/"' in page.text
    assert 'name="q"' in page.text and not catalog_imgs(page.text)
    # The box's default k must satisfy its own max (here 5), or browsers refuse to submit the form.
    assert 'name="k" type="number" min="1" max="5" value="5"' in page.text


def test_page_shows_thumbnails_scores_and_names(client, engine):
    page = client.get("/", params={"q": "a man on a mountain", "k": 5})
    assert page.status_code == 200
    result = engine.search("a man on a mountain", 5)
    assert len(catalog_imgs(page.text)) == len(result.results) == 2
    for item in result.results:
        assert f'src="/thumbnails/{item["image"]}"' in page.text and f'href="/images/{item["image"]}"' in page.text
        assert f'{item["score"]:.3f}' in page.text


@pytest.mark.parametrize("q", REFUSED)
def test_refused_queries_show_no_image(client, q):
    body = client.get("/api/search", params={"q": q, "k": 5}).json()
    assert body["refused"] is True and body["results"] == [] and body["reason"] and body["query"] == q
    page = client.get("/", params={"q": q, "k": 5})
    assert page.status_code == 200 and escape(disclaimer(q)) in page.text and "<img" not in page.text
    assert escape(body["reason"]) in page.text


def test_cyrillic_query_round_trips(client):
    body = client.get("/api/search", params={"q": "чёрная собака на снегу", "k": 2}).json()
    assert body["query"] == "чёрная собака на снегу" and len(body["results"]) == 2
    page = client.get("/?q=%D1%87%D1%91%D1%80%D0%BD%D0%B0%D1%8F%20%D1%81%D0%BE%D0%B1%D0%B0%D0%BA%D0%B0&k=2")
    assert "charset=utf-8" in page.headers["content-type"] and "чёрная собака" in page.text
    assert len(catalog_imgs(page.text)) == 2


def test_page_escapes_the_query(client):
    attack = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    page = client.get("/", params={"q": attack})
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;" in page.text
    # Defence in depth: only the script this server sends as a file may run, no inline script at all.
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy


def test_served_image_is_the_files_bytes(client, engine):
    name = engine.images[0]
    response = client.get(f"/images/{name}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == (engine.root / name).read_bytes()


@pytest.mark.parametrize("path", [
    "%2e%2e%2ftrain_dataset.csv", "%2e%2e/train_dataset.csv", "..%2ftrain_dataset.csv",
    "%2e%2e%2ftrain_images%2f" + "1000_a0.jpg", "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
    "/etc/passwd", "..%5ctrain_dataset.csv", TEST_IMAGES[0] + "%00.txt", TEST_IMAGES[0].upper(),
    "notes.txt",  # a real file in the folder, but not an image of the catalog
    TEST_IMAGES[1],  # a real photo in the folder, kept out of the catalog because it shows children
    "", "nowhere.jpg",
])
def test_only_catalog_images_are_served(client, engine, path):
    assert client.get(f"/images/{path}").status_code == 404


def test_absolute_path_to_a_catalog_file_is_not_served(client, engine):
    absolute = (engine.root / engine.images[0]).resolve().as_posix()
    assert client.get(f"/images/{absolute}").status_code == 404
    assert client.get(f"/images/%2F{absolute.lstrip('/').replace('/', '%2F')}").status_code == 404


def test_symlink_out_of_the_catalog_is_not_served(tmp_path):
    """Even if the catalog lists a symlink (catalog_files follows them), a target outside the folder is not sent."""
    catalog, outside = tmp_path / "catalog", tmp_path / "private.jpg"
    catalog.mkdir()
    write_image(outside, 1)
    write_image(catalog / "inside.jpg", 2)
    (catalog / "escape.jpg").symlink_to(outside)
    (catalog / "alias.jpg").symlink_to(catalog / "inside.jpg")
    names = ["alias.jpg", "escape.jpg", "inside.jpg"]
    client = TestClient(create_app(SimpleNamespace(root=catalog, catalog=SimpleNamespace(
        sha256={name: name for name in names}))))
    assert client.get("/images/inside.jpg").content == (catalog / "inside.jpg").read_bytes()
    assert client.get("/images/alias.jpg").status_code == 200  # a link that stays inside the catalog is fine
    assert client.get("/images/escape.jpg").status_code == 404


def test_russian_refusal_gets_the_russian_disclaimer(client):
    page = client.get("/", params={"q": "Малыши играют в песочнице", "k": 3})
    assert page.status_code == 200 and escape(DISCLAIMER_RU) in page.text and "<img" not in page.text


@pytest.mark.parametrize("params", [{}, {"q": "a dog", "k": 5}, {"q": "two boys playing"}, {"q": "a dog", "k": 0}])
def test_page_has_no_inline_script_or_style(client, params):
    page = client.get("/", params=params)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts == [(' src="/static/wsense.js"', "")]
    assert "<style" not in page.text and not re.search(r"\sstyle=", page.text)
    assert not re.search(r"\son[a-z]+=", page.text)  # no inline event handlers either
    assert '<link rel="stylesheet" href="/static/wsense.css">' in page.text
    for header in ("content-security-policy", "x-content-type-options"):
        assert header in page.headers


@pytest.mark.parametrize("name, kind", [("wsense.css", "text/css"), ("wsense.js", "javascript")])
def test_static_files_come_with_their_type_and_the_security_headers(client, name, kind):
    response = client.get(f"/static/{name}")
    assert response.status_code == 200 and kind in response.headers["content-type"]
    assert response.headers["content-security-policy"] == client.get("/").headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache" and response.headers["etag"]
    again = client.get(f"/static/{name}", headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", ["nowhere.js", "%2e%2e/web.py", "..%2fweb.py", "", "../templates/page.html"])
def test_only_the_static_files_are_served_from_static(client, path):
    assert client.get(f"/static/{path}").status_code == 404


ODD_NAMES = [
    "<b>bold</b>&x.jpg",  # has a slash: the photo b>&x.jpg in a folder named "<b>bold<"
    '<img src=x onerror="alert(1)">&q.jpg',
]


def test_photo_names_are_escaped_in_the_page_and_percent_encoded_in_image_urls(checkpoint, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from wsense.serving.web import create_app

    photos = tmp_path / "photos"
    (photos / "<b>bold<").mkdir(parents=True)
    for i, name in enumerate(ODD_NAMES):
        write_image(photos / name, 700 + i)
    write_image(photos / "normal.jpg", 710)
    engine = SearchEngine(checkpoint, photos, None, index_dir=tmp_path / "ix", settings=settings())
    assert sorted(engine.images) == sorted([*ODD_NAMES, "normal.jpg"])
    client = TestClient(create_app(engine))
    response = client.get("/", params={"q": "a photo", "k": 5})
    assert response.status_code == 200
    html = response.text
    assert "<b>bold</b>" not in html and "<img src=x" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;&amp;x.jpg" in html
    assert escape(ODD_NAMES[1]) in html  # quotes too: the name also sits in an alt="..." attribute
    for name in ODD_NAMES:
        url = f"/images/{quote(name)}"
        assert f'href="{url}"' in html and f'src="/thumbnails/{quote(name)}"' in html, url
        image = client.get(url)
        assert image.status_code == 200, url
        assert image.headers["content-type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"
        assert image.content == (photos / name).read_bytes()
        thumbnail = client.get(f"/thumbnails/{quote(name)}")
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8", name


QUERY = "a dog swimming in a lake"


def names(result) -> list[str]:
    return [item["image"] for item in result.results]


def cosine_order(engine, direction: np.ndarray, leave_out: str | None = None) -> list[str]:
    order = np.argsort(-(engine.embeddings @ (direction / np.linalg.norm(direction))), kind="stable")
    return [engine.images[int(i)] for i in order if engine.images[int(i)] != leave_out]


def jpeg(seed: int, size=(96, 72)) -> bytes:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def cache_files(engine) -> dict[Path, bytes]:
    folder = Path(engine.config.cache_dir)
    return {path: path.read_bytes() for path in [*folder.glob("faces/*"), *folder.glob("embeddings/**/*")]
            if path.is_file()}


def test_api_pages_cuts_and_negates_as_the_engine(features_client, features_engine):
    body = features_client.get("/api/search", params={"q": QUERY, "k": 3, "offset": 3}).json()
    assert body == features_engine.search(QUERY, 3, offset=3).to_dict() and body["total"] == 8
    cut = features_engine.search(QUERY, 8).results[3]["score"]
    body = features_client.get("/api/search", params={"q": QUERY, "k": 8, "min_score": cut}).json()
    assert body == features_engine.search(QUERY, 8, min_score=cut).to_dict()
    params = [("q", QUERY), ("k", "8"), ("not", "snow"), ("not", "a red car"), ("not_weight", "1")]
    body = features_client.get("/api/search", params=params).json()
    assert body == features_engine.search(QUERY, 8, negatives=["snow", "a red car"], negative_weight=1.0).to_dict()
    for params, message in [({"offset": "x"}, "offset"), ({"min_score": "2"}, "min_score"),
                            ({"not_weight": "-1"}, "not_weight")]:
        response = features_client.get("/api/search", params={"q": QUERY, **params})
        assert response.status_code == 400 and message in response.json()["detail"]


def test_api_similar_by_catalog_photo(features_client, features_engine):
    body = features_client.get("/api/similar", params={"image": "sub/photo3.jpg", "k": 4}).json()
    assert body == features_engine.search(like="sub/photo3.jpg", top_k=4).to_dict()
    refused = features_client.get("/api/similar", params={"image": "photo1.jpg"}).json()
    assert refused["refused"] is True and refused["results"] == []
    missing = features_client.get("/api/similar", params={"image": "../etc/passwd"})
    assert missing.status_code == 404 and "not a photo of this catalog" in missing.json()["detail"]
    assert features_client.get("/api/similar").status_code == 400


def test_api_similar_by_upload_is_checked_first_and_kept_nowhere(features_client, features_engine, monkeypatch,
                                                                   tmp_path):
    data = jpeg(7)
    (tmp_path / "same.jpg").write_bytes(data)
    before = cache_files(features_engine)
    body = features_client.post("/api/similar", params={"k": 8}, content=data,
                                headers={"content-type": "image/jpeg"}).json()
    assert body["refused"] is False and body["like"] == "upload" and body["total"] == 8 and len(body["results"]) == 8
    assert "photo1.jpg" not in [item["image"] for item in body["results"]]
    # scored as any photo is embedded (the one photo path), by cosine to the upload
    u = features_engine.scorer.embed_images([tmp_path / "same.jpg"], progress=False)[0]
    assert [item["image"] for item in body["results"]] == cosine_order(features_engine, u)
    combined = features_client.post("/api/similar", params={"k": 2, "q": QUERY}, content=data,
                           headers={"content-type": "image/jpeg"}).json()
    assert combined["score"] == "relevance" and len(combined["results"]) == 2
    monkeypatch.setattr(features_engine.live, "checker",
                        PhotoScreener(make_check(intercept=8.0), features_engine.config))
    refused = features_client.post("/api/similar", content=data, headers={"content-type": "image/jpeg"}).json()
    assert refused["refused"] is True and refused["results"] == [] and refused["reason"].startswith("image check")
    assert cache_files(features_engine) == before  # neither the faces nor the features of an upload are kept


@pytest.mark.parametrize("body, kind, status, message", [
    (b"", "image/jpeg", 400, "empty upload"),
    (b"not a photo at all", "image/jpeg", 400, "the uploaded photo"),
    (b"GIF89a", "image/gif", 415, "Content-Type"),
    (None, "image/png", 413, "too large"),
])
def test_bad_uploads_are_4xx_naming_what_is_wrong(features_client, monkeypatch, body, kind, status, message):
    if body is None:
        monkeypatch.setattr(web, "MAX_UPLOAD_BYTES", 1000)
        body = jpeg(1, size=(200, 200))
    response = features_client.post("/api/similar", content=body, headers={"content-type": kind})
    assert response.status_code == status and message in response.json()["detail"], response.text


def test_page_links_more_like_this_and_the_next_page(features_client, features_engine):
    page = features_client.get("/", params={"q": QUERY, "k": 3}).text
    assert f"Results for “{QUERY}”: 1–3 of 8" in visible_text(page)
    assert len(re.findall(r'class="like" href="/\?like=', page)) == 3
    following = re.search(r'rel="next" href="([^"]*)"', page).group(1).replace("&amp;", "&")
    second = features_client.get(following).text
    assert "4–6 of 8" in visible_text(second) and 'rel="prev"' in second
    expected = names(features_engine.search(QUERY, 3, offset=3))
    assert re.findall(r'<img src="/thumbnails/([^"]*)"', second) == expected
    similar = features_client.get("/", params={"like": "sub/photo3.jpg", "k": 3}).text
    assert "photos like sub/photo3.jpg" in similar and 'name="like" value="sub/photo3.jpg"' in similar
    assert features_client.get("/", params={"like": "nope.jpg"}).status_code == 404
    kept_out = features_client.get("/", params={"like": "photo1.jpg"}).text
    assert "<img" not in kept_out and 'role="alert"' in kept_out


def test_the_next_results_come_as_a_fragment_for_the_page_to_add(features_client, features_engine):
    part = features_client.get("/", params={"q": QUERY, "k": 3, "offset": 3, "fragment": 1})
    assert part.status_code == 200 and "<html" not in part.text and "<form" not in part.text
    assert re.findall(r'<img src="/thumbnails/([^"]*)"', part.text) == names(features_engine.search(QUERY, 3, offset=3))
    assert 'class="last">6</span>' in part.text and "offset=6" in part.text
    assert part.headers["content-security-policy"].count("connect-src 'self'") == 1
    bad = features_client.get("/", params={"q": "x" * 600, "fragment": 1})
    assert bad.status_code == 400 and "<html" not in bad.text and "query too long" in bad.text


def test_the_page_upload_button_gets_results_in_place(features_client, features_engine, monkeypatch):
    page = features_client.get("/").text
    assert '<input type="file" name="photo"' in page and 'accept="image/jpeg,image/png,image/webp"' in page
    part = features_client.post("/similar", params={"k": 3}, content=jpeg(7), headers={"content-type": "image/jpeg"})
    assert part.status_code == 200 and "<html" not in part.text
    assert ("Results for photos like your photo" in visible_text(part.text)
            and "1–3 of 8" in visible_text(part.text))
    assert len(re.findall(r'<img src="/thumbnails/', part.text)) == 3 and 'rel="next"' not in part.text
    wrong = features_client.post("/similar", content=b"GIF89a", headers={"content-type": "image/gif"})
    assert wrong.status_code == 415 and 'class="error"' in wrong.text and "Content-Type" in wrong.text
    broken = features_client.post("/similar", content=b"not a photo", headers={"content-type": "image/jpeg"})
    assert broken.status_code == 400 and "the uploaded photo" in broken.text
    monkeypatch.setattr(features_engine.live, "checker",
                        PhotoScreener(make_check(intercept=8.0), features_engine.config))
    refused = features_client.post("/similar", content=jpeg(7), headers={"content-type": "image/jpeg"})
    assert refused.status_code == 200 and "<img" not in refused.text and "image check" in refused.text


def test_the_page_marks_folded_duplicates_and_expands_them(features_engine, features_client, monkeypatch):
    monkeypatch.setattr(features_engine.ranker, "duplicate_threshold", 0.0)  # every photo folds into the first
    result = features_engine.search(QUERY, 3)
    assert len(result.results) == 1 and len(result.results[0]["similar"]) == 7 and result.total == 1
    page = features_client.get("/", params={"q": QUERY, "k": 3}).text
    assert '<details class="similar"><summary>7 similar</summary>' in page
    assert len(re.findall(r'<img src="/thumbnails/', page)) == 8 and "1–1 of 1" in visible_text(page)


def png(size, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("limit, bomb_limit, message", [(10_000, None, "200 x 200 pixels"),
                                                        (10**9, 1_000, "more than")])
def test_a_photo_with_too_many_pixels_is_refused_from_its_header(features_client, features_engine, monkeypatch,
                                                                 limit, bomb_limit, message):
    looked = []
    monkeypatch.setattr(features_engine, "uploaded_example", lambda *args, **kwargs: looked.append(args))
    monkeypatch.setattr(web, "MAX_UPLOAD_PIXELS", limit)
    if bomb_limit:  # PIL's own decompression-bomb limit, past which it refuses to open the file at all
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", bomb_limit)
    response = features_client.post("/api/similar", content=png((200, 200)), headers={"content-type": "image/png"})
    assert response.status_code == 413 and message in response.json()["detail"] and not looked
    page = features_client.post("/similar", content=png((200, 200)), headers={"content-type": "image/png"})
    assert page.status_code == 413 and "too large" in page.text and not looked


def test_uploads_past_those_being_looked_at_get_a_503_to_retry(features_engine, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setattr(web, "UPLOADS_AT_ONCE", 0)  # every slot taken
    client = TestClient(create_app(features_engine, max_k=8))
    response = client.post("/api/similar", content=jpeg(1, size=(200, 200)), headers={"content-type": "image/jpeg"})
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert "try again" in response.json()["detail"]
