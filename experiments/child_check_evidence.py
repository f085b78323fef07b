"""The image check's evidence and labels, measured on the training photos labelled by looking (issue 25's levers).

    python experiments/child_check_evidence.py            -> reports/child_check_evidence.{md,json}

Every variant is scored out of fold (5 stratified folds, seeds 0 and 1) on the training photos that
labels/photos.csv calls either way (unsure left out), against those labels: ROC AUC, and the share of photos
without a child kept out when the default rule (a readable face under 16, or the score from the threshold) keeps out
95% of the child photos.

- captions: the product's design (standardised logistic regression on Lite0's pooled features and the face
  features, C 0.003) fitted on the caption-derived labels, as main had it.
- looking: the same, fitted on the labels by looking (adopted).
- + lite2: EfficientNet-Lite2's pooled features beside Lite0's.
- + crops: evidence about each person: Lite0's pooled features of each face crop (the face box, 1.6 times its size),
  each body crop (from the face box: 3.5 face widths across, from 0.3 face heights above to 7.5 below) and each
  HOG person box, at 160 px; a logistic regression per crop kind, fitted on the crops of the training fold's photos
  labelled with their photo's label, gives each photo its largest crop score (multiple-instance learning), and a
  second-level model (logistic regression, or gradient-boosted trees that can learn interactions such as "a
  readable adult face lowers the scene's score") combines them with the scene score and the face features
  (including the oldest readable age and the number of adult faces), fitted on inner out-of-fold scores.

An experiment, not part of the product (nothing of it beyond the labels was adopted; docs/experiments.md).
"""
import copy
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from wsense.config import ImageBackboneConfig, load_config
from wsense.data import load_data
from wsense.models.frozen_features import FrozenFeatures
from wsense.io import file_sha256
from wsense.models import create_image_backbone
from wsense.safety.faces import FaceCache, analyze_photos
from wsense.safety.child_classifier import (child_photo_labels, face_features, has_young_face, photo_labels, rates,
                                       readable_faces, threshold_for_recall)

CROP_PX, SEEDS, FOLDS, TARGET = 160, (0, 1), 5, 0.95
warnings.filterwarnings("ignore", category=UserWarning)


def logistic(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=3000))


def crops_of(image: Image.Image, faces) -> list[tuple[str, Image.Image]]:
    out = []
    for face in sorted(readable_faces(faces), key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))[:4]:
        left, top, right, bottom = face.box
        w, h = right - left, bottom - top
        cx, cy, side = (left + right) / 2, (top + bottom) / 2, 1.6 * max(w, h)
        out.append(("face", (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)))
        out.append(("body", (cx - 1.75 * w, top - 0.3 * h, cx + 1.75 * w, top + 7.5 * h)))
    for box, weight in sorted(faces.people, key=lambda p: -p[1])[:3]:
        if weight >= 0.5:
            out.append(("person", tuple(box)))
    cut = []
    for kind, (left, top, right, bottom) in out:
        left, top, right, bottom = max(0, left), max(0, top), min(image.width, right), min(image.height, bottom)
        if right - left >= 4 and bottom - top >= 4:
            cut.append((kind, image.crop((round(left), round(top), round(right), round(bottom)))))
    return cut


def crop_features(paths, faces, cache: Path):
    if cache.is_file():
        stored = np.load(cache, allow_pickle=False)
        return pd.DataFrame({"photo": stored["photo"], "kind": stored["kind"]}), stored["features"]
    config = load_config("configs/default.yaml")
    backbone = create_image_backbone(config.image_backbone.first_only()).backbones[0].eval()
    rows, pixels = [], []
    for i, (path, photo) in enumerate(zip(paths, faces)):
        with Image.open(path) as image:
            for kind, crop in crops_of(image.convert("RGB"), photo):
                tensor = TF.pil_to_tensor(crop.resize((CROP_PX, CROP_PX), Image.Resampling.BILINEAR)).float() / 255
                pixels.append(TF.normalize(tensor, backbone.spec.mean, backbone.spec.std))
                rows.append((i, kind))
    with torch.inference_mode():
        features = np.concatenate([backbone(torch.stack(pixels[i:i + 64])).numpy()
                                   for i in range(0, len(pixels), 64)])
    meta = pd.DataFrame(rows, columns=["photo", "kind"])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, photo=meta["photo"].to_numpy(), kind=meta["kind"].to_numpy(), features=features)
    return meta, features


def ages(photo) -> np.ndarray:
    found = np.array([f.age for f in readable_faces(photo)], float)
    return np.array([found.max() / 80 if len(found) else 0.0, np.log1p((found >= 20).sum()),
                     float(len(found) > 0 and found.min() >= 20)])


def fp_at_target(scores, labels, forced):
    """The share of photos without a child kept out when the product's rule keeps out TARGET of the child photos."""
    threshold = threshold_for_recall(scores, labels, forced, TARGET)
    return rates(forced | (scores >= threshold), labels)["fpr"]


