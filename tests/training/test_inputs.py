"""Training inputs (wsense/training/inputs.py): random resized crops, and pixel views kept decoded that evaluate on
what search sees."""
import torch

from wsense.data import load_data
from wsense.models.relevance import build_relevance_model


def test_random_resized_crops_are_independent_per_image_and_stay_inside_it():
    from wsense.training.inputs import random_resized_crops

    torch.manual_seed(0)
    ramp = torch.linspace(0, 255, 32).expand(3, 32, 32)  # brightness grows left to right
    batch = ramp.expand(64, 3, 32, 32).contiguous()
    crops = random_resized_crops(batch, 16)
    assert crops.shape == (64, 3, 16, 16)
    assert crops.min() >= 0 and crops.max() <= 255  # sampled inside the image, never padded with zeros
    assert len({tuple(c[0, 0, [0, -1]].round().tolist()) for c in crops}) > 32  # one crop per image
    # Some come out mirrored (right darker than left), some not.
    mirrored = crops[:, 0, 0, 0] > crops[:, 0, 0, -1]
    assert 0 < int(mirrored.sum()) < 64
    unflipped = random_resized_crops(batch, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(unflipped, torch.nn.functional.interpolate(batch, size=16, mode="bilinear",
                                                                     align_corners=False), atol=1e-3)


def test_pixel_inputs_keep_views_decoded_and_evaluate_on_what_search_sees(tiny_config):
    from wsense.models.photos import PhotoEncoder
    from wsense.training.inputs import PixelInputs

    tiny_config.image_backbone.image_size = 64
    tiny_config.image_backbone.extra_backbones[0].image_size = 72
    tiny_config.image_backbone.views = ["center", "flip", "full", "first", "last"]
    model = build_relevance_model(tiny_config)
    data = load_data(tiny_config.data.dir)
    paths = {name: data.train_image_dir / name for name in data.train_images[:4]}
    inputs = PixelInputs(tiny_config, model, paths, ["a dog", "a cat"])
    assert [p.shape for p in inputs.pixels] == [(4, 5, 3, 64, 64), (4, 5, 3, 72, 72)]  # one per backbone
    assert all(p.dtype == torch.uint8 for p in inputs.pixels)
    index = torch.tensor([0, 0, 1])
    evaluation = inputs.image_batch(index, train=False)["pixels"]
    assert [p.shape for p in evaluation] == [(3, 5, 3, 64, 64), (3, 5, 3, 72, 72)]
    assert torch.equal(evaluation[0][0], evaluation[0][1])
    # Validation sees a photo exactly as search embeds it: the same views, the same normalisation.
    search = PhotoEncoder(model.image_backbone, tiny_config.image_backbone)
    for i, name in enumerate(data.train_images[j] for j in index):
        for part, searched in zip(evaluation, search.pixels(paths[name])):
            assert torch.allclose(part[i], searched, atol=1e-5)
    training = inputs.image_batch(index, train=True)["pixels"]
    assert [p.shape for p in training] == [(3, 3, 64, 64), (3, 3, 72, 72)]
    assert not torch.equal(training[0][0], training[0][1])
    assert all(p.min() >= -1 and p.max() <= 1 for p in training)  # normalised with mean = std = 0.5
    # Both backbones see the same crop of a photo: at one size, the other's resized looks alike.
    resized = torch.nn.functional.interpolate(training[1], size=64, mode="bilinear", antialias=True)
    same, other = (resized - training[0]).abs().mean(), (resized - training[0].roll(1, 0)).abs().mean()
    assert same < 0.5 * other
    # Without augmentation, training takes one whole view per photo, drawn at random.
    inputs.augment = False
    torch.manual_seed(0)
    drawn = inputs.image_batch(torch.zeros(40, dtype=torch.long), train=True)["pixels"]
    matches = [next(v for v in range(5) if torch.equal(row, evaluation[0][0, v])) for row in drawn[0]]
    assert set(matches) == set(range(5))
    assert all(torch.equal(big, evaluation[1][0, v]) for big, v in zip(drawn[1], matches))
