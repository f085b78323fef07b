"""Fine-tuning Lite0's last stages on the labels by looking, against the frozen features (issue 25's photo levers).

    python experiments/child_check_finetune.py [--from-stage 5] [--epochs 8]
        -> reports/child_check_finetune.{md,json}

The check's classifier reads Lite0's frozen ImageNet features, which describe the scene more than the people in it.
This fits the backbone's last stages to the question itself, out of fold on the training photos labelled either way
by looking (unsure left out), with the folds and seed of experiments/child_check_evidence.py:

- each photo's feature maps after the first stages (frozen: 80 channels on 14 x 14) are computed once for eight
  views (the product's five: centre, mirror, whole photo squeezed, both square ends; and the mirrors of the last
  three), and kept in the cache;
- per fold: the stages from --from-stage on, the 1x1 head convolution and a new logit are trained on the fold's
  training photos (every view a sample; AdamW, batch norm statistics frozen, the logit started from a logistic
  regression on the frozen pooled features: linear probe, then fine-tune); the held-out photos' score is the mean
  logit over the product's five views;
- reported: ROC AUC of that scene score and of the frozen scene score on the same folds, and of each beside the face
  features (a logistic regression on [scene logit, face features], inner out of fold), with the share of photos
  without a child kept out when the product's rule keeps out 95% of the child photos.

An experiment, not part of the product.
"""
import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from child_check_evidence import fp_at_target, labelled_training_photos, logistic, product_evidence
from wsense.config import load_config
from wsense.models.image import ImageViews, create_backbone

VIEWS = ("center", "flip", "full", "first", "last")
MIRRORED = ("full", "first", "last")  # their mirrors are the three extra training views
SEED, FOLDS, TARGET, CACHED_STAGES = 0, 5, 0.95, 4  # TARGET: child_check_evidence's
warnings.filterwarnings("ignore", category=UserWarning)


def early_maps(model, paths, cache: Path) -> np.ndarray:
    """(photos, 8 views, 80, 14, 14) fp16: the maps after the first CACHED_STAGES stages."""
    if cache.is_file():
        return np.load(cache)
    views = ImageViews(model.spec, model.image_size, VIEWS)
    out, start = [], time.time()
    with torch.inference_mode():
        for i, path in enumerate(paths):
            with Image.open(path) as image:
                pixels = views(image.convert("RGB"))
            pixels = torch.cat([pixels, pixels[[VIEWS.index(v) for v in MIRRORED]].flip(-1)])
            x = model.model.bn1(model.model.conv_stem(pixels))
            out.append(model.model.blocks[:CACHED_STAGES](x).half().numpy())
            if i % 100 == 0:
                print(f"maps {i}/{len(paths)} {time.time() - start:.0f} s", flush=True)
    maps = np.stack(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, maps)
    return maps


class Top(nn.Module):
    """The trainable end of Lite0: stages from `first` on, the head convolution, pooling and one logit."""

    def __init__(self, model, first: int):
        super().__init__()
        self.frozen = copy.deepcopy(model.blocks[CACHED_STAGES:first]).eval().requires_grad_(False)
        self.blocks = copy.deepcopy(model.blocks[first:])
        self.conv_head, self.bn2 = copy.deepcopy(model.conv_head), copy.deepcopy(model.bn2)
        self.logit = nn.Linear(model.num_features, 1)

    def pooled(self, maps):
        with torch.no_grad():
            maps = self.frozen(maps)
        return self.bn2(self.conv_head(self.blocks(maps))).mean((2, 3))

    def forward(self, maps):
        return self.logit(self.pooled(maps)).squeeze(-1)


