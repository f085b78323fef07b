"""What a score has meant, and the curve that makes the ranking's score mean it.

Each cross-validation fold's checkpoint scores its own held-out expert pairs (photos and captions it never trained
on), through the query runtime search uses, by every ranking of search.ranking: the fusion head's relevance, the
cosine, and the cosine minus the query-bank offsets (the bank built without the fold's captions). Pooled over the
folds, an isotonic fit per ranking maps its score onto the experts' 0-1 scale: the score search shows
(wsense.models.calibration). The report bins the shown score of each fold by the curve fitted on the other folds,
so what it says was measured on pairs the curve never saw.

    python evaluate.py --reliability        (after python evaluate.py --cross-validate)
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from wsense.config import Config
from wsense.data import load_data
from wsense.errors import WsenseError
from wsense.models.calibration import ScoreCalibration, save_calibrations
from wsense.serving.scoring import RelevanceScorer, build_query_bank
from wsense.training.sets import build_training_sets

BINS = np.linspace(0.0, 1.0, 11)
READINGS = (0.3, 0.5, 0.8)  # the scores docs/search.md#scores explains
WIDTH = 0.05  # pairs within this of a reading count for it
RANKINGS = ("qb_cosine", "cosine", "fusion")


def held_out_scores(config: Config) -> pd.DataFrame:
    """One row per held-out expert pair of every fold: fold, image, query_text, expert_mean (1 to 4), and the
    pair's score under each ranking (columns named as in RANKINGS)."""
    data = load_data(config.data_dir)
    runs = Path(config.training.output_dir) / "cv"
    settings = copy.deepcopy(config)
    settings.search.ranking, settings.search.multilingual = "fusion", "none"  # the bank is built below, per fold
    frames = []
    for fold in range(config.baselines.folds):
        checkpoint = runs / f"fold{fold}" / "best"
        if not checkpoint.is_dir():
            raise WsenseError(f"{checkpoint}: no fold checkpoint; run `python evaluate.py --cross-validate` first")
        pairs = build_training_sets(data, config, fold).val_pairs
        scorer = RelevanceScorer.from_checkpoint(checkpoint, settings)
        images, texts = sorted(set(pairs["image"])), sorted(set(pairs["query_text"]))
        scorer.bank = build_query_bank(scorer, config, exclude_images=images)
        u = scorer.embed_images([data.train_image_dir / name for name in images], progress=False)
        v = scorer.embed_texts(texts)
        ui = pairs["image"].map({n: i for i, n in enumerate(images)}).to_numpy()
        vi = pairs["query_text"].map({t: i for i, t in enumerate(texts)}).to_numpy()
        fusion = scorer.relevance(v, u)[vi, ui]  # the fold's texts x images, read at its pairs
        cosine = (u[ui] * v[vi]).sum(axis=1)
        offsets = scorer.photo_offsets(u)[ui]
        experts = pairs[["expert1", "expert2", "expert3"]].to_numpy(float)
        frames.append(pd.DataFrame({"fold": fold, "image": pairs["image"].to_numpy(),
                                    "query_text": pairs["query_text"].to_numpy(), "fusion": fusion,
                                    "cosine": cosine, "qb_cosine": cosine - offsets,
                                    "expert_mean": experts.mean(axis=1)}))
        print(f"reliability: fold {fold + 1}/{config.baselines.folds} ({len(pairs)} pairs)", file=sys.stderr)
    return pd.concat(frames, ignore_index=True)


def expert_target(scores: pd.DataFrame) -> np.ndarray:
    return ((scores["expert_mean"] - 1) / 3).to_numpy()


def fit_calibrations(scores: pd.DataFrame) -> list[ScoreCalibration]:
    """One curve per ranking, fitted on the pairs of every fold."""
    return [ScoreCalibration.fit(ranking, scores[ranking].to_numpy(), expert_target(scores)) for ranking in RANKINGS]


def cross_fitted(scores: pd.DataFrame, ranking: str) -> np.ndarray:
    """Each fold's pairs through the curve fitted on the other folds' pairs: the shown score, measured honestly."""
    shown = np.zeros(len(scores))
    target = expert_target(scores)
    for fold in scores["fold"].unique():
        own = (scores["fold"] == fold).to_numpy()
        curve = ScoreCalibration.fit(ranking, scores.loc[~own, ranking].to_numpy(), target[~own])
        shown[own] = curve(scores.loc[own, ranking].to_numpy())
    return shown


def calibration_error(table: list[dict]) -> float:
    """The pairs-weighted mean gap between a bin's mean score and its experts' mean on the 0-1 scale."""
    pairs = sum(row["pairs"] for row in table)
    return sum(row["pairs"] * abs(row["mean_score"] - row["expert_target"]) for row in table) / max(pairs, 1)


