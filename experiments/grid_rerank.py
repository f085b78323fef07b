"""Issue 29: a re-rank head over the photo's grid cells, measured on the grouped folds against today's ranking.

    python experiments/grid_features.py                 # grid features and token states, once
    python experiments/grid_base.py 42 runs/default/cv  # today's model per fold (seed 42: the CV checkpoints)
    python experiments/grid_base.py 7                   # (seed 7: trained)
    python experiments/grid_rerank.py run lite0+lite2-128 42,7   # kinds: <backbones>-<PCA width>[-<option>]
    python experiments/grid_rerank.py report            -> reports/grid_rerank.{md,json}

For each seed and fold (the folds of `python evaluate.py --cross-validate`, validation captions held out): the
fold's training sets (wsense.training.sets), a PCA per backbone fitted on the fold's training photos, int8 cells,
and the head of experiments/grid_head.py trained with wsense's losses: the weighted regression of its expert and
crowd outputs on the judged pairs (crowd-only pairs: an eighth of them drawn each epoch, at eight times
their weight, the same expected weight as the trainer's) and the multi-positive InfoNCE of its all-pairs score on
batches of positive pairs. The best epoch by validation Spearman, as the trainer keeps it. Each fold's validation scores
go to runs/experiments/grid_rerank/<kind>/seed<s>/fold<f>.npz; the report mixes them with today's.

Options: -g<n> (each backbone's map average-pooled to n x n cells first; 1: the pooled vector of the full view),
-c<weight> (contrastive weight, default 0.1), -e<epochs> (default 6).
"""
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wsense.config import load_config
from wsense.data import load_data
from wsense.evaluation.evaluators import RetrievalEvaluator
from wsense.evaluation.metrics import spearman
from wsense.training.losses import contrastive_loss, regression_loss
from wsense.training.sets import build_training_sets

sys.path.insert(0, str(Path(__file__).parent))
from grid_head import GridHead, bytes_per_photo, dequantise, fit_pca, project_int8  # noqa: E402

FEATURES = Path(".cache/wsense/experiments/grid_rerank")
OUT = Path("runs/experiments/grid_rerank")
CELLS = {"lite0": 49, "lite2": 81}
LR = 2e-3
CROWD_SHARE = 8  # a 1/8 draw of the crowd-only pairs each epoch, at 8 times their weight


def parse_kind(kind: str) -> dict:
    parts = kind.split("-")
    options = {"backbones": parts[0].split("+"), "width": int(parts[1]), "contrastive": 0.1, "epochs": 6, "grid": 0}
    for part in parts[2:]:
        key = {"c": "contrastive", "e": "epochs", "g": "grid"}[part[0]]
        options[key] = type(options[key])(part[1:])
    return options


def pooled(grid: np.ndarray, n: int) -> np.ndarray:
    """(photos, s*s, channels) -> (photos, n*n, channels), each map average-pooled to n x n."""
    side = int(round(np.sqrt(grid.shape[1])))
    maps = torch.from_numpy(grid).float().view(len(grid), side, side, -1).permute(0, 3, 1, 2)
    out = torch.nn.functional.adaptive_avg_pool2d(maps, n).flatten(2).transpose(1, 2)
    return out.half().numpy()


def cells_of(options: dict) -> list[int]:
    return [options["grid"] ** 2 if options["grid"] else CELLS[b] for b in options["backbones"]]


