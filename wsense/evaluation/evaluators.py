"""Evaluators, one per metric family: each takes predictions and returns a flat dict of metric values."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from wsense.evaluation.metrics import kendall_tau_c, retrieval_metrics, spearman

EXPERT_COLUMNS = ["expert1", "expert2", "expert3"]


@dataclass
class CorrelationEvaluator:
    """Agreement of predicted relevance with the experts on a set of judged pairs."""

    pairs: pd.DataFrame  # needs expert_target and expert1..3

    def __call__(self, predictions: np.ndarray) -> dict[str, float]:
        return {
            "spearman": spearman(predictions, self.pairs["expert_target"].to_numpy()),
            "kendall_tau_c": kendall_tau_c(predictions, self.pairs[EXPERT_COLUMNS].to_numpy()),
        }

    @staticmethod
    def summarize(per_fold: list[dict[str, float]]) -> dict[str, float | list[float]]:
        """Mean and standard deviation over folds, plus the per-fold values."""
        summary: dict[str, float | list[float]] = {}
        for name in ("spearman", "kendall_tau_c"):
            values = np.array([fold[name] for fold in per_fold], float)
            summary[f"{name}_mean"] = float(np.mean(values)) if not np.isnan(values).all() else float("nan")
            summary[f"{name}_std"] = float(np.std(values)) if not np.isnan(values).all() else float("nan")
            summary[f"{name}_folds"] = [round(v, 4) for v in values.tolist()]
        return summary


@dataclass
class RetrievalEvaluator:
    """Text-to-image retrieval: each query has one true image among the catalog."""

    queries: pd.DataFrame  # query_text, image
    catalog: list[str]

    def __post_init__(self):
        position = {name: i for i, name in enumerate(self.catalog)}
        self.true_index = self.queries["image"].map(position).to_numpy()

    def __call__(self, scores: np.ndarray) -> dict[str, float]:
        """`scores`: (queries x catalog images)."""
        return retrieval_metrics(scores, self.true_index)
