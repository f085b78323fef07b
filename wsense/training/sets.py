"""What a training run learns from: judged pairs (regression) and positive pairs (contrastive), split by fold."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from wsense.config import Config
from wsense.data import WithSenseData, make_target
from wsense.folds import captions_of, grouped_folds
from wsense.safety.filters import FilterSummary, child_images, children_seen, filter_training_pairs


@dataclass
class TrainingSets:
    judged: pd.DataFrame  # image, query_text, target, weight, source (0 expert, 1 crowd): the regression pairs
    positives: pd.DataFrame  # image, query_text: true captions and crowd-confirmed matches (contrastive)
    val_pairs: pd.DataFrame  # held-out expert pairs (image, query_text, expert_target, expert1..3)
    val_positives: pd.DataFrame  # held-out images with their own captions (validation retrieval)
    summary: FilterSummary

    def describe(self) -> str:
        return (f"{len(self.judged)} judged pairs, {len(self.positives)} positive pairs over "
                f"{self.positives['image'].nunique()} images; validation: {len(self.val_pairs)} expert pairs, "
                f"{self.val_pairs['image'].nunique()} images")


def build_training_sets(data: WithSenseData, config: Config, val_fold: int | None) -> TrainingSets:
    """Legal filter first, then the grouped fold `val_fold` held out (None: train on everything): its images, and
    every training pair whose text is one of their captions (see grouped_folds)."""
    seen = children_seen(config.safety.labels)
    pairs, summary = filter_training_pairs(data.pairs, data.captions, seen)
    val_images: set[str] = set()
    if val_fold is not None:
        folds = grouped_folds(pairs, config.baselines.folds, config.baselines.seed)
        val_images = set(pairs.iloc[folds[val_fold][1]]["image"])
    held_texts = captions_of(data.captions, val_images)
    in_val = pairs["image"].isin(val_images)
    train_pairs = pairs[~in_val & ~pairs["query_text"].isin(held_texts)]
    val_pairs = pairs[in_val].reset_index(drop=True)

    judged = pd.DataFrame({
        "image": train_pairs["image"], "query_text": train_pairs["query_text"],
        "target": make_target(train_pairs, config.data.target, config.data.expert_weight), "weight": 1.0,
        "source": 0,
    }).dropna(subset=["target"])

    crowd = data.crowd[data.crowd["query_text"] != ""]
    crowd, _ = filter_training_pairs(crowd, data.captions, seen)
    crowd = crowd[~crowd["image"].isin(val_images) & ~crowd["query_text"].isin(held_texts)]
    if config.training.crowd_weight > 0:
        judged_keys = set(zip(judged["image"], judged["query_text"]))
        crowd_only = crowd[[key not in judged_keys for key in zip(crowd["image"], crowd["query_text"])]]
        judged = pd.concat([judged, pd.DataFrame({
            "image": crowd_only["image"], "query_text": crowd_only["query_text"],
            "target": crowd_only["crowd_share"], "weight": config.training.crowd_weight, "source": 1,
        })], ignore_index=True)

    children = child_images(data.captions.rename(columns={"query_text": "text"})) | seen
    own, _ = filter_training_pairs(data.true_pairs(), data.captions, seen)
    confirmed = crowd[crowd["crowd_share"] >= config.training.crowd_positive_threshold]
    positives = pd.concat([own[["image", "query_text"]], confirmed[["image", "query_text"]]], ignore_index=True)
    positives = positives.drop_duplicates().reset_index(drop=True)
    train_positives = positives[~positives["image"].isin(val_images)].reset_index(drop=True)
    val_positives = own[own["image"].isin(val_images) & ~own["image"].isin(children)]
    return TrainingSets(judged.reset_index(drop=True), train_positives, val_pairs,
                        val_positives[["image", "query_text"]].reset_index(drop=True), summary)
