"""Training throughput of the relevance model, in (image, caption) pairs per second, for each mode, and of
the data pipeline that feeds partial and full modes.

Model: synthetic inputs (random pixels at training resolution, random 16-token captions) already on the
device, so it runs anywhere, with no data set, and on a GPU through Accelerate with bf16. One optimiser step
processes `--batch` judged pairs and `--batch` positive pairs (2 x batch pairs through both towers).
Pipeline: the training loop's own PixelInputs over generated JPEGs (decoded once, then per-image random
crops and flips on the device, captions gathered by index); it must outpace the model.

    python benchmarks/train_throughput.py                       # CPU, every mode
    accelerate launch benchmarks/train_throughput.py --batch 256 --steps 30   # GPU
"""
from __future__ import annotations

import argparse
import time

import torch
from accelerate import Accelerator

from wsense.config import load_config
from wsense.models.relevance import build_relevance_model
from wsense.training.loop import set_trainable
from wsense.training.losses import contrastive_loss, regression_loss


def measure(mode: str, batch: int, steps: int, warmup: int, pretrained: bool, config_path: str | None) -> float:
    config = load_config(config_path)
    config.training.mode = mode
    config.image_backbone.pretrained = pretrained
    for extra in config.image_backbone.extra_backbones:
        extra.pretrained = pretrained
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    model = build_relevance_model(config)
    set_trainable(model, config)
    groups = [{"params": model.head_parameters(), "lr": 1e-4}]
    if model.tower_parameters():
        groups.append({"params": model.tower_parameters(), "lr": 1e-5})
    optimizer = torch.optim.AdamW(groups)
    model, optimizer = accelerator.prepare(model, optimizer)
    device, n = accelerator.device, 2 * batch
    vocab = accelerator.unwrap_model(model).text_encoder.tokenizer.vocab_size
    if mode == "frozen":
        images = {"image_features": torch.randn(n, accelerator.unwrap_model(model).image_backbone.num_features,
                                                device=device)}
        texts = {"text_features": torch.nn.functional.normalize(torch.randn(n, 384, device=device), dim=-1)}
    else:
        images = {"pixels": tuple(torch.randn(n, 3, backbone.image_size, backbone.image_size, device=device)
                                  for backbone in accelerator.unwrap_model(model).image_backbone.backbones)}
        texts = {"input_ids": torch.randint(1000, vocab, (n, 16), device=device),
                 "attention_mask": torch.ones(n, 16, dtype=torch.long, device=device)}
    target, weight = torch.rand(batch, device=device), torch.ones(batch, device=device)
    mask = torch.eye(batch, dtype=torch.bool, device=device)
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
        u, v, logits = model(images, texts, batch)
        loss = regression_loss(logits, target, weight) + contrastive_loss(
            v[batch:], u[batch:], mask, accelerator.unwrap_model(model).logit_scale)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n * steps / (time.perf_counter() - start)


def measure_pipeline(batch: int, steps: int, warmup: int, config_path: str | None) -> float:
    """Pairs per second that PixelInputs hands to the model: image batches augmented on the device, plus
    the captions' token batches moved there."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from wsense.training.inputs import PixelInputs

    config = load_config(config_path)
    config.image_backbone.pretrained = False
    config.text_model.pretrained = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_relevance_model(config)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for i in range(256):
            paths[f"{i}.jpg"] = Path(folder) / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(paths[f"{i}.jpg"])
        texts = [f"a photo number {i} of a dog running on the grass near a lake" for i in range(1024)]
        inputs = PixelInputs(config, model, paths, texts, device=device)
    n = 2 * batch
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        images = inputs.image_batch(torch.randint(0, len(paths), (n,)), train=True)["pixels"]
        text_batch = inputs.text_batch(torch.randint(0, 1024, (n,)))
        tokens = {k: v.to(device, non_blocking=True) for k, v in text_batch.items()}
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert images.shape[0] == tokens["input_ids"].shape[0] == n
    return n * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["frozen", "partial", "full"])
    parser.add_argument("--batch", type=int, default=16, help="judged pairs per step (as many positives again)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--random-init", action="store_true", help="random image tower (no weights needed)")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the data pipeline measurement")
    parser.add_argument("--config")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; pairs per step: {2 * args.batch}")
    rates = {}
    for mode in args.modes:
        rates[mode] = measure(mode, args.batch, args.steps, args.warmup, not args.random_init, args.config)
        print(f"{mode:8s} {rates[mode]:10.1f} pairs/s")
    if not args.no_pipeline:
        rate = measure_pipeline(args.batch, args.steps, args.warmup, args.config)
        slowest = [rates[m] for m in ("partial", "full") if m in rates]
        ratio = f"  ({rate / max(slowest):.1f}x the fastest pixel mode)" if slowest else ""
        print(f"{'pipeline':8s} {rate:10.1f} pairs/s{ratio}")


if __name__ == "__main__":
    main()
