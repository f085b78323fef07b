"""Metrics and evaluators (wsense/evaluation/metrics.py, evaluators.py)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from wsense.evaluation import CorrelationEvaluator, RetrievalEvaluator
from wsense.evaluation.metrics import kendall_tau_c, ranks_of_true_items, retrieval_metrics, spearman


def test_spearman_is_rank_based_and_nan_for_constant_predictions():
    targets = np.array([0.0, 0.1, 0.5, 0.9])
    assert spearman(np.exp([1.0, 2.0, 3.0, 4.0]), targets) == pytest.approx(1.0)
    assert spearman(-targets, targets) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.full(4, 0.3), targets))


def test_kendall_tau_c_uses_one_row_per_expert_judgment():
    predictions = np.array([0.1, 0.4, 0.8])
    experts = np.array([[1, 1, 2], [2, 3, 2], [4, 3, 4]])
    expected = stats.kendalltau(np.repeat(predictions, 3), experts.reshape(-1), variant="c").statistic
    assert kendall_tau_c(predictions, experts) == pytest.approx(expected)
    # The mean-score version differs: the protocol matters.
    assert kendall_tau_c(predictions, experts) != pytest.approx(
        stats.kendalltau(predictions, experts.mean(1), variant="c").statistic
    )


def test_retrieval_metrics_on_a_known_matrix():
    scores = np.array([
        [0.9, 0.1, 0.0],  # true 0 -> rank 1
        [0.9, 0.5, 0.1],  # true 1 -> rank 2
        [0.9, 0.8, 0.1],  # true 2 -> rank 3
        [0.5, 0.5, 0.5],  # true 0, all tied -> rank 3 (ties count against)
    ])
    true = np.array([0, 1, 2, 0])
    assert ranks_of_true_items(scores, true).tolist() == [1, 2, 3, 3]
    metrics = retrieval_metrics(scores, true, ks=(1, 2))
    assert metrics["r1"] == 0.25 and metrics["r2"] == 0.5
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 3) / 4)
    assert metrics["median_rank"] == 2.5


def test_retrieval_evaluator_maps_images_to_catalog_positions():
    queries = pd.DataFrame({"query_text": ["a", "b"], "image": ["y.jpg", "x.jpg"]})
    evaluator = RetrievalEvaluator(queries, ["x.jpg", "y.jpg"])
    assert evaluator(np.array([[0.0, 1.0], [1.0, 0.0]]))["r1"] == 1.0
    assert evaluator(np.array([[1.0, 0.0], [0.0, 1.0]]))["r1"] == 0.0


def test_correlation_evaluator_summary_has_mean_and_std():
    pairs = pd.DataFrame({"expert_target": [0.0, 0.5, 1.0], "expert1": [1, 2, 4], "expert2": [1, 3, 4],
                          "expert3": [1, 2, 4]})
    fold = CorrelationEvaluator(pairs)(np.array([0.1, 0.2, 0.3]))
    assert fold["spearman"] == pytest.approx(1.0)
    summary = CorrelationEvaluator.summarize([fold, {"spearman": 0.5, "kendall_tau_c": 0.5}])
    assert summary["spearman_mean"] == pytest.approx(0.75)
    assert summary["spearman_std"] == pytest.approx(0.25)
    assert summary["spearman_folds"] == [1.0, 0.5]
