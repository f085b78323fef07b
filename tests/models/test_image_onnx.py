"""The photo backbone in ONNX Runtime (wsense/models/image_onnx.py): the torch backbone's embeddings, an export kept
per model, clear errors."""
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import settings
from wsense.config import load_config
from wsense.errors import WsenseError
from wsense.models.image_onnx import FILE_PREFIX
from wsense.models.photos import PhotoEncoder
from wsense.serving.scoring import RelevanceScorer

ONNX, TORCH = settings(embedding__image_runtime="onnx"), settings(embedding__image_runtime="torch")


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


def exports(folder):
    return sorted(folder.glob(f"{FILE_PREFIX}*.onnx"))


def test_onnx_image_path_gives_the_torch_embeddings(checkpoint_copy, photos):
    checkpoint = checkpoint_copy
    scorer = RelevanceScorer.from_checkpoint(checkpoint, ONNX)
    assert not exports(checkpoint)  # the photo path is made when a photo comes, not before
    # One export per backbone of the tower (Lite0, Lite2), side by side in the checkpoint folder.
    made = sorted(onnx.path for onnx in scorer.photos.onnx)
    assert exports(checkpoint) == made and len(made) == 2
    assert len(scorer.photos.transform.views) == 5  # the default config's views, each through the exported graph
    onnx = scorer.embed_images(photos, progress=False)
    one_by_one = np.concatenate([scorer.embed_images([path], progress=False) for path in photos])
    reference = RelevanceScorer.from_checkpoint(checkpoint, TORCH).embed_images(photos, progress=False)
    assert onnx.shape == reference.shape == (3, 384)
    assert np.allclose(onnx, reference, atol=1e-5) and np.allclose(one_by_one, reference, atol=1e-5)


def test_export_is_reused_rebuilt_when_damaged_and_never_shared_by_other_weights(checkpoint_copy, photos, capsys):
    folder = checkpoint_copy
    path, other = (onnx.path for onnx in RelevanceScorer.from_checkpoint(folder, ONNX).photos.onnx)
    written = path.stat().st_mtime_ns
    scorer = RelevanceScorer.from_checkpoint(folder, ONNX)
    assert scorer.photos.onnx[0].path == path and path.stat().st_mtime_ns == written
    reference = scorer.embed_images(photos[:1], progress=False)

    path.write_bytes(path.read_bytes()[:50_000])  # cut short, as by a full disk
    scorer = RelevanceScorer.from_checkpoint(folder, ONNX)
    assert scorer.photos.onnx[0].path == path and "damaged ONNX image tower" in capsys.readouterr().err
    assert np.allclose(scorer.embed_images(photos[:1], progress=False), reference, atol=1e-6)

    with torch.no_grad():  # other first-backbone weights: another export, the stale one removed, the other kept
        next(scorer.model.image_backbone.parameters()).mul_(1.5)
    changed_path = PhotoEncoder(scorer.model.image_backbone, scorer.config.image_backbone, runtime="onnx",
                                onnx_dir=folder)
    assert changed_path.onnx[0].path != path and changed_path.onnx[1].path == other
    assert exports(folder) == sorted([changed_path.onnx[0].path, other])
    changed = changed_path.encode(photos[:1])
    in_torch = PhotoEncoder(scorer.model.image_backbone, scorer.config.image_backbone).encode(photos[:1])
    assert torch.allclose(changed, in_torch, atol=1e-5)
    assert not np.allclose(scorer.embed_features(changed), reference, atol=1e-3)


def test_image_runtime_is_chosen_by_the_users_config_with_clear_errors(checkpoint_copy, tmp_path, monkeypatch):
    folder = checkpoint_copy
    assert RelevanceScorer.from_checkpoint(folder, TORCH).photos.onnx is None and not exports(folder)
    bad = tmp_path / "bad.yaml"
    bad.write_text("embedding:\n  image_runtime: tensorrt\n")
    with pytest.raises(WsenseError, match="image_runtime must be one of onnx, torch"):
        load_config(bad)
    for missing_module, message in (
        ("onnxruntime", r"embedding.image_runtime: onnx needs onnxruntime \(pip install"),
        ("onnx", "exports the image tower with the onnx package"),  # needed to export, not to run one
    ):
        with monkeypatch.context() as patch, pytest.raises(WsenseError, match=message):
            patch.setitem(sys.modules, missing_module, None)  # import fails as if not installed
            RelevanceScorer.from_checkpoint(folder, ONNX).photos  # noqa: B018  (made on first use)
