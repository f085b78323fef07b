"""The image-side legal check: does a photo show a child under 16? Decided from the photo alone.

Cues (wsense.safety.faces): faces with estimated ages, face sizes, people found by a body detector, and the
photo's frozen ImageNet features (the same features the search model is trained on). A logistic regression
learns from the training photos which of them show a child (labels from captions that match the photo: see
`child_photo_labels`), and its threshold is chosen on out-of-fold scores for a target recall. A photo is kept
out when

1. one of its faces the age model can read looks younger than `safety.child_age`, or
2. the classifier's score reaches the threshold, or
3. the photo is uncertain (people are seen, or faces too small or unclear to read, but no readable face) and
   `safety.uncertain` says so: `strict` (the default) judges it against a lower threshold of its own,
   `exclude` keeps every such photo out, `classifier` treats it like any other photo.

The fitted check is a small JSON file (`safety.check`): fitted on first use from the data set, like the search
checkpoint. Its version (a hash of the fitted numbers and the policy) is stored with each verdict in an index,
so a changed check re-checks the photos without re-embedding them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from wsense.config import UNCERTAIN_POLICIES
from wsense.errors import WsenseError
from wsense.io import atomic_write_text
from wsense.safety.faces import ANALYZER_VERSION, Face, PhotoFaces
from wsense.safety.rules import mentions_child

if TYPE_CHECKING:
    # pandas (75 MB, 0.4 s to import) only where a table is read: a server over its index never needs it
    import pandas as pd

CHECK_FORMAT = "wsense-child-check-1"
CHECK_FILE = "child_check.json"
READABLE_FACE_SCORE = 0.9  # MTCNN probability from which a face counts as a face
READABLE_FACE_PX = 16  # and its smaller side in pixels, below which the age model cannot read it
PERSON_WEIGHT = 0.5  # HOG detector weight from which a person box counts
FACE_FEATURES = ["faces", "has_face", "youngest_age", "young_faces", "young_share", "female_share",
                 "largest_face_area", "smallest_to_largest_face", "people", "people_without_faces", "unreadable_faces"]


def readable_faces(photo: PhotoFaces) -> list[Face]:
    return [f for f in photo.faces
            if f.score >= READABLE_FACE_SCORE and min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= READABLE_FACE_PX]


def people_seen(photo: PhotoFaces) -> int:
    """The person boxes that count; none where the people detector was not run (ChildClassifier.people_could_matter
    says when that cannot change a verdict)."""
    return sum(weight >= PERSON_WEIGHT for _, weight in photo.people or [])


def is_uncertain(photo: PhotoFaces) -> bool:
    """People in the photo (a body, or a face too small or unclear to read) but no face the age model can read."""
    return not readable_faces(photo) and (people_seen(photo) > 0 or len(photo.faces) > 0)


def has_young_face(photo: PhotoFaces, child_age: int) -> bool:
    return any(f.age < child_age for f in readable_faces(photo))


def face_features(photo: PhotoFaces, child_age: int) -> np.ndarray:
    """A fixed-length summary of one photo's faces and people (names in FACE_FEATURES)."""
    faces = readable_faces(photo)
    ages = np.array([f.age for f in faces], dtype=float)
    heights = np.array([f.box[3] - f.box[1] for f in faces], dtype=float)
    areas = np.array([(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces], dtype=float)
    young = int((ages < child_age).sum())
    people = people_seen(photo)
    return np.array([
        np.log1p(len(faces)),
        float(bool(faces)),
        ages.min() / 80 if faces else 1.0,
        np.log1p(young),
        young / len(faces) if faces else 0.0,
        np.mean([f.gender == "female" for f in faces]) if faces else 0.0,
        np.sqrt(areas.max() / (photo.width * photo.height)) if faces else 0.0,
        heights.min() / heights.max() if faces else 1.0,
        np.log1p(people),
        float(people > len(faces)),
        float(len(photo.faces) > len(faces)),
    ], dtype=np.float32)


@dataclass
class Verdict:
    child: bool  # the photo is kept out of results
    reason: str | None  # why, in words an operator can check; None when allowed
    score: float  # the classifier's score in [0, 1]
    uncertain: bool = False  # people seen but no face the age model can read

    def to_dict(self) -> dict:
        return {"child": self.child, "reason": self.reason, "score": round(self.score, 4),
                "uncertain": self.uncertain}


class StaleCheck(WsenseError):
    """A fitted check from another version of the face analysis: its numbers do not fit today's faces."""


@dataclass
class ChildClassifier:
    """A fitted check: standardisation and logistic regression over [image features, face features], and the
    thresholds of each uncertain-photo policy."""
    feature_fingerprint: str  # the frozen image features it reads (wsense.models.frozen_features.image_fingerprint)
    image_backbone: dict  # the image_backbone settings that make those features
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    # policy (UNCERTAIN_POLICIES) -> {"photo": threshold, "uncertain": threshold for uncertain photos}
    thresholds: dict[str, dict[str, float]]
    child_age: int = 16
    policy: str = "strict"
    fitted_on: dict = field(default_factory=dict)  # what it was fitted on and its cross-validated figures

    @property
    def threshold(self) -> float:
        return self.thresholds[self.policy]["photo"]

    @property
    def uncertain_threshold(self) -> float:
        """The classifier threshold for uncertain photos: 0 keeps them all out (exclude), the photo threshold
        treats them like the rest (classifier)."""
        if self.policy == "exclude":
            return 0.0
        if self.policy == "classifier":
            return self.threshold
        return self.thresholds[self.policy].get("uncertain", self.threshold)

    @property
    def version(self) -> str:
        """Changes whenever a verdict could: the fitted numbers, the policy, the age limit or the face analysis."""
        digest = hashlib.sha256()
        for array in (self.mean, self.scale, self.coef):
            digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        digest.update(json.dumps([self.intercept, self.threshold, self.uncertain_threshold, self.child_age,
                                  self.policy, ANALYZER_VERSION, self.feature_fingerprint]).encode())
        return f"{CHECK_FORMAT}-{digest.hexdigest()[:12]}"

    def scores(self, image_features: np.ndarray, faces: Sequence[PhotoFaces]) -> np.ndarray:
        """The classifier's score per photo, in [0, 1]."""
        return self._scores(_design(image_features, faces, self.child_age))

    def _scores(self, design: np.ndarray) -> np.ndarray:
        logits = ((design - self.mean) / self.scale) @ self.coef
        return 1.0 / (1.0 + np.exp(-(logits + self.intercept)))

    def people_could_matter(self, image_features: np.ndarray, faces: Sequence[PhotoFaces]) -> np.ndarray:
        """Per photo, whether the people detector could change its verdict: True only for an analysis made without
        it (people None) whose verdict differs somewhere between no person and the most the detector can return.
        People count through the two people features, monotone in the count on either side of the readable faces'
        number, and through the uncertain rule; so the verdicts at the ends of those ranges bound every other."""
        could = np.zeros(len(faces), bool)
        unknown = [i for i, photo in enumerate(faces)
                   if photo.people is None and not has_young_face(photo, self.child_age)]
        if not unknown:
            return could
        people, without_faces = (FACE_FEATURES.index(name) - len(FACE_FEATURES)
                                 for name in ("people", "people_without_faces"))
        design = _design(np.asarray(image_features)[unknown], [faces[i] for i in unknown], self.child_age)
        for row, i in zip(design, unknown):
            photo = faces[i]
            readable, most = len(readable_faces(photo)), photo.most_people()
            counts = np.array(sorted({count for count in (0, 1, readable, readable + 1, most) if count <= most}))
            rows = np.repeat(row[None], len(counts), axis=0)
            rows[:, people], rows[:, without_faces] = np.log1p(counts), counts > readable
            scores = self._scores(rows)
            uncertain = (readable == 0) & ((counts > 0) | (len(photo.faces) > 0))
            kept_out = (scores >= self.threshold) | (uncertain & (scores >= self.uncertain_threshold))
            could[i] = kept_out.min() != kept_out.max()
        return could

    def verdicts(self, image_features: np.ndarray, faces: Sequence[PhotoFaces]) -> list[Verdict]:
        if not len(faces):
            return []
        return [self.decide(photo, score) for photo, score in zip(faces, self.scores(image_features, faces))]

    def decide(self, photo: PhotoFaces, score: float) -> Verdict:
        faces = readable_faces(photo)
        young = [(i, f) for i, f in enumerate(faces) if f.age < self.child_age]
        uncertain = is_uncertain(photo)
        if young:
            i, face = min(young, key=lambda item: item[1].age)
            reason = (f"face {i + 1} of {len(faces)}: estimated age {face.age} (confidence {face.age_confidence}), "
                      f"under {self.child_age}")
            return Verdict(True, reason, float(score), uncertain)
        if score >= self.threshold:
            return Verdict(True, f"photo classifier: child score {score:.2f} (threshold {self.threshold:.2f})",
                           float(score), uncertain)
        if uncertain and score >= self.uncertain_threshold:
            people = people_seen(photo)
            seen = f"{people} person(s)" if people else f"{len(photo.faces)} unclear face(s)"
            why = ("safety.uncertain: exclude" if self.policy == "exclude" else
                   f"child score {score:.2f}, threshold for such photos {self.uncertain_threshold:.2f}")
            return Verdict(True, f"uncertain: {seen} seen but no face the age model can read ({why})",
                           float(score), uncertain)
        return Verdict(False, None, float(score), uncertain)

    def with_policy(self, policy: str, child_age: int | None = None) -> "ChildClassifier":
        if policy not in self.thresholds:
            raise WsenseError(f"safety.uncertain: '{policy}' has no fitted threshold (fitted: "
                              f"{', '.join(self.thresholds)})")
        return ChildClassifier(self.feature_fingerprint, self.image_backbone, self.mean, self.scale, self.coef,
                          self.intercept, self.thresholds, child_age or self.child_age, policy, self.fitted_on)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CHECK_FILE
        stored = {"format": CHECK_FORMAT, "analyzer": ANALYZER_VERSION, "features": self.feature_fingerprint,
                  "image_backbone": self.image_backbone, "face_features": FACE_FEATURES,
                  "child_age": self.child_age, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                  "coef": self.coef.tolist(), "intercept": self.intercept, "thresholds": self.thresholds,
                  "fitted_on": self.fitted_on}
        atomic_write_text(path, json.dumps(stored, indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path, policy: str = "strict") -> "ChildClassifier":
        path = Path(directory) / CHECK_FILE
        refit = "fit it again with `wsense fit-check`"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WsenseError(f"{path}: image check not found; `wsense fit-check` fits it from the data set") from None
        except (OSError, ValueError) as exc:
            raise WsenseError(f"{path}: damaged image check ({type(exc).__name__}); {refit}") from None
        if not isinstance(stored, dict) or stored.get("format") != CHECK_FORMAT:
            raise WsenseError(f"{path}: not a {CHECK_FORMAT} file; {refit}")
        if stored.get("analyzer") != ANALYZER_VERSION or stored.get("face_features") != FACE_FEATURES:
            raise StaleCheck(f"{path}: fitted for another face analysis ({stored.get('analyzer')}); {refit}")
        try:
            check = cls(stored["features"], dict(stored["image_backbone"]), np.array(stored["mean"], float),
                        np.array(stored["scale"], float), np.array(stored["coef"], float),
                        float(stored["intercept"]), stored["thresholds"], int(stored["child_age"]), policy,
                        stored.get("fitted_on", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise WsenseError(f"{path}: damaged image check ({type(exc).__name__}: {exc}); {refit}") from None
        if not (check.mean.ndim == 1 and len(check.mean) == len(check.scale) == len(check.coef)):
            raise WsenseError(f"{path}: damaged image check (feature lengths differ); {refit}")
        return check.with_policy(policy)


def child_photo_labels(data, images: Sequence[str] | None = None, expert_fit: float = 3.0,
                       crowd_fit: float = 0.5) -> pd.Series:
    """1 for a training photo that a matching caption says shows a child: its own captions, a caption the
    experts judged to fit it (mean score `expert_fit` or more, on 1-4) or most of the crowd did (share above
    `crowd_fit`). Indexed by image name."""
    import pandas as pd

    images = list(images) if images is not None else data.train_images
    matched = [data.captions[["image", "query_text"]],
               data.pairs.loc[data.pairs["expert_mean"] >= expert_fit, ["image", "query_text"]],
               data.crowd.loc[data.crowd["crowd_share"] > crowd_fit, ["image", "query_text"]]]
    texts = pd.concat(matched)
    texts = texts[texts["query_text"] != ""]
    verdicts = {text: mentions_child(text) for text in texts["query_text"].unique()}
    children = set(texts.loc[texts["query_text"].map(verdicts).astype(bool), "image"])
    return pd.Series([int(name in children) for name in images], index=images, name="child")


PHOTO_LABELS = ("child", "adult", "none", "unsure")


def photo_labels(path: str | Path) -> pd.DataFrame:
    """The labels made by looking (labels/photos.csv): columns image, split, label (PHOTO_LABELS), note, reviewers;
    one-line errors when the file is missing or malformed."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise WsenseError(f"safety.labels: {path} not found (what each data set photo shows, labelled by looking; "
                          "see labels/README.md)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise WsenseError(f"{path}: cannot read the photo labels ({exc})") from None
    missing = {"image", "split", "label"} - set(frame.columns)
    if missing:
        raise WsenseError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    bad = ~frame["label"].isin(PHOTO_LABELS)
    if bad.any():
        raise WsenseError(f"{path}: row {int(bad.to_numpy().argmax()) + 2}: label {frame['label'][bad].iloc[0]!r} is "
                          f"not one of {', '.join(PHOTO_LABELS)}")
    return frame


def own_caption_labels(data) -> pd.Series:
    """1 for a test photo whose own captions (the test queries) mention a child."""
    import pandas as pd

    verdicts = data.test_queries.groupby("image")["query_text"].apply(lambda texts: any(map(mentions_child, texts)))
    return pd.Series([int(verdicts.get(name, False)) for name in data.test_images], index=data.test_images,
                     name="child")


def rates(excluded: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Recall (child photos kept out) and false-positive rate (adult photos kept out)."""
    excluded, labels = np.asarray(excluded, bool), np.asarray(labels) == 1
    return {"recall": float(excluded[labels].mean()) if labels.any() else float("nan"),
            "fpr": float(excluded[~labels].mean()) if (~labels).any() else float("nan")}


def threshold_for_recall(scores: np.ndarray, labels: np.ndarray, forced: np.ndarray, target: float) -> float:
    """The highest classifier threshold at which the rule (forced | score >= t) keeps out at least `target` of
    the child photos; `forced` marks photos the other rules keep out anyway."""
    children = labels == 1
    free = np.sort(scores[children & ~forced])[::-1]  # child photos only the classifier can catch
    need = int(np.ceil(target * children.sum())) - int((children & forced).sum())
    if need <= 0 or not len(free):
        return 1.0
    return float(free[min(need, len(free)) - 1])


def policy_thresholds(scores: np.ndarray, labels: np.ndarray, young: np.ndarray, uncertain: np.ndarray,
                      policy: str, target: float) -> dict[str, float]:
    """The thresholds of one uncertain-photo policy that reach `target` recall with the fewest adult photos kept
    out: `exclude` and `classifier` have one; `strict` also searches the uncertain photos' own threshold."""
    if policy in ("exclude", "classifier"):
        forced = young | uncertain if policy == "exclude" else young
        return {"photo": threshold_for_recall(scores, labels, forced, target)}
    best = None
    for low in np.unique(np.append(scores[uncertain], 1.0)):
        forced = young | (uncertain & (scores >= low))
        high = threshold_for_recall(scores, labels, forced, target)
        kept_out = rates(forced | (scores >= high), labels)["fpr"]
        if best is None or kept_out < best[0]:
            best = (kept_out, {"photo": high, "uncertain": float(min(low, high))})
    return best[1]


def policy_exclusions(scores: np.ndarray, young: np.ndarray, uncertain: np.ndarray, policy: str,
                      thresholds: dict[str, float]) -> np.ndarray:
    """Which photos a policy's thresholds keep out: ChildClassifier.decide on arrays."""
    low = {"exclude": 0.0, "classifier": thresholds["photo"]}.get(policy, thresholds.get("uncertain", 1.0))
    return young | (scores >= thresholds["photo"]) | (uncertain & (scores >= low))


def _design(image_features: np.ndarray, faces: Sequence[PhotoFaces], child_age: int) -> np.ndarray:
    return np.hstack([image_features, np.stack([face_features(p, child_age) for p in faces])]).astype(np.float64)


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000)).fit(x, y)


def out_of_fold_scores(image_features: np.ndarray, faces: Sequence[PhotoFaces], labels: np.ndarray, *,
                       child_age: int, c: float, folds: int, seeds: Sequence[int]) -> np.ndarray:
    """(seeds, photos) out-of-fold classifier scores: each photo scored by a model fitted without it. Each photo
    is its own group: its captions and judgments only ever label it."""
    from sklearn.model_selection import StratifiedKFold

    x = _design(image_features, faces, child_age)
    out = np.zeros((len(seeds), len(labels)))
    for row, seed in enumerate(seeds):
        for train, valid in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels):
            out[row, valid] = _fit_logistic(x[train], labels[train], c).predict_proba(x[valid])[:, 1]
    return out


def fit_child_classifier(image_features: np.ndarray, faces: Sequence[PhotoFaces], labels: np.ndarray,
                    feature_fingerprint: str, image_backbone: dict, *, child_age: int, c: float,
                    target_recall: float, folds: int = 5, seeds: Sequence[int] = (0, 1)
                    ) -> tuple[ChildClassifier, np.ndarray]:
    """Fit the classifier on every training photo; each policy's thresholds are those that reach `target_recall`
    on out-of-fold scores (averaged over `seeds`). Returns the check and the out-of-fold scores (seeds, photos)."""
    labels = np.asarray(labels)
    if labels.min() == labels.max() or min(labels.sum(), (1 - labels).sum()) < folds:
        raise WsenseError(f"the image check needs at least {folds} photos with children and {folds} without, got "
                          f"{int(labels.sum())} and {int((1 - labels).sum())}")
    oof = out_of_fold_scores(image_features, faces, labels, child_age=child_age, c=c, folds=folds, seeds=seeds)
    young = np.array([has_young_face(p, child_age) for p in faces])
    uncertain = np.array([is_uncertain(p) for p in faces])
    thresholds = {}
    for policy in UNCERTAIN_POLICIES:
        per_seed = [policy_thresholds(s, labels, young, uncertain, policy, target_recall) for s in oof]
        thresholds[policy] = {key: float(np.mean([t[key] for t in per_seed])) for key in per_seed[0]}
    model = _fit_logistic(_design(image_features, faces, child_age), labels, c)
    scaler, logistic = model[0], model[1]
    check = ChildClassifier(feature_fingerprint, image_backbone, scaler.mean_, scaler.scale_, logistic.coef_[0],
                       float(logistic.intercept_[0]), thresholds, child_age,
                       fitted_on={"photos": int(len(labels)), "child_photos": int(labels.sum()), "C": c,
                                  "target_recall": target_recall, "folds": folds, "seeds": list(seeds)})
    return check, oof