def labelled_training_photos(config):
    """The training photos labels/photos.csv calls either way (unsure left out): the data set, their labels (a
    frame), paths, file hashes and 0/1 labels (1: a child)."""
    data = load_data(config.data_dir, check_images=False)
    looked = photo_labels(config.safety.labels)
    looked = looked[(looked["split"] == "train") & (looked["label"] != "unsure")].reset_index(drop=True)
    paths = [data.train_image_dir / name for name in looked["image"]]
    return data, looked, paths, [file_sha256(p) for p in paths], (looked["label"] == "child").astype(int).to_numpy()


def product_evidence(config, paths, keys):
    """What the product's check reads of photos: Lite0's frozen features, the face analyses, their face features,
    and whether a readable face is under 16 (which keeps a photo out whatever the score)."""
    first = copy.deepcopy(config)
    first.image_backbone = config.image_backbone.first_only()
    faces = [f for _, f, _ in analyze_photos(paths, FaceCache(config.cache_dir), hashes=keys)]
    return (FrozenFeatures(first).images(paths, keys), faces, np.stack([face_features(p, 16) for p in faces]),
            np.array([has_young_face(p, 16) for p in faces]))


def main() -> None:
    config = load_config("configs/default.yaml")
    data, looked, paths, keys, y = labelled_training_photos(config)
    captions = child_photo_labels(data).loc[looked["image"]].to_numpy()
    lite0, faces, face, young = product_evidence(config, paths, keys)
    second = copy.deepcopy(config)
    second.image_backbone = ImageBackboneConfig(**{**vars(config.image_backbone.extra_backbones[0]),
                                                   "views": config.image_backbone.views, "extra_backbones": []})
    lite2 = FrozenFeatures(second).images(paths, keys)
    extra = np.stack([ages(p) for p in faces])
    meta, crops = crop_features(paths, faces, Path(config.cache_dir) / "experiments" / f"crops-{CROP_PX}.npz")

    def crop_scores(fit_photos, score_photos, kind):
        mask = (meta["kind"] == kind).to_numpy()
        fit = mask & meta["photo"].isin(fit_photos).to_numpy()
        model = logistic(0.003).fit(crops[fit], y[meta["photo"][fit]])
        score = mask & meta["photo"].isin(score_photos).to_numpy()
        best = pd.Series(model.predict_proba(crops[score])[:, 1]).groupby(meta["photo"][score].to_numpy()).max()
        return np.array([best.get(i, -1.0) for i in score_photos])

    def level_one(x, fit_photos, score_photos):
        scene = logistic(0.003).fit(x[fit_photos], y[fit_photos]).predict_proba(x[score_photos])[:, 1]
        return np.column_stack([scene] + [crop_scores(fit_photos, score_photos, k) for k in ("face", "body", "person")])

    def out_of_fold(x, labels, stacker=None):
        scores = []
        for seed in SEEDS:
            oof = np.zeros(len(y))
            for train, valid in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y):
                if stacker is None:
                    oof[valid] = logistic(0.003).fit(x[train], labels[train]).predict_proba(x[valid])[:, 1]
                    continue
                inner = np.zeros((len(train), 4))
                for fit, held in StratifiedKFold(FOLDS, shuffle=True, random_state=seed + 10).split(train, y[train]):
                    inner[held] = level_one(x, train[fit], train[held])
                model = stacker().fit(np.hstack([inner, face[train], extra[train]]), y[train])
                oof[valid] = model.predict_proba(np.hstack([level_one(x, train, valid), face[valid],
                                                            extra[valid]]))[:, 1]
            scores.append(oof)
        return scores

    with_faces = np.hstack([lite0, face])
    variants = {
        "captions (main)": out_of_fold(with_faces, captions),
        "looking (adopted)": out_of_fold(with_faces, y),
        "looking + lite2": out_of_fold(np.hstack([lite0, lite2, face]), y),
        "looking + crops, logistic stack": out_of_fold(lite0, y, lambda: logistic(1.0)),
        "looking + crops, boosted-tree stack": out_of_fold(lite0, y, lambda: HistGradientBoostingClassifier(
            max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0, min_samples_leaf=20,
            class_weight="balanced", random_state=0)),
    }
    rows = []
    for name, scores in variants.items():
        aucs = [roc_auc_score(y, s) for s in scores]
        fps = [fp_at_target(s, y, young) for s in scores]
        rows.append({"variant": name, "auc": aucs, "fp_at_95": fps})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["# The image check's evidence and labels (training photos, out of fold)", "",
             f"Written by `python experiments/child_check_evidence.py`: {len(y)} training photos labelled by looking "
             f"({int(y.sum())} with a child; unsure left out), {FOLDS} folds, seeds {list(SEEDS)}; FP = photos "
             f"without a child kept out when {TARGET:.0%} of the child photos are.", "",
             "| variant | ROC AUC | FP at 95% recall |", "|---|---|---|",
             *[f"| {r['variant']} | {np.mean(r['auc']):.3f} ± {np.std(r['auc']):.3f} | "
               f"{np.mean(r['fp_at_95']):.3f} ± {np.std(r['fp_at_95']):.3f} |" for r in rows], ""]
    Path("reports/child_check_evidence.md").write_text("\n".join(lines), encoding="utf-8")
    Path("reports/child_check_evidence.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
