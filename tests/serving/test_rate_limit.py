"""The per-client rate limit (wsense/serving/rate_limit.py): searches over the limit get a 429 with Retry-After, other
clients and the photos a page fetches are not held back, and a mistyped limit is a clear error."""
import pytest
from fastapi.testclient import TestClient

from wsense.cli import main
from wsense.errors import WsenseError
from wsense.serving.rate_limit import parse_rate
from wsense.serving.web import create_app


def test_a_client_over_the_limit_waits_and_others_do_not(features_engine):
    app = create_app(features_engine, max_k=8, rate_limit="3/minute")
    busy, other = TestClient(app, client=("10.0.0.1", 5000)), TestClient(app, client=("10.0.0.2", 5000))
    answers = [busy.get("/api/search", params={"q": "a dog"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    refused = busy.get("/api/search", params={"q": "a dog"})
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["detail"].startswith("too many requests: at most 3 a minute from one client")
    assert busy.get("/", params={"q": "a dog"}).status_code == 429  # the page's searches count too
    # What a page of results fetches is not counted, nor is monitoring.
    for path in ("/images/photo2.jpg", "/thumbnails/photo2.jpg", "/healthz", "/metrics", "/static/wsense.css"):
        assert busy.get(path).status_code == 200, path
    assert other.get("/api/search", params={"q": "a dog"}).status_code == 200


def test_without_a_limit_nothing_is_refused(features_client):
    assert all(features_client.get("/api/search", params={"q": "a cat"}).status_code == 200 for _ in range(30))


@pytest.mark.parametrize("text", [None, "", "none", "0"])
def test_no_limit_spelled_any_way(text):
    assert parse_rate(text) is None


def test_a_mistyped_limit_is_named_before_the_model_loads(capsys, monkeypatch):
    with pytest.raises(WsenseError, match="rate limit '20 a sec': write it as N/second"):
        parse_rate("20 a sec")
    monkeypatch.setattr("wsense.cli.commands.engine_of", lambda *a: pytest.fail("the model was loaded"))
    assert main(["serve", "--rate-limit", "fast"]) == 2
    assert "rate limit 'fast'" in capsys.readouterr().err
    assert parse_rate("600/minute").amount == 600
