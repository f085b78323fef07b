"""Russian queries: a word-by-word English gloss beside the USE kernel map, measured on the grouped folds.

    python experiments/russian_gloss.py runs/cv        (after python evaluate.py --cross-validate --output-dir runs/cv)
    python experiments/russian_gloss.py report         -> reports/russian_gloss.{md,json}

For each fold checkpoint (runs/cv/cv/fold<k>/best) the validation fold's own captions, never trained on, retrieve
their photos among the fold's photos: English through the English tower, Russian through (a) the kernel map as
search runs it, (b) a gloss: each Russian word's lemma (pymorphy3) replaced by the English word an IBM Model 1
alignment of the Russian and English training captions gives it, the gloss then through the English tower,
and (c) blends of the two, normalise(w * map + (1 - w) * gloss). The map and the alignment are both fitted
without the fold's captions. Prints the mean over folds of R@1 / R@5 by cosine, query-bank cosine and fusion.

The adopted setting (map 0.5, gloss with the USE fallback 0.5) is the product's: wsense.models.multilingual's
Glossary and search.multilingual_gloss. Figures in docs/experiments.md.
"""
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from wsense.config import load_config
from wsense.data import load_data
from wsense.evaluation.evaluators import RetrievalEvaluator, catalog_scores
from wsense.evaluation.multilingual import held_out_captions
from wsense.models.checkpoint import load_checkpoint
from wsense.serving.query_bank import bank_offsets
from wsense.serving.scoring import RelevanceScorer, build_query_bank, fit_text_map, read_translations

WORD = re.compile(r"[a-zа-яё]+")
WEIGHTS = (1.0, 0.75, 0.6, 0.5, 0.4, 0.25, 0.0)


def russian_lemmas(text, morph, cache={}):
    out = []
    for word in WORD.findall(text.lower()):
        if word not in cache:
            cache[word] = morph.parse(word)[0].normal_form.replace("ё", "е")
        out.append(cache[word])
    return out


def english_words(text):
    return WORD.findall(text.lower())


def ibm1(pairs, iterations=12):
    """t[r][e]: P(English word e | Russian lemma r) by IBM Model 1 EM, a NULL source in every sentence."""
    t = defaultdict(lambda: defaultdict(lambda: 1.0))
    for _ in range(iterations):
        counts, totals = defaultdict(Counter), Counter()
        for russian, english in pairs:
            sources = russian + [None]
            for e in english:
                norm = sum(t[r][e] for r in sources)
                for r in sources:
                    share = t[r][e] / norm
                    counts[r][e] += share
                    totals[r] += share
        t = defaultdict(lambda: defaultdict(float),
                        {r: defaultdict(float, {e: c / totals[r] for e, c in es.items()}) for r, es in counts.items()})
    return t


def gloss(text, t, morph, fallback=None):
    """The gloss; `fallback(lemma)` names an English word for a lemma the alignment never saw (or None)."""
    words = []
    for lemma in russian_lemmas(text, morph):
        if lemma in t and t[lemma]:
            words.append(max(t[lemma].items(), key=lambda item: item[1])[0])
        elif fallback is not None and (word := fallback(lemma)):
            words.append(word)
    return " ".join(words)


def use_fallback(vocabulary, threshold=0.5):
    """The English word of `vocabulary` nearest a lemma in USE space, where its cosine passes `threshold`."""
    from wsense.models.multilingual import universal_sentence_encoder

    use = universal_sentence_encoder()
    vocabulary = sorted(vocabulary)
    vectors = np.asarray(use.encode(vocabulary), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def nearest(lemma):
        vector = np.asarray(use.encode([lemma]), dtype=np.float32)[0]
        cosines = vectors @ (vector / np.linalg.norm(vector))
        best = int(cosines.argmax())
        return vocabulary[best] if cosines[best] >= threshold else None
    return nearest


def main(run_dir):
    import pymorphy3

    morph = pymorphy3.MorphAnalyzer(lang="ru")
    config = load_config("configs/default.yaml")
    data = load_data(config.data_dir)
    russian = read_translations(config.data.russian_train_captions)
    known = data.captions.set_index("query_id")
    results = defaultdict(list)
    folds = sorted(Path(run_dir, "cv").glob("fold*/best"))
    for checkpoint in folds:
        model, fold_config, _ = load_checkpoint(checkpoint, config)
        queries, catalog = held_out_captions(data, fold_config)
        scorer = RelevanceScorer(model, fold_config, "cpu")
        scorer.text_map = fit_text_map(scorer, fold_config, exclude_images=catalog)
        held = set(catalog)
        pairs = [(russian_lemmas(text, morph), english_words(known.loc[qid, "query_text"]))
                 for qid, text in russian.items() if qid in known.index and known.loc[qid, "image"] not in held]
        t = ibm1(pairs)
        u = scorer.embed_images([data.train_image_dir / name for name in catalog], progress=False)
        bank = build_query_bank(scorer, fold_config, exclude_images=catalog)
        offsets = 0.25 * bank_offsets(bank, u.numpy(), 20.0)
        evaluator = RetrievalEvaluator(queries, catalog)
        glosses = [gloss(text, t, morph) for text in queries["query_text_ru"]]
        fallback = use_fallback({word for _, english in pairs for word in english})
        glosses_use = [gloss(text, t, morph, fallback) for text in queries["query_text_ru"]]
        if checkpoint == folds[0]:
            for i in range(8):
                print(queries["query_text"][i], "|", queries["query_text_ru"][i], "|", glosses[i], "|", glosses_use[i],
                      file=sys.stderr)
        v_en = scorer.embed_english(queries["query_text"].tolist())
        v_map = scorer.text_map(queries["query_text_ru"].tolist())
        v_map_en = scorer.text_map(queries["query_text"].tolist())
        v_gloss = scorer.embed_english(glosses)
        v_gloss_use = scorer.embed_english(glosses_use)
        variants = {"english": v_en, "english via map": v_map_en}
        for w in WEIGHTS:
            variants[f"ru map {w:g} gloss {1 - w:g}"] = F.normalize(w * v_map + (1 - w) * v_gloss, dim=-1)
            if w < 1:
                variants[f"ru map {w:g} gloss+use {1 - w:g}"] = F.normalize(w * v_map + (1 - w) * v_gloss_use, dim=-1)
        for name, v in variants.items():
            for ranking, matrix in catalog_scores(model, v, u, offsets).items():
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
