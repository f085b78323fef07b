"""Shared fixtures: a tiny generated With Sense data set (real file formats, a few coloured JPEGs), one untrained
checkpoint and a few search engines per session, and the runtime settings a test passes (as a user's --config does).

The tests mirror the package (tests/models/ for wsense/models/, ...); end-to-end tests live in tests/e2e/, whose
conftest marks them `e2e`. In CI (CI=true) a missing requirement of an end-to-end test (the full data set, Chromium)
fails the run instead of skipping the tests that need it."""
from __future__ import annotations

import os

# torch's OpenMP threads wait for each other by spinning. On a 2-core machine where another process holds a core
# now and then, a spinning thread waits for one that is not running: a backbone's forward pass took 2.3 s instead
# of 0.08 s. Sleeping waits (set here, before torch is imported; subprocesses inherit them) cost nothing measurable
# on an idle machine: tests/serving, tests/training and the photo path's tests took 226 s against 228 s idle, and
# 237 s against 295 s beside another process's load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from wsense.config import DATA_DIR_ENV, Config, load_config

REPO = Path(__file__).resolve().parent.parent
# The sentence encoder's ready copies (wsense/models/sentence_encoder.py) go to a folder of this run, not to the
# user's ~/.cache/wsense; subprocesses inherit it.
os.environ.setdefault("WSENSE_TABLE_CACHE", tempfile.mkdtemp(prefix="wsense-test-table-"))
FULL_DATA = Path(os.environ.get(DATA_DIR_ENV) or REPO.parent / "shared" / "data" / "with_sense")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

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


