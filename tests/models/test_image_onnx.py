"""The photo backbone in ONNX Runtime (wsense/models/image_onnx.py): the torch backbone's embeddings, an export kept
per model, clear errors."""
import sys

import numpy as np
import pytest

from conftest import settings
from wsense.config import load_config
from wsense.errors import WsenseError
from wsense.models.image_onnx import FILE_PREFIX
from wsense.serving.scoring import RelevanceScorer

ONNX, TORCH = settings(embedding__image_runtime="onnx"), settings(embedding__image_runtime="torch")


def exports(folder):
    return sorted(folder.glob(f"{FILE_PREFIX}*.onnx"))


def test_onnx_image_path_gives_the_torch_embeddings(checkpoint_copy, shaped_photos):
    checkpoint, photos = checkpoint_copy, shaped_photos
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


def test_image_runtime_is_chosen_by_the_users_config_with_clear_errors(checkpoint_copy, tmp_path, monkeypatch):
    folder = checkpoint_copy
    assert RelevanceScorer.from_checkpoint(folder, TORCH).photos.onnx is None and not exports(folder)
    bad = tmp_path / "bad.yaml"
    bad.write_text("embedding:\n  image_runtime: tensorrt\n")
    with pytest.raises(WsenseError, match="image_runtime must be one of openvino_bf16, openvino, onnx, torch"):
        load_config(bad)
    for missing_module, message in (
        ("onnxruntime", r"embedding.image_runtime: onnx needs onnxruntime \(pip install"),
        ("onnx", "exports the image tower with the onnx package"),  # needed to export, not to run one
    ):
        with monkeypatch.context() as patch, pytest.raises(WsenseError, match=message):
            patch.setitem(sys.modules, missing_module, None)  # import fails as if not installed
            RelevanceScorer.from_checkpoint(folder, ONNX).photos  # noqa: B018  (made on first use)
