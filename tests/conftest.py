"""Shared fixtures: a tiny generated With Sense data set (real file formats, a few coloured JPEGs)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsense.config import DATA_DIR_ENV

REPO = Path(__file__).resolve().parent.parent
FULL_DATA = Path(os.environ.get(DATA_DIR_ENV) or REPO.parent / "shared" / "data" / "with_sense")

TRAIN_IMAGES = [f"{1000 + i}_a{i}.jpg" for i in range(6)]
TEST_IMAGES = [f"{2000 + i}_b{i}.jpg" for i in range(3)]
CAPTIONS = {  # query_id -> text; the prefix of the id is the caption's own image
    f"{TRAIN_IMAGES[0]}#0": 'A black dog runs on the "green" grass .',
    f"{TRAIN_IMAGES[1]}#1": "Two men climb a red rock wall .",
    f"{TRAIN_IMAGES[2]}#2": "A little girl in a pink dress .",
    f"{TRAIN_IMAGES[3]}#0": "A surfer rides a big wave .",
    f"{TRAIN_IMAGES[4]}#1": "A woman rides a bicycle down the street .",
    f"{TRAIN_IMAGES[5]}#2": "Snowy mountains under a blue sky .",
}
TEST_CAPTIONS = {
    f"{TEST_IMAGES[0]}#0": "A brown dog swims in a lake .",
    f"{TEST_IMAGES[0]}#1": "A dog in the water .",
    f"{TEST_IMAGES[1]}#0": "Two boys play football .",
    f"{TEST_IMAGES[2]}#0": "A man on a mountain top .",
}


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> None:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def make_dataset(root: Path) -> Path:
    """Write a small but complete data set in the real formats and return its folder."""
    (root / "train_images").mkdir(parents=True)
    (root / "test_images").mkdir()
    for i, name in enumerate(TRAIN_IMAGES):
        write_image(root / "train_images" / name, i)
    for i, name in enumerate(TEST_IMAGES):
        write_image(root / "test_images" / name, 100 + i)
    train_rows, expert_rows, crowd_rows = [], [], []
    rng = np.random.default_rng(0)
    for query_id, text in CAPTIONS.items():
        own = query_id.split("#")[0]
        for image in TRAIN_IMAGES:
            quoted = '"' + text.replace('"', '""') + '"'
            train_rows.append(f"{image},{query_id},{quoted}")
            scores = [4, 4, 3] if image == own else list(rng.integers(1, 3, size=3))
            expert_rows.append("\t".join([image, query_id, *map(str, scores)]))
            yes = 3 if image == own else int(rng.integers(0, 2))
            crowd_rows.append("\t".join([image, query_id, f"{yes / 3:.6g}", str(yes), str(3 - yes)]))
    (root / "train_dataset.csv").write_text("image,query_id,query_text\n" + "\n".join(train_rows) + "\n")
    (root / "ExpertAnnotations.tsv").write_text("\n".join(expert_rows) + "\n")
    (root / "CrowdAnnotations.tsv").write_text("\n".join(crowd_rows) + "\n")
    lines = ["|query_id|query_text|image"]
    for i, (query_id, text) in enumerate(TEST_CAPTIONS.items()):
        lines.append(f"{i}|{query_id}|{text}|{query_id.split('#')[0]}")
    (root / "test_queries.csv").write_text("\n".join(lines) + "\n")
    (root / "test_images.csv").write_text("image\n" + "\n".join(TEST_IMAGES) + "\n")
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


def pytest_collection_modifyitems(config, items):
    skip_data = pytest.mark.skip(reason=f"full data set not found at {FULL_DATA} (set {DATA_DIR_ENV})")
    for item in items:
        if "full_data" in item.keywords and not (FULL_DATA / "train_dataset.csv").is_file():
            item.add_marker(skip_data)


def set_checkpoint_setting(checkpoint: Path, section: str, key: str, value) -> None:
    """Change one setting in a checkpoint's saved config (as a user editing its config.yaml would)."""
    import yaml

    values = yaml.safe_load((checkpoint / "config.yaml").read_text())
    values[section][key] = value
    (checkpoint / "config.yaml").write_text(yaml.safe_dump(values))
