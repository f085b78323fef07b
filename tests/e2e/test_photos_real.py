"""The photo path's GPU settings against the CPU path on real test photos of the full data set."""
import numpy as np
import pytest
import torch

from conftest import FULL_DATA, settings
from wsense.models.image import create_image_backbone
from wsense.models.photos import PhotoEncoder


@pytest.fixture(scope="module")
def backbone():
    return create_image_backbone(settings().image_backbone)


def cosines(a, b, widths=None):
    """Cosines of the rows of a and b; with `widths` (a tower's backbones), the least over each backbone's
    columns."""
    if widths:
        return np.min([cosines(x, y) for x, y in zip(a.split(widths, -1), b.split(widths, -1))], axis=0)
    return torch.nn.functional.cosine_similarity(a, b).numpy()


def features(encoder, paths, **options):
    done, chunks, skipped = [], [], []
    for good, batch, bad in encoder.batches(paths, progress=False, **options):
        done += good
        chunks.append(batch)
        skipped += bad
    return done, torch.cat(chunks), skipped


@pytest.mark.full_data
def test_real_photos_agree_closely(backbone):
    """The configured GPU settings against the CPU path on 12 real test photos (bf16 is not the default: on
    synthetic photos its features fell to a cosine of 0.96)."""
    paths = sorted((FULL_DATA / "test_images").glob("*.jpg"))[:12]
    gpu = settings().embedding
    fast = PhotoEncoder(backbone, settings().image_backbone, precision=gpu.gpu_precision,
                        decode_on_device=gpu.gpu_decode, workers=2, batch_size=8)
    expected = features(PhotoEncoder(backbone, settings().image_backbone), paths)[1]
    assert cosines(features(fast, paths)[1], expected, backbone.widths).min() >= 0.999
