"""The image check's report: how many child photos it keeps out and how many adult photos it hides with them.

Everything is chosen on the training photos (out-of-fold scores, labels made by looking: labels/photos.csv); the
100 test photos are read once, for the figures beside them, under both the labels by looking and those the captions
give.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from wsense.config import UNCERTAIN_POLICIES, Config
from wsense.data import load_data
from wsense.safety.screener import PhotoScreener, fit_classifier_from_data
from wsense.safety.child_classifier import (PHOTO_LABELS, child_photo_labels, has_young_face, is_uncertain,
                                       own_caption_labels, photo_labels, policy_exclusions, policy_thresholds, rates)

RECALL_POINTS = (0.85, 0.90, 0.93, 0.95, 0.97, 0.99)


def _mean_sd(values) -> str:
    values = np.asarray(values, float)
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def _roc_png(path: Path, title: str, curves: list[tuple[str, np.ndarray, np.ndarray]],
             points: list[tuple[str, float, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.2, 5))
    for label, labels, scores in curves:
        fpr, tpr, _ = roc_curve(labels, scores)
        axes.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(labels, scores):.3f})")
    for label, fpr, recall in points:
        axes.plot([fpr], [recall], "o", label=f"{label}: {recall:.2f} kept out at {fpr:.2f} FP")
    axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.axhline(0.9, color="grey", lw=0.5)
    axes.axvline(0.35, color="grey", lw=0.5)
    axes.set(xlabel="adult photos kept out (false-positive rate)", ylabel="child photos kept out (recall)",
             title=title)
    axes.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _side_by_side(name: str, scores: np.ndarray, excluded: np.ndarray, labels: np.ndarray) -> dict:
    got = rates(excluded, labels)
    return {"photos": name, "child_photos": int(labels.sum()), "others": int((labels == 0).sum()), **got,
            "auc": float(roc_auc_score(labels, scores))}


def _disagreements(looked: pd.Series, captions: pd.Series) -> pd.DataFrame:
    """Photos by their label by looking (rows) and whether their captions say they show a child (columns)."""
    table = pd.crosstab(looked, captions.map({1: "captions: child", 0: "captions: no child"}))
    return table.reindex(index=[label for label in PHOTO_LABELS if label in table.index], fill_value=0)


def _markdown(table: pd.DataFrame) -> list[str]:
    return ["| by looking | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|",
            *[f"| {index} | " + " | ".join(str(v) for v in row) + " |" for index, row in table.iterrows()]]


def write_child_check_report(config: Config, out: Path) -> Path:
    """Fit the check on the training photos' labels by looking (saved to safety.check), measure it against those
    labels and the caption-derived ones, write child_check.{md,json} and ROC PNGs to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    check, labels, oof, faces, paths = fit_classifier_from_data(config)
    young = np.array([has_young_face(p, check.child_age) for p in faces])
    uncertain = np.array([is_uncertain(p) for p in faces])
    target = check.fitted_on["target_recall"]

    train = {"photos": len(labels), "child_photos": int(labels.sum()),
             "auc": [float(roc_auc_score(labels, s)) for s in oof],
             "rules": {"young face only": rates(young, labels), "uncertain only": rates(uncertain, labels)},
             "policies": {}, "curve": []}
    excluded_oof = {}
    for policy in UNCERTAIN_POLICIES:
        # Each seed's out-of-fold scores against the thresholds chosen on them: the cross-validated figures.
        per_seed = [policy_exclusions(s, young, uncertain, policy,
                                      policy_thresholds(s, labels, young, uncertain, policy, target)) for s in oof]
        excluded_oof[policy] = per_seed
        got = [rates(e, labels) for e in per_seed]
        train["policies"][policy] = {"recall": [r["recall"] for r in got], "fpr": [r["fpr"] for r in got],
                                     "thresholds": check.thresholds[policy]}
    mean_oof = oof.mean(axis=0)
    for point in RECALL_POINTS:
        cost = rates(policy_exclusions(mean_oof, young, uncertain, "strict", policy_thresholds(
            mean_oof, labels, young, uncertain, "strict", point)), labels)
        train["curve"].append({"target_recall": point, **cost})

    data = load_data(config.data_dir, check_images=False)
    looked = photo_labels(config.safety.labels).set_index("image")
    captions = pd.concat([child_photo_labels(data), own_caption_labels(data)])
    test_names = list(data.test_images)
    start = time.perf_counter()
    results = PhotoScreener(check, config).screen_photos([data.test_image_dir / n for n in test_names], progress=False)
    print(f"wsense: checked the {len(test_names)} test photos in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    test_scores = np.array([r.verdict.score for r in results])
    test_looked = looked.loc[test_names, "label"]
    known = (test_looked != "unsure").to_numpy()
    test_labels = (test_looked == "child").astype(int).to_numpy()
    test = {"photos": int(known.sum()), "child_photos": int(test_labels[known].sum()), "policies": {},
            "unsure": int((~known).sum())}
    test_excluded = {}
    for policy in UNCERTAIN_POLICIES:  # the score does not depend on the policy: only the decision is repeated
        decide = check.with_policy(policy).decide
        test_excluded[policy] = np.array([decide(r.faces, r.verdict.score).child for r in results])
        test["policies"][policy] = rates(test_excluded[policy][known], test_labels[known])
        test["policies"][policy]["missed"] = [n for n, child, kept in zip(test_names, test_labels,
                                                                           test_excluded[policy]) if child and not kept]
    test["auc"] = float(roc_auc_score(test_labels[known], test_scores[known]))
    test["rules"] = {"young face only": rates(np.array([has_young_face(r.faces, check.child_age) for r in results])[
        known], test_labels[known])}

    # Both label sets side by side, default policy: the training photos out of fold (seed 0), the test photos.
    train_names = [Path(p).name for p in paths]
    train_captions = captions.loc[train_names].to_numpy()
    test_captions = captions.loc[test_names].to_numpy()
    side = [_side_by_side("training, out of fold: labels by looking", oof[0], excluded_oof["strict"][0], labels),
            _side_by_side("training, out of fold: labels from captions", oof[0], excluded_oof["strict"][0],
                          train_captions),
            _side_by_side("test: labels by looking (unsure left out)", test_scores[known],
                          test_excluded["strict"][known], test_labels[known]),
            _side_by_side("test: labels from captions", test_scores, test_excluded["strict"], test_captions)]
    all_train = looked[looked["split"] == "train"]
    disagree = {"training": _disagreements(all_train["label"], captions.loc[all_train.index]),
                "test": _disagreements(test_looked, captions.loc[test_names])}
    test_disagree = [(n, looked.loc[n, "label"], looked.loc[n, "note"], int(captions.loc[n]))
                     for n in test_names if (looked.loc[n, "label"] == "child") != bool(captions.loc[n])
                     and looked.loc[n, "label"] != "unsure"]
    unsure_kept = int(test_excluded["strict"][~known].sum())

    strict = train["policies"]["strict"]
    _roc_png(out / "child_check_roc_train.png", "Image check, training photos (out of fold)",
             [(f"classifier, seed {i}", labels, s) for i, s in enumerate(oof)],
             [(f"{p} policy", float(np.mean(train["policies"][p]["fpr"])),
               float(np.mean(train["policies"][p]["recall"]))) for p in UNCERTAIN_POLICIES])
    _roc_png(out / "child_check_roc_test.png", "Image check, test photos (not tuned on)",
             [("classifier", test_labels[known], test_scores[known])],
             [(f"{p} policy", test["policies"][p]["fpr"], test["policies"][p]["recall"]) for p in UNCERTAIN_POLICIES])

    report = {"check": check.version, "target_recall": target, "train": train, "test": test,
              "side_by_side": side, "unsure_test_kept_out": unsure_kept,
              "disagreements": {k: v.to_dict() for k, v in disagree.items()}}
    (out / "child_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    lines = [
        "# Image check: photos of children kept out by looking at the photo",
        "",
        f"Check `{check.version}`, fitted on the {train['photos']} training photos that the labels made by looking "
        f"(`{config.safety.labels}`, [labels/README.md](../labels/README.md)) call either way: "
        f"{train['child_photos']} show a child, the others only adults or no one; photos labelled unsure are left "
        f"out. Thresholds are chosen on out-of-fold scores (5 folds, seeds {check.fitted_on['seeds']}) for a "
        f"recall of {target}; the test photos ({test['child_photos']} of {test['photos']} show a child by looking, "
        f"{test['unsure']} unsure) were not used for any choice. Written by `wsense evaluate --child-check`.",
        "",
        "Recall = child photos kept out; FP = photos without a child (adults or no one) kept out with them. On the "
        "training photos each seed's thresholds are chosen on its own out-of-fold scores, so the recall there is "
        "the target by construction and the FP is what reaching it costs; the test columns are the honest estimate.",
        "",
        "| safety.uncertain | training recall | training FP | test recall | test FP |",
        "|---|---|---|---|---|",
    ]
    for policy in UNCERTAIN_POLICIES:
        tr, te = train["policies"][policy], test["policies"][policy]
        default = " (default)" if policy == "strict" else ""
        lines.append(f"| {policy}{default} | {_mean_sd(tr['recall'])} | {_mean_sd(tr['fpr'])} | {te['recall']:.3f} | "
                     f"{te['fpr']:.3f} |")
    lines += [
        "",
        f"Classifier ROC AUC: training {_mean_sd(train['auc'])} (out of fold), test {test['auc']:.3f}. "
        f"The face-age rule alone: training {train['rules']['young face only']['recall']:.3f} recall at "
        f"{train['rules']['young face only']['fpr']:.3f} FP; keeping out every uncertain photo alone: "
        f"{train['rules']['uncertain only']['recall']:.3f} at {train['rules']['uncertain only']['fpr']:.3f}. "
        f"The default policy keeps out {unsure_kept} of the {test['unsure']} test photos labelled unsure "
        "(speed: benchmarks/image_check.py).",
        "",
        "## Both label sets side by side (default policy)",
        "",
        "The same verdicts, counted against the labels made by looking and against the labels the captions give "
        "(a training photo shows a child when its own captions, or one the experts or most of the crowd judged "
        "to fit, mention one; a test photo when its own captions do).",
        "",
        "| photos, labels | child photos | others | recall | FP | ROC AUC |",
        "|---|---|---|---|---|---|",
        *[f"| {row['photos']} | {row['child_photos']} | {row['others']} | {row['recall']:.3f} | {row['fpr']:.3f} | "
          f"{row['auc']:.3f} |" for row in side],
        "",
        "## Where the two label sets disagree",
        "",
        "Training photos:",
        "",
        *_markdown(disagree["training"]),
        "",
        "Test photos:",
        "",
        *_markdown(disagree["test"]),
        "",
        "Test photos where looking and the captions disagree (unsure left out):",
        "",
        "| photo | by looking | what decided it | captions say a child |",
        "|---|---|---|---|",
        *[f"| {n} | {label} | {note} | {'yes' if cap else 'no'} |" for n, label, note, cap in test_disagree],
        "",
        "## What each point of the default policy's curve costs",
        "",
        "Training photos, out of fold, mean score over seeds:",
        "",
        "| child photos kept out | photos without a child kept out |",
        "|---|---|",
        *[f"| {point['recall']:.3f} | {point['fpr']:.3f} |" for point in train["curve"]],
        "",
        "Test child photos the default policy lets through: "
        f"{', '.join(test['policies']['strict']['missed']) or 'none'}.",
        "",
        "![ROC, training photos](child_check_roc_train.png) ![ROC, test photos](child_check_roc_test.png)",
        "",
    ]
    md_path = out / "child_check.md"
    md_path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {md_path}, child_check.json and two ROC PNGs; default policy: training recall "
          f"{_mean_sd(strict['recall'])}, FP {_mean_sd(strict['fpr'])}", file=sys.stderr)
    return md_path
