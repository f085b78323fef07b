"""Choosing the query-bank correction (search.ranking, bank_beta, bank_weight) on validation: each cross-validation
fold's checkpoint ranks its held-out photos for their own captions, with a bank built without those captions.

    python evaluate.py --query-bank        (after python evaluate.py --cross-validate)
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np

from wsense.config import Config
from wsense.data import load_data
from wsense.errors import WsenseError
from wsense.evaluation.evaluators import RetrievalEvaluator, catalog_scores
from wsense.serving.query_bank import bank_offsets
from wsense.serving.scoring import RelevanceScorer, build_query_bank
from wsense.training.sets import build_training_sets

BETAS = (10.0, 20.0, 40.0)
WEIGHTS = (0.15, 0.25, 0.35, 0.5)


def validate_query_bank(config: Config, out: Path) -> Path:
    data = load_data(config.data_dir)
    runs = Path(config.training.output_dir) / "cv"
    settings = copy.deepcopy(config)
    settings.search.ranking = "fusion"  # the bank of each fold is built here, without its validation captions
    results: dict[str, list[dict[str, float]]] = {}
    for fold in range(config.baselines.folds):
        checkpoint = runs / f"fold{fold}" / "best"
        if not checkpoint.is_dir():
            raise WsenseError(f"{checkpoint}: no fold checkpoint; run `python evaluate.py --cross-validate` first")
        sets = build_training_sets(data, config, fold)
        scorer = RelevanceScorer.from_checkpoint(checkpoint, settings)
        catalog = sorted(set(sets.val_pairs["image"]))
        u = scorer.embed_images([data.train_image_dir / name for name in catalog], progress=False)
        v = scorer.embed_english(sets.val_positives["query_text"].tolist())
        bank = build_query_bank(scorer, config, exclude_images=catalog)
        evaluator = RetrievalEvaluator(sets.val_positives, catalog)
        scores = catalog_scores(scorer, v, u)
        for name in ("fusion", "cosine"):
            results.setdefault(name, []).append(evaluator(scores[name]))
        for beta in BETAS:
            offsets = bank_offsets(bank, u, beta)
            for weight in WEIGHTS:
                results.setdefault(f"qb_cosine beta {beta:g} weight {weight:g}", []).append(
                    evaluator(scores["cosine"] - weight * offsets[None, :]))
        print(f"query bank: fold {fold + 1}/{config.baselines.folds} ({len(bank)} bank captions)", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    summary = {name: {metric: [round(fold[metric], 4) for fold in folds] for metric in ("r1", "r5")}
               for name, folds in results.items()}
    (out / "query_bank.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    lines = ["# Query-bank normalisation on validation", "",
             f"Fold checkpoints of `{runs}`; each ranks its held-out photos for their own captions (validation "
             "captions held out of training and of the bank). Mean ± spread over the folds. Written by "
             "`python evaluate.py --query-bank`.", "", "| ranking | R@1 | R@5 |", "|---|---|---|"]
    for name, metrics in sorted(summary.items(), key=lambda item: -np.mean(item[1]["r1"])):
        lines.append(f"| {name} | {np.mean(metrics['r1']):.4f} ± {np.std(metrics['r1']):.4f} | "
                     f"{np.mean(metrics['r5']):.4f} ± {np.std(metrics['r5']):.4f} |")
    path = out / "query_bank.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
