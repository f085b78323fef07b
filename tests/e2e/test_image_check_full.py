"""End to end on the real photos: the image check fitted as `wsense` fits it on first use reaches the issue's
floors on the training photos (cross-validated) and the test photos, and every test photo it keeps out is absent
from every route: the search command, the JSON API, the image route and the page in headless Chromium."""
import json
import shutil
import subprocess

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import FULL_DATA, require, settings
from wsense.cli import main
from wsense.safety.screener import PhotoScreener, fit_classifier_from_data
from wsense.serving.search import SearchEngine
from wsense.serving.web import create_app

pytestmark = pytest.mark.full_data
QUERIES = ["a child playing in the park", "a dog running on the grass", "people at the beach", "a man on a bike",
           "a woman smiling", "two people walking", "a group of people", "a girl in a pink dress",
           "a boy jumping into water", "a baby", "kids on a playground", "a family at the table"]


@pytest.fixture(scope="module")
def config(full_data_cache, tmp_path_factory):
    config = settings(data__dir=str(FULL_DATA), safety__check=str(tmp_path_factory.mktemp("check")))
    config.cache_dir = str(full_data_cache)
    return config


@pytest.fixture(scope="module")
def fitted(config):
    return fit_classifier_from_data(config)


def test_fitted_check_reaches_the_floors_on_training_and_test_photos(config, fitted):
    from sklearn.metrics import roc_auc_score

    from wsense.data import load_data
    from wsense.safety.child_classifier import photo_labels, rates

    check, labels, oof, _, _ = fitted
    # reports/child_check.md (labels by looking): AUC 0.919 out of fold, default policy 0.953 recall at 0.374 FP;
    # test 0.919, 0.943 at 0.423.
    assert len(labels) > 900 and min(roc_auc_score(labels, s) for s in oof) >= 0.90
    data = load_data(FULL_DATA, check_images=False)
    looked = photo_labels(config.safety.labels)
    test = looked[(looked["split"] == "test") & (looked["label"] != "unsure")]
    results = PhotoScreener.from_config(config).screen_photos([data.test_image_dir / n for n in test["image"]],
                                                            progress=False)
    scores = np.array([r.verdict.score for r in results])
    truth = (test["label"] == "child").astype(int).to_numpy()
    got = rates([r.verdict.child for r in results], truth)
    assert roc_auc_score(truth, scores) >= 0.88
    assert got["recall"] >= 0.90 and got["fpr"] <= 0.48, got


def test_the_people_detector_left_out_where_it_cannot_matter_changes_no_verdict(config, fitted, tmp_path):
    from wsense.data import load_data
    from wsense.safety.faces import FaceCache, analyze_photos

    data = load_data(FULL_DATA, check_images=False)
    paths = [data.test_image_dir / name for name in data.test_images]
    screener = PhotoScreener.from_config(config)
    screener.face_cache = FaceCache(tmp_path / "faces")  # the image features cached, the faces analysed again
    results = screener.screen_photos(paths, progress=False)
    full = [faces for _, faces, _ in analyze_photos(paths, FaceCache(tmp_path / "full"), progress=False)]
    expected = screener.check.verdicts(screener.features.images(paths), full)
    assert [r.verdict.child for r in results] == [v.child for v in expected]
    assert [r.faces.faces for r in results] == [f.faces for f in full]
    looked = [r.faces.people is not None for r in results]
    assert [r.faces.people for r, seen in zip(results, looked) if seen] == [f.people for f, seen in zip(full, looked)
                                                                             if seen]
    assert 0 < sum(looked) < 40  # most verdicts are decided without it (13 of the 100 needed it, 2026-12-07)
    assert any(f.people for f, seen in zip(full, looked) if not seen)  # including photos with people in them


