"""The catalog commands end to end: `wsense index` and `wsense serve` as a user runs them, symlinks at index
time, HTML escaping of photo names, FAISS inside the engine, and the shortlist re-ranked by the fusion head."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from html import escape
from pathlib import Path
from urllib.parse import quote

import pytest
import torch

from conftest import TEST_CHECK, settings, write_image
from wsense.cli import main
from wsense.serving.search import SearchEngine

QUERIES = ["a dog", "a man climbing a rock", "snowy mountains under a blue sky", "a red bicycle on the street"]


def write_config(path: Path) -> Path:
    """A user's --config: the English tower for every query (no multilingual map to fit) in torch, and the test
    image check; the fusion ranking (no query bank to build)."""
    path.write_text(f"search:\n  multilingual: none\n  text_runtime: torch\n  ranking: fusion\n"
                    f"  duplicate_threshold: null\n"
                    f"safety:\n  check: {TEST_CHECK}\n", encoding="utf-8")
    return path


def photo_folder(root: Path, count: int, seed: int = 500) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        write_image(root / f"photo{i}.jpg", seed + i)
    return root


def indexed_paths(index_dir: Path) -> list[dict]:
    return json.loads((index_dir / "index.json").read_text(encoding="utf-8"))["entries"]


def test_index_command_indexes_a_folder_and_names_the_searchable_photos(checkpoint, tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos", 3)
    index_dir = tmp_path / "ix"
    code = main(["index", str(photos), "--checkpoint", str(checkpoint), "--index-dir", str(index_dir),
                 "--config", str(write_config(tmp_path / "config.yaml"))])
    out = capsys.readouterr().out
    assert code == 0
    assert (index_dir / "index.json").is_file() and (index_dir / "embeddings.npy").is_file()
    entries = indexed_paths(index_dir)
    assert sorted(e["path"] for e in entries) == ["photo0.jpg", "photo1.jpg", "photo2.jpg"]
    match = re.search(r"(\d+) searchable photos", out)
    assert match, out
    assert int(match.group(1)) == sum(1 for e in entries if not e["excluded"])


def test_symlinks_leading_out_of_the_catalog_are_not_indexed(checkpoint, tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos", 1)
    outside = photo_folder(tmp_path / "outside", 1, seed=600)
    (photos / "link_out.jpg").symlink_to(outside / "photo0.jpg")
    (photos / "link_in.jpg").symlink_to(photos / "photo0.jpg")
    (photos / "linked_dir").symlink_to(outside, target_is_directory=True)
    index_dir = tmp_path / "ix"
    code = main(["index", str(photos), "--checkpoint", str(checkpoint), "--index-dir", str(index_dir),
                 "--config", str(write_config(tmp_path / "config.yaml"))])
    assert code == 0, capsys.readouterr().err
    assert sorted(e["path"] for e in indexed_paths(index_dir)) == ["link_in.jpg", "photo0.jpg"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_serve_command_answers_the_json_api_and_follows_the_folder(checkpoint, tmp_path):
    photos = photo_folder(tmp_path / "photos", 3)
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "wsense.cli", "serve", "--checkpoint", str(checkpoint), "--images", str(photos),
               "--index-dir", str(tmp_path / "ix"), "--config", str(write_config(tmp_path / "config.yaml")),
               "--port", str(port), "--watch"]
    base = f"http://127.0.0.1:{port}"

    def wait_for(condition, what: str, seconds: float = 120):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"wsense serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if condition():
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        pytest.fail(f"{what} within {seconds} s:\n{log.read_text()[-3000:]}")

    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            wait_for(lambda: get_json(f"{base}/api/catalog")["photos"] == 3, "no answer from wsense serve")
            body = get_json(f"{base}/api/search?q=a+dog&k=2")
            write_image(tmp_path / "new.jpg", 77)
            os.replace(tmp_path / "new.jpg", photos / "new.jpg")  # a photo added while serving
            (photos / "photo0.jpg").unlink()  # and one removed
            wait_for(lambda: {item["image"] for item in get_json(f"{base}/api/search?q=a+dog&k=5")["results"]}
                     == {"new.jpg", "photo1.jpg", "photo2.jpg"}, "the changes were not picked up")
            status = get_json(f"{base}/api/catalog")
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert body["refused"] is False and body["query"] == "a dog"
    assert len(body["results"]) == 2
    assert {item["image"] for item in body["results"]} <= {"photo0.jpg", "photo1.jpg", "photo2.jpg"}
    assert all(0 <= item["score"] <= 1 for item in body["results"])
    assert status["watching"] is True and status["refreshes"] >= 1 and status["last_error"] is None
    assert "catalog refreshed" in log.read_text()


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


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """Eight photos: more than the shortlists below."""
    return photo_folder(tmp_path_factory.mktemp("catalog") / "photos", 8, seed=800)


@pytest.fixture(scope="module")
def catalog_index(tmp_path_factory) -> Path:
    """One index folder for both engines over the catalog (same model, so the second embeds nothing)."""
    return tmp_path_factory.mktemp("catalog_index") / "ix"


@pytest.fixture(scope="module")
def exact_engine(checkpoint, catalog, catalog_index) -> SearchEngine:
    return SearchEngine(checkpoint, catalog, None, index_dir=catalog_index,
                        settings=settings(search__first_stage="exact", search__candidates=3))


@pytest.fixture(scope="module")
def faiss_engine(checkpoint, catalog, catalog_index) -> SearchEngine:
    pytest.importorskip("faiss")
    return SearchEngine(checkpoint, catalog, None, index_dir=catalog_index,
                        settings=settings(search__first_stage="faiss", search__candidates=3))


@pytest.mark.parametrize("candidates", [3, 6])
def test_faiss_first_stage_finds_what_the_exact_one_finds(faiss_engine, exact_engine, candidates, monkeypatch):
    # candidates below the catalog's 8 photos, or the whole catalog is re-ranked and no first stage runs at all
    monkeypatch.setattr(faiss_engine.ranker, "candidates", candidates)
    monkeypatch.setattr(exact_engine.ranker, "candidates", candidates)
    assert faiss_engine.catalog.first_stage.method == "faiss" and faiss_engine.catalog.first_stage.index is not None
    assert exact_engine.catalog.first_stage.method == "exact"
    assert faiss_engine.images == exact_engine.images
    calls = []
    search = faiss_engine.catalog.first_stage.search
    monkeypatch.setattr(faiss_engine.catalog.first_stage, "search",
                        lambda queries, k, **options: calls.append(k) or search(queries, k, **options))
    for query in QUERIES:
        faiss = faiss_engine.search(query, top_k=5).results
        exact = exact_engine.search(query, top_k=5).results
        assert len(faiss) == 5
        assert [r["image"] for r in faiss] == [r["image"] for r in exact], query
        assert all(abs(f["score"] - e["score"]) <= 1e-5 for f, e in zip(faiss, exact)), query
    assert calls and all(k == max(candidates, 5) for k in calls)  # FAISS really shortlisted


def test_search_re_ranks_the_cosine_shortlist_by_fusion_relevance(exact_engine):
    engine = exact_engine
    assert engine.ranker.candidates == 3
    assert engine.catalog.first_stage.method == "exact" and len(engine.images) == 8
    for query in QUERIES:
        v = engine.scorer.embed_texts([query])
        cosine = (v @ engine.embeddings.T)[0]
        rows = torch.argsort(cosine, descending=True)[:3]
        relevance = engine.scorer.relevance(v, engine.embeddings[rows])[0]
        expected = [(engine.images[int(rows[i])], round(float(relevance[i]), 4))
                    for i in torch.argsort(relevance, descending=True, stable=True)]
        found = [(r["image"], r["relevance"]) for r in engine.search(query, top_k=3).results]
        assert found == expected, query
        assert len(engine.search(query, top_k=5).results) == 5  # the shortlist grows to top_k


def test_top_k_above_the_shortlist_re_ranks_the_cosine_top_k(exact_engine):
    engine = exact_engine
    assert engine.ranker.candidates == 3
    query = QUERIES[0]
    v = engine.scorer.embed_texts([query])
    rows = torch.argsort((v @ engine.embeddings.T)[0], descending=True)[:5]
    relevance = engine.scorer.relevance(v, engine.embeddings[rows])[0]
    expected = [engine.images[int(rows[i])] for i in torch.argsort(relevance, descending=True)]
    assert [r["image"] for r in engine.search(query, top_k=5).results] == expected


def test_search_trains_the_missing_search_checkpoint_on_first_use(tiny_data, tmp_path, capsys, monkeypatch):
    import yaml

    monkeypatch.delenv("WSENSE_DATA_DIR", raising=False)
    config = {"data": {"dir": str(tiny_data), "russian_queries": None, "russian_train_captions": None},
              "cache_dir": str(tmp_path / "cache"),
              "training": {"epochs": 1, "batch_size": 8, "contrastive_batch_size": 4, "warmup_steps": 1},
              "search": {"checkpoint": str(tmp_path / "runs" / "final" / "best"), "multilingual": "none",
                         "text_runtime": "torch"},
              "safety": {"check": str(TEST_CHECK)}}
    path = tmp_path / "wsense.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = ["search", "--config", str(path), "--json", "--index-dir", str(tmp_path / "index"), "a dog in a lake"]
    assert main(command) == 0
    out, err = capsys.readouterr()
    assert "no search checkpoint at" in err and "training it now" in err and "trained" in err
    assert (tmp_path / "runs" / "final" / "best" / "model.safetensors").is_file()
    assert len(json.loads(out)["results"]) == 1
    assert main(command) == 0  # the second time it is there: no training
    assert "training it now" not in capsys.readouterr().err


def test_a_missing_search_checkpoint_not_named_best_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "wsense.yaml"
    path.write_text(f"search:\n  checkpoint: {tmp_path / 'my-model'}\n", encoding="utf-8")
    assert main(["search", "--config", str(path), "a dog"]) == 2
    err = capsys.readouterr().err
    assert "my-model: search checkpoint not found" in err and "--output-dir DIR" in err and "\n" not in err.strip()
