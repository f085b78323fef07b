"""The image check's report: how many child photos it keeps out and how many adult photos it hides with them.

Everything is chosen on the 1,000 training photos (out-of-fold scores, labels from matching captions); the 100
test photos (labels from their own captions) are read once, for the figures beside them.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from wsense.config import UNCERTAIN_POLICIES, Config
from wsense.data import load_data
from wsense.safety.checker import PhotoChecker, fit_check_from_data
from wsense.safety.image_check import (has_young_face, is_uncertain, own_caption_labels, policy_exclusions,
                                       policy_thresholds, rates)

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


def write_child_check_report(config: Config, out: Path) -> Path:
    """Fit the check (saved to safety.check), measure it, write child_check.{md,json} and ROC PNGs to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    check, labels, oof, faces = fit_check_from_data(config)
    young = np.array([has_young_face(p, check.child_age) for p in faces])
    uncertain = np.array([is_uncertain(p) for p in faces])

    train = {"photos": len(labels), "child_photos": int(labels.sum()),
             "auc": [float(roc_auc_score(labels, s)) for s in oof],
             "rules": {"young face only": rates(young, labels), "uncertain only": rates(uncertain, labels)},
             "policies": {}, "curve": []}
    for policy in UNCERTAIN_POLICIES:
        # Each seed's out-of-fold scores against the thresholds chosen on them: the cross-validated figures.
        per_seed = [rates(policy_exclusions(s, young, uncertain, policy, policy_thresholds(
            s, labels, young, uncertain, policy, check.fitted_on["target_recall"])), labels) for s in oof]
        train["policies"][policy] = {"recall": [r["recall"] for r in per_seed], "fpr": [r["fpr"] for r in per_seed],
                                     "thresholds": check.thresholds[policy]}
    mean_oof = oof.mean(axis=0)
    for target in RECALL_POINTS:
        cost = rates(policy_exclusions(mean_oof, young, uncertain, "strict", policy_thresholds(
            mean_oof, labels, young, uncertain, "strict", target)), labels)
        train["curve"].append({"target_recall": target, **cost})

    data = load_data(config.data_dir, check_images=False)
    test_labels = own_caption_labels(data)
    test_paths = [data.test_image_dir / name for name in test_labels.index]
    test = {"photos": len(test_labels), "child_photos": int(test_labels.sum()), "policies": {}}
    start = time.perf_counter()
    results = PhotoChecker(check, config).check_photos(test_paths, progress=False)
    print(f"wsense: checked the {len(test_paths)} test photos in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    test_scores = np.array([r.verdict.score for r in results])
    for policy in UNCERTAIN_POLICIES:  # the score does not depend on the policy: only the decision is repeated
        decide = check.with_policy(policy).decide
        excluded = np.array([decide(r.faces, r.verdict.score).child for r in results])
        test["policies"][policy] = rates(excluded, test_labels.to_numpy())
        test["policies"][policy]["missed"] = [r.path.name for r, child, out in zip(results, test_labels, excluded)
                                              if child and not out]
    test["auc"] = float(roc_auc_score(test_labels, test_scores))
    test_young = np.array([has_young_face(r.faces, check.child_age) for r in results])
    test["rules"] = {"young face only": rates(test_young, test_labels.to_numpy())}

    strict = train["policies"]["strict"]
    _roc_png(out / "child_check_roc_train.png", "Image check, training photos (out of fold)",
             [(f"classifier, seed {i}", labels, s) for i, s in enumerate(oof)],
             [(f"{p} policy", float(np.mean(train["policies"][p]["fpr"])),
               float(np.mean(train["policies"][p]["recall"]))) for p in UNCERTAIN_POLICIES])
    _roc_png(out / "child_check_roc_test.png", "Image check, test photos (not tuned on)",
             [("classifier", test_labels.to_numpy(), test_scores)],
             [(f"{p} policy", test["policies"][p]["fpr"], test["policies"][p]["recall"]) for p in UNCERTAIN_POLICIES])

    report = {"check": check.version, "target_recall": check.fitted_on["target_recall"], "train": train,
              "test": test}
    (out / "child_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    lines = [
        "# Image check: photos of children kept out by looking at the photo",
        "",
        f"Check `{check.version}`, fitted on the {train['photos']} training photos ({train['child_photos']} show a "
        "child by a matching caption: their own, or one experts or most of the crowd judged to fit). Thresholds "
        f"are chosen on out-of-fold scores (5 folds, seeds {check.fitted_on['seeds']}) for a recall of "
        f"{check.fitted_on['target_recall']}; the {test['photos']} test photos ({test['child_photos']} show a child "
        "by their own captions) were not used for any choice. Written by `wsense evaluate --child-check`.",
        "",
        "Recall = child photos kept out; FP = adult photos kept out with them. On the training photos each seed's "
        "thresholds are chosen on its own out-of-fold scores, so the recall there is the target by construction and "
        "the FP is what reaching it costs; the test columns are the honest estimate.",
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
        f"{train['rules']['uncertain only']['recall']:.3f} at {train['rules']['uncertain only']['fpr']:.3f}.",
        "",
        "What each point of the default policy's curve costs (training photos, out of fold, mean score over seeds):",
        "",
        "| child photos kept out | adult photos kept out |",
        "|---|---|",
        *[f"| {point['recall']:.3f} | {point['fpr']:.3f} |" for point in train["curve"]],
        "",
        "Test child photos the default policy lets through (their captions: `test_queries.csv` of the data set): "
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
