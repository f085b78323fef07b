"""Metric functions: rank correlations with expert judgments, and retrieval quality of a score matrix."""
from __future__ import annotations

import numpy as np
from scipy import stats


def spearman(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Spearman's rho; NaN when either side is constant (a constant predictor ranks nothing)."""
    predictions, targets = np.asarray(predictions, float), np.asarray(targets, float)
    if np.ptp(predictions) == 0 or np.ptp(targets) == 0:
        return float("nan")
    return float(stats.spearmanr(predictions, targets).statistic)


def kendall_tau_c(predictions: np.ndarray, expert_scores: np.ndarray) -> float:
    """Kendall's tau-c over one row per expert judgment: `expert_scores` is (pairs, experts)."""
    expert_scores = np.asarray(expert_scores, float)
    if expert_scores.ndim == 1:
        expert_scores = expert_scores[:, None]
    repeated = np.repeat(np.asarray(predictions, float), expert_scores.shape[1])
    judgments = expert_scores.reshape(-1)
    if np.ptp(repeated) == 0 or np.ptp(judgments) == 0:
        return float("nan")
    return float(stats.kendalltau(repeated, judgments, variant="c").statistic)


def ranks_of_true_items(scores: np.ndarray, true_index: np.ndarray) -> np.ndarray:
    """1-based rank of each query's true item; ties count against it (a constant scorer ranks last)."""
    scores = np.asarray(scores, float)
    true_scores = scores[np.arange(len(scores)), np.asarray(true_index)]
    return (scores >= true_scores[:, None]).sum(axis=1)


def retrieval_metrics(scores: np.ndarray, true_index: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """R@k, MRR and median rank for a (queries x items) score matrix with one true item per query."""
    ranks = ranks_of_true_items(scores, true_index)
    result = {f"r{k}": float(np.mean(ranks <= k)) for k in ks}
    result["mrr"] = float(np.mean(1.0 / ranks))
    result["median_rank"] = float(np.median(ranks))
    return result
