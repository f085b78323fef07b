"""MTCNN face detection in ONNX Runtime and numpy: facenet-pytorch 2.6.0's `MTCNN.detect`, without torch.

The three networks ship as ONNX files in wsense/safety/mtcnn/ (exported by `python -m wsense.safety.mtcnn_export`
from facenet-pytorch's weights, MIT licence: see the README there). The steps around them follow facenet-pytorch's
`detect_face`: an image pyramid (faces from `min_face_size` px, scale factor 0.709), PNet over each level, box
regression and non-maximum suppression, then RNet on 24 px and ONet on 48 px crops of the candidates.

Resampling is torch's `interpolate(mode="area")` itself, adaptive average pooling, computed from one integral
image of the photo for every pyramid level and every crop (OpenCV's INTER_AREA weights pixels by fractional
overlap, which moves scores near a threshold).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsense.errors import WsenseError
from wsense.onnx_session import cpu_session

MODEL_DIR = Path(__file__).resolve().parent / "mtcnn"
NETWORKS = ("pnet", "rnet", "onet")
THRESHOLDS = (0.6, 0.7, 0.7)  # face probability each stage keeps, as facenet-pytorch's MTCNN
PYRAMID_FACTOR = 0.709
CELL, STRIDE = 12, 2  # PNet sees 12 px windows, two pixels apart
REFINE_SIZE, OUTPUT_SIZE = 24, 48  # RNet's and ONet's input crops


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float = PYRAMID_FACTOR) -> list[float]:
    """The scales at which PNet's 12 px window covers faces from `min_face_size` px up to the shorter side."""
    scale = CELL / min_face_size
    shorter = min(height, width) * scale
    scales = []
    while shorter >= CELL:
        scales.append(scale)
        scale *= factor
        shorter *= factor
    return scales


