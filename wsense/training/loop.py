"""The training loop: one Accelerate loop for every mode, CPU or GPU, one or many processes.

Each step takes a batch of judged pairs (regression of the fusion score) and a batch of positive pairs
(contrastive loss on the projections) through one forward pass. Every epoch is seeded by (seed, epoch),
so a run resumed from its last checkpoint continues exactly as if it had not stopped.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from wsense.config import Config
from wsense.data import WithSenseData, load_data
from wsense.errors import WsenseError
from wsense.evaluation import CorrelationEvaluator, RetrievalEvaluator
from wsense.models.relevance import RelevanceModel, build_relevance_model
from wsense.io import replace_dir
from wsense.training.checkpoint import save_checkpoint
from wsense.training.inputs import FrozenInputs, PixelInputs
from wsense.training.losses import contrastive_loss, regression_loss
from wsense.training.sets import TrainingSets, build_training_sets

STATE_FILE = "train_state.json"


class EpochShuffle(Sampler[int]):
    """A permutation seeded by (seed, epoch): the same batches whether or not the run was resumed."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def set_trainable(model: RelevanceModel, config: Config) -> None:
    """Frozen: heads only. Partial: heads and the top stages of both towers. Full: everything.

    The backbone's ImageNet classifier stays frozen in every mode: it feeds the label bridge.
    """
    mode = config.training.mode
    backbone, text = model.image_backbone, model.text_encoder
    for parameter in list(backbone.parameters()) + list(text.parameters()):
        parameter.requires_grad = mode == "full"
    if mode == "partial":
        stages = [info["module"] for info in backbone.model.feature_info]
        first = stages[-min(config.training.top_image_blocks, len(stages))]
        names = [name for name, _ in backbone.model.named_parameters()]
        start = next(i for i, name in enumerate(names) if name.startswith(first + ".") or name == first)
        for name, parameter in list(backbone.model.named_parameters())[start:]:
            parameter.requires_grad = True
        layers = text.model.encoder.layer
        for layer in layers[len(layers) - config.training.top_text_layers:]:
            for parameter in layer.parameters():
                parameter.requires_grad = True
    for parameter in backbone.model.get_classifier().parameters():
        parameter.requires_grad = False


def _keep_batchnorm_frozen(model: RelevanceModel) -> None:
    # Small batches of a few hundred photos would make batch statistics noisy: keep the ImageNet ones.
    for module in model.image_backbone.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


@dataclass
class TrainResult:
    output_dir: Path
    best_epoch: int
    best: dict[str, float]
    history: list[dict] = field(default_factory=list)


