"""Report rows for the trained relevance model: grouped cross-validation of the whole training run, and
test retrieval of a checkpoint."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from wsense.config import Config
from wsense.data import load_data
from wsense.errors import WsenseError
from wsense.evaluation import CorrelationEvaluator, RetrievalEvaluator
from wsense.safety import mentions_child
from wsense.scoring import RelevanceScorer, read_translations
from wsense.training import train
from wsense.training.checkpoint import load_checkpoint_config


NOTES = [
    "relevance/...: Spearman and Kendall tau-c from `python evaluate.py --cross-validate` (the whole training run "
    "once per grouped fold, best epoch by validation Spearman); retrieval from `python evaluate.py --checkpoint "
    "runs/final/best`, the search checkpoint (trained by `python train.py --no-validation --output-dir runs/final` "
    "on every allowed photo, the last of 16 epochs: leaving a fold out of training cost 0.02 CV Spearman and "
    "0.01-0.03 validation R@1); the [val captions] rows from `runs/default/best` (`python train.py`, fold 0 held "
    "out), which has held-out images. The plain row ranks by the fusion head "
    "(what search shows); [cosine] ranks by the projections' cosine (search's first stage).",
    "Validation queries are new texts: a fold's training leaves out its photos and every pair whose text is one "
    "of their captions, as no training pair has a test query's text. Before 2026-11-27 those captions stayed in "
    "training with other photos (4,565 of 23,124 judged pairs and 218 of 1,843 positives in fold 0), and "
    "validation R@1 read 0.04 high: fusion / cosine 0.346 / 0.347 and Spearman 0.783 for the settings that now "
    "give 0.311 / 0.305 and 0.772 (CV). The frozen baselines lost Spearman the same way: gradient boosting on "
    "concat_bridge 0.663 -> 0.642, ridge 0.628 -> 0.620, the MLPs 0.08-0.15 with one fold far below the others, "
    "so they had been fitting the captions themselves. With the "
    "captions held out (grouped CV, R@1 of the last epoch, fusion / cosine): seeds 42 and 7 of the default give "
    "Spearman 0.772 and 0.774, R@1 0.306 / 0.299 and 0.311 / 0.308; contrastive_weight 0.01 gives 0.782 and "
    "0.783, 0.324 / 0.301 and 0.303 / 0.298; 0.03 gives 0.780, 0.310 / 0.307; 0.3 gives 0.767, 0.285 / 0.285; a "
    "text projection kept at the identity gives 0.782 and 0.784, 0.302 / 0.309 and 0.298 / 0.296; feature_dropout "
    "0.7 gives 0.773, 0.316 / 0.312; USE v3 vectors beside MiniLM's in the text features give 0.773, 0.315 / "
    "0.301; label probabilities averaged over the views (not taken from the averaged features) give 0.772, "
    "0.311 / 0.302. A lower contrastive weight or a fixed text projection buys 0.01 Spearman, and nothing moves "
    "R@1 beyond the seeds' spread: defaults unchanged. The crowd-only pairs still carry the fusion head "
    "(crowd_weight 0: Spearman 0.686, fusion R@1 0.179, though the cosine reaches 0.32-0.36), and stopping the "
    "fusion head's gradient at the projections lost on every count (4 folds: Spearman 0.726, 0.270 / 0.291); "
    "without the crowd-confirmed positives: 0.767, 0.298 / 0.282. Pooled features of the backbone's last blocks "
    "and a max-pooled head beside the average (2 folds, before the change) lowered R@1 and were stopped.",
    "Choices that moved the trained rows (measured by grouped CV or on fold 0's validation images, never on the "
    "test queries; R@1 levels here are from before validation held its captions out, see above): the label-bridge start of the image embedding (validation R@1 0.25-0.31 after 1-3 epochs); "
    "dropout on the image features (without it the projection memorises the photos and R@1 falls to 0.19); the "
    "crowd-only pairs in the regression (without them fusion R@1 falls to 0.06-0.17); and their own fusion output "
    "(model.crowd_head: CV Spearman 0.736 +- 0.017 against 0.705 +- 0.019 with one shared output), at a quarter "
    "of an expert pair's weight, now 1/16 (crowd_weight, 8 epochs: 0.736 at 0.5, 0.746 at 0.25, 0.749 at 0.125, "
    "0.751 at 0.0625, 0.752 at 0.03) trained 16 epochs (0.0625: 0.756 with 12, 0.758 with 16); the contrastive "
    "loss at a tenth of its weight (training.contrastive_weight 0.1: CV Spearman 0.765 +- 0.010, mean validation "
    "R@1 fusion 0.322 / cosine 0.343, against 0.758 +- 0.016, 0.299 / 0.318 at 1.0; at full weight the "
    "projections memorise the training positives); and the photo's pooled features averaged over five views "
    "(image_backbone.views: centre crop, its mirror, the whole photo squeezed square, both square ends of the "
    "longer side; CV Spearman 0.783 +- 0.009, validation R@1 fusion 0.346 / cosine 0.347, against the centre "
    "crop's 0.765, 0.322 / 0.343). "
    "No effect or worse: crowd_weight 1.0 (fold 0: 0.717 against 0.733), ranking by the crowd output "
    "(validation R@1 0.337 against 0.326, noise), blending the fusion logit with the cosine (+0.01 R@1, within "
    "noise), partial fine-tuning on a GPU (CV 0.745 +- 0.014; see reports/device/), a learned softmax "
    "temperature of the label probabilities (CV 0.763 +- 0.012 against 0.764 +- 0.011, R@1 lower), a listwise "
    "softmax loss on the fusion logits over each batch's images (fold 0: Spearman 0.721, fusion R@1 0.268, "
    "stopped), contrastive_weight 0.03 with the five views (Spearman 0.789, fusion R@1 0.337); nine views (the five and "
    "the four half-size quadrants: Spearman 0.787, R@1 fusion 0.336 / cosine 0.358) and eight (the five and the "
    "mirrors of full, first and last: 0.783, 0.337 / 0.336), at twice the indexing cost; an ensemble of three "
    "seeds (validation R@1 fusion 0.343 against 0.330 for one seed on average; one seed's mean R@1 moves by "
    "0.026 between seeds 42, 7 and 123); at query time, a query-bank normalisation of the cosine, an inverted "
    "softmax, z-scored fusion + cosine blends (all within 0.02 of the fusion's R@1), and a caption memory (a "
    "photo's captions borrowed from its nearest training photos: R@1 0.25 alone, no gain blended); crowd "
    "matches from a third of the workers as contrastive positives (crowd_positive_threshold 0.33, twice the "
    "positives: Spearman 0.787, R@1 fusion 0.343 / cosine 0.336). The query text tower's "
    "int8 weights (search.text_runtime: onnx_int8) move test R@1 by -0.002 against fp32.",
]


def model_name(config: Config) -> str:
    return f"relevance/{config.training.mode} ({config.image_backbone.name})"


def cross_validate_training(config: Config, *, cpu: bool = False, resume: bool = False) -> dict:
    """Train once per grouped fold (the baselines' folds) and score each run's best epoch on its held-out images."""
    data = load_data(config.data_dir)
    per_fold, r1 = [], []
    for fold in range(config.baselines.folds):
        fold_config = copy.deepcopy(config)
        fold_config.training.output_dir = str(Path(config.training.output_dir) / "cv" / f"fold{fold}")
        fold_config.training.val_fold = fold
        print(f"cross-validation: fold {fold + 1}/{config.baselines.folds}", file=sys.stderr)
        result = train(fold_config, cpu=cpu, data=data,
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


def evaluate_checkpoint(path: str | Path, config_override: Config | None = None, *, device: str = "cpu") -> list[dict]:
    """Test retrieval of a checkpoint: the 500 test queries over the 100 test images, ranked by the fusion
    head (the product's re-ranking) and by the projections' cosine (the first stage); in English, and in
    Russian where the config names the Russian queries."""
    scorer = RelevanceScorer.from_checkpoint(path, device)
    config = load_checkpoint_config(path)
    source = config_override or config
    data = load_data(source.data_dir)
    u = scorer.embed_images([data.test_image_dir / name for name in data.test_images])
    query_sets = {"": data.test_queries}
    if source.data.russian_queries:
        query_sets[" [ru]"] = read_russian_queries(source.data.russian_queries, data.test_queries)
    rows = []
    for language, queries in query_sets.items():
        v = scorer.embed_texts(queries["query_text"].tolist())
        scores = {"fusion": scorer.relevance(v, u).numpy(), "cosine": (v @ u.T).numpy()}
        allowed = ~queries["query_text"].map(mentions_child).to_numpy()
        for ranking, matrix in scores.items():
            for label, mask in (("", np.ones(len(queries), bool)), (" [allowed queries]", allowed)):
                metrics = RetrievalEvaluator(queries[mask], data.test_images)(matrix[mask])
                name = model_name(config) + language + ("" if ranking == "fusion" else " [cosine]") + label
                rows.append({"model": name, "features": f"trained, {config.training.mode}",
                             "queries": f"{'allowed' if label else 'all'} queries ({int(mask.sum())})",
                             "checkpoint": str(path), **metrics})
    return rows
