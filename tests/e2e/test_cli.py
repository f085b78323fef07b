"""The `wsense` command end to end: as a separate process (check-query reading stdin, `wsense serve --watch`
answering the JSON API and following its folder), and a fresh install without the data set searching a folder with the
shipped search model and image check."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import FULL_DATA, photo_folder, write_config, write_image

# Photos of the data set's test split, labelled by looking (labels/photos.csv): a dog, adults, a toddler.
DOG, ADULT, CHILD = "1319634306_816f21677f.jpg", "186346360_541047336f.jpg", "1232148178_4f45cc3284.jpg"


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
    model = tmp_path / "model"  # without serving files: the first start makes them
    shutil.copytree(checkpoint, model)
    (model / "serving.json").unlink(missing_ok=True)
    config = write_config(tmp_path / "config.yaml")  # queries through the ONNX text tower, as a server runs them
    config.write_text(config.read_text().replace("text_runtime: torch", "text_runtime: onnx_int8"))
    command = [sys.executable, "-m", "wsense.cli", "serve", "--checkpoint", str(model), "--images", str(photos),
               "--index-dir", str(tmp_path / "ix"), "--config", str(config), "--port", str(port), "--watch"]
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
            # made in a child process: the server itself never loaded torch (until --watch embeds a new photo)
            torch_loaded = "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()
            assert (model / "serving.json").is_file()
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
    assert not torch_loaded and "in a child process" in log.read_text()
    assert "catalog refreshed" in log.read_text()


@pytest.mark.full_data  # three of its photos make the folder; the command itself sees no data set
def test_a_fresh_install_without_the_data_set_indexes_checks_and_searches_a_folder(tmp_path):
    """In an empty folder, with no data set and no runs/ or cache: the shipped search model and image check."""
    folder = tmp_path / "my photos"
    folder.mkdir()
    for name in (DOG, ADULT, CHILD):
        shutil.copyfile(FULL_DATA / "test_images" / name, folder / name)
    env = {**os.environ, "WSENSE_DATA_DIR": str(tmp_path / "no-data-set"), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "wsense.cli", "search", "--images", str(folder), "--json",
                           "--top-k", "3", "a dog running on the grass"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=900)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starting from the search model shipped with wsense" in done.stderr
    assert "using the image check shipped with wsense" in done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert [item["image"] for item in answer["results"]][0] == DOG
    assert CHILD not in {item["image"] for item in answer["results"]}  # kept out by looking at the photo
    assert (tmp_path / "runs" / "final" / "best" / "model.safetensors").is_file()
    print(f"first answer of a fresh install on 3 photos: {seconds:.0f} s")
    again = subprocess.run([sys.executable, "-m", "wsense.cli", "search", "--images", str(folder), "--json",
                            "a child on a slide"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["refused"]
    assert "shipped" not in again.stderr  # the copies are there now
