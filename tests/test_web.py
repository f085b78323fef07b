"""The web page and JSON API, through FastAPI's TestClient, over a real small engine on the tiny data set."""
import re
from html import escape
from pathlib import Path
from types import SimpleNamespace

import pytest

from fastapi.testclient import TestClient

from conftest import TEST_IMAGES, write_image
from wsense.serving.requests import DISCLAIMER_RU, MAX_QUERY_CHARS, disclaimer
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


def test_no_html_css_or_javascript_in_python_strings():
    """The page and the contact sheet live in wsense/serving/templates and static/, none of them in Python."""
    package = Path(__file__).resolve().parent.parent / "wsense"
    markers = ["<div", "<html", "<script", "<style", "<p>", "{font-", "addEventListener", "querySelector"]
    found = [(file.relative_to(package).as_posix(), marker) for file in sorted(package.rglob("*.py"))
             for marker in markers if marker in file.read_text(encoding="utf-8")]
    assert not found
