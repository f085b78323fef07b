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
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from wsense.config import Config
from wsense.data import WithSenseData, load_data
from wsense.errors import WsenseError
from wsense.io import replace_dir
from wsense.models.checkpoint import save_checkpoint
from wsense.models.relevance import RelevanceModel, build_relevance_model
from wsense.training.inputs import FrozenInputs, PixelInputs
from wsense.training.losses import contrastive_loss, regression_loss
from wsense.training.sets import TrainingSets, build_training_sets

STATE_FILE = "train_state.json"

# evaluator(model, embed) -> metrics, where embed(images, texts) -> (image embeddings, text embeddings).
Evaluator = Callable[[RelevanceModel, Callable[[list[str], list[str]], tuple[torch.Tensor, torch.Tensor]]],
                     dict[str, float]]


def batch_to(batch: dict, device) -> dict:
    """A model input batch on `device`: its tensors, and the tuples of tensors of an image tower's pixels."""
    return {k: tuple(p.to(device, non_blocking=True) for p in v) if isinstance(v, tuple)
            else v.to(device, non_blocking=True) for k, v in batch.items()}


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
    """Frozen: heads only. Partial: heads and the top stages of each tower (of every image backbone). Full:
    everything.

    The backbone's ImageNet classifier stays frozen in every mode: it feeds the label bridge.
    """
    mode = config.training.mode
    tower, text = model.image_backbone, model.text_encoder
    for parameter in list(tower.parameters()) + list(text.parameters()):
        parameter.requires_grad = mode == "full"
    if mode == "partial":
        for backbone in tower.backbones:  # the top stages of every backbone of the image tower
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
    for backbone in tower.backbones:
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
    """One training run: `evaluator` (optional), called as evaluator(model, embed) after each epoch, returns the
    validation metrics that choose the best checkpoint; without one the last epoch is kept."""

    def __init__(self, config: Config, data: WithSenseData | None = None, *, cpu: bool = False,
                 sets: TrainingSets | None = None, evaluator: Evaluator | None = None):
        self.config = config
        self.evaluator = evaluator
        self.accelerator = self._accelerator(cpu)
        set_seed(config.training.seed)
        self.output_dir = Path(config.training.output_dir)
        self.data = data or load_data(config.data_dir)
        self.sets = sets or build_training_sets(self.data, config, config.training.val_fold)
        state = self.accelerator.state
        self.print(f"training on {state.device} ({state.distributed_type.value}, {state.num_processes} "
                   f"process{'es' if state.num_processes > 1 else ''}, mixed precision {state.mixed_precision})")
        self.print(str(self.sets.summary))
        self.print(self.sets.describe())
        self.model = build_relevance_model(config)
        set_trainable(self.model, config)
        self.inputs = self._inputs()
        self._index_pairs()
        judged_loader, positive_loader = self._loaders()
        optimizer, scheduler = self._optimizer(len(judged_loader))
        (self.model, self.optimizer, self.judged_loader, self.positive_loader,
         self.scheduler) = self.accelerator.prepare(self.model, optimizer, judged_loader, positive_loader, scheduler)
        self.epoch, self.best_epoch, self.best, self.history = 0, -1, {}, []

    def _accelerator(self, cpu: bool) -> Accelerator:
        training = self.config.training
        precision = training.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and not cpu else "no"
        return Accelerator(cpu=cpu, mixed_precision=precision,
                           gradient_accumulation_steps=training.gradient_accumulation_steps,
                           log_with=training.tracker, project_dir=training.output_dir)

    def _inputs(self) -> FrozenInputs | PixelInputs:
        """Every photo of the data set and every text that training or the evaluator uses, held in memory."""
        image_paths = {name: self.data.train_image_dir / name for name in self.data.train_images}
        image_paths.update({name: self.data.test_image_dir / name for name in self.data.test_images})
        texts = self.sets.judged["query_text"].tolist() + self.sets.positives["query_text"].tolist()
        texts += self.evaluator.texts if self.evaluator is not None else []
        if self.config.training.mode == "frozen":
            return FrozenInputs(self.config, image_paths, texts)
        return PixelInputs(self.config, self.model, image_paths, texts, device=self.accelerator.device)

    def _index_pairs(self) -> None:
        """The training pairs as index tensors into the inputs, and which (text, image) pairs are positives."""
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

    def _loaders(self) -> tuple[DataLoader, DataLoader]:
        training = self.config.training
        judged, positives = len(self.sets.judged), len(self.sets.positives)
        self.judged_sampler = EpochShuffle(judged, training.seed)
        self.positive_sampler = EpochShuffle(positives, training.seed + 1)
        return (DataLoader(range(judged), batch_size=training.batch_size, sampler=self.judged_sampler,
                           drop_last=judged > training.batch_size),
                DataLoader(range(positives), batch_size=training.contrastive_batch_size,
                           sampler=self.positive_sampler, drop_last=positives > training.contrastive_batch_size))

    def _optimizer(self, batches_per_epoch: int):
        """AdamW (heads at lr, towers at tower_lr) with a linear warm-up, then cosine decay to zero."""
        training = self.config.training
        groups = [{"params": self.model.head_parameters(), "lr": training.lr}]
        if self.model.tower_parameters():
            groups.append({"params": self.model.tower_parameters(), "lr": training.tower_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=training.weight_decay)
        self.steps_per_epoch = math.ceil(batches_per_epoch / training.gradient_accumulation_steps)
        total = max(1, self.steps_per_epoch * training.epochs)
        warmup = min(training.warmup_steps, total // 2)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, [schedule] * len(groups))

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
        return (batch_to(self.inputs.image_batch(images, train=True), device),
                batch_to(self.inputs.text_batch(texts), device),
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
                batch = batch_to(self.inputs.image_batch(chunk, train=False), device)
                us.append(model.encode_images(batch).float())
            for chunk in text_index.split(512):
                batch = batch_to(self.inputs.text_batch(chunk), device)
                vs.append(model.encode_texts(batch).float())
        return torch.cat(us), torch.cat(vs)

    def validate(self) -> dict[str, float]:
        if self.evaluator is None:
            return {}
        with self.accelerator.autocast():
            metrics = self.evaluator(self.unwrapped.eval(), self.embed)
        return {f"val_{k}": v for k, v in metrics.items()}

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


def train(config: Config, *, resume: bool = False, cpu: bool = False, data: WithSenseData | None = None,
          sets: TrainingSets | None = None, evaluator: Evaluator | None = None) -> TrainResult:
    """Train with config.training.val_fold held out (None: every image trains), scored each epoch by
    `evaluator` where one is given; the config is saved with each checkpoint, so a checkpoint records which fold
    it never saw."""
    trainer = Trainer(config, data, cpu=cpu, sets=sets, evaluator=evaluator)
    if resume:
        trainer.resume()
    elif (Path(config.training.output_dir) / "last").exists():
        raise WsenseError(f"{config.training.output_dir}: a run is already there; use --resume to continue it, "
                          "or choose another training.output_dir (--output-dir)")
    return trainer.fit()
