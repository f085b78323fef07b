"""Frozen features (wsense/models/frozen_features.py): one cache per backbone, named by its size and views; through
ONNX the torch features, exported only for photos not cached yet."""
import numpy as np
import pytest
import torch
from PIL import Image

from wsense.config import BackboneConfig, load_config
from wsense.models.image_onnx import FILE_PREFIX


def test_frozen_feature_cache_names_each_backbone_with_its_size_and_the_views():
    from wsense.config import load_config
    from wsense.models.frozen_features import backbone_fingerprints, image_fingerprint

    config = load_config()
    config.image_backbone.views = ["center"]
    first, second = backbone_fingerprints(config)
    assert first == "image-efficientnet_lite0-pretrained-224" and second == "image-efficientnet_lite2-pretrained-260"
    # The first backbone's cache is the one it had alone (and the one the image check reads).
    config.image_backbone = config.image_backbone.first_only()
    assert backbone_fingerprints(config) == [first] and image_fingerprint(config) == first
    config.image_backbone.views = ["center", "full"]
    assert backbone_fingerprints(config) == ["image-efficientnet_lite0-pretrained-224-center+full"]
    config.image_backbone.extra_backbones = [BackboneConfig("resnet18", pretrained=False, image_size=64)]
    assert backbone_fingerprints(config)[1] == "image-resnet18-random-seed0-64-center+full"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, size in enumerate([(320, 200), (200, 320), (256, 256)]):  # landscape, portrait, square
        pixels = torch.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3).roll(40 * i, 1)
        path = folder / f"photo{i}.jpg"
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(path)
        paths.append(path)
    return paths


def test_frozen_features_through_onnx_match_torch_and_export_only_for_uncached_photos(photos, tmp_path):
    from wsense.models.frozen_features import FrozenFeatures

    config = load_config()
    config.embedding.image_runtime = "onnx"  # OpenVINO's own figures: tests/models/test_image_openvino.py
    config.cache_dir = str(tmp_path / "onnx-cache")
    onnx = FrozenFeatures(config).images(photos)
    exported = sorted((tmp_path / "onnx-cache" / "onnx").glob(f"{FILE_PREFIX}*.onnx"))
    assert [path.name.split("-")[1] for path in exported] == ["efficientnet_lite0", "efficientnet_lite2"]
    for path in exported:
        path.unlink()
    assert np.array_equal(FrozenFeatures(config).images(photos), onnx)  # all cached: nothing exported
    assert not any(path.exists() for path in exported)

    config.embedding.image_runtime = "torch"
    config.cache_dir = str(tmp_path / "torch-cache")
    torch_features = FrozenFeatures(config).images(photos)
    assert not (tmp_path / "torch-cache" / "onnx").exists()
    assert onnx.shape == torch_features.shape == (3, 2560)  # Lite0's and Lite2's features side by side
    np.testing.assert_allclose(onnx, torch_features, atol=1e-4)


def test_the_tower_runs_once_per_photo_and_fills_each_backbones_cache(photos, tmp_path, monkeypatch):
    from wsense.models import photos as photos_module
    from wsense.models.frozen_features import FrozenFeatures

    passes = []
    encode = photos_module.PhotoEncoder.encode

    def counted(self, paths):
        passes.append((len(self.tower.backbones), len(paths)))
        return encode(self, paths)

    monkeypatch.setattr(photos_module.PhotoEncoder, "encode", counted)
    config = load_config()
    config.cache_dir = str(tmp_path / "cache")
    tower = FrozenFeatures(config).images(photos)
    assert passes == [(2, 3)]  # one pass of both backbones over the three photos
    first = load_config()
    first.cache_dir = config.cache_dir
    first.image_backbone = first.image_backbone.first_only()
    passes.clear()
    assert np.array_equal(FrozenFeatures(first).images(photos), tower[:, :1280]) and not passes  # from the cache

    # A cache that has the first backbone's features only (the image check's) is completed by one tower pass.
    first.cache_dir = str(tmp_path / "check-cache")
    alone = FrozenFeatures(first).images(photos[:2])
    config.cache_dir = first.cache_dir
    passes.clear()
    both = FrozenFeatures(config).images(photos)
    assert passes == [(2, 3)]
    np.testing.assert_allclose(both, tower, atol=1e-5)
    np.testing.assert_allclose(both[:2, :1280], alone, atol=1e-5)


def test_features_handed_over_land_in_each_backbones_cache_without_reading_it(photos, tmp_path, monkeypatch):
    from wsense.models import embedding_cache
    from wsense.models.frozen_features import FrozenFeatures

    config = load_config()
    config.cache_dir = str(tmp_path / "cache")
    features = FrozenFeatures(config)
    keys = [f"{i:064x}" for i in range(3)]
    vectors = np.arange(3 * 2560, dtype=np.float32).reshape(3, 2560)
    with monkeypatch.context() as patch:  # reading a cache while handing over would cost what the cache holds
        patch.setattr(embedding_cache, "_read_shard", lambda shard: pytest.fail(f"read {shard}"))
        features.remember(keys, vectors)
    first = load_config()
    first.cache_dir = config.cache_dir
    first.image_backbone = first.image_backbone.first_only()
    [lite0] = FrozenFeatures(first)._caches()
    np.testing.assert_array_equal(lite0.get(keys), vectors[:, :1280])  # Lite0's columns, under Lite0's name
    np.testing.assert_array_equal(features._caches()[1].get(keys), vectors[:, 1280:])


def test_a_lone_backbones_features_handed_over_are_read_back_without_building_a_model(tmp_path, monkeypatch):
    from wsense.models import image
    from wsense.models.frozen_features import FrozenFeatures

    config = load_config()
    config.cache_dir = str(tmp_path / "cache")
    config.image_backbone = config.image_backbone.first_only()  # what the image check reads
    keys = [f"{i:064x}" for i in range(3)]
    vectors = np.arange(3 * 1280, dtype=np.float32).reshape(3, 1280)
    # Indexing hands the check its features batch after batch: loading a backbone for that cost a second a run.
    monkeypatch.setattr(image, "create_image_backbone", lambda *_: pytest.fail("built an image backbone"))
    FrozenFeatures(config).remember(keys, vectors)
    paths = [tmp_path / f"{i}.jpg" for i in range(3)]  # never opened: every photo is cached by its hash
    np.testing.assert_array_equal(FrozenFeatures(config).images(paths, keys), vectors)
