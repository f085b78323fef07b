import pytest
import timm
import torch

from wsense.config import ImageBackboneConfig, TextModelConfig
from wsense.errors import WsenseError
from wsense.models import create_image_backbone, create_text_encoder, image_transform


def test_resnet18_loads_a_local_weights_file(tmp_path):
    torch.manual_seed(3)
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = create_image_backbone(ImageBackboneConfig(name="resnet18", weights_file=str(path)))
    assert torch.equal(backbone.model.conv1.weight, reference.conv1.weight)
    features = backbone(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 512)
    assert backbone.classify(features).shape == (2, 1000)


def test_resnet18_weights_from_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(WsenseError, match="weights do not fit this backbone") as error:
        create_image_backbone(ImageBackboneConfig(name="resnet18", weights_file=str(path)))
    assert str(path) in str(error.value)


def test_damaged_or_missing_weights_file_is_a_clear_error(tmp_path):
    damaged = tmp_path / "bad.pth"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(WsenseError, match="not a readable PyTorch weights file"):
        create_image_backbone(ImageBackboneConfig(name="resnet18", weights_file=str(damaged)))
    with pytest.raises(WsenseError, match="weights file not found"):
        create_image_backbone(ImageBackboneConfig(name="resnet18", weights_file=str(tmp_path / "none.pth")))


def test_resnet18_without_weights_names_both_ways(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    from torchvision.models import ResNet18_Weights

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(WsenseError) as error:
        create_image_backbone(ImageBackboneConfig(name="resnet18"))
    message = str(error.value)
    assert "weights_file" in message and "checkpoints" in message and "pretrained: false" in message


def test_random_init_and_unknown_backbones():
    backbone = create_image_backbone(ImageBackboneConfig(name="resnet18", pretrained=False))
    assert backbone.num_features == 512
    with pytest.raises(WsenseError, match="unknown image backbone 'resnet-18'"):
        create_image_backbone(ImageBackboneConfig(name="resnet-18"))
    with pytest.raises(WsenseError, match="no offline weights"):
        create_image_backbone(ImageBackboneConfig(name="mobilenetv3_small_100"))
    assert create_image_backbone(ImageBackboneConfig(name="mobilenetv3_small_100", pretrained=False)).num_features > 0


def test_packaged_efficientnet_lite0_recognises_a_known_class():
    backbone = create_image_backbone(ImageBackboneConfig())
    assert backbone.spec.mean == (0.5, 0.5, 0.5)
    # The packaged weights must be real ImageNet weights: the classifier is not random.
    weight = backbone.model.get_classifier().weight
    assert weight.shape == (1000, 1280) and weight.std() < 0.2
    transform = image_transform(backbone.spec, 224)
    from PIL import Image

    image = Image.new("RGB", (300, 200), (255, 255, 255))
    assert transform(image).shape == (3, 224, 224)


def test_minilm_text_encoder_gives_unit_vectors_that_know_meaning():
    encoder = create_text_encoder(TextModelConfig())
    vectors = encoder.encode(["a dog runs on grass", "a puppy running in a field", "stock market report"])
    assert vectors.shape == (3, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_text_model_path_must_be_a_model_folder(tmp_path):
    with pytest.raises(WsenseError, match="not a transformers model folder"):
        create_text_encoder(TextModelConfig(path=str(tmp_path)))