def fine_tuned_scores(model, maps, y, frozen, train, valid, args) -> np.ndarray:
    torch.manual_seed(SEED)
    top = Top(model, args.from_stage)
    probe = logistic(args.c).fit(frozen[train], y[train])
    scaler, lr = probe[0], probe[1]
    # The probe's weights on standardised features, folded back to raw pooled features.
    weight = lr.coef_[0] / scaler.scale_
    with torch.no_grad():
        top.logit.weight.copy_(torch.from_numpy(weight).float()[None])
        top.logit.bias.fill_(float(lr.intercept_[0] - (scaler.mean_ * weight).sum()))
    parameters = [{"params": [*top.blocks.parameters(), *top.conv_head.parameters(), *top.bn2.parameters()],
                   "lr": args.lr}, {"params": top.logit.parameters(), "lr": args.lr * 10}]
    optimiser = torch.optim.AdamW(parameters, weight_decay=args.weight_decay)
    samples = np.array([(p, v) for p in train for v in range(maps.shape[1])])
    positive = y[train].mean()
    sample_weight = torch.from_numpy(np.where(y[samples[:, 0]] == 1, 0.5 / positive, 0.5 / (1 - positive))).float()
    rng = np.random.default_rng(SEED)
    for epoch in range(args.epochs):
        top.train()
        for module in top.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        order, total = rng.permutation(len(samples)), 0.0
        for start in range(0, len(order), args.batch):
            batch = order[start:start + args.batch]
            photos, view = samples[batch, 0], samples[batch, 1]
            inputs = torch.from_numpy(maps[photos, view].astype(np.float32))
            loss = (nn.functional.binary_cross_entropy_with_logits(
                top(inputs), torch.from_numpy(y[photos]).float(), reduction="none") * sample_weight[batch]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss) * len(batch)
        print(f"  epoch {epoch + 1} loss {total / len(order):.4f}", flush=True)
    top.eval()
    with torch.inference_mode():
        logits = [top(torch.from_numpy(maps[valid, v].astype(np.float32))).numpy() for v in range(len(VIEWS))]
    return np.mean(logits, axis=0)


def with_faces(scene, face, y) -> np.ndarray:
    """Out-of-fold scores of a logistic regression on [scene score, face features] (inner folds)."""
    x, oof = np.column_stack([scene, face]), np.zeros(len(y))
    for train, valid in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED + 10).split(x, y):
        oof[valid] = logistic(1.0).fit(x[train], y[train]).predict_proba(x[valid])[:, 1]
    return oof


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--from-stage", type=int, default=5, help="first trained stage (4, 5 or 6)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--c", type=float, default=0.003)
    parser.add_argument("--folds", type=int, default=FOLDS, help="how many of the folds to run (for a quick probe)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config("configs/default.yaml")
    _, _, paths, keys, y = labelled_training_photos(config)
    frozen, _, face, young = product_evidence(config, paths, keys)
    backbone = create_backbone(config.image_backbone.first_only().backbones()[0])
    maps = early_maps(backbone, paths, Path(config.cache_dir) / "experiments" / "lite0-stage4-maps.npy")
    tuned, probe = np.full(len(y), np.nan), np.full(len(y), np.nan)
    folds = list(StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(frozen, y))[:args.folds]
    for k, (train, valid) in enumerate(folds):
        start = time.time()
        probe[valid] = logistic(args.c).fit(frozen[train], y[train]).decision_function(frozen[valid])
        tuned[valid] = fine_tuned_scores(backbone.model, maps, y, frozen, train, valid, args)
        print(f"fold {k}: frozen {roc_auc_score(y[valid], probe[valid]):.3f} fine-tuned "
              f"{roc_auc_score(y[valid], tuned[valid]):.3f} ({time.time() - start:.0f} s)", flush=True)
    done = ~np.isnan(tuned)
    rows = []
    for name, scene in (("frozen features, logistic (the product's scene score)", probe),
                        (f"fine-tuned from stage {args.from_stage}", tuned)):
        row = {"variant": name, "auc": roc_auc_score(y[done], scene[done])}
        if done.all():
            both = with_faces(scene, face, y)
            row.update(auc_with_faces=roc_auc_score(y, both), fp_at_95_with_faces=fp_at_target(both, y, young))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if not done.all():
        return
    lines = ["# Fine-tuning Lite0's last stages for the image check (training photos, out of fold)", "",
             f"Written by `python experiments/child_check_finetune.py {' '.join(sys.argv[1:])}`: {len(y)} training "
             f"photos labelled by looking ({int(y.sum())} with a child), {FOLDS} folds, seed {SEED}; {vars(args)}. "
             f"FP = photos without a child kept out when {TARGET:.0%} of the child photos are.", "",
             "| scene score | ROC AUC, scene alone | ROC AUC, with the face features | FP at 95% recall |",
             "|---|---|---|---|",
             *[f"| {r['variant']} | {r['auc']:.3f} | {r['auc_with_faces']:.3f} | {r['fp_at_95_with_faces']:.3f} |"
               for r in rows], ""]
    Path("reports/child_check_finetune.md").write_text("\n".join(lines), encoding="utf-8")
    Path("reports/child_check_finetune.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1),
                                                         encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
