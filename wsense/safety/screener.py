"""The image check on photo files (PhotoScreener): face analysis and frozen image features (both cached by content
hash), then the child classifier's verdicts. Also fits the classifier from the data set (`wsense fit-check`, or on
first use where the check shipped with wsense does not fit today's face analysis)."""
from __future__ import annotations

import copy
import dataclasses
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from wsense.config import Config, ImageBackboneConfig
from wsense.errors import WsenseError
from wsense.models.frozen_features import FrozenFeatures, backbone_fingerprints, image_fingerprint
from wsense.io import atomic_write_text, file_sha256
from wsense.data import load_image
from wsense.safety.faces import MAX_SIDE, FaceCache, PhotoFaces, analyze_photos, shared_analyzer
from wsense.safety.child_classifier import (CHECK_FILE, FACE_FEATURES, ChildClassifier, StaleCheck, Verdict,
                                            fit_child_classifier, photo_labels)


HANDED_LIMIT = 4096  # handed-over features kept for the faces analysed ahead: about 20 MB of Lite0's


def configured_classifier(config: Config) -> ChildClassifier:
    """The fitted check of safety.check with the policy and age limit of `config` (what decides, and its version)."""
    return ChildClassifier.load(config.safety.check, config.safety.uncertain).with_policy(config.safety.uncertain,
                                                                                   config.safety.child_age)


class FittedClassifier(NamedTuple):
    check: ChildClassifier
    labels: np.ndarray  # training photos: 1 shows a child
    scores: np.ndarray  # (seeds, photos) out-of-fold classifier scores
    faces: list[PhotoFaces]  # the training photos' face analyses
    paths: list[Path]  # the training photos the check was fitted on (those safety.labels knows either way)


@dataclass
class ScreenedPhoto:
    path: str | Path
    verdict: Verdict | None  # None when the photo could not be checked
    faces: PhotoFaces | None
    error: str | None = None

    def to_dict(self) -> dict:
        """One line of `wsense check-image`."""
        if self.verdict is None:
            return {"image": str(self.path), "child": None, "error": self.error}
        faces = [{"box": f.box, "age": f.age, "age_confidence": f.age_confidence, "gender": f.gender,
                  "face_score": f.score} for f in self.faces.faces]
        people = None if self.faces.people is None else len(self.faces.people)  # None: not looked for
        return {"image": str(self.path), **self.verdict.to_dict(), "faces": faces, "people": people}


