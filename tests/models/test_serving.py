"""The search model without torch (wsense/models/serving.py, serving_head.py, views.py): the numpy heads give the
torch model's numbers, the numpy views the torch path's pixels, and the serving files are made once, opened without
the torch model, and made again where they are another checkpoint's or damaged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import settings, write_image
from wsense.models.checkpoint import load_checkpoint, model_fingerprint
from wsense.models.image import TENSOR_VIEWS, ImageViews
from wsense.models.serving import MANIFEST_FILE, TOKENIZER_FILE, open_serving_model, serving_files_complete
from wsense.models.serving_head import ServingHead, head_arrays
from wsense.models.views import VIEWS, view_pixels
from wsense.serving.scoring import RelevanceScorer

# The index's photos in ONNX Runtime, as a server's uploads: the two paths then agree to the bit (the default,
# openvino_bf16, within a cosine of about 0.999: tests/models/test_image_openvino.py)
FP32 = settings(search__text_runtime="onnx", embedding__image_runtime="onnx")


def test_the_numpy_head_gives_the_torch_models_numbers(checkpoint):
    model, _, _ = load_checkpoint(checkpoint)
    head = ServingHead(head_arrays(model))
    features = torch.rand(6, model.image_projection.in_features) * 3
    v = torch.nn.functional.normalize(torch.randn(4, head.dim), dim=-1)
    with torch.inference_mode():
        u = model.embed_image(features)
        expected = model.relevance_matrix(v, u)
        image_part = model.fusion.image_part(u)
    assert np.allclose(head.embed_features(features.numpy()), u.numpy(), atol=1e-6)
    assert np.allclose(head.image_part(u.numpy()), image_part.numpy(), atol=1e-5)
    assert np.allclose(head.relevance(v.numpy(), u.numpy()), expected.numpy(), atol=1e-6)
    assert head.relevance(v.numpy()[:0], u.numpy()).shape == (0, 6)


@pytest.mark.parametrize("size", [(48, 40), (40, 48), (257, 911), (224, 224)])
def test_numpy_views_are_the_torch_views_to_the_bit(size):
    from torchvision.transforms import functional as TF

    image = Image.fromarray((np.random.default_rng(size[0]).random((size[1], size[0], 3)) * 255).astype(np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    torchvision_views = TF.normalize(torch.stack([TF.pil_to_tensor(TENSOR_VIEWS[view](image, 224)) for view in VIEWS])
                                     .float().div_(255), mean, std)
    assert np.array_equal(view_pixels(image, 224, list(VIEWS), mean, std), torchvision_views.numpy())
    spec = type("Spec", (), {"mean": mean, "std": std})
    assert torch.equal(ImageViews(spec, 224, list(VIEWS))(image), torchvision_views)  # the torch path takes them


def test_serving_files_are_made_once_and_opened_without_the_torch_model(exported_checkpoint_copy, tmp_path, capsys):
    folder = exported_checkpoint_copy
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # the session checkpoint's, copied with it
    assert not serving_files_complete(folder, FP32, model_fingerprint(folder))  # `wsense serve` makes them apart
    made = RelevanceScorer.from_checkpoint(folder, FP32)
    assert made._model is not None and (folder / MANIFEST_FILE).is_file()
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["text"] == {"onnx": made.onnx_text.path.name} and len(manifest["images"]) == 2
    assert serving_files_complete(folder, FP32, model_fingerprint(folder))
    assert not serving_files_complete(folder, settings(search__text_runtime="onnx_int8"), model_fingerprint(folder))
    assert not serving_files_complete(folder, FP32, "another-checkpoint")

    opened = RelevanceScorer.from_checkpoint(folder, FP32)
    assert opened._model is None and opened.served is not None
    texts = ["a dog runs on the grass", "two men climb a red rock wall"]
    assert np.allclose(opened.embed_texts(texts), made.embed_texts(texts), atol=1e-6)
    assert opened._model is None  # nothing above needed the torch model
    # An upload runs through the named image towers and the numpy views: the torch photo path's embedding.
    write_image(tmp_path / "upload.jpg", 3, size=(300, 200))
    upload = opened.embed_upload(tmp_path / "upload.jpg")
    assert opened._model is None and opened._photos is None
    assert np.allclose(upload, made.embed_images([tmp_path / "upload.jpg"], progress=False)[0], atol=1e-5)

    (folder / TOKENIZER_FILE).write_text("not a tokenizer")  # damaged: made again, with a word why
    config = opened.config
    assert open_serving_model(folder, config, model_fingerprint(folder)) is None
    assert "unreadable query tokenizer" in capsys.readouterr().err
    assert open_serving_model(folder, config, "another-checkpoint") is None  # another checkpoint's: made again
    again = RelevanceScorer.from_checkpoint(folder, FP32)
    assert again._model is not None and open_serving_model(folder, config, model_fingerprint(folder)) is not None
