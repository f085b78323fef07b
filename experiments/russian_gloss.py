"""Russian queries: a word-by-word English gloss beside the USE kernel map, measured on the grouped folds.

    python experiments/russian_gloss.py runs/cv        (after python evaluate.py --cross-validate --output-dir runs/cv)
    python experiments/russian_gloss.py report         -> reports/russian_gloss.{md,json}

For each fold checkpoint (runs/cv/cv/fold<k>/best) the validation fold's own captions, never trained on, retrieve
their photos among the fold's photos: English through the English tower, Russian through (a) the kernel map as
search runs it, (b) the product's gloss (wsense.models.multilingual.Glossary: each Russian word's dictionary
form replaced by the English word an IBM Model 1 alignment of the Russian and English training captions gives
it) through the English tower, with its USE fallback for unseen words (gloss+use) and without it (gloss), and
(c) blends of the two, normalise(w * map + (1 - w) * gloss). The map, the alignment and the query bank are
fitted without the fold's captions. Prints the mean over folds of R@1 / R@5 by cosine, query-bank cosine and
fusion. Adopted: map 0.5, gloss+use 0.5 (search.multilingual_gloss 0.5). Figures in docs/experiments.md.
"""
import copy
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from wsense.config import load_config
from wsense.data import load_data
from wsense.evaluation.evaluators import RetrievalEvaluator, catalog_scores
from wsense.evaluation.multilingual import held_out_captions
from wsense.models.checkpoint import load_checkpoint
from wsense.models.multilingual import unit_rows
from wsense.serving.scoring import RelevanceScorer, build_query_bank, fit_text_map

WEIGHTS = (1.0, 0.75, 0.6, 0.5, 0.4, 0.25, 0.0)


def main(run_dir):
    config = load_config("configs/default.yaml")
    data = load_data(config.data_dir)
    results = defaultdict(list)
    folds = sorted(Path(run_dir, "cv").glob("fold*/best"))
    for checkpoint in folds:
        model, fold_config, _ = load_checkpoint(checkpoint, config)
        queries, catalog = held_out_captions(data, fold_config)
        scorer = RelevanceScorer(model, fold_config, "cpu")
        scorer.text_map = fit_text_map(scorer, fold_config, exclude_images=catalog)  # its glossary, too
        scorer.bank = build_query_bank(scorer, fold_config, exclude_images=catalog)
        u = scorer.embed_images([data.train_image_dir / name for name in catalog], progress=False)
        offsets = scorer.photo_offsets(u)
        evaluator = RetrievalEvaluator(queries, catalog)
        russian = queries["query_text_ru"].tolist()
        glossary = scorer.text_map.glossary
        glosses_use = glossary(russian)
        alignment_only = copy.copy(glossary)
        alignment_only.threshold = 2.0  # above any cosine: a word the alignment never saw is dropped
        glosses = alignment_only(russian)
        if checkpoint == folds[0]:
            for i in range(8):
                print(queries["query_text"][i], "|", russian[i], "|", glosses[i], "|", glosses_use[i], file=sys.stderr)
        v_en = scorer.embed_english(queries["query_text"].tolist())
        v_map = scorer.text_map(russian)
        v_map_en = scorer.text_map(queries["query_text"].tolist())
        v_gloss = scorer.embed_english(glosses)
        v_gloss_use = scorer.embed_english(glosses_use)
        variants = {"english": v_en, "english via map": v_map_en}
        for w in WEIGHTS:
            variants[f"ru map {w:g} gloss {1 - w:g}"] = unit_rows(w * v_map + (1 - w) * v_gloss)
            if w < 1:
                variants[f"ru map {w:g} gloss+use {1 - w:g}"] = unit_rows(w * v_map + (1 - w) * v_gloss_use)
        for name, v in variants.items():
            for ranking, matrix in catalog_scores(scorer, v, u, offsets).items():
                metrics = evaluator(matrix)
                results[(name, ranking)].append((metrics["r1"], metrics["r5"]))
        print(f"{checkpoint}: done", file=sys.stderr)
    summary = {}
    for (name, ranking), values in results.items():
        values = np.asarray(values)
        summary[f"{name} [{ranking}]"] = ([round(float(x), 4) for x in values.mean(0)]
                                          + [round(float(values[:, 0].std()), 4)])
        print(f"{name:28s} {ranking:10s} R@1 {values[:, 0].mean():.4f} ± {values[:, 0].std():.4f}  "
              f"R@5 {values[:, 1].mean():.4f}")
    Path("runs/experiments").mkdir(parents=True, exist_ok=True)
    Path("runs/experiments/russian_gloss.json").write_text(json.dumps(summary, indent=1))


def report():
    summary = json.loads(Path("runs/experiments/russian_gloss.json").read_text())
    Path("reports/russian_gloss.json").write_text(json.dumps(summary, indent=1) + "\n")
    variants = list(dict.fromkeys(name.rsplit(" [", 1)[0] for name in summary))
    lines = ["# Russian queries: the map, a word-by-word gloss, and blends, on validation", "",
             "The held-out captions of the 5 fold checkpoints of `python evaluate.py --cross-validate --output-dir "
             "runs/cv` (seed 42), each among its fold's photos; the map, the alignment and the query bank fitted "
             "without them. R@1 mean ± spread over folds, R@5 mean. `ru map w gloss 1-w`: normalise(w map + (1-w) "
             "gloss); `gloss+use`: words the alignment never saw take their nearest English caption word in USE "
             "space. Written by `python experiments/russian_gloss.py report`; adopted: map 0.5, gloss+use 0.5 "
             "(search.multilingual_gloss 0.5). Method and test figures: docs/experiments.md.", "",
             "| texts | R@1 query-bank cosine (search) | R@5 query-bank cosine | R@1 cosine | R@1 fusion |",
             "|---|---|---|---|---|"]
    for name in variants:
        qb, cosine, fusion = (summary[f"{name} [{r}]"] for r in ("qb_cosine", "cosine", "fusion"))
        lines.append(f"| {name} | {qb[0]:.4f} ± {qb[2]:.4f} | {qb[1]:.4f} | {cosine[0]:.4f} ± {cosine[2]:.4f} | "
                     f"{fusion[0]:.4f} ± {fusion[2]:.4f} |")
    Path("reports/russian_gloss.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(2)
    if sys.argv[1:] == ["report"]:
        report()
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "runs/cv")
