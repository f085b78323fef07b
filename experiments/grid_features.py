"""Grid features of the data set's photos and token states of its texts, for the grid re-rank experiment.

    python experiments/grid_features.py            -> .cache/wsense/experiments/grid_rerank/{lite0,lite2,tokens}.npz

- lite0, lite2: each frozen backbone's last feature map before global pooling (conv head, batch norm and ReLU6:
  the map whose mean is the pooled feature), 1,280 channels on a 7 x 7 (Lite0, 224 px) or 9 x 9 (Lite2, 260 px) grid,
  of one view: the whole photo squeezed square ("full"), so that every part of the photo has cells. fp16, photos in
  the order of `names` (the data set's training photos, then its test photos), cells row by row.
- tokens: MiniLM's last hidden states (the states its mean pooling averages) of every text of the data set
  (judged pairs, crowd pairs, captions), at most 32 tokens with [CLS] and [SEP], fp16, with the mask.

One backbone pass per photo and backbone; a file already there is kept.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wsense.config import load_config
from wsense.data import load_data, load_image
from wsense.models.image import ImageViews, create_backbone
from wsense.models.text import create_text_encoder

OUT = Path(".cache/wsense/experiments/grid_rerank")
MAX_TOKENS = 32


def photo_paths(data) -> dict[str, Path]:
    paths = {name: data.train_image_dir / name for name in data.train_images}
    paths.update({name: data.test_image_dir / name for name in data.test_images})
    return paths


def grids(backbone_config, paths: dict[str, Path], batch: int = 16) -> np.ndarray:
    backbone = create_backbone(backbone_config)
    views = ImageViews(backbone.spec, backbone.image_size, ["full"])
    names, out, start = list(paths), [], time.time()
    with torch.inference_mode():
        for i in range(0, len(names), batch):
            side = round(1.5 * round(backbone.image_size / 0.875))
            pixels = torch.cat([views(load_image(paths[n], shorter_side=side)) for n in names[i:i + batch]])
            maps = backbone.model.forward_features(pixels)  # (n, 1280, s, s)
            out.append(maps.flatten(2).transpose(1, 2).half().numpy())
            print(f"{backbone_config.name}: {i + len(pixels)}/{len(names)} {time.time() - start:.0f}s",
                  file=sys.stderr, flush=True)
    print(f"{backbone_config.name}: {len(names) / (time.time() - start):.1f} photos/s", file=sys.stderr)
    return np.concatenate(out)


def token_states(config, texts: list[str], batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    encoder = create_text_encoder(config.text_model)
    states = np.zeros((len(texts), MAX_TOKENS, encoder.dim), np.float16)
    masks = np.zeros((len(texts), MAX_TOKENS), bool)
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            tokens = encoder.tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=MAX_TOKENS,
                                       return_tensors="pt")
            hidden = encoder.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            n = tokens["input_ids"].shape[1]
            states[i:i + batch, :n] = hidden.last_hidden_state.half().numpy()
            masks[i:i + batch, :n] = tokens["attention_mask"].bool().numpy()
    return states, masks


def main() -> None:
    torch.set_num_threads(2)
    config = load_config("configs/default.yaml")
    data = load_data(config.data_dir)
    paths = photo_paths(data)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, backbone_config in zip(["lite0", "lite2"], config.image_backbone.backbones()):
        if not (OUT / f"{name}.npz").is_file():
            np.savez(OUT / f"{name}.npz", names=np.array(list(paths)), grid=grids(backbone_config, paths))
    if not (OUT / "tokens.npz").is_file():
        texts = sorted(set(data.pairs["query_text"]) | set(data.crowd["query_text"]) | set(data.captions["query_text"])
                       - {""})
        start = time.time()
        states, masks = token_states(config, texts)
        print(f"tokens: {len(texts)} texts in {time.time() - start:.0f}s", file=sys.stderr)
        np.savez(OUT / "tokens.npz", texts=np.array(texts), states=states, mask=masks)


if __name__ == "__main__":
    main()
