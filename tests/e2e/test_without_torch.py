"""Search without torch: a process that searches a built index (English and Russian text, an example photo of the
catalog, filters, a cut-off, words to avoid, an uploaded photo with its image check) never imports torch, nor pandas
or pyarrow (75 and 27 MB of a server's memory), and answers as the process that built it did."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from conftest import REPO, TEST_IMAGES, tiny_map_settings, write_image
from wsense.serving.metadata import MetadataFilter
from wsense.serving.search import SearchEngine

REQUESTS = [("a dog swimming in a lake", {}), ("чёрная собака в воде", {}),
            ("", {"like": TEST_IMAGES[2]}), ("a man on a mountain", {"like": TEST_IMAGES[2]}),
            ("a dog", {"filters": "orientation=landscape"}), ("a dog", {"min_score": 0.0, "negatives": ["snow"]}),
            ("two boys on the beach", {})]

SEARCH = """
import json, sys
from wsense.config import load_config
from wsense.serving.metadata import MetadataFilter
from wsense.serving.search import SearchEngine

checkpoint, images, index, config, requests, upload = sys.argv[1:]
engine = SearchEngine(checkpoint, images, index_dir=index, settings=load_config(config))
answers = []
for query, options in json.loads(requests):
    if "filters" in options:
        options["filters"] = MetadataFilter.parse(orientation=options["filters"].split("=")[1])
    answers.append(engine.search(query, 3, **options).to_dict())
heavy = ("torch", "pandas", "pyarrow")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
example = engine.uploaded_example(upload)  # the image check looks at it first
answers.append(engine.search("", 3, like=example).to_dict())
print(json.dumps({"answers": answers, "torch": loaded, "upload": example.vector.tolist(),
                  "upload_torch": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
"""


def answers_of(engine: SearchEngine) -> list[dict]:
    out = []
    for query, options in REQUESTS:
        options = dict(options)
        if "filters" in options:
            options["filters"] = MetadataFilter.parse(orientation=options["filters"].split("=")[1])
        out.append(engine.search(query, 3, **options).to_dict())
    return out


def test_a_search_process_never_imports_torch_or_pandas_and_answers_as_before(exported_checkpoint_copy, shared_data,
                                                                              tmp_path, monkeypatch, few_label_prompts):
    checkpoint = exported_checkpoint_copy
    config = tiny_map_settings(checkpoint, shared_data, tmp_path, monkeypatch, search__text_runtime="onnx",
                               search__ranking="fusion")
    images, index = shared_data / "test_images", tmp_path / "index"
    built = SearchEngine(checkpoint, images, index_dir=index, settings=config)  # the index, the map, the files
    expected = answers_of(built)
    assert expected[1]["results"] and expected[-1]["refused"]  # Russian answered; a child query refused
    write_image(tmp_path / "upload.jpg", 7, size=(120, 90))
    example = built.uploaded_example(tmp_path / "upload.jpg")
    expected.append(built.search("", 3, like=example).to_dict())
    upload = example.vector
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")

    done = subprocess.run([sys.executable, "-c", SEARCH, str(checkpoint), str(images), str(index), str(config_file),
                           json.dumps(REQUESTS), str(tmp_path / "upload.jpg")],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["torch"] == [], "searching imported " + ", ".join(found["torch"][:5])
    assert found["answers"] == expected
    assert found["upload_torch"] == [], "an upload imported " + ", ".join(found["upload_torch"][:5])
    assert max(abs(a - b) for a, b in zip(found["upload"], upload.tolist())) < 1e-5