def pooling_bins(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive average pooling's bins (as torch computes them) of spans [start, start + length) into `size`
    outputs: first and past-last input index, each (spans, size)."""
    i = np.arange(size)
    length = np.asarray(length)[..., None]
    first = (i * length) // size
    past = -((-(i + 1) * length) // size)  # ceiling division
    return np.asarray(start)[..., None] + first, np.asarray(start)[..., None] + past


def normalised(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Pixel sums over `count` pixels -> their mean in MTCNN's input range, float32."""
    return ((total.astype(np.float32) / count.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)


def integral_image(pixels: np.ndarray) -> np.ndarray:
    """Channels-first integral image (3, height + 1, width + 1) of an RGB uint8 photo: every area mean below is
    four look-ups in it."""
    import cv2

    # Exact integer sums: int32 holds them while the photo has fewer than 2**31 / 255 pixels.
    depth = cv2.CV_32S if pixels.shape[0] * pixels.shape[1] * 255 < 2 ** 31 else cv2.CV_64F
    return np.ascontiguousarray(cv2.integral(pixels, sdepth=depth).transpose(2, 0, 1))


def level_pixels(integral: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole photo area-resampled to height x width: (1, 3, height, width), normalised."""
    r0, r1 = pooling_bins(0, integral.shape[1] - 1, height)
    c0, c1 = pooling_bins(0, integral.shape[2] - 1, width)
    band = integral[:, r1] - integral[:, r0]  # whole rows first: row copies are cheap, column look-ups are not
    total = np.take(band, c1, axis=2) - np.take(band, c0, axis=2)
    return normalised(total, (r1 - r0)[:, None] * (c1 - c0)[None, :])[None]


def crop_pixels(integral: np.ndarray, corner: np.ndarray, span: np.ndarray, size: int) -> np.ndarray:
    """Crops (corner x, y and span width, height, in whole pixels) area-resampled to size x size:
    (crops, 3, size, size), normalised."""
    flat = integral.reshape(len(integral), -1)
    stride = integral.shape[2]
    r0, r1 = (edge[:, :, None] * stride for edge in pooling_bins(corner[:, 1], span[:, 1], size))
    c0, c1 = (edge[:, None, :] for edge in pooling_bins(corner[:, 0], span[:, 0], size))
    total = (np.take(flat, r1 + c1, axis=1) - np.take(flat, r0 + c1, axis=1)
             - np.take(flat, r1 + c0, axis=1) + np.take(flat, r0 + c0, axis=1))
    pixels = normalised(total, (r1 - r0) // stride * (c1 - c0))
    return np.ascontiguousarray(pixels.transpose(1, 0, 2, 3))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, smaller: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best first. Overlap is intersection over union as in
    torchvision's `nms` (OpenCV's, which sorts ties stably too); `smaller`: intersection over the smaller box,
    pixel-inclusive, as facenet-pytorch's 'Min' NMS."""
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    if not smaller:
        import cv2

        corner_size = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1).astype(np.float64)
        # Every box here passed a stage's threshold, so a score threshold of 0 leaves them all in, as torchvision
        kept = cv2.dnn.NMSBoxes(corner_size, scores.astype(np.float64), 0.0, threshold)
        return np.asarray(kept, dtype=np.int64).reshape(-1)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        order = rest[width * height / np.minimum(areas[best], areas[rest]) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def window_boxes(offsets: np.ndarray, probs: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """PNet's windows over `threshold` as rows (x1, y1, x2, y2, score, 4 offsets) in the photo's pixels."""
    rows, cols = np.nonzero(probs >= threshold)
    corner = np.stack([cols, rows], axis=1).astype(np.float32)
    first = np.floor((STRIDE * corner + 1) / scale)
    last = np.floor((STRIDE * corner + CELL) / scale)
    return np.concatenate([first, last, probs[rows, cols, None], offsets[:, rows, cols].T], axis=1).astype(np.float32)


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box widened to a square about its centre (facenet-pytorch's `rerec`)."""
    boxes = boxes.copy()
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    boxes[:, 0] += width * 0.5 - side * 0.5
    boxes[:, 1] += height * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def regressed(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by RNet's or ONet's offsets, in units of the pixel-inclusive box size (`bbreg`)."""
    boxes = boxes.copy()
    size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1] * 2, axis=1)
    boxes[:, :4] += offsets * size
    return boxes


def crop_spans(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-pixel spans of the boxes inside the photo (facenet-pytorch's `pad`): (x, y) of the first pixel, the
    spans' width and height, and which boxes have any pixel inside."""
    edges = np.trunc(boxes[:, :4]).astype(np.int64)
    x = np.maximum(edges[:, 0], 1) - 1
    y = np.maximum(edges[:, 1], 1) - 1
    right, bottom = np.minimum(edges[:, 2], width), np.minimum(edges[:, 3], height)
    inside = (right > x) & (bottom > y)
    return np.stack([x, y], axis=1), np.stack([right - x, bottom - y], axis=1), inside


class MtcnnDetector:
    """Callable like facenet-pytorch's `MTCNN(keep_all=True).detect`: face boxes (x1, y1, x2, y2) in the photo's
    pixels, largest first, with their face probabilities (and five landmarks per face on request)."""

    def __init__(self, min_face_size: int = 20, model_dir: str | Path | None = None, threads: int | None = None):
        self.min_face_size = min_face_size
        threads = threads or min(2, os.cpu_count() or 1)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise WsenseError("the face detector needs onnxruntime, which is not installed: pip install "
                              "onnxruntime") from None
        self.sessions = {}
        for name in NETWORKS:
            path = Path(model_dir or MODEL_DIR) / f"{name}.onnx"
            if not path.is_file():
                raise WsenseError(f"{path}: the face detector's {name} network is missing; reinstall wsense")
            try:
                self.sessions[name] = cpu_session(path, threads)
            except Exception as error:  # onnxruntime raises its own exception types for unreadable models
                raise WsenseError(f"{path}: damaged face detector network ({type(error).__name__}); reinstall "
                                  "wsense") from None

    def run(self, name: str, pixels: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, {"pixels": pixels})

    def detect(self, image: Image.Image | np.ndarray, landmarks: bool = False):
        """(boxes (n, 4), probabilities (n,)[, landmarks (n, 5, 2)]) as float32 arrays; n may be 0."""
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image,
                                                 dtype=np.uint8))
        height, width = pixels.shape[:2]
        integral = integral_image(pixels)
        boxes = self.candidates(integral, height, width)
        boxes = self.refine(integral, boxes, width, height)
        boxes, points = self.output(integral, boxes, width, height)
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        found = (boxes[order, :4], boxes[order, 4])
        return (*found, points[order]) if landmarks else found

    def candidates(self, integral: np.ndarray, height: int, width: int) -> np.ndarray:
        """PNet over the pyramid: windows over the first threshold, suppressed within each level and then across
        levels, moved by PNet's offsets and squared."""
        levels = []
        for scale in pyramid_scales(height, width, self.min_face_size):
            pixels = level_pixels(integral, int(height * scale + 1), int(width * scale + 1))
            offsets, probs = self.run("pnet", pixels)
            found = window_boxes(offsets[0], probs[0, 1], scale, THRESHOLDS[0])
            levels.append(found[nms(found[:, :4], found[:, 4], 0.5)])
        boxes = np.concatenate(levels) if levels else np.zeros((0, 9), np.float32)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        size = boxes[:, 2:4] - boxes[:, 0:2]  # PNet's offsets are in units of the pixel-exclusive size
        moved = np.concatenate([boxes[:, 0:2] + boxes[:, 5:7] * size, boxes[:, 2:4] + boxes[:, 7:9] * size,
                                boxes[:, 4:5]], axis=1)
        return square(moved)

    def crops(self, integral: np.ndarray, boxes: np.ndarray, width: int, height: int, size: int):
        """The boxes with any pixel in the photo, and their crops resampled to size x size."""
        corner, span, inside = crop_spans(boxes, width, height)
        return boxes[inside], crop_pixels(integral, corner[inside], span[inside], size)

    def refine(self, integral: np.ndarray, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """RNet's verdict on each candidate: those over the second threshold, suppressed, moved and squared."""
        if not len(boxes):
            return boxes
        boxes, pixels = self.crops(integral, boxes, width, height, REFINE_SIZE)
        if not len(boxes):
            return boxes
        offsets, probs = self.run("rnet", pixels)
        keep = probs[:, 1] > THRESHOLDS[1]
        boxes = np.concatenate([boxes[keep, :4], probs[keep, 1:2]], axis=1)
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        return square(regressed(boxes[pick], offsets[keep][pick]))

    def output(self, integral: np.ndarray, boxes: np.ndarray, width: int, height: int):
        """ONet's verdict: faces over the third threshold, moved, with landmarks, overlaps suppressed by the
        smaller box's area."""
        if len(boxes):
            boxes, pixels = self.crops(integral, boxes, width, height, OUTPUT_SIZE)
        if not len(boxes):
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        offsets, marks, probs = self.run("onet", pixels)
        keep = probs[:, 1] > THRESHOLDS[2]
        boxes = np.concatenate([boxes[keep, :4], probs[keep, 1:2]], axis=1)
        size = boxes[:, 2:4] - boxes[:, 0:2] + 1
        points = np.stack([size[:, None, 0] * marks[keep, :5] + boxes[:, None, 0] - 1,
                           size[:, None, 1] * marks[keep, 5:] + boxes[:, None, 1] - 1], axis=2)
        boxes = regressed(boxes, offsets[keep])
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7, smaller=True)
        return boxes[pick], points[pick]
