"""The photo path (wsense/models/photos.py) as it runs on a GPU, exercised on the CPU: JPEGs decoded by torchvision
and cut into views as tensors, the backbone under fp16 autocast, loader processes; the same features as the CPU
path within the stated tolerance (cosine at least 0.997 per photo on synthetic photos with sharp edges), other
formats and unreadable files handled as on the CPU. The real photos' check is e2e/test_photos_real.py."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import settings
from wsense.config import config_from_dict
from wsense.errors import WsenseError
from wsense.models.image import TowerViews, create_image_backbone
from wsense.models.photos import PhotoEncoder, photo_device
from wsense.serving.scoring import RelevanceScorer

TOLERANCE = 0.997  # the least cosine between a photo's features on the GPU path and on the CPU path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Photo-like files: smooth colour fields with edges, as JPEG (three shapes), one PNG and one grey JPEG."""
    folder = tmp_path_factory.mktemp("device-photos")
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height) in enumerate([(320, 213), (213, 320), (256, 256), (300, 200), (240, 260)]):
        y, x = np.mgrid[0:height, 0:width] / max(width, height)
        pixels = np.stack([np.sin(6 * x + i), np.cos(5 * y - i), np.sin(4 * (x + y))], -1) * 100 + 128
        pixels[height // 3:height // 2, width // 4:width // 2] = rng.integers(0, 255, 3)  # a sharp-edged block
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        suffix = ".png" if i == 3 else ".jpg"
        path = folder / f"photo{i}{suffix}"
        (image.convert("L") if i == 4 else image).save(path, quality=90)
        paths.append(path)
    return paths


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


def test_tensor_views_follow_the_pil_views(photos, backbone):
    from torchvision.io import ImageReadMode, decode_jpeg

    transform = TowerViews(backbone, settings().image_backbone.views)
    for path in [p for p in photos if p.suffix == ".jpg"]:
        decoded = decode_jpeg(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8),
                              mode=ImageReadMode.RGB)
        pil, tensor = transform(Image.open(path).convert("RGB")), transform(decoded)
        for from_pil, from_tensor, size in zip(pil, tensor, (224, 260)):  # each backbone's views at its size
            assert from_tensor.shape == from_pil.shape == (5, 3, size, size)
            # One pixel level is 2/255 = 0.008 after normalising to [-1, 1]: rounding, nowhere a shifted crop.
            assert (from_tensor - from_pil).abs().mean() < 0.004 and (from_tensor - from_pil).abs().max() < 0.15


@pytest.fixture(scope="module")
def cpu_features(photos, backbone):
    """The CPU path's features of the photos, the reference of each device path: computed once."""
    return features(PhotoEncoder(backbone, settings().image_backbone), photos)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.e2e)])  # processes start in seconds
def test_device_path_gives_the_cpu_features_within_tolerance(photos, backbone, cpu_features, workers):
    fast = PhotoEncoder(backbone, settings().image_backbone, precision="fp16", decode_on_device=True,
                        workers=workers, batch_size=2)
    done, expected, _ = cpu_features
    done_fast, got, skipped = features(fast, photos)
    assert done_fast == done == photos and not skipped  # order kept across loader processes and batches
    assert got.shape == expected.shape == (5, backbone.num_features)
    assert cosines(got, expected, backbone.widths).min() >= TOLERANCE
    if workers:
        return  # what follows does not depend on the loader
    exact = PhotoEncoder(backbone, settings().image_backbone, decode_on_device=True)  # fp32: only the decode differs
    assert cosines(features(exact, photos)[1], expected, backbone.widths).min() >= TOLERANCE
    png = photos.index(next(p for p in photos if p.suffix == ".png"))  # decoded by PIL on either path
    assert torch.allclose(features(exact, [photos[png]])[1], expected[png:png + 1], atol=1e-5)


def test_unreadable_files_are_named_or_skipped(photos, backbone, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)  # a JPEG's first bytes, then garbage
    missing = tmp_path / "gone.jpg"
    encoder = PhotoEncoder(backbone, settings().image_backbone, decode_on_device=True, precision="fp16")
    done, got, skipped = features(encoder, [photos[0], broken, missing, photos[1]], skip_unreadable=True)
    assert done == [photos[0], photos[1]] and got.shape[0] == 2
    assert dict(skipped)[missing] == "image file not found"
    assert dict(skipped)[broken].startswith("not a readable image")
    with pytest.raises(WsenseError, match="broken.jpg: not a readable image"):
        features(encoder, [photos[0], broken])


def test_embedding_device_settings(checkpoint):
    assert photo_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert photo_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(WsenseError, match="embedding.device: cuda, but torch sees no CUDA GPU"):
            photo_device("cuda")
        with pytest.raises(WsenseError, match="no CUDA GPU"):
            RelevanceScorer.from_checkpoint(checkpoint, settings(embedding__device="cuda")).photos  # noqa: B018
    for bad, message in [({"device": "tpu"}, "embedding.device must be one of auto, cpu, cuda"),
                         ({"gpu_precision": "int4"}, "gpu_precision one of fp32, bf16, fp16"),
                         ({"gpu_batch_size": 0}, "embedding.gpu_batch_size must be a whole number from 1"),
                         ({"loader_workers": -1}, "embedding.loader_workers must be a whole number from 0")]:
        with pytest.raises(WsenseError, match=message):
            config_from_dict({"embedding": bad}, "my.yaml")
    with pytest.raises(WsenseError, match="unknown precision 'fp8'"):
        PhotoEncoder(create_image_backbone(settings(image_backbone__pretrained=False).image_backbone),
                     settings().image_backbone, precision="fp8")
