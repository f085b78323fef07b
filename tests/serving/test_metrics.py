"""Prometheus metrics (GET /metrics, wsense/serving/metrics.py): requests by route template and status with their
latency, refusals by kind, uploads refused by status, clients rate-limited, and the catalog's size."""
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from wsense.serving.web import create_app


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_metrics_count_requests_refusals_uploads_and_the_rate_limit(features_engine):
    client = TestClient(create_app(features_engine, max_k=8, rate_limit="4/minute"))
    assert client.get("/api/search", params={"q": "a dog in the water"}).status_code == 200
    assert client.get("/api/search", params={"q": "a little girl on a swing"}).json()["refused"]
    assert client.post("/api/similar", content=b"GIF89a", headers={"content-type": "image/gif"}).status_code == 415
    assert client.get("/api/search", params={"q": "a red rock"}).status_code == 200
    assert client.get("/api/search", params={"q": "one too many"}).status_code == 429
    assert client.get("/images/photo2.jpg").status_code == 200
    assert client.get("/no/such/route").status_code == 404
    got = scrape(client)

    def value(name, **labels):
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("wsense_requests_total", route="/api/search", method="GET", status="200") == 3
    # The rate limit refuses before any route is matched.
    assert value("wsense_requests_total", route="/api/search", method="GET", status="429") == 0
    assert value("wsense_requests_total", route="unmatched", method="GET", status="429") == 1
    assert value("wsense_requests_total", route="/api/similar", method="POST", status="415") == 1
    # A photo's request is counted under its route's template, never under the photo's name.
    assert value("wsense_requests_total", route="/images/{path:path}", method="GET", status="200") == 1
    assert not any("photo2" in str(key) for key in got)
    assert value("wsense_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value("wsense_request_seconds_count", route="/api/search") == 3
    assert value("wsense_refusals_total", kind="query") == 1
    assert value("wsense_uploads_refused_total", status="415") == 1
    assert value("wsense_rate_limited_total") == 1
    assert value("wsense_catalog_photos", state="searchable") == len(features_engine.images) == 8
    assert value("wsense_catalog_photos", state="kept_out") == len(features_engine.catalog.excluded)


def test_each_app_counts_its_own_requests(features_engine):
    first, second = (TestClient(create_app(features_engine, max_k=8)) for _ in range(2))
    first.get("/healthz")
    health = ("wsense_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))
    assert scrape(first)[health] == 1 and health not in scrape(second)