class PhotoScreener:
    """A fitted check applied to photo files, with the settings (cache folder, runtimes, policy) of `config`."""

    def __init__(self, check: ChildClassifier, config: Config):
        self.check = check.with_policy(config.safety.uncertain, config.safety.child_age)
        self.feature_config = copy.deepcopy(config)
        # A check reads one backbone's features (checks saved before towers had more say nothing of others).
        self.feature_config.image_backbone = ImageBackboneConfig(**{"extra_backbones": [], **check.image_backbone})
        self.features = FrozenFeatures(self.feature_config)
        self.face_cache = FaceCache(config.cache_dir)
        self._handed: dict[str, np.ndarray] = {}  # features handed over until their photos are screened, by sha256

    @classmethod
    def from_config(cls, config: Config) -> "PhotoScreener":
        return cls(configured_classifier(config), config)

    @property
    def version(self) -> str:
        return self.check.version

    def shared_columns(self, model_config: Config) -> int | None:
        """How many leading columns of a model's pooled photo features are exactly the check's frozen features (a
        frozen-mode model whose first backbone is the check's pretrained one), so that indexing can hand them over
        instead of running the backbone twice; None where they are not."""
        if (model_config.training.mode == "frozen" and model_config.image_backbone.pretrained
                and backbone_fingerprints(model_config)[0] == self.check.feature_fingerprint):
            return len(self.check.mean) - len(FACE_FEATURES)
        return None

    def remember_features(self, hashes: Sequence[str], pooled: np.ndarray) -> None:
        """Hand over the check's frozen features of photos (by sha256) that a model computed (shared_columns)."""
        self.features.remember(hashes, pooled)
        # Kept for the faces analysed ahead (look for people?) while it stays small: where the face analysis lags
        # far behind the embedding, the photos past the limit are decided by screen_photos instead.
        room = max(HANDED_LIMIT - len(self._handed), 0)
        self._handed.update(list(zip(hashes, np.asarray(pooled)))[:room])

    def analyze_ahead(self, paths: Sequence[str | Path], hashes: Sequence[str]) -> "FacesAhead":
        """Start the face analysis of photos about to be screened, in a thread beside the caller's work (indexing
        embeds them meanwhile: the face models and the image tower then share the CPU's cores instead of taking
        turns). It looks for people where the photo's features, handed over, say they could change the verdict;
        screen_photos finds what it finished in the face cache, and looks for people where it could not tell."""
        return FacesAhead(self.face_cache, paths, hashes, self._people_needed)

    def _people_needed(self, key: str, faces: PhotoFaces) -> bool:
        features = self._handed.pop(key, None)  # None: not embedded yet, so screen_photos decides
        return features is not None and bool(self.check.people_could_matter(features[None], [faces])[0])

    def screen_photos(self, paths: Sequence[str | Path], *, hashes: Sequence[str] | None = None,
                     skip_unreadable: bool = True, progress: bool = True) -> list[ScreenedPhoto]:
        """One ScreenedPhoto per photo, in order; `hashes`: the files' sha256 where the caller has them already. An
        unreadable or too small photo is an error unless `skip_unreadable`, where its ScreenedPhoto names why. The
        people detector runs only on photos whose verdict it could change."""
        hashes = list(hashes) if hashes is not None else [file_sha256(p) for p in paths]
        self._handed.clear()  # what was handed over is in the feature cache, for this check and the next
        analyses = list(analyze_photos(paths, self.face_cache, hashes=hashes, skip_unreadable=skip_unreadable,
                                       desc="image check: faces", progress=progress, people=False))
        readable = [i for i, (_, faces, _) in enumerate(analyses) if faces is not None]
        if not readable:
            return [ScreenedPhoto(path, None, None, why) for path, _, why in analyses]
        features = self.features.images([Path(paths[i]) for i in readable], [hashes[i] for i in readable])
        look = [readable[j] for j in np.flatnonzero(self.check.people_could_matter(
            features, [analyses[i][1] for i in readable]))]
        for i, analysis in zip(look, analyze_photos([paths[i] for i in look], self.face_cache,
                                                    hashes=[hashes[i] for i in look], skip_unreadable=skip_unreadable,
                                                    desc="image check: people", progress=progress)):
            analyses[i] = analysis
        row = {i: j for j, i in enumerate(readable)}
        checked = [i for i in readable if analyses[i][1] is not None]  # a file can go between the two reads
        verdicts = dict(zip(checked, self.check.verdicts(features[[row[i] for i in checked]],
                                                         [analyses[i][1] for i in checked])))
        return [ScreenedPhoto(path, verdicts[i], faces) if i in verdicts else ScreenedPhoto(path, None, None, why)
                for i, (path, faces, why) in enumerate(analyses)]

    def screen_transient(self, path: str | Path, features: np.ndarray | None = None) -> ScreenedPhoto:
        """One photo checked without keeping anything of it (an upload): no face or feature cache entry is written.
        `features`: the check's frozen features of the photo where a model computed them (shared_columns). An
        unreadable or too small photo is an error."""
        image = load_image(Path(path), longer_side=MAX_SIDE)
        faces = shared_analyzer().analyze(image, people=False)
        if features is None:
            features = self.features.encode([Path(path)])
        if self.check.people_could_matter(features, [faces])[0]:
            faces.people = shared_analyzer().find_people(image)
        return ScreenedPhoto(path, self.check.verdicts(features, [faces])[0], faces)