class Inputs:
    """Grids (raw fp16, per backbone), token states and their masks, indexed by photo name and text."""

    def __init__(self, backbones: list[str], pool: int = 0):
        self.raw = {}
        for name in backbones:
            with np.load(FEATURES / f"{name}.npz") as stored:
                self.names = stored["names"].tolist()
                self.raw[name] = stored["grid"] if not pool else pooled(stored["grid"], pool)
        self.image_index = {n: i for i, n in enumerate(self.names)}
        with np.load(FEATURES / "tokens.npz") as stored:
            self.text_index = {t: i for i, t in enumerate(stored["texts"].tolist())}
            self.states = torch.from_numpy(stored["states"].astype(np.float32))
            self.mask = torch.from_numpy(stored["mask"])

    def projected(self, train_images: list[str], width: int) -> list[torch.Tensor]:
        """Per backbone: every photo's cells through a PCA fitted on `train_images`, int8, de-quantised."""
        rows = np.array([self.image_index[n] for n in train_images])
        out = []
        for grid in self.raw.values():
            mean, components = fit_pca(grid[rows], width)
            cells = dequantise(*project_int8(grid, mean, components))
            # each stored dimension to unit spread on the training photos (a fixed scale a query can apply)
            out.append(torch.from_numpy(cells / cells[rows].reshape(-1, width).std(0)))
        return out

    def tokens(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.mask[index]
        length = int(mask.sum(1).max())
        return self.states[index, :length], mask[:, :length]


def catalog_logits(head, inputs, grids, texts, images, chunk=16):
    ti = torch.tensor([inputs.text_index[t] for t in texts])
    ii = torch.tensor([inputs.image_index[n] for n in images])
    g = [grid[ii] for grid in grids]
    rows = []
    for part in ti.split(chunk):
        states, mask = inputs.tokens(part)
        rows.append(head.all_logits(states, mask, g)[..., 0])
    return torch.cat(rows).numpy()


def pair_logits(head, inputs, grids, texts, images, chunk=512):
    ti = torch.tensor([inputs.text_index[t] for t in texts])
    ii = torch.tensor([inputs.image_index[n] for n in images])
    out = []
    for a, b in zip(ti.split(chunk), ii.split(chunk)):
        states, mask = inputs.tokens(a)
        out.append(head.pair_logits(states, mask, [grid[b] for grid in grids])[:, 0])
    return torch.cat(out).numpy()


@torch.no_grad()
def validate(head, inputs, grids, sets, catalog: bool = False) -> dict:
    """Spearman of the expert logit on the fold's expert pairs; with `catalog`, the (captions x fold photos) logits
    and R@1 too."""
    head.eval()
    val = sets.val_pairs
    logits = pair_logits(head, inputs, grids, val["query_text"].tolist(), val["image"].tolist())
    out = {"spearman": spearman(logits, val["expert_target"].to_numpy()), "pair_logits": logits}
    if catalog:
        photos = sorted(set(val["image"]))
        matrix = catalog_logits(head, inputs, grids, sets.val_positives["query_text"].tolist(), photos)
        r1 = RetrievalEvaluator(sets.val_positives, photos)(matrix)["r1"]
        out.update(matrix=matrix, catalog=np.array(photos), r1=r1)
    head.train()
    return out


def train_fold(options: dict, inputs: Inputs, sets, seed: int) -> tuple[dict, list]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_images = sorted(set(sets.judged["image"]) | set(sets.positives["image"]))
    grids = inputs.projected(train_images, options["width"])
    head = GridHead(options["width"], cells_of(options))
    judged = sets.judged
    j_img = torch.tensor(judged["image"].map(inputs.image_index).to_numpy())
    j_txt = torch.tensor(judged["query_text"].map(inputs.text_index).to_numpy())
    j_tgt = torch.tensor(judged["target"].to_numpy(), dtype=torch.float32)
    j_wt = torch.tensor(judged["weight"].to_numpy(), dtype=torch.float32)
    j_src = torch.tensor(judged["source"].to_numpy(), dtype=torch.long)
    expert, crowd = np.flatnonzero(j_src.numpy() == 0), np.flatnonzero(j_src.numpy() == 1)
    p_img = torch.tensor(sets.positives["image"].map(inputs.image_index).to_numpy())
    p_txt = torch.tensor(sets.positives["query_text"].map(inputs.text_index).to_numpy())
    known = set(zip(p_txt.tolist(), p_img.tolist()))
    batch, p_batch, epochs = 256, 32, options["epochs"]
    steps = epochs * ((len(expert) + len(crowd) // CROWD_SHARE) // batch)
    optimizer = torch.optim.AdamW(head.parameters(), lr=LR, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, LR, total_steps=steps + epochs, pct_start=0.1)
    log_scale = torch.tensor(0.0)  # InfoNCE on the logits as they are: `out` learns their spread
    best, history = None, []
    for epoch in range(epochs):
        rows = np.concatenate([expert, rng.choice(crowd, len(crowd) // CROWD_SHARE, replace=False)])
        rng.shuffle(rows)
        weight = j_wt.clone()
        weight[j_src == 1] *= CROWD_SHARE
        for start in range(0, len(rows) - batch + 1, batch):
            b = torch.from_numpy(rows[start:start + batch])
            states, mask = inputs.tokens(j_txt[b])
            logits = head.pair_logits(states, mask, [g[j_img[b]] for g in grids])
            logits = logits.gather(1, j_src[b, None]).squeeze(1)
            loss = regression_loss(logits, j_tgt[b], weight[b])
            if options["contrastive"] > 0:
                pick = torch.from_numpy(rng.choice(len(p_img), p_batch, replace=False))
                images, texts = torch.unique(p_img[pick]), torch.unique(p_txt[pick])
                positive = torch.tensor([[(t, i) in known for i in images.tolist()] for t in texts.tolist()])
                states, mask = inputs.tokens(texts)
                scores = head.all_logits(states, mask, [g[images] for g in grids])[..., 0]
                # wsense's InfoNCE on the score matrix: text "embeddings" = score rows, image ones = the identity.
                loss = loss + options["contrastive"] * contrastive_loss(scores, torch.eye(len(images)), positive,
                                                                        log_scale)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        metrics = validate(head, inputs, grids, sets)
        print(f"  epoch {epoch + 1}: spearman {metrics['spearman']:.4f}", file=sys.stderr, flush=True)
        history.append({"epoch": epoch + 1, "spearman": metrics["spearman"]})
        if best is None or metrics["spearman"] > best["spearman"]:
            best = {"epoch": epoch + 1, "spearman": metrics["spearman"], "state": copy.deepcopy(head.state_dict())}
    head.load_state_dict(best["state"])
    return {**validate(head, inputs, grids, sets, catalog=True), "epoch": best["epoch"]}, history


def run(kind: str, seeds: list[int], folds: list[int] | None = None) -> None:
    torch.set_num_threads(1)  # two kinds side by side on two cores
    options = parse_kind(kind)
    config = load_config("configs/default.yaml")
    data = load_data(config.data_dir)
    inputs = Inputs(options["backbones"], options["grid"])
    for seed in seeds:
        for fold in folds if folds is not None else range(config.baselines.folds):
            out = OUT / kind / f"seed{seed}" / f"fold{fold}.npz"
            if out.is_file():
                continue
            sets = build_training_sets(data, config, fold)
            start = time.time()
            best, history = train_fold(options, inputs, sets, seed)
            out.parent.mkdir(parents=True, exist_ok=True)
            np.savez(out, pair_logits=best["pair_logits"], matrix=best["matrix"], catalog=best["catalog"],
                     queries=sets.val_positives["query_text"].to_numpy().astype(str),
                     history=json.dumps(history), epoch=best["epoch"])
            print(kind, seed, fold, f"{time.time() - start:.0f}s", f"best epoch {best['epoch']}",
                  f"spearman {best['spearman']:.4f} r1 {best['r1']:.4f}", file=sys.stderr, flush=True)
    print(kind, "bytes per photo (int8 cells + scales):",
          bytes_per_photo(cells_of(options), options["width"]))


if __name__ == "__main__":
    if sys.argv[1] == "report":
        from grid_report import report
        print(report().read_text())
    else:
        run(sys.argv[2], [int(s) for s in sys.argv[3].split(",")],
            [int(f) for f in sys.argv[4].split(",")] if len(sys.argv) > 4 else None)
