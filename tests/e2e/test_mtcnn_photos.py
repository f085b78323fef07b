"""End to end on the data set's test photos: the ONNX MTCNN (wsense/safety/mtcnn.py) finds the faces
facenet-pytorch's MTCNN finds, at the photos' own size and at the 1,024 px the image check analyses camera files at.
Every other test photo by name: half the cost of all 100, and at least half of its images show faces (asserted)."""
import importlib.util

import numpy as np
import pytest
from PIL import Image

from conftest import FULL_DATA, require
from wsense.data import load_data
from wsense.safety.faces import MAX_SIDE, MIN_FACE
from wsense.safety.mtcnn import MtcnnDetector

pytestmark = pytest.mark.full_data
SAME_FACE = 0.9  # IoU at which two boxes are one face


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matched(expected: np.ndarray, found: np.ndarray) -> int:
    """Faces of `expected` with a box of `found` at IoU >= SAME_FACE, each box of `found` used once."""
    free = list(range(len(found)))
    count = 0
    for box in expected:
        best = max(free, key=lambda j: iou(box, found[j]), default=None)
        if best is not None and iou(box, found[best]) >= SAME_FACE:
            free.remove(best)
            count += 1
    return count


def test_onnx_mtcnn_finds_the_faces_torch_mtcnn_finds_on_the_test_photos():
    require(importlib.util.find_spec("facenet_pytorch") is not None, "facenet-pytorch (the reference MTCNN)")
    from facenet_pytorch import MTCNN

    reference = MTCNN(keep_all=True, min_face_size=MIN_FACE, device="cpu")
    detector = MtcnnDetector(min_face_size=MIN_FACE)
    data = load_data(FULL_DATA, check_images=False)
    counts = {"faces": 0, "matched": 0, "extra": 0, "photos_with_faces": 0}
    worst_score = 0.0
    photos = sorted(data.test_images)[::2]
    for name in photos:
        with Image.open(data.test_image_dir / name) as photo:
            photo = photo.convert("RGB")
        scale = MAX_SIDE / max(photo.size)
        larger = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BILINEAR)
        for image in (photo, larger):
            expected, expected_scores = reference.detect(image)
            expected = np.zeros((0, 4)) if expected is None else np.asarray(expected, dtype=np.float32)
            found, scores = detector.detect(image)
            counts["faces"] += len(expected)
            counts["photos_with_faces"] += bool(len(expected))
            counts["matched"] += matched(expected, found)
            counts["extra"] += len(found) - matched(found, expected)
            if len(found) == len(expected) and len(found):
                worst_score = max(worst_score, float(np.abs(scores - np.asarray(expected_scores, np.float32)).max()))
    missed = counts["faces"] - counts["matched"]
    images = 2 * len(photos)
    print(f"MTCNN on {len(photos)} test photos at their size and at {MAX_SIDE} px: {counts['faces']} "
          f"faces by torch in {counts['photos_with_faces']} of the {images} images, {counts['matched']} matched by "
          f"ONNX at IoU >= {SAME_FACE}, {missed} missed, {counts['extra']} extra; probabilities within "
          f"{worst_score:.1g}")
    assert counts["photos_with_faces"] >= images // 2  # the photos show many faces: the comparison means something
    assert missed == 0 and counts["extra"] == 0
    assert worst_score < 1e-3
