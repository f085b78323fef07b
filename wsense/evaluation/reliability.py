"""What a relevance score has meant: the fusion score of held-out pairs against the experts' mean judgment.

Each cross-validation fold's checkpoint scores its own held-out expert pairs (photos and captions it never trained
on), through the query runtime search uses; the pairs of all folds are pooled and binned by score.

    python evaluate.py --reliability        (after python evaluate.py --cross-validate)
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wsense.config import Config
from wsense.data import load_data
from wsense.errors import WsenseError
from wsense.serving.scoring import RelevanceScorer
from wsense.training.sets import build_training_sets

BINS = np.linspace(0.0, 1.0, 11)
READINGS = (0.3, 0.5, 0.8)  # the scores the README explains
WIDTH = 0.05  # pairs within this of a reading count for it


def held_out_scores(config: Config) -> pd.DataFrame:
    """One row per held-out expert pair of every fold: fold, image, query_text, score, expert_mean (1 to 4)."""
    data = load_data(config.data_dir)
    runs = Path(config.training.output_dir) / "cv"
    settings = copy.deepcopy(config)
    settings.search.ranking, settings.search.multilingual = "fusion", "none"  # the scores alone: no bank, no map
    frames = []
    for fold in range(config.baselines.folds):
        checkpoint = runs / f"fold{fold}" / "best"
        if not checkpoint.is_dir():
            raise WsenseError(f"{checkpoint}: no fold checkpoint; run `python evaluate.py --cross-validate` first")
        pairs = build_training_sets(data, config, fold).val_pairs
        scorer = RelevanceScorer.from_checkpoint(checkpoint, settings)
        images, texts = sorted(set(pairs["image"])), sorted(set(pairs["query_text"]))
        u = scorer.embed_images([data.train_image_dir / name for name in images], progress=False)
        v = scorer.embed_texts(texts)
        ui = torch.tensor(pairs["image"].map({n: i for i, n in enumerate(images)}).to_numpy())
        vi = torch.tensor(pairs["query_text"].map({t: i for i, t in enumerate(texts)}).to_numpy())
        with torch.inference_mode():
            scores = torch.sigmoid(scorer.model.fuse(u[ui], v[vi]).float()).numpy()
        experts = pairs[["expert1", "expert2", "expert3"]].to_numpy(float)
        frames.append(pd.DataFrame({"fold": fold, "image": pairs["image"].to_numpy(),
                                    "query_text": pairs["query_text"].to_numpy(), "score": scores,
                                    "expert_mean": experts.mean(axis=1)}))
        print(f"reliability: fold {fold + 1}/{config.baselines.folds} ({len(pairs)} pairs)", file=sys.stderr)
    return pd.concat(frames, ignore_index=True)


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


def write_reliability_report(config: Config, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    scores = held_out_scores(config)
    table, meaning = reliability_table(scores), readings(scores)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps({"bins": table, "readings": meaning,
                                                      "pairs": int(len(scores))}, indent=1), encoding="utf-8")
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect calibration")
    axis.plot([r["mean_score"] for r in table], [r["expert_target"] for r in table], marker="o",
              label="held-out pairs (expert mean, 0-1)")
    axis.plot([r["mean_score"] for r in table], [r["match_share"] for r in table], marker="s", linestyle=":",
              label="share judged a match (mean >= 3)")
    axis.set(xlabel="fusion score (what search shows)", ylabel="experts", xlim=(0, 1), ylim=(0, 1),
             title=f"Reliability, {len(scores)} held-out pairs, {config.baselines.folds} folds")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "reliability.png", dpi=120)
    plt.close(figure)
    lines = ["# What a relevance score has meant", "",
             f"Each of the {config.baselines.folds} cross-validation fold checkpoints "
             f"(`{config.training.output_dir}/cv`) scored its own held-out expert pairs (photos and captions it never "
             "trained on); "
             f"{len(scores)} pairs pooled. Expert judgments are 1 (no match) to 4 (a match); the training target is "
             "(mean - 1) / 3. Written by `python evaluate.py --reliability`.", "",
             "![reliability](reliability.png)", "",
             f"| score (± {WIDTH}) | pairs | expert mean (1-4) | judged a match (mean ≥ 3) | no match at all (all 1) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['score']:.1f} | {r['pairs']} | {r['expert_mean']:.2f} | {r['match_share']:.0%} | "
              f"{r['no_match_share']:.0%} |" for r in meaning]
    lines += ["", "| score bin | pairs | mean score | expert mean (1-4) | as a target (0-1) | judged a match |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['bin']} | {r['pairs']} | {r['mean_score']:.3f} | {r['expert_mean']:.2f} | "
              f"{r['expert_target']:.3f} | {r['match_share']:.0%} |" for r in table]
    path = out / "reliability.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
