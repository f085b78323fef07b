"""Evaluation: metrics, evaluators (one per metric family), scores of queries against a catalog, the report."""
from wsense.evaluation.evaluators import (  # noqa: F401
    CorrelationEvaluator, RetrievalEvaluator, ValidationEvaluator, catalog_scores)
from wsense.evaluation.metrics import kendall_tau_c, retrieval_metrics, spearman  # noqa: F401
