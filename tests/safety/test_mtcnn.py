"""MTCNN in ONNX Runtime (wsense/safety/mtcnn.py): the shipped networks compute what facenet-pytorch's do, the
steps around them reproduce its `detect_face`, the detector finds the same faces, a missing or damaged network is a
one-line error, and checking a photo loads no torch. The boxes on the data set's photos:
tests/e2e/test_mtcnn_photos.py."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import require
from wsense.errors import WsenseError
from wsense.safety import mtcnn
from wsense.safety.faces import FaceAnalyzer
from wsense.safety.mtcnn import MtcnnDetector, crop_pixels, integral_image, level_pixels, nms


@pytest.fixture(scope="module")
def torch_mtcnn():
    require(importlib.util.find_spec("facenet_pytorch") is not None, "facenet-pytorch (the reference MTCNN)")
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, min_face_size=20, device="cpu")


@pytest.fixture(scope="module")
def detector():
    return MtcnnDetector()


def portrait() -> Image.Image:
    """A real face: matplotlib's sample portrait (matplotlib is a dependency)."""
    from matplotlib import cbook

    return Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")


def group_photo() -> Image.Image:
    """Four copies of the portrait at four sizes on one canvas: faces from about 30 to 250 px."""
    face = portrait()
    canvas = Image.new("RGB", (900, 640), (90, 110, 130))
    for (x, y), side in zip([(0, 0), (520, 10), (540, 400), (700, 420)], [620, 300, 160, 90]):
        canvas.paste(face.resize((round(side * face.width / face.height), side)), (x, y))
    return canvas


def test_each_shipped_network_computes_what_the_torch_network_does(torch_mtcnn):
    import onnxruntime
    import torch

    rng = np.random.default_rng(0)
    shapes = {"pnet": (3, 3, 57, 41), "rnet": (7, 3, 24, 24), "onet": (7, 3, 48, 48)}
    for name, shape in shapes.items():
        pixels = rng.uniform(-1, 1, shape).astype(np.float32)
        with torch.no_grad():
            expected = [t.numpy() for t in getattr(torch_mtcnn, name)(torch.from_numpy(pixels))]
        session = onnxruntime.InferenceSession(str(mtcnn.MODEL_DIR / f"{name}.onnx"),
                                               providers=["CPUExecutionProvider"])
        found = session.run(None, {"pixels": pixels})
        assert [f.shape for f in found] == [e.shape for e in expected], name
        for f, e in zip(found, expected):
            np.testing.assert_allclose(f, e, atol=1e-4, err_msg=name)


def test_resampling_is_torchs_area_interpolation():
    import torch
    from torch.nn.functional import interpolate

    pixels = np.random.default_rng(1).integers(0, 256, (53, 71, 3), dtype=np.uint8)
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    integral = integral_image(pixels)
    for size in [(38, 51), (27, 36), (60, 80)]:  # smaller and larger than the photo
        expected = (interpolate(image, size=size, mode="area") - 127.5) * 0.0078125
        np.testing.assert_allclose(level_pixels(integral, *size), expected.numpy(), atol=1e-5)
    corner, span = np.array([[3, 5], [0, 0], [40, 20]]), np.array([[30, 30], [71, 53], [9, 11]])
    crops = crop_pixels(integral, corner, span, 24)
    for crop, (x, y), (w, h) in zip(crops, corner, span):
        expected = (interpolate(image[:, :, y:y + h, x:x + w], size=(24, 24), mode="area") - 127.5) * 0.0078125
        np.testing.assert_allclose(crop, expected[0].numpy(), atol=1e-5)


def test_suppression_keeps_what_torchvision_and_facenet_pytorch_keep():
    import torch
    from facenet_pytorch.models.utils.detect_face import nms_numpy
    from torchvision.ops import nms as torchvision_nms

    rng = np.random.default_rng(2)
    corners = rng.uniform(0, 200, (400, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(10, 60, (400, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0.6, 1, 400).astype(np.float32)
    for threshold in (0.5, 0.7):
        expected = torchvision_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        assert nms(boxes, scores, threshold).tolist() == expected.tolist()
    expected = nms_numpy(boxes, scores, 0.7, "Min")
    assert sorted(nms(boxes, scores, 0.7, smaller=True).tolist()) == sorted(expected.tolist())


def test_the_detector_finds_the_faces_torch_mtcnn_finds(detector, torch_mtcnn):
    for image in (portrait(), group_photo()):
        expected, expected_scores = (np.asarray(found, dtype=np.float32) for found in torch_mtcnn.detect(image))
        boxes, scores = detector.detect(image)
        assert boxes.shape == expected.shape and len(boxes) >= 1
        np.testing.assert_allclose(boxes, expected, atol=0.01)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
    boxes, scores, points = detector.detect(group_photo(), landmarks=True)
    assert len(boxes) == 4 and points.shape == (4, 5, 2)
    assert ((points >= boxes[:, None, :2]) & (points <= boxes[:, None, 2:])).all()  # eyes, nose, mouth inside


def test_a_photo_without_faces_gives_empty_arrays(detector):
    noise = np.random.default_rng(3).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    boxes, scores = detector.detect(noise)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    boxes, scores = detector.detect(np.zeros((15, 15, 3), np.uint8))  # smaller than one PNet window
    assert boxes.shape == (0, 4)


def test_a_missing_or_damaged_network_is_a_one_line_error(tmp_path, monkeypatch):
    for name in ("pnet", "onet"):
        (tmp_path / f"{name}.onnx").write_bytes((mtcnn.MODEL_DIR / f"{name}.onnx").read_bytes())
    monkeypatch.setattr(mtcnn, "MODEL_DIR", tmp_path)
    with pytest.raises(WsenseError, match=r"rnet.onnx: the face detector's rnet network is missing") as missing:
        FaceAnalyzer()
    (tmp_path / "rnet.onnx").write_bytes(b"not a network")
    with pytest.raises(WsenseError, match=r"rnet.onnx: damaged face detector network .*reinstall") as damaged:
        FaceAnalyzer()
    assert "\n" not in str(missing.value) + str(damaged.value)


def test_checking_a_photo_loads_no_torch(tmp_path):
    group_photo().save(tmp_path / "group.jpg")
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from wsense.data import load_image\n"
            "from wsense.safety.faces import FaceAnalyzer\n"
            f"faces = FaceAnalyzer().analyze(load_image(Path({str(tmp_path / 'group.jpg')!r})))\n"
            "print(len(faces.faces), 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["4", "False"]