def test_report_command_writes_the_figures_and_roc_curves(config, fitted, tmp_path):
    from wsense.evaluation.child_check import write_child_check_report

    md = write_child_check_report(config, tmp_path)
    report = json.loads((tmp_path / "child_check.json").read_text())
    strict = report["train"]["policies"]["strict"]
    assert np.mean(strict["recall"]) >= 0.94 and np.mean(strict["fpr"]) <= 0.40, strict
    text = md.read_text()
    assert "| strict (default) |" in text and "## Both label sets side by side" in text
    assert [row["photos"].split(":")[1].strip() for row in report["side_by_side"]] == [
        "labels by looking", "labels from captions", "labels by looking (unsure left out)", "labels from captions"]
    for name in ("child_check_roc_train.png", "child_check_roc_test.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def engine(config, fitted, checkpoint, tmp_path_factory):
    # No descriptions: only the image check keeps photos out.
    return SearchEngine(checkpoint, FULL_DATA / "test_images", None,
                        index_dir=tmp_path_factory.mktemp("index") / "index", settings=config)


def test_photos_the_check_keeps_out_are_in_no_result(engine, config, checkpoint, tmp_path, capsys):
    excluded = {entry["path"] for entry in engine.index.excluded}
    assert 30 <= len(excluded) <= 70 and len(engine.images) == 100 - len(excluded)
    assert all(entry["excluded"].startswith("image check: ") for entry in engine.index.excluded)
    for query in QUERIES:  # the engine: every searchable photo ranked
        result = engine.search(query, top_k=100)
        assert result.refused or not excluded & {item["image"] for item in result.results}

    client = TestClient(create_app(engine, max_k=100))  # the API and the image route
    for query in QUERIES:
        reply = client.get("/api/search", params={"q": query, "k": 100}).json()
        assert not excluded & {item["image"] for item in reply.get("results", [])}
    for name in sorted(excluded)[:10]:
        assert client.get(f"/images/{name}").status_code == 404
        assert client.get(f"/thumbnails/{name}").status_code == 404
        reply = client.get("/api/similar", params={"image": name, "k": 5}).json()  # more like an excluded photo
        assert reply["refused"] is True and reply["results"] == []
    # the same photo uploaded from outside is refused by the image check itself
    young = next(entry["path"] for entry in engine.index.excluded if "estimated age" in entry["excluded"])
    reply = client.post("/api/similar", content=(FULL_DATA / "test_images" / young).read_bytes(),
                        headers={"content-type": "image/jpeg"}).json()
    assert reply["refused"] is True and reply["results"] == [] and "estimated age" in reply["reason"]

    config_path = tmp_path / "c.yaml"  # the command line, on the same index
    config_path.write_text(f"cache_dir: {config.cache_dir}\nsearch:\n  multilingual: none\n  text_runtime: torch\n"
                           f"  ranking: fusion\nsafety:\n  check: {config.safety.check}\n")
    capsys.readouterr()
    assert main(["search", *QUERIES, "--top-k", "100", "--json", "--checkpoint", str(checkpoint), "--config",
                 str(config_path), "--index-dir", str(engine.index_dir), "--images",
                 str(FULL_DATA / "test_images")]) == 0
    for line in capsys.readouterr().out.splitlines():
        assert not excluded & {item["image"] for item in json.loads(line)["results"]}
    assert main(["index", str(FULL_DATA / "test_images"), "--checkpoint", str(checkpoint), "--config",
                 str(config_path), "--index-dir", str(engine.index_dir), "--report"]) == 0
    listed = capsys.readouterr().out
    assert f"{len(excluded)} photo(s) kept out of results" in listed
    assert all(f"  {name}\timage check: " in listed for name in excluded)


def test_reviews_by_looking_show_the_adults_photos_the_check_hides(engine, config, checkpoint, tmp_path, capsys):
    from wsense.safety.child_classifier import photo_labels

    labels = photo_labels(config.safety.labels)
    by_looking = dict(zip(labels["image"], labels["label"]))
    hidden = {entry["path"] for entry in engine.index.excluded}
    adults = sorted(name for name in hidden if by_looking[name] in ("adult", "none"))
    assert len(adults) >= 10  # the check hides adults' photos: what a person's review puts right
    reviews, index_dir = tmp_path / "reviews.csv", tmp_path / "index"
    assert main(["review", *[str(FULL_DATA / "test_images" / name) for name in adults], "--no-child",
                 "--reviewer", "e2e", "--note", "labels/photos.csv", "--reviews", str(reviews)]) == 0
    shutil.copytree(engine.index_dir, index_dir)  # the engine's own index stays as the other tests read it
    config_path = tmp_path / "c.yaml"
    config_path.write_text(f"cache_dir: {config.cache_dir}\nsearch:\n  multilingual: none\n  text_runtime: torch\n"
                           f"  ranking: fusion\nsafety:\n  check: {config.safety.check}\n  reviews: {reviews}\n")
    catalog = ["--checkpoint", str(checkpoint), "--config", str(config_path), "--index-dir", str(index_dir),
               "--images", str(FULL_DATA / "test_images")]
    capsys.readouterr()
    assert main(["index", str(FULL_DATA / "test_images"), *catalog[:6], "--report"]) == 0
    out, err = capsys.readouterr()
    assert f"{len(hidden) - len(adults)} photo(s) kept out of results" in out and "0 checked in this run" in err
    assert f"0 by a review; {len(adults)} shown that the check keeps out, by a review" in err
    assert main(["search", "a group of people", "--top-k", "100", "--json", *catalog]) == 0
    shown = {item["image"] for item in json.loads(capsys.readouterr().out)["results"]}
    assert set(adults) <= shown and not (hidden - set(adults)) & shown


def test_the_page_in_chromium_never_shows_an_excluded_photo(engine, tmp_path):
    import socket
    import threading
    import time

    import uvicorn

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    require(chromium is not None, "chromium (apt-get install chromium; .ci/run installs it)")
    excluded = {entry["path"] for entry in engine.index.excluded}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(engine, max_k=100), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        for query in ["people playing in a park", "people on the street"]:
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/?q={query.replace(' ', '+')}&k=100"
            dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                  f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                                  "--dump-dom", url], capture_output=True, text=True, timeout=90, check=True).stdout
            shown = {name for name in engine.images if f'alt="{name}"' in dom}
            assert len(shown) == len(engine.images) and not any(name in dom for name in excluded)
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p2'}",
                        f"--screenshot={tmp_path / 'page.png'}", "--window-size=1200,900",
                        f"http://127.0.0.1:{sock.getsockname()[1]}/?q=people+playing+in+a+park&k=100"],
                       capture_output=True, timeout=90, check=True)
        assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_check_image_uses_the_shipped_check_on_first_use(config, tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(f"cache_dir: {config.cache_dir}\ndata:\n  dir: {FULL_DATA}\n"
                           f"safety:\n  check: {tmp_path / 'check'}\n")
    photo = FULL_DATA / "test_images" / "1232148178_4f45cc3284.jpg"  # a baby's face, "a little girl" in its captions
    assert main(["check-image", str(photo), "--config", str(config_path)]) == 0
    out, err = capsys.readouterr()
    assert "no image check at" in err and "using the image check shipped with wsense" in err
    line = json.loads(out)
    assert line["child"] is True and line["reason"].startswith("face 1 of 1: estimated age")
    assert line["faces"][0]["age"] < 16 and len(line["faces"][0]["box"]) == 4
    assert (tmp_path / "check" / "child_check.json").is_file()


def test_the_shipped_check_is_what_fitting_on_the_data_set_gives_today(fitted):
    """A change to the labels, the features or the fit that is not shipped fails here (numbers compared within float
    noise across machines, not by their hash)."""
    from wsense.safety.child_classifier import ChildClassifier
    from wsense.safety.screener import shipped_check_dir

    shipped, check = ChildClassifier.load(shipped_check_dir()), fitted.check
    assert shipped.feature_fingerprint == check.feature_fingerprint and shipped.child_age == check.child_age
    assert np.allclose(shipped.mean, check.mean, atol=1e-4) and np.allclose(shipped.scale, check.scale, rtol=1e-4)
    assert np.allclose(shipped.coef, check.coef, atol=1e-3) and abs(shipped.intercept - check.intercept) < 1e-3
    for policy, thresholds in check.thresholds.items():
        for name, value in thresholds.items():
            assert abs(shipped.thresholds[policy][name] - value) < 0.01, (policy, name)
