"""Training throughput of the relevance model, in (image, caption) pairs per second, for each mode.

Synthetic inputs (random pixels at training resolution, random 16-token captions) and the real model, so it
runs anywhere, with no data set, and on a GPU through Accelerate with bf16. One optimiser step processes
`--batch` judged pairs and `--batch` positive pairs (2 x batch pairs through both towers).

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
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    model = build_relevance_model(config)
    set_trainable(model, config)
    groups = [{"params": model.head_parameters(), "lr": 1e-4}]
    if model.tower_parameters():
        groups.append({"params": model.tower_parameters(), "lr": 1e-5})
    optimizer = torch.optim.AdamW(groups)
    model, optimizer = accelerator.prepare(model, optimizer)
    device, size, n = accelerator.device, config.image_backbone.image_size, 2 * batch
    vocab = accelerator.unwrap_model(model).text_encoder.tokenizer.vocab_size
    if mode == "frozen":
        images = {"image_features": torch.randn(n, accelerator.unwrap_model(model).image_backbone.num_features,
                                                device=device)}
        texts = {"text_features": torch.nn.functional.normalize(torch.randn(n, 384, device=device), dim=-1)}
    else:
        images = {"pixels": torch.randn(n, 3, size, size, device=device)}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["frozen", "partial", "full"])
    parser.add_argument("--batch", type=int, default=16, help="judged pairs per step (as many positives again)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--random-init", action="store_true", help="random image tower (no weights needed)")
    parser.add_argument("--config")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; pairs per step: {2 * args.batch}")
    for mode in args.modes:
        rate = measure(mode, args.batch, args.steps, args.warmup, not args.random_init, args.config)
        print(f"{mode:8s} {rate:10.1f} pairs/s")


if __name__ == "__main__":
    main()
