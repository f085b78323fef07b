"""The trained relevance model: training with validation, grouped cross-validation of the whole training run,
and test retrieval of a checkpoint as search runs it."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from wsense.config import Config
from wsense.data import WithSenseData, load_data
from wsense.errors import WsenseError
from wsense.evaluation.evaluators import (RANKING_LABELS, CorrelationEvaluator, RetrievalEvaluator, ValidationEvaluator,
                                         catalog_scores)
from wsense.evaluation.report import model_name
from wsense.safety import mentions_child
from wsense.serving.scoring import RelevanceScorer, read_translations
from wsense.training import TrainResult, train
from wsense.training.sets import build_training_sets


NOTES = [
    "relevance/...: Spearman and Kendall tau-c from `python evaluate.py --cross-validate` (the whole training run "
    "once per grouped fold, best epoch by validation Spearman); retrieval from `python evaluate.py --checkpoint "
    "runs/final/best`, the search checkpoint (`python train.py --no-validation --output-dir runs/final`, every "
    "allowed photo, last epoch); the [val captions] rows from `runs/default/best` (`python train.py`, fold 0 held "
    "out). The plain row ranks by the fusion head; [cosine] by the projections' cosine; [cosine, query bank] by "
    "the cosine minus each photo's query-bank offset, what search ranks by (search.ranking: qb_cosine, chosen on "
    "validation: reports/query_bank.md); the score search shows is the fusion head's. A fold's training leaves "
    "out its photos and every pair whose text is one of their captions, so validation queries are new texts, as "
    "test queries are.",
    "How each setting was chosen, and what else was tried: docs/experiments.md.",
]


def train_validated(config: Config, *, cpu: bool = False, resume: bool = False, data: WithSenseData | None = None
                    ) -> TrainResult:
    """A training run whose held-out fold (training.val_fold; None: no validation, the last epoch is kept) is
    scored after every epoch by a ValidationEvaluator, which also chooses the best checkpoint."""
    data = data or load_data(config.data_dir)
    sets = build_training_sets(data, config, config.training.val_fold)
    evaluator = (ValidationEvaluator(sets.val_pairs, sets.val_positives)
                 if config.training.val_fold is not None else None)
    return train(config, cpu=cpu, resume=resume, data=data, sets=sets, evaluator=evaluator)


def cross_validate_training(config: Config, *, cpu: bool = False, resume: bool = False) -> dict:
    """Train once per grouped fold (the baselines' folds) and score each run's best epoch on its held-out images."""
    data = load_data(config.data_dir)
    per_fold, r1 = [], []
    for fold in range(config.baselines.folds):
        fold_config = copy.deepcopy(config)
        fold_config.training.output_dir = str(Path(config.training.output_dir) / "cv" / f"fold{fold}")
        fold_config.training.val_fold = fold
        print(f"cross-validation: fold {fold + 1}/{config.baselines.folds}", file=sys.stderr)
        result = train_validated(fold_config, cpu=cpu, data=data,
                                 resume=resume and (Path(fold_config.training.output_dir) / "last").exists())
        per_fold.append({"spearman": result.best["val_spearman"], "kendall_tau_c": result.best["val_kendall_tau_c"]})
        r1.append(result.best.get("val_r1_cosine", float("nan")))
    summary = CorrelationEvaluator.summarize(per_fold)
    return {"model": model_name(config), "features": f"trained, {config.training.mode}", **summary,
            "val_r1_cosine_mean": float(np.nanmean(r1))}


def read_russian_queries(path: str | Path, english: pd.DataFrame) -> pd.DataFrame:
    """The Russian test queries, joined to the English ones for their true image."""
    russian = read_translations(path)
    missing = english.loc[~english["query_id"].isin(russian.index), "query_id"]
    if len(missing):
        raise WsenseError(f"{path}: no Russian text for query_id {missing.iloc[0]}")
    return pd.DataFrame({"query_id": english["query_id"], "query_text": english["query_id"].map(russian).to_numpy(),
                         "image": english["image"]})


def evaluate_checkpoint(path: str | Path, settings: Config | None = None, *, device: str = "cpu") -> list[dict]:
    """Test retrieval of a checkpoint as search runs it (with the runtime settings of `settings`, the caller's
    config): the 500 test queries over the 100 test images, ranked by the fusion head (the product's re-ranking)
    and by the projections' cosine (the first stage); in English, and in Russian where the config names the
    Russian queries."""
    scorer = RelevanceScorer.from_checkpoint(path, settings, device)
    config = scorer.config
    data = load_data(config.data_dir)
    u = scorer.embed_images([data.test_image_dir / name for name in data.test_images])
    query_sets = {"": data.test_queries}
    if config.data.russian_queries:
        query_sets[" [ru]"] = read_russian_queries(config.data.russian_queries, data.test_queries)
    rows = []
    for language, queries in query_sets.items():
        v = scorer.embed_texts(queries["query_text"].tolist())
        scores = catalog_scores(scorer, v, u, scorer.photo_offsets(u) if scorer.bank is not None else None)
        allowed = ~queries["query_text"].map(mentions_child).to_numpy()
        for ranking, matrix in scores.items():
            for label, mask in (("", np.ones(len(queries), bool)), (" [allowed queries]", allowed)):
                metrics = RetrievalEvaluator(queries[mask], data.test_images)(matrix[mask])
                name = model_name(config) + language + RANKING_LABELS[ranking] + label
                rows.append({"model": name, "features": f"trained, {config.training.mode}",
                             "queries": f"{'allowed' if label else 'all'} queries ({int(mask.sum())})",
                             "checkpoint": str(path), **metrics})
    return rows
