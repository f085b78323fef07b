"""The `wsense` command end to end: as a separate process (check-query reading stdin, `wsense serve --watch`
answering the JSON API and following its folder), and `wsense search` training the missing search checkpoint on
first use."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import TEST_CHECK, photo_folder, write_config, write_image
from wsense.cli import main


def test_check_query_reads_stdin_one_query_per_line():
    result = subprocess.run(
        [sys.executable, "-m", "wsense.cli", "check-query"],
        input="a 7-year-old at the fair\na 70-year-old fisherman\n\nдевушки в парке\n",
        capture_output=True, text=True, check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["query"], line["refused"]) for line in lines] == [
        ("a 7-year-old at the fair", True), ("a 70-year-old fisherman", False), ("девушки в парке", False),
    ]


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


def test_search_trains_the_missing_search_checkpoint_on_first_use(tiny_data, tiny_cache, tmp_path, capsys,
                                                                  monkeypatch):
    import yaml

    monkeypatch.delenv("WSENSE_DATA_DIR", raising=False)
    config = {"data": {"dir": str(tiny_data), "russian_queries": None, "russian_train_captions": None},
              "cache_dir": str(tiny_cache),  # the tiny photos' frozen features, embedded once for the session
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
