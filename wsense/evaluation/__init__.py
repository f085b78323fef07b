"""Evaluation: metrics, evaluators (one per metric family) and the report."""
from wsense.evaluation.evaluators import CorrelationEvaluator, RetrievalEvaluator  # noqa: F401
from wsense.evaluation.metrics import kendall_tau_c, retrieval_metrics, spearman  # noqa: F401