def reliability_table(scores: pd.DataFrame) -> list[dict]:
    """Per score bin: pairs, mean score, the experts' mean judgment (1-4) and its target scale (0-1), and the
    share of pairs the experts judged a match (mean 3 or more) or no match at all (every expert 1)."""
    rows = []
    bins = np.clip(np.digitize(scores["score"], BINS[1:-1]), 0, len(BINS) - 2)
    for b in range(len(BINS) - 1):
        part = scores[bins == b]
        if not len(part):
            continue
        rows.append({"bin": f"{BINS[b]:.1f}-{BINS[b + 1]:.1f}", "pairs": int(len(part)),
                     "mean_score": float(part["score"].mean()), "expert_mean": float(part["expert_mean"].mean()),
                     "expert_target": float((part["expert_mean"].mean() - 1) / 3),
                     "match_share": float((part["expert_mean"] >= 3).mean()),
                     "no_match_share": float((part["expert_mean"] == 1).mean())})
    return rows


def readings(scores: pd.DataFrame) -> list[dict]:
    """What a score of 0.3, 0.5 and 0.8 has meant: the pairs scored within WIDTH of it."""
    out = []
    for value in READINGS:
        part = scores[(scores["score"] - value).abs() <= WIDTH]
        out.append({"score": value, "pairs": int(len(part)), "expert_mean": float(part["expert_mean"].mean()),
                    "match_share": float((part["expert_mean"] >= 3).mean()),
                    "no_match_share": float((part["expert_mean"] == 1).mean())})
    return out


def write_reliability_report(config: Config, out: Path, calibration_path: Path) -> Path:
    """Fit the score calibrations into `calibration_path` and write reports/reliability.{md,json,png}."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from scipy.stats import spearmanr

    scores = held_out_scores(config)
    folds, ranking = config.baselines.folds, config.search.ranking
    save_calibrations(calibration_path, fit_calibrations(scores),
                      f"isotonic fits on {len(scores)} held-out expert pairs of the {folds} cross-validation folds "
                      f"of {config.training.output_dir}/cv (python evaluate.py --reliability)")
    shown = scores.assign(score=cross_fitted(scores, ranking))
    fusion = scores.assign(score=scores["fusion"])
    table, meaning, fusion_table = reliability_table(shown), readings(shown), reliability_table(fusion)
    compared = [{"score": name, "calibration_error": calibration_error(rows),
                 "spearman": float(spearmanr(frame["score"], frame["expert_mean"]).statistic)}
                for name, rows, frame in ((f"shown ({ranking}, calibrated)", table, shown),
                                          ("fusion relevance (shown before)", fusion_table, fusion))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps({"ranking": ranking, "bins": table, "readings": meaning,
                                                      "fusion_bins": fusion_table, "compared": compared,
                                                      "pairs": int(len(scores))}, indent=1), encoding="utf-8")
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect calibration")
    axis.plot([r["mean_score"] for r in table], [r["expert_target"] for r in table], marker="o",
              label="shown score: expert mean, 0-1")
    axis.plot([r["mean_score"] for r in fusion_table], [r["expert_target"] for r in fusion_table], marker="^",
              linestyle="-.", label="fusion relevance: expert mean, 0-1")
    axis.plot([r["mean_score"] for r in table], [r["match_share"] for r in table], marker="s", linestyle=":",
              label="shown score: share judged a match")
    axis.set(xlabel="score", ylabel="experts", xlim=(0, 1), ylim=(0, 1),
             title=f"Reliability, {len(scores)} held-out pairs, {folds} folds")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "reliability.png", dpi=120)
    plt.close(figure)
    lines = ["# What a score has meant", "",
             f"Search ranks by `{ranking}` and shows that score mapped onto the experts' scale by an isotonic curve "
             f"(`{calibration_path.name}`, fitted on all folds' pairs), so scores never rise down a list. Each of the "
             f"{folds} cross-validation fold checkpoints (`{config.training.output_dir}/cv`) scored its own held-out "
             f"expert pairs (photos and captions it never trained on); {len(scores)} pairs pooled. Below, each "
             "fold's pairs went through the curve fitted on the other folds. Expert judgments are 1 (no match) to 4 "
             "(a match); the training target is (mean - 1) / 3. Written by `python evaluate.py --reliability`.", "",
             "![reliability](reliability.png)", "",
             f"| score (± {WIDTH}) | pairs | expert mean (1-4) | judged a match (mean ≥ 3) | no match at all (all 1) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['score']:.1f} | {r['pairs']} | {r['expert_mean']:.2f} | {r['match_share']:.0%} | "
              f"{r['no_match_share']:.0%} |" for r in meaning]
    lines += ["", "| score bin | pairs | mean score | expert mean (1-4) | as a target (0-1) | judged a match |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['bin']} | {r['pairs']} | {r['mean_score']:.3f} | {r['expert_mean']:.2f} | "
              f"{r['expert_target']:.3f} | {r['match_share']:.0%} |" for r in table]
    lines += ["", "| score | calibration error (mean gap, 0-1) | Spearman with the experts (all pairs pooled) |",
              "|---|---|---|"]
    lines += [f"| {r['score']} | {r['calibration_error']:.3f} | {r['spearman']:.3f} |" for r in compared]
    path = out / "reliability.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