def artefact(name: str) -> Path:
    """Where a test keeps what a person may want to look at afterwards (screenshots): test-artefacts/ in the
    repository, or $WSENSE_TEST_ARTEFACTS."""
    folder = Path(os.environ.get("WSENSE_TEST_ARTEFACTS") or REPO / "test-artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def visible_text(html: str) -> str:
    """A page's text without its tags (as a reader sees it; entities left as they are)."""
    return re.sub(r"<[^>]+>", "", html)


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


def require(available: bool, what: str):
    """Skip where `what` is missing on a developer's machine; in CI a missing requirement is a failure."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"CI: {what} is missing, and CI must run every test", pytrace=False)
    pytest.skip(f"{what} is missing")


def pytest_collection_modifyitems(config, items):
    full_data = (FULL_DATA / "train_dataset.csv").is_file()
    for item in items:
        if "full_data" in item.keywords and not full_data:
            item.add_marker(pytest.mark.usefixtures("_needs_full_data"))


@pytest.fixture
def _needs_full_data():
    require((FULL_DATA / "train_dataset.csv").is_file(), f"the full data set at {FULL_DATA} (set {DATA_DIR_ENV})")


@pytest.fixture(scope="session")
def full_data_cache(tmp_path_factory) -> Path:
    """One frozen-feature cache for every full-data test of the session (the 1,100 photos are embedded once)."""
    return tmp_path_factory.mktemp("full-cache")


# The image check of the tests (written by the session fixture `allowing_check`): fitted numbers that allow the
# generated photos (they have no faces, and the classifier's score stays far below the threshold).
TEST_CHECK = Path(tempfile.mkdtemp(prefix="wsense-test-check-"))


def make_check(coef=None, intercept: float = -8.0, thresholds=None, features: int = 1280):
    """A ChildClassifier over the default image features with the given numbers (zeros: every photo scores
    sigmoid(intercept)); `thresholds`: {"photo": t, "uncertain": u} for every policy."""
    import dataclasses

    from wsense.models.frozen_features import image_fingerprint
    from wsense.safety.child_classifier import FACE_FEATURES, UNCERTAIN_POLICIES, ChildClassifier

    config = load_config()
    width = features + len(FACE_FEATURES)
    coef = np.zeros(width) if coef is None else np.asarray(coef, float)
    thresholds = thresholds or {"photo": 0.5, "uncertain": 0.3}
    config.image_backbone = config.image_backbone.first_only()  # a check reads the first backbone's features
    return ChildClassifier(image_fingerprint(config), dataclasses.asdict(config.image_backbone), np.zeros(width),
                      np.ones(width), coef, intercept, {policy: dict(thresholds) for policy in UNCERTAIN_POLICIES})


@pytest.fixture(scope="session", autouse=True)
def backbones_built_once():
    """Each image backbone (timm's model and its packaged weights: 0.26 s) is built once for the session, and every
    caller gets a deep copy of it (0.03 s): the tests build about 130. Backbones from a weights_file are built each
    time (a test may change the file)."""
    import copy

    from wsense.models import image

    built: dict = {}
    create = image.create_backbone

    def create_once(config):
        if config.weights_file:
            return create(config)
        key = (config.name, config.pretrained, config.image_size)
        if key not in built:
            built[key] = create(config)
        return copy.deepcopy(built[key])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image, "create_backbone", create_once)
        yield


@pytest.fixture(scope="session", autouse=True)
def allowing_check():
    make_check().save(TEST_CHECK)
    yield TEST_CHECK
    shutil.rmtree(TEST_CHECK, ignore_errors=True)


def settings(**changes) -> Config:
    """The default config with changes written "section__key=value" (search__text_runtime="torch"; a top-level key
    as itself), as a user's --config would give them. Tests default to the torch text path, no multilingual map, the
    fusion ranking (no query bank to build), the test image check (TEST_CHECK) and no reviews unless they ask."""
    config = load_config()
    values = {"search__multilingual": "none", "search__text_runtime": "torch", "search__ranking": "fusion",
              "search__duplicate_threshold": None,
              "safety__check": str(TEST_CHECK), "safety__reviews": None, **changes}
    for name, value in values.items():
        section, _, key = name.rpartition("__")
        setattr(getattr(config, section) if section else config, key, value)
    return config


@pytest.fixture
def config_file(tmp_path) -> Path:
    """A user's --config for command-line tests: the defaults with the torch text path, no multilingual map, the
    fusion ranking, the test image check and no reviews."""
    path = tmp_path / "wsense.yaml"
    path.write_text(f"search:\n  multilingual: none\n  text_runtime: torch\n  ranking: fusion\n"
                    f"  duplicate_threshold: null\n"
                    f"safety:\n  check: {TEST_CHECK}\n  reviews: null\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained checkpoint of the default model (the label-bridge start), its projections nudged by a fixed
    seed so that exports must carry this checkpoint's own weights. Copy it before changing anything in it."""
    import torch

    from wsense.models.checkpoint import save_checkpoint
    from wsense.models.relevance import build_relevance_model

    config = load_config()
    torch.manual_seed(0)
    model = build_relevance_model(config)
    with torch.no_grad():
        model.image_projection.weight.add_(0.05 * torch.randn_like(model.image_projection.weight))
        model.text_projection.weight.add_(0.05 * torch.randn_like(model.text_projection.weight))
    return save_checkpoint(model, config, tmp_path_factory.mktemp("ckpt") / "best", {"epoch": 0})


@pytest.fixture
def checkpoint_copy(checkpoint, tmp_path) -> Path:
    """A private copy of the session checkpoint (without its ONNX exports), free to change."""
    return Path(shutil.copytree(checkpoint, tmp_path / "best", ignore=shutil.ignore_patterns("*.onnx", "*.npz")))


@pytest.fixture(scope="session")
def exported_checkpoint(checkpoint) -> Path:
    """The session checkpoint with its image tower (embedding.image_runtime: onnx, the default) and its fp32 query
    text tower (search.text_runtime: onnx) exported to ONNX, once for the session."""
    from wsense.serving.scoring import RelevanceScorer

    RelevanceScorer.from_checkpoint(checkpoint, settings(search__text_runtime="onnx")).photos  # noqa: B018
    return checkpoint


@pytest.fixture
def exported_checkpoint_copy(exported_checkpoint, tmp_path) -> Path:
    """A private copy of the session checkpoint with its ONNX exports (the image tower's, the fp32 text tower's), free
    to change: for a test that runs an exported path without testing how it is exported (an export takes seconds).
    Tests of exporting take checkpoint_copy, which has none."""
    return Path(shutil.copytree(exported_checkpoint, tmp_path / "best", ignore=shutil.ignore_patterns(
        "*-int8.onnx", "*.npz", "*.npy")))


BOYS = pd.DataFrame({"image": [TEST_IMAGES[1]], "text": ["Two boys play football ."]})


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """The tiny data set, made once for the session: read it, never change it (tiny_data is the private one)."""
    root = make_dataset(tmp_path_factory.mktemp("shared") / "data")
    (root / "test_images" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def engine(checkpoint, shared_data, tmp_path_factory):
    """A search engine over the tiny test photos, with the photo described as showing boys kept out."""
    from wsense.serving.search import SearchEngine

    return SearchEngine(checkpoint, shared_data / "test_images", BOYS,
                        index_dir=tmp_path_factory.mktemp("index") / "index", settings=settings())


@pytest.fixture(scope="module")
def model_config() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One cache folder for the training tests on the tiny data set: its photos' frozen features (cached by content
    and model) are embedded once for the session, not once per test."""
    return tmp_path_factory.mktemp("tiny-cache")


def tiny_training_config(data: Path, cache: Path, output_dir: Path) -> Config:
    """Training settings for a tiny data set: small batches, two epochs."""
    config = load_config()
    config.data.dir = str(data)
    config.cache_dir = str(cache)
    config.training.output_dir = str(output_dir)
    config.baselines.folds = 2
    config.training.batch_size = 8
    config.training.contrastive_batch_size = 4
    config.training.epochs = 2
    config.training.warmup_steps = 1
    config.training.lr = 3e-3
    return config


@pytest.fixture
def tiny_config(tiny_data, tiny_cache, tmp_path) -> Config:
    """Training settings for the tiny data set: small batches, two epochs, a private run folder, the session's
    cache of frozen features."""
    return tiny_training_config(tiny_data, tiny_cache, tmp_path / "run")


def validated_trainer(config: Config):
    """A trainer scored after each epoch on its held-out fold, as `python train.py` runs it."""
    from wsense.data import load_data
    from wsense.evaluation import ValidationEvaluator
    from wsense.training import Trainer
    from wsense.training.sets import build_training_sets

    data = load_data(config.data.dir)
    sets = build_training_sets(data, config, config.training.val_fold)
    return Trainer(config, data, sets=sets, evaluator=ValidationEvaluator(sets.val_pairs, sets.val_positives))


def russian_captions(path: Path) -> Path:
    """Russian versions of the tiny data set's training captions, as data.russian_train_captions reads them."""
    russian = ["Чёрная собака бежит по зелёной траве", "Двое мужчин лезут на красную скалу",
               "Маленькая девочка в розовом платье", "Сёрфер катится на большой волне",
               "Женщина едет на велосипеде по улице", "Снежные горы под голубым небом"]
    lines = ["query_id|query_text_ru"] + [f"{qid}|{text}" for qid, text in zip(CAPTIONS, russian)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def few_label_prompts(monkeypatch) -> list[str]:
    """The multilingual map fitted beside the captions on 20 of the 1,000 ImageNet label prompts (every 50th): USE
    and the text tower then embed some 30 fitting texts, not 1,000 (seconds of a test's time), for the tests of the
    map's path and of what it is fitted on. The model's label bridge still takes all 1,000 (wsense.models.relevance
    holds its own reference to the function); e2e/test_multilingual_map.py fits on them all."""
    from wsense.models import label_bridge

    prompts = label_bridge.imagenet_label_prompts()[::50]
    monkeypatch.setattr(label_bridge, "imagenet_label_prompts", lambda: list(prompts))
    return prompts


def tiny_map_settings(checkpoint: Path, data: Path, tmp_path: Path, monkeypatch, **changes) -> Config:
    """Settings that fit the multilingual map on the tiny data set's captions and their Russian versions. The map is
    fitted on the captions of the data set the checkpoint was trained on (the data section of its config.yaml, under
    WSENSE_DATA_DIR), not on the caller's: the private copy `checkpoint` and the environment point at `data` first
    (the session checkpoint's data section is the default one, the full data set)."""
    monkeypatch.setenv(DATA_DIR_ENV, str(data))
    path = checkpoint / "config.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    values["data"].update(dir=str(data), russian_train_captions=str(russian_captions(tmp_path / "ru.csv")))
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return settings(search__multilingual="use_map", **changes)


def write_config(path: Path) -> Path:
    """A user's --config: the English tower for every query (no multilingual map to fit) in torch, the test image
    check and no reviews; the fusion ranking (no query bank to build)."""
    path.write_text(f"search:\n  multilingual: none\n  text_runtime: torch\n  ranking: fusion\n"
                    f"  duplicate_threshold: null\n"
                    f"safety:\n  check: {TEST_CHECK}\n  reviews: null\n", encoding="utf-8")
    return path


def photo_folder(root: Path, count: int, seed: int = 500) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        write_image(root / f"photo{i}.jpg", seed + i)
    return root


@pytest.fixture(scope="session")
def features_photos(tmp_path_factory) -> Path:
    """Nine photos, three of them in a subfolder."""
    root = tmp_path_factory.mktemp("features") / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(9):
        write_image(root / ("sub" if i % 3 == 0 else ".") / f"photo{i}.jpg", 900 + i, size=(96, 72))
    return root


@pytest.fixture(scope="session")
def features_engine(checkpoint, features_photos, tmp_path_factory):
    """The photographers' search features' engine (paging, cut-off, more like a photo, batches, thumbnails, the API and
    the page): eight searchable photos (photo1 is kept out by its description), ranked by the cosine, candidates 4."""
    from wsense.serving.search import SearchEngine

    descriptions = pd.DataFrame({"image": ["photo1.jpg"], "text": ["A little girl on a swing ."]})
    # A cache of its own, so that a test can tell what this engine wrote from what another process's tests wrote
    # at the same time; the ONNX exports are shared, as they are slow to make and never change.
    cache = tmp_path_factory.mktemp("features-cache")
    shared_exports = Path(load_config().cache_dir).resolve() / "onnx"
    shared_exports.mkdir(parents=True, exist_ok=True)
    (cache / "onnx").symlink_to(shared_exports)
    # The index in ONNX Runtime, as uploads are: an upload of a catalog photo then scores as its row does, to the bit
    # (the default openvino_bf16 index agrees to a cosine of about 0.999)
    return SearchEngine(checkpoint, features_photos, descriptions, index_dir=tmp_path_factory.mktemp("ix") / "ix",
                        settings=settings(search__ranking="cosine", search__candidates=4,
                                          embedding__image_runtime="onnx", cache_dir=str(cache)))


@pytest.fixture(scope="session")
def features_client(features_engine):
    from fastapi.testclient import TestClient

    from wsense.serving.web import create_app

    return TestClient(create_app(features_engine, max_k=8))


@pytest.fixture(scope="session")
def catalog_photos(tmp_path_factory) -> Path:
    """Eight photos: more than the shortlists of exact_engine and faiss_engine."""
    return photo_folder(tmp_path_factory.mktemp("catalog") / "photos", 8, seed=800)


@pytest.fixture(scope="session")
def catalog_index(tmp_path_factory) -> Path:
    """One index folder for both engines over the catalog (same model, so the second embeds nothing)."""
    return tmp_path_factory.mktemp("catalog_index") / "ix"


@pytest.fixture(scope="session")
def exact_engine(checkpoint, catalog_photos, catalog_index):
    from wsense.serving.search import SearchEngine

    return SearchEngine(checkpoint, catalog_photos, None, index_dir=catalog_index,
                        settings=settings(search__first_stage="exact", search__candidates=3))


@pytest.fixture(scope="session")
def faiss_engine(checkpoint, catalog_photos, catalog_index):
    pytest.importorskip("faiss")
    from wsense.serving.search import SearchEngine

    return SearchEngine(checkpoint, catalog_photos, None, index_dir=catalog_index,
                        settings=settings(search__first_stage="faiss", search__candidates=3))


def camera_file(path: Path, size=(3000, 2000), fmt="JPEG") -> Path:
    """A large photo with detail at every scale (smooth shapes and fine noise), as a camera file has."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([np.sin(x / 97.0), np.cos(y / 61.0), np.sin((x + y) / 143.0)], axis=-1)
    pixels = np.clip(127 + 90 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return path


@pytest.fixture(scope="session")
def shaped_photos(tmp_path_factory) -> list[Path]:
    """Three smooth gradient JPEGs: landscape, portrait and square."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, size in enumerate([(320, 200), (200, 320), (256, 256)]):  # landscape, portrait, square
        pixels = np.roll(np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3), 40 * i, 1)
        path = folder / f"photo{i}.jpg"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(path)
    return paths