class FacesAhead:
    """Face analyses of photos, made in a background thread into a FaceCache until `stop()`; `people(sha256,
    faces)` says whether to look for people in a photo."""

    def __init__(self, cache: FaceCache, paths: Sequence[str | Path], hashes: Sequence[str],
                 people: Callable[[str, PhotoFaces], bool]):
        self.cache, self.people, self._stop = cache, people, threading.Event()
        todo = [(path, key) for path, key in zip(paths, hashes) if key not in cache]
        self.thread = threading.Thread(target=self._run, args=(todo,), name="wsense-faces-ahead", daemon=True)
        if todo:
            self.thread.start()

    def _run(self, todo: list[tuple[str | Path, str]]) -> None:
        try:
            for _ in analyze_photos([path for path, _ in todo], self.cache, hashes=[key for _, key in todo],
                                    skip_unreadable=True, progress=False, people=self.people):
                if self._stop.is_set():
                    break
        except Exception:  # noqa: BLE001  (screen_photos analyses what is missing again, and reports any error)
            pass

    def stop(self) -> None:
        """Stop after the photo in hand; what is done stays in the cache (saved), and the check analyses the rest
        with its own progress bar."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join()


def training_photos(config: Config):
    """The data set, and the files and labels (1: shows a child) of its training photos that safety.labels knows
    either way: photos labelled unsure are left out of fitting and thresholds."""
    from wsense.data import load_data

    try:
        data = load_data(config.data_dir, check_images=False)
    except WsenseError as error:
        raise WsenseError(f"the image check is fitted on the data set's training photos, which are missing: "
                          f"{error}") from None
    labels = photo_labels(config.safety.labels)
    labels = labels[(labels["split"] == "train") & (labels["label"] != "unsure")]
    unknown = sorted(set(labels["image"]) - set(data.train_images))
    if unknown:
        raise WsenseError(f"{config.safety.labels}: {len(unknown)} labelled training photo(s) are not in the data "
                          f"set, e.g. {unknown[0]}")
    return (data, [data.train_image_dir / name for name in labels["image"]],
            (labels["label"] == "child").astype(int).to_numpy())


def fit_classifier_from_data(config: Config) -> FittedClassifier:
    """Fit the image check on the training photos and save it to safety.check. It reads the first image backbone's
    features alone: adding backbones to the search model leaves the check as it is."""
    start = time.perf_counter()
    config = copy.deepcopy(config)
    config.image_backbone = config.image_backbone.first_only()
    _, paths, labels = training_photos(config)
    features = FrozenFeatures(config).images(paths)
    faces = [faces for _, faces, _ in analyze_photos(paths, FaceCache(config.cache_dir),
                                                     desc="image check: faces of the training photos")]
    check, oof = fit_child_classifier(features, faces, labels, image_fingerprint(config),
                                 dataclasses.asdict(config.image_backbone), child_age=config.safety.child_age,
                                 c=config.safety.classifier_c, target_recall=config.safety.target_recall)
    path = check.save(config.safety.check)
    print(f"wsense: fitted the image check on {len(labels)} training photos ({int(labels.sum())} with children) in "
          f"{time.perf_counter() - start:.0f} s: {path}", file=sys.stderr)
    return FittedClassifier(check, labels, oof, faces, paths)


def load_or_fit_screener(config: Config) -> PhotoScreener:
    """The checker of safety.check, fitted here on first use when the folder has none (named, with its cost)."""
    why = None
    if not (Path(config.safety.check) / CHECK_FILE).is_file():
        why = f"no image check at {config.safety.check}"
    else:
        try:
            return PhotoScreener.from_config(config)
        except StaleCheck:  # an upgrade changed the face analysis: the old numbers would misjudge photos
            why = f"the image check at {config.safety.check} was fitted for an older face analysis"
    if use_shipped_check(config.safety.check):
        print(f"wsense: {why}: using the image check shipped with wsense (fitted on the With Sense training photos "
              "labelled by looking; `wsense fit-check` fits one from the data set)", file=sys.stderr)
    else:
        print(f"wsense: {why}: fitting it now on the training photos (once; about 4 minutes on 2 CPU cores, most of "
              "it reading faces)", file=sys.stderr)
        fit_classifier_from_data(config)
    return PhotoScreener.from_config(config)


def shipped_check_dir() -> Path:
    return Path(str(resources.files("wsense.safety") / "shipped_check"))


def use_shipped_check(folder: str | Path) -> bool:
    """Copy the check shipped with wsense into `folder` where it is one of today's face analysis (False where it
    is not, or missing: the check is then fitted from the data set)."""
    try:
        ChildClassifier.load(shipped_check_dir())
    except WsenseError:
        return False
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / CHECK_FILE, (shipped_check_dir() / CHECK_FILE).read_text(encoding="utf-8"))
    return True
