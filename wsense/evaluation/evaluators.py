"""Evaluators, one per metric family: each takes predictions and returns a flat dict of metric values."""
from __future__ import annotations

from dataclasses import dataclass

from typing import Callable

import numpy as np
import pandas as pd
import torch

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


RANKING_LABELS = {"fusion": "", "cosine": " [cosine]", "qb_cosine": " [cosine, query bank]"}  # rows' name suffixes


@torch.no_grad()
def catalog_scores(model, v, u, offsets: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(queries x catalog) scores of query embeddings `v` against photo embeddings `u`: the fusion head's relevance,
    the projections' cosine and, given the photos' query-bank `offsets`, the cosine minus them (qb_cosine): the
    rankings of search.ranking. Every evaluation of queries against a catalog goes through here: the trainer's
    validation (`model` the torch model in training, v and u tensors), checkpoint rows and multilingual rows
    (`model` the serving scorer, RelevanceScorer, v and u arrays: scored as search scores them)."""
    from wsense.serving.scoring import RelevanceScorer

    if isinstance(model, RelevanceScorer):
        v, u = np.asarray(v, np.float32), np.asarray(u, np.float32)
        scores = {"fusion": model.relevance(v, u), "cosine": v @ u.T}
    else:
        scores = {"fusion": model.relevance_matrix(v, u).float().cpu().numpy(),
                  "cosine": (v @ u.T).float().cpu().numpy()}
    if offsets is not None:
        scores["qb_cosine"] = scores["cosine"] - np.asarray(offsets)[None, :]
    return scores


Embed = Callable[[list[str], list[str]], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class ValidationEvaluator:
    """A training run's held-out fold, scored each epoch: Spearman and Kendall tau-c of the fusion score on its
    expert pairs, and R@1 of its photos' own captions among its photos, ranked by fusion and by cosine.

    Called as evaluator(model, embed), where embed(images, texts) -> (u, v) embeds them as the trainer holds
    them, so the trainer runs it without importing evaluation code."""

    pairs: pd.DataFrame  # held-out expert pairs: image, query_text, expert_target, expert1..3
    positives: pd.DataFrame  # held-out photos with their own captions: image, query_text

    @property
    def texts(self) -> list[str]:
        return sorted(set(self.pairs["query_text"]) | set(self.positives["query_text"]))

    def __call__(self, model, embed: Embed) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if len(self.pairs):
            images, texts = sorted(set(self.pairs["image"])), sorted(set(self.pairs["query_text"]))
            u, v = embed(images, texts)
            ui = torch.tensor(self.pairs["image"].map({n: i for i, n in enumerate(images)}).to_numpy())
            vi = torch.tensor(self.pairs["query_text"].map({t: i for i, t in enumerate(texts)}).to_numpy())
            with torch.no_grad():
                predictions = torch.sigmoid(model.fuse(u[ui], v[vi]).float()).cpu().numpy()
            metrics.update(CorrelationEvaluator(self.pairs)(predictions))
        if len(self.positives):
            catalog = sorted(set(self.pairs["image"]))
            u, v = embed(catalog, self.positives["query_text"].tolist())
            retrieval = RetrievalEvaluator(self.positives, catalog)
            for ranking, scores in catalog_scores(model, v, u).items():
                metrics[f"r1_{ranking}"] = retrieval(scores)["r1"]
        return metrics
