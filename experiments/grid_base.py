"""Today's model on the grouped folds, with its validation scores kept for the grid re-rank experiment.

    python experiments/grid_base.py 7                      (train each fold)
    python experiments/grid_base.py 42 runs/default/cv     (score the fold checkpoints of
                                                            `python evaluate.py --cross-validate`, seed 42)

For each seed and fold: the default config (Lite0 + Lite2, five views, frozen towers) trained as
`python evaluate.py --cross-validate` trains it (validation captions held out, best epoch by validation Spearman),
and the best epoch's scores written to runs/experiments/grid_rerank/base/seed<s>/fold<f>/scores.npz: the fusion
head's logit on the fold's expert pairs (rows of sets.val_pairs), and the (captions x fold photos) matrices of the
cosine and of the query-bank cosine (beta 20, weight 0.25, bank without the fold's captions), what search ranks by.
A fold already there is skipped. experiments/grid_rerank.py reads them.
"""
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wsense.config import load_config
from wsense.data import load_data
from wsense.evaluation.evaluators import RetrievalEvaluator, ValidationEvaluator, catalog_scores
from wsense.models.checkpoint import load_checkpoint
from wsense.serving.query_bank import bank_offsets, bank_texts
from wsense.training.inputs import FrozenInputs
from wsense.training.loop import train
from wsense.training.sets import build_training_sets

OUT = Path("runs/experiments/grid_rerank/base")


class DumpingEvaluator(ValidationEvaluator):
    """The trainer's validation, plus the query-bank ranking, keeping every epoch's score arrays."""

    bank: list = []
    kept: list = None

    @property
    def texts(self):
        return sorted(set(super().texts) | set(self.bank))

    def __call__(self, model, embed):
        metrics = super().__call__(model, embed)
        images, texts = sorted(set(self.pairs["image"])), sorted(set(self.pairs["query_text"]))
        u, v = embed(images, texts)
        ui = torch.tensor(self.pairs["image"].map({n: i for i, n in enumerate(images)}).to_numpy())
        vi = torch.tensor(self.pairs["query_text"].map({t: i for i, t in enumerate(texts)}).to_numpy())
        with torch.no_grad():
            fusion_logit = model.fuse(u[ui], v[vi]).float().cpu().numpy()
        catalog = images
        u, v = embed(catalog, self.positives["query_text"].tolist())
        _, vb = embed(catalog[:1], self.bank)
        offsets = bank_offsets(vb.numpy(), u.numpy(), 20.0)
        scores = catalog_scores(model, v, u, 0.25 * offsets)
        metrics["r1_qb"] = RetrievalEvaluator(self.positives, catalog)(scores["qb_cosine"])["r1"]
        self.kept = self.kept or []
        self.kept.append({"fusion_logit": fusion_logit, "cosine": scores["cosine"], "qb_cosine": scores["qb_cosine"],
                          "fusion": scores["fusion"], "catalog": np.array(catalog),
                          "queries": self.positives["query_text"].to_numpy().astype(str)})
        return metrics


def checkpoint_embed(model, config, data, texts):
    """embed(images, texts) of a saved fold checkpoint from the cached frozen features, as the trainer embeds."""
    paths = {name: data.train_image_dir / name for name in data.train_images}
    paths.update({name: data.test_image_dir / name for name in data.test_images})
    inputs = FrozenInputs(config, paths, texts)

    @torch.no_grad()
    def embed(images, texts):
        ii = torch.tensor([inputs.image_index[n] for n in images])
        ti = torch.tensor([inputs.text_index[t] for t in texts])
        return (model.encode_images(inputs.image_batch(ii, train=False)).float(),
                model.encode_texts(inputs.text_batch(ti)).float())
    return embed


def run_fold(config, data, seed: int, fold: int, saved: Path | None = None) -> dict:
    """`saved`: a folder of fold checkpoints of this config and seed (<saved>/fold<f>/best), scored instead of
    training again."""
    out = OUT / f"seed{seed}" / f"fold{fold}"
    if (out / "scores.npz").is_file():
        return json.loads((out / "best.json").read_text())
    cfg = copy.deepcopy(config)
    cfg.training.seed, cfg.training.val_fold, cfg.training.output_dir = seed, fold, str(out / "run")
    sets = build_training_sets(data, cfg, fold)
    evaluator = DumpingEvaluator(sets.val_pairs, sets.val_positives)
    evaluator.bank = bank_texts(data.captions, set(sets.val_pairs["image"]))
    if saved is not None:
        model, saved_config, metadata = load_checkpoint(saved / f"fold{fold}" / "best", config)
        assert saved_config.training.seed == seed and saved_config.training.val_fold == fold, saved
        metrics = evaluator(model, checkpoint_embed(model, config, data, evaluator.texts))
        best = {"seed": seed, "fold": fold, "epoch": metadata["epoch"], "from": str(saved),
                **{f"val_{k}": v for k, v in metrics.items()}}
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "scores.npz", **evaluator.kept[-1])
        (out / "best.json").write_text(json.dumps(best, indent=1))
        return best
    shutil.rmtree(cfg.training.output_dir, ignore_errors=True)
    start = time.time()
    result = train(cfg, data=data, sets=sets, evaluator=evaluator)
    kept = evaluator.kept[result.best_epoch - 1]
    best = {"seed": seed, "fold": fold, "epoch": result.best_epoch, "seconds": round(time.time() - start),
            **{k: v for k, v in result.best.items() if k.startswith("val_")}}
    np.savez(out / "scores.npz", **kept)
    (out / "best.json").write_text(json.dumps(best, indent=1))
    shutil.rmtree(out / "run" / "last", ignore_errors=True)  # the resume state: not needed here
    return best


def main(seeds: list[int], saved: Path | None) -> None:
    config = load_config("configs/default.yaml")
    data = load_data(config.data_dir)
    for seed in seeds:
        for fold in range(config.baselines.folds):
            print(json.dumps(run_fold(config, data, seed, fold, saved)), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1].split(",")], Path(sys.argv[2]) if len(sys.argv) > 2 else None)
