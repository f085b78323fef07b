"""Validation of the Russian query path without the Russian test queries.

The checkpoint never trained on the images of its validation fold (training.val_fold). Their own captions,
in English and in their hand-written Russian versions (data.russian_train_captions), are held out of the
multilingual map's fit; each held-out caption then retrieves its image among the fold's images, once through
the English tower and once through USE and the map. The difference is the Russian gap on data that played no
part in choosing anything, which is where a multilingual method is chosen before the test rows are computed.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from wsense.config import Config
from wsense.data import load_data
from wsense.errors import WsenseError
from wsense.evaluation.evaluators import RANKING_LABELS, RetrievalEvaluator, catalog_scores
from wsense.evaluation.report import model_name
from wsense.models.checkpoint import load_checkpoint
from wsense.serving.scoring import RelevanceScorer, build_query_bank, fit_text_map, read_translations
from wsense.training.sets import build_training_sets

NOTE = ("[val captions]: the own captions of the checkpoint's validation-fold images (never trained on), held "
        "out of the multilingual map's fit, the gloss's alignment and the query bank, each retrieving its image "
        "among the fold's images; [ru] = their hand-written Russian versions through USE and the map, with the "
        "gloss. The multilingual method is chosen on these rows, never on the Russian test queries (docs/"
        "experiments.md, Russian queries).")


def held_out_captions(data, config: Config) -> tuple[pd.DataFrame, list[str]]:
    """(query_id, query_text, query_text_ru, image) of the validation fold's own captions that have a Russian
    version, and the fold's images (the catalog)."""
    if config.training.val_fold is None:
        raise WsenseError("multilingual validation needs a checkpoint trained with a validation fold "
                          "(training.val_fold): "
                          "`python train.py` makes one in runs/default/best")
    if not config.data.russian_train_captions:
        raise WsenseError("multilingual validation needs data.russian_train_captions")
    sets = build_training_sets(data, config, config.training.val_fold)
    catalog = sorted(set(sets.val_pairs["image"]))
    own = sets.val_positives.merge(data.captions, on=["image", "query_text"])
    russian = read_translations(config.data.russian_train_captions)
    own = own[own["query_id"].isin(russian.index)].reset_index(drop=True)
    own["query_text_ru"] = own["query_id"].map(russian)
    return own[["query_id", "query_text", "query_text_ru", "image"]], catalog


def validate_multilingual(checkpoint: str | Path, settings: Config | None = None, *,
                          device: str = "cpu") -> list[dict]:
    """English and Russian retrieval rows of the held-out validation captions, the map fitted without them
    with the search settings of `settings` (search.multilingual, multilingual_alpha, multilingual_gamma)."""
    model, config, _ = load_checkpoint(checkpoint, settings)
    if config.search.multilingual == "none":
        raise WsenseError("search.multilingual is none: there is no Russian path to validate")
    data = load_data(config.data_dir)
    queries, catalog = held_out_captions(data, config)
    scorer = RelevanceScorer(model, config, device)
    scorer.text_map = fit_text_map(scorer, config, exclude_images=catalog)
    u = scorer.embed_images([data.train_image_dir / name for name in catalog], progress=False)
    if config.search.ranking == "qb_cosine":  # the bank, too, without the held-out captions
        scorer.bank = build_query_bank(scorer, config, exclude_images=catalog)
    offsets = scorer.photo_offsets(u) if scorer.bank is not None else None
    rows = []
    for language, column in (("", "query_text"), (" [ru]", "query_text_ru")):
        v = scorer.embed_texts(queries[column].tolist())
        for ranking, matrix in catalog_scores(scorer, v, u, offsets).items():
            ranking = RANKING_LABELS[ranking]
            metrics = RetrievalEvaluator(queries, catalog)(matrix)
            rows.append({"model": model_name(config) + " [val captions]" + language + ranking,
                         "features": f"trained, {config.training.mode}",
                         "queries": f"held-out training captions ({len(queries)}) over {len(catalog)} images",
                         "checkpoint": str(checkpoint), **metrics})
    return rows
