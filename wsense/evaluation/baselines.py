"""Frozen-embedding scikit-learn baselines, as in the original study, under grouped cross-validation."""
from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.base import RegressorMixin
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import RidgeCV
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from wsense.errors import WsenseError
from wsense.evaluation import CorrelationEvaluator


def _regressors(seed: int) -> dict[str, Callable[[], RegressorMixin]]:
    return {
        "dummy": lambda: DummyRegressor(strategy="mean"),
        "ridge": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13))),
        "random_forest": lambda: RandomForestRegressor(
            n_estimators=300, max_features="sqrt", min_samples_leaf=2, n_jobs=-1, random_state=seed
        ),
        "hist_gradient_boosting": lambda: HistGradientBoostingRegressor(
            max_iter=400, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, random_state=seed
        ),
        "mlp": lambda: make_pipeline(
            StandardScaler(),
            MLPRegressor(hidden_layer_sizes=(256,), alpha=1.0, learning_rate_init=1e-3, max_iter=200,
                         early_stopping=True, n_iter_no_change=10, random_state=seed),
        ),
    }


BASELINES = tuple(_regressors(0))


def make_regressor(name: str, seed: int) -> RegressorMixin:
    factories = _regressors(seed)
    if name not in factories:
        raise WsenseError(f"unknown baseline '{name}' (known: {', '.join(factories)})")
    return factories[name]()


def cross_validate_baseline(
    name: str,
    features: np.ndarray,
    pairs: pd.DataFrame,
    target: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
) -> dict:
    """Fit on each fold's training part, score the held-out images against the experts."""
    per_fold = []
    start = time.perf_counter()
    for train_idx, valid_idx in folds:
        train_idx = train_idx[~np.isnan(target[train_idx])]
        model = make_regressor(name, seed).fit(features[train_idx], target[train_idx])
        per_fold.append(CorrelationEvaluator(pairs.iloc[valid_idx])(model.predict(features[valid_idx])))
    summary = CorrelationEvaluator.summarize(per_fold)
    print(f"  {name}: spearman {summary['spearman_mean']:.3f} ± {summary['spearman_std']:.3f} "
          f"({time.perf_counter() - start:.0f}s)", file=sys.stderr)
    return {"model": f"baseline/{name}", **summary}
