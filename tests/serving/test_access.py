"""A server with an API key: every route but /healthz and the page's static files needs it; the page gets it from a
form into an HttpOnly cookie, never through a URL."""
import pytest
from fastapi.testclient import TestClient

from wsense.serving.web import create_app

KEY = "s3cret-key"
QUERY = "a dog swimming in a lake"


@pytest.fixture(scope="module")
def locked(features_engine):
    return TestClient(create_app(features_engine, max_k=8, api_key=KEY))


@pytest.mark.parametrize("path", ["/api/search?q=a+dog", "/api/catalog", "/api/similar?image=photo2.jpg",
                                  "/images/photo2.jpg", "/thumbnails/photo2.jpg", f"/?q={QUERY}"])
def test_every_route_needs_the_key(locked, path):
    refused = locked.get(path)
    assert refused.status_code == 401 and "<img" not in refused.text
    assert locked.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert locked.get(path, headers={"X-API-Key": KEY}).status_code == 200
    assert locked.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_uploads_need_the_key_before_anything_is_read(locked, features_engine, monkeypatch):
    looked = []
    monkeypatch.setattr(features_engine, "uploaded_example", lambda *args, **kwargs: looked.append(args))
    response = locked.post("/api/similar", content=b"\xff\xd8 not read", headers={"content-type": "image/jpeg"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer" and not looked


def test_the_page_asks_for_the_key_and_keeps_it_in_a_cookie(features_engine):
    client = TestClient(create_app(features_engine, max_k=8, api_key=KEY))
    start = client.get("/")
    assert start.status_code == 401 and 'action="/key"' in start.text and "script-src 'self'" in start.headers[
        "content-security-policy"]
    wrong = client.post("/key", data={"key": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401 and "not this server's" in wrong.text and "wsense_key" not in wrong.headers.get(
        "set-cookie", "")
    right = client.post("/key", data={"key": KEY}, follow_redirects=False)
    assert right.status_code == 303 and "httponly" in right.headers["set-cookie"].lower()
    page = client.get("/", params={"q": QUERY, "k": 3})  # the cookie now travels with the page and its images
    assert page.status_code == 200 and page.text.count("<figure") == 3
    assert client.get("/thumbnails/photo2.jpg").status_code == 200


def test_healthz_and_static_files_stay_open(locked, features_engine):
    health = locked.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["ready"] is True and body["photos"] == len(features_engine.images) and body["kept_out"] == 1
    assert body["model"] == features_engine.index.fingerprint and body["image_check"]
    assert locked.get("/static/wsense.css").status_code == 200


def test_without_a_key_the_server_is_open(features_client):
    assert features_client.get("/api/catalog").status_code == 200
    assert features_client.get("/healthz").json()["ready"] is True
