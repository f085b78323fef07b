"""The frozen-embedding experiment: scikit-learn baselines and the training-free label bridge."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wsense.evaluation.baselines import cross_validate_baseline
from wsense.config import Config
from wsense.data import WithSenseData, load_data
from wsense.errors import WsenseError
from wsense.evaluation.evaluators import CorrelationEvaluator, RetrievalEvaluator
from wsense.folds import grouped_folds
from wsense.models.frozen_features import FrozenFeatures
from wsense.models.label_bridge import LabelBridge, imagenet_label_prompts
from wsense.safety import mentions_child
from wsense.safety.filters import children_seen, filter_training_pairs

FEATURE_SETS = ("concat", "concat_bridge")


@dataclass
class PairFeatures:
    """Frozen features per expert pair: image features, caption embedding and the label-bridge image vector."""

    image: np.ndarray
    text: np.ndarray
    bridge: np.ndarray

    def matrix(self, feature_set: str) -> np.ndarray:
        if feature_set == "concat":
            # As in the original study: image and text vectors side by side.
            return np.hstack([self.image, self.text])
        if feature_set == "concat_bridge":
            # The bridge puts the image into the text space, so the product and cosine compare the two sides.
            cosine = (self.bridge * self.text).sum(axis=1, keepdims=True)
            return np.hstack([self.image, self.text, self.bridge * self.text, cosine])
        raise WsenseError(f"unknown feature set '{feature_set}' (known: {', '.join(FEATURE_SETS)})")

    def bridge_cosine(self) -> np.ndarray:
        return (self.bridge * self.text).sum(axis=1)


def _pair_features(pairs: pd.DataFrame, data: WithSenseData, features: FrozenFeatures,
                   bridge: LabelBridge) -> PairFeatures:
    images = sorted(pairs["image"].unique())
    position = pairs["image"].map({name: i for i, name in enumerate(images)}).to_numpy()
    image = features.images([data.train_image_dir / name for name in images])
    bridged = bridge.image_embeddings(features.label_probabilities(image))
    text = features.texts(pairs["query_text"].tolist())
    return PairFeatures(image=image[position], text=text, bridge=bridged[position])


def _label_bridge_rows(data: WithSenseData, features: FrozenFeatures, bridge: LabelBridge,
                       pair_features: PairFeatures, pairs: pd.DataFrame, folds) -> list[dict]:
    per_fold = [CorrelationEvaluator(pairs.iloc[valid])(pair_features.bridge_cosine()[valid]) for _, valid in folds]
    catalog = data.test_images
    image_vectors = bridge.image_embeddings(
        features.label_probabilities(features.images([data.test_image_dir / name for name in catalog]))
    )
    queries = data.test_queries
    scores = LabelBridge.scores(features.texts(queries["query_text"].tolist()), image_vectors)
    allowed = ~queries["query_text"].map(mentions_child).to_numpy()
    rows = []
    for label, mask in (("all queries", np.ones(len(queries), bool)), ("allowed queries", allowed)):
        retrieval = RetrievalEvaluator(queries[mask], catalog)(scores[mask])
        row = {"model": "label_bridge" + ("" if label == "all queries" else " [allowed queries]"),
               "features": "frozen, training-free", "queries": f"{label} ({int(mask.sum())})", **retrieval}
        if label == "all queries":
            row.update(CorrelationEvaluator.summarize(per_fold))
        rows.append(row)
    return rows


def run_frozen_baselines(config: Config, models: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """Rows for the report (and notes saying what the rows rest on)."""
    data = load_data(config.data_dir)
    pairs, summary = filter_training_pairs(data.pairs, data.captions, children_seen(config.safety.labels))
    print(summary, file=sys.stderr)
    folds = grouped_folds(pairs, config.baselines.folds, config.baselines.seed, captions=data.captions)
    features = FrozenFeatures(config)
    bridge = LabelBridge(features.texts(imagenet_label_prompts()))
    pair_features = _pair_features(pairs, data, features, bridge)
    target = pairs["expert_target"].to_numpy(dtype=float)

    rows = _label_bridge_rows(data, features, bridge, pair_features, pairs, folds)
    print(f"label bridge: test R@1 {rows[0]['r1']:.3f}, R@5 {rows[0]['r5']:.3f}, "
          f"grouped Spearman {rows[0]['spearman_mean']:.3f}", file=sys.stderr)
    for feature_set in config.baselines.feature_sets:
        matrix = pair_features.matrix(feature_set)
        print(f"baselines on '{feature_set}' features ({matrix.shape[1]} columns, {len(pairs)} pairs, "
              f"{config.baselines.folds} grouped folds):", file=sys.stderr)
        for name in models or config.baselines.models:
            row = cross_validate_baseline(name, matrix, pairs, target, folds, config.baselines.seed)
            rows.append({**row, "model": f"{row['model']} [{feature_set}]", "features": f"frozen, {feature_set}"})
    notes = [
        str(summary),
        "image backbones: " + " + ".join(
            f"{b.name} at {b.image_size} px ({'pretrained' if b.pretrained else 'random init'})"
            for b in config.image_backbone.backbones()) + ","
        f" text: {config.text_model.name}; target: {config.data.target}; folds: {config.baselines.folds}, "
        f"seed {config.baselines.seed}",
        "concat = [image features, caption embedding] as in the original study; concat_bridge adds the "
        "label-bridge image vector times the caption embedding and their cosine.",
        "n/a: a constant predictor (dummy) ranks nothing, so it has no rank correlation.",
    ]
    return rows, notes