class Trainer:
    def __init__(self, config: Config, data: WithSenseData | None = None, *, cpu: bool = False):
        self.config = config
        training = config.training
        precision = training.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and not cpu else "no"
        self.accelerator = Accelerator(
            cpu=cpu, mixed_precision=precision, gradient_accumulation_steps=training.gradient_accumulation_steps,
            log_with=training.tracker, project_dir=training.output_dir,
        )
        set_seed(training.seed)
        self.output_dir = Path(training.output_dir)
        self.data = data or load_data(config.data_dir)
        self.sets: TrainingSets = build_training_sets(self.data, config, training.val_fold)
        state = self.accelerator.state
        self.print(f"training on {state.device} ({state.distributed_type.value}, {state.num_processes} "
                   f"process{'es' if state.num_processes > 1 else ''}, mixed precision {state.mixed_precision})")
        self.print(str(self.sets.summary))
        self.print(self.sets.describe())
        self.model = build_relevance_model(config)
        set_trainable(self.model, config)
        image_paths = {name: self.data.train_image_dir / name for name in self.data.train_images}
        image_paths.update({name: self.data.test_image_dir / name for name in self.data.test_images})
        texts = pd.concat([self.sets.judged["query_text"], self.sets.positives["query_text"],
                           self.sets.val_pairs["query_text"], self.sets.val_positives["query_text"],
                           self.data.test_queries["query_text"]]).tolist()
        self.inputs = (FrozenInputs(config, image_paths, texts) if training.mode == "frozen"
                       else PixelInputs(config, self.model, image_paths, texts, device=self.accelerator.device))

        judged, positives = self.sets.judged, self.sets.positives
        self.judged_tensors = {
            "image": torch.tensor(judged["image"].map(self.inputs.image_index).to_numpy()),
            "text": torch.tensor(judged["query_text"].map(self.inputs.text_index).to_numpy()),
            "target": torch.tensor(judged["target"].to_numpy(), dtype=torch.float32),
            "weight": torch.tensor(judged["weight"].to_numpy(), dtype=torch.float32),
            "source": torch.tensor(judged["source"].to_numpy(), dtype=torch.long),
        }
        self.positive_tensors = {
            "image": torch.tensor(positives["image"].map(self.inputs.image_index).to_numpy()),
            "text": torch.tensor(positives["query_text"].map(self.inputs.text_index).to_numpy()),
        }
        # (text, image) -> is a known positive, looked up for a whole batch at once.
        self.known_positives = torch.zeros(len(self.inputs.texts), len(self.inputs.image_names), dtype=torch.bool)
        self.known_positives[self.positive_tensors["text"], self.positive_tensors["image"]] = True
        self.judged_sampler = EpochShuffle(len(judged), training.seed)
        self.positive_sampler = EpochShuffle(len(positives), training.seed + 1)
        judged_loader = DataLoader(range(len(judged)), batch_size=training.batch_size, sampler=self.judged_sampler,
                                   drop_last=len(judged) > training.batch_size)
        positive_loader = DataLoader(range(len(positives)), batch_size=training.contrastive_batch_size,
                                     sampler=self.positive_sampler,
                                     drop_last=len(positives) > training.contrastive_batch_size)
        groups = [{"params": self.model.head_parameters(), "lr": training.lr}]
        if self.model.tower_parameters():
            groups.append({"params": self.model.tower_parameters(), "lr": training.tower_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=training.weight_decay)
        self.steps_per_epoch = math.ceil(len(judged_loader) / training.gradient_accumulation_steps)
        total = max(1, self.steps_per_epoch * training.epochs)
        warmup = min(training.warmup_steps, total // 2)

        def schedule(step: int) -> float:  # linear warm-up, then cosine decay to zero
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [schedule] * len(groups))
        (self.model, self.optimizer, self.judged_loader, self.positive_loader,
         self.scheduler) = self.accelerator.prepare(self.model, optimizer, judged_loader, positive_loader, scheduler)
        self.epoch, self.best_epoch, self.best, self.history = 0, -1, {}, []

    def print(self, message: str) -> None:
        if self.accelerator.is_main_process:
            print(message, file=sys.stderr)

    @property
    def unwrapped(self) -> RelevanceModel:
        return self.accelerator.unwrap_model(self.model)

    # -- one epoch ------------------------------------------------------------------------------------
    def _batch(self, judged_index: torch.Tensor, positive_index: torch.Tensor):
        j = {k: v[judged_index.cpu()] for k, v in self.judged_tensors.items()}
        p = {k: v[positive_index.cpu()] for k, v in self.positive_tensors.items()}
        # Each distinct image and text of the positive batch once: duplicates are positives, not negatives.
        p_images, p_image_pos = torch.unique(p["image"], return_inverse=True)
        p_texts = torch.unique(p["text"])
        images = torch.cat([j["image"], p_images])
        texts = torch.cat([j["text"], p_texts])
        mask = self.known_positives[p_texts][:, p_images]
        device = self.accelerator.device
        to = lambda batch: {k: v.to(device, non_blocking=True) for k, v in batch.items()}  # noqa: E731
        return (to(self.inputs.image_batch(images, train=True)), to(self.inputs.text_batch(texts)),
                j["target"].to(device), j["weight"].to(device), j["source"].to(device), mask.to(device),
                len(j["image"]))

    def _positive_batches(self):
        """Positive batches without end: the (usually smaller) positive set is cycled within an epoch."""
        for cycle in range(1_000_000):
            self.positive_loader.set_epoch(self.epoch * 1_000_000 + cycle)
            yield from self.positive_loader

    def train_epoch(self) -> dict[str, float]:
        training = self.config.training
        set_seed(training.seed * 1_000 + self.epoch)
        # Accelerate's loaders pass their own pass counter to the sampler; set it from the epoch instead,
        # so that a resumed run draws the same batches.
        self.judged_loader.set_epoch(self.epoch)
        self.model.train()
        if training.mode != "frozen":
            _keep_batchnorm_frozen(self.unwrapped)
        positives = self._positive_batches()
        totals, count, pairs, start = {"loss": 0.0, "regression": 0.0, "contrastive": 0.0}, 0, 0, time.perf_counter()
        bar = tqdm(self.judged_loader, desc=f"epoch {self.epoch + 1}/{training.epochs}", unit="step",
                   file=sys.stderr, disable=not self.accelerator.is_main_process, leave=False)
        for judged_index in bar:
            positive_index = next(positives)
            images, texts, target, weight, source, mask, n_pairs = self._batch(judged_index, positive_index)
            with self.accelerator.accumulate(self.model):
                u, v, logits = self.model(images, texts, n_pairs, source)
                reg = regression_loss(logits, target, weight)
                con = contrastive_loss(v[n_pairs:], u[n_pairs:], mask, self.unwrapped.logit_scale)
                loss = training.regression_weight * reg + training.contrastive_weight * con
                self.accelerator.backward(loss)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
            totals["loss"] += loss.item()
            totals["regression"] += reg.item()
            totals["contrastive"] += con.item()
            count += 1
            pairs += len(judged_index) + len(positive_index)
            bar.set_postfix(loss=f"{totals['loss'] / count:.4f}")
        metrics = {f"train_{k}": v / max(count, 1) for k, v in totals.items()}
        # Judged and positive pairs through both towers per second, data pipeline included (per process).
        metrics["train_pairs_per_s"] = pairs / max(time.perf_counter() - start, 1e-9)
        return metrics

    # -- validation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, images: list[str], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.unwrapped.eval()
        device = self.accelerator.device
        image_index = torch.tensor([self.inputs.image_index[name] for name in images])
        text_index = torch.tensor([self.inputs.text_index[text] for text in texts])
        us, vs = [], []
        with self.accelerator.autocast():
            for chunk in image_index.split(256):
                batch = {k: v.to(device) for k, v in self.inputs.image_batch(chunk, train=False).items()}
                us.append(model.encode_images(batch).float())
            for chunk in text_index.split(512):
                batch = {k: v.to(device) for k, v in self.inputs.text_batch(chunk).items()}
                vs.append(model.encode_texts(batch).float())
        return torch.cat(us), torch.cat(vs)

    @torch.no_grad()
    def pair_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        images, texts = sorted(set(pairs["image"])), sorted(set(pairs["query_text"]))
        u, v = self.embed(images, texts)
        ui = torch.tensor(pairs["image"].map({n: i for i, n in enumerate(images)}).to_numpy())
        vi = torch.tensor(pairs["query_text"].map({t: i for i, t in enumerate(texts)}).to_numpy())
        with self.accelerator.autocast():
            logits = self.unwrapped.fuse(u[ui], v[vi])
        return torch.sigmoid(logits.float()).cpu().numpy()

    @torch.no_grad()
    def retrieval_scores(self, queries: list[str], catalog: list[str]) -> dict[str, np.ndarray]:
        """(queries x catalog) scores: the projections' cosine, and the fusion head on every pair."""
        u, v = self.embed(catalog, queries)
        with self.accelerator.autocast():
            fusion = self.unwrapped.relevance_matrix(v, u)
        return {"cosine": (v @ u.T).cpu().numpy(), "fusion": fusion.cpu().numpy()}

    def validate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if len(self.sets.val_pairs):
            correlation = CorrelationEvaluator(self.sets.val_pairs)(self.pair_scores(self.sets.val_pairs))
            metrics.update({f"val_{k}": v for k, v in correlation.items()})
        if len(self.sets.val_positives):
            queries = self.sets.val_positives
            catalog = sorted(set(self.sets.val_pairs["image"]))
            scores = self.retrieval_scores(queries["query_text"].tolist(), catalog)
            metrics["val_r1_cosine"] = RetrievalEvaluator(queries, catalog)(scores["cosine"])["r1"]
            metrics["val_r1_fusion"] = RetrievalEvaluator(queries, catalog)(scores["fusion"])["r1"]
        return metrics

    def test_retrieval(self) -> dict[str, dict[str, float]]:
        """The 500 test queries over the 100 test images, by cosine and by fusion, all and allowed queries."""
        from wsense.safety import mentions_child

        queries, catalog = self.data.test_queries, self.data.test_images
        scores = self.retrieval_scores(queries["query_text"].tolist(), catalog)
        allowed = ~queries["query_text"].map(mentions_child).to_numpy()
        results = {}
        for name, matrix in scores.items():
            results[name] = RetrievalEvaluator(queries, catalog)(matrix)
            results[f"{name} [allowed queries]"] = RetrievalEvaluator(queries[allowed], catalog)(matrix[allowed])
        return results

    # -- checkpoints ----------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"epoch": self.epoch, "best_epoch": self.best_epoch, "best": self.best, "history": self.history,
                "seed": self.config.training.seed, "mode": self.config.training.mode}

    def save_last(self) -> None:
        """The whole training state (model, optimizer, scheduler, RNG) for --resume, written atomically."""
        self.accelerator.wait_for_everyone()
        target = self.output_dir / "last"
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".last.", dir=self.output_dir)) if self.accelerator.is_main_process else None
        tmp = Path(self.accelerator.gather_for_metrics([str(tmp)])[0]) if self.accelerator.num_processes > 1 else tmp
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(self._state(), indent=2), encoding="utf-8")
            replace_dir(tmp, target)

    def resume(self) -> None:
        last = self.output_dir / "last"
        if not (last / STATE_FILE).is_file():
            raise WsenseError(f"{last}: nothing to resume (no {STATE_FILE}); start without --resume")
        state = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("mode") != self.config.training.mode:
            raise WsenseError(f"{last}: the run was in mode '{state.get('mode')}', the config says "
                              f"'{self.config.training.mode}'")
        try:
            self.accelerator.load_state(str(last))
        except Exception as exc:  # accelerate raises many types for a damaged or foreign state
            raise WsenseError(f"{last}: cannot resume from this training state ({type(exc).__name__}: {exc})") from None
        self.epoch, self.best_epoch = state["epoch"], state["best_epoch"]
        self.best, self.history = state["best"], state["history"]
        self.print(f"resumed from {last} after epoch {self.epoch}")

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to training.epochs; `stop_after` ends early at that epoch, as an interruption would."""
        training = self.config.training
        if self.accelerator.is_main_process:
            self.accelerator.init_trackers("wsense", config=_flat(self.config.to_dict()))
        while self.epoch < min(training.epochs, stop_after or training.epochs):
            metrics = self.train_epoch()
            metrics.update(self.validate())
            self.epoch += 1
            metrics["epoch"] = self.epoch
            self.history.append(metrics)
            self.accelerator.log(metrics, step=self.epoch)
            line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")
            # Without validation the last epoch is the best one (the learning rate has decayed to zero there).
            validated = "val_spearman" in metrics
            if not validated or metrics["val_spearman"] > self.best.get("val_spearman", -math.inf):
                self.best_epoch, self.best = self.epoch, metrics
                if self.accelerator.is_main_process:
                    save_checkpoint(self.unwrapped, self.config, self.output_dir / "best",
                                    {"epoch": self.epoch, "metrics": metrics})
                line += "  (best)"
            self.print(f"epoch {self.epoch}/{training.epochs}: {line}")
            self.save_last()
        self.accelerator.end_training()
        return TrainResult(self.output_dir, self.best_epoch, self.best, self.history)


def _flat(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def train(config: Config, *, resume: bool = False, cpu: bool = False, data: WithSenseData | None = None
          ) -> TrainResult:
    """Train with config.training.val_fold held out (None: every image trains); the config is saved with each
    checkpoint, so a checkpoint records which fold it never saw."""
    trainer = Trainer(config, data, cpu=cpu)
    if resume:
        trainer.resume()
    elif (Path(config.training.output_dir) / "last").exists():
        raise WsenseError(f"{config.training.output_dir}: a run is already there; use --resume to continue it, "
                          "or choose another training.output_dir (--output-dir)")
    return trainer.fit()
