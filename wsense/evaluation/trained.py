"""Report rows for the trained relevance model: grouped cross-validation of the whole training run, and
test retrieval of a checkpoint."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

from wsense.config import Config
from wsense.data import load_data
from wsense.evaluation import CorrelationEvaluator, RetrievalEvaluator
from wsense.safety import mentions_child
from wsense.scoring import RelevanceScorer
from wsense.training import load_checkpoint, train


def model_name(config: Config) -> str:
    return f"relevance/{config.training.mode} ({config.image_backbone.name})"


def cross_validate_training(config: Config, *, cpu: bool = False, resume: bool = False) -> dict:
    """Train once per grouped fold (the baselines' folds) and score each run's best epoch on its held-out images."""
    data = load_data(config.data_dir)
    per_fold, r1 = [], []
    for fold in range(config.baselines.folds):
        fold_config = copy.deepcopy(config)
        fold_config.training.output_dir = str(Path(config.training.output_dir) / "cv" / f"fold{fold}")
        print(f"cross-validation: fold {fold + 1}/{config.baselines.folds}", file=sys.stderr)
        result = train(fold_config, cpu=cpu, val_fold=fold, data=data,
                       resume=resume and (Path(fold_config.training.output_dir) / "last").exists())
        per_fold.append({"spearman": result.best["val_spearman"], "kendall_tau_c": result.best["val_kendall_tau_c"]})
        r1.append(result.best.get("val_r1_cosine", float("nan")))
    summary = CorrelationEvaluator.summarize(per_fold)
    return {"model": model_name(config), "features": f"trained, {config.training.mode}", **summary,
            "val_r1_cosine_mean": float(np.nanmean(r1))}


def evaluate_checkpoint(path: str | Path, config_override: Config | None = None, *, device: str = "cpu") -> list[dict]:
    """Test retrieval of a checkpoint: the 500 test queries over the 100 test images, ranked by the fusion
    head (the product's re-ranking) and by the projections' cosine (the first stage)."""
    model, config, metadata = load_checkpoint(path)
    data_dir = (config_override or config).data_dir
    data = load_data(data_dir)
    scorer = RelevanceScorer(model, config.image_backbone.image_size, device)
    u = scorer.embed_images([data.test_image_dir / name for name in data.test_images])
    queries = data.test_queries
    v = scorer.embed_texts(queries["query_text"].tolist())
    scores = {"fusion": scorer.relevance(v, u).numpy(), "cosine": (v @ u.T).numpy()}
    allowed = ~queries["query_text"].map(mentions_child).to_numpy()
    rows = []
    for ranking, matrix in scores.items():
        for label, mask in (("", np.ones(len(queries), bool)), (" [allowed queries]", allowed)):
            metrics = RetrievalEvaluator(queries[mask], data.test_images)(matrix[mask])
            name = model_name(config) + ("" if ranking == "fusion" else " [cosine]") + label
            rows.append({"model": name, "features": f"trained, {config.training.mode}",
                         "queries": f"{'allowed' if label else 'all'} queries ({int(mask.sum())})",
                         "checkpoint": str(path), **metrics})
    return rows
