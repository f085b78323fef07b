"""Model checkpoints: a folder with the config that rebuilds the model, its weights and metadata.

Written atomically (into a temporary folder, then renamed), so an interrupted save never leaves a
half-written checkpoint in place of a good one.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from wsense.config import Config, config_from_dict
from wsense.errors import WsenseError
from wsense.io import replace_dir
from wsense.models.relevance import RelevanceModel, build_relevance_model

CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = "config.yaml", "model.safetensors", "metadata.json"
TOWER_PREFIXES = ("image_backbone.", "text_encoder.")


def _saved_state(model: RelevanceModel, with_towers: bool) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if not with_towers:
        state = {k: v for k, v in state.items() if not k.startswith(TOWER_PREFIXES)}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_checkpoint(model: RelevanceModel, config: Config, path: str | Path, metadata: dict) -> Path:
    """Frozen-mode checkpoints leave out the towers: their pretrained weights come from the config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with_towers = config.training.mode != "frozen"
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(_saved_state(model, with_towers), str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
        meta = {"format": "wsense-relevance-1", "with_towers": with_towers, **metadata}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def load_checkpoint_config(path: str | Path) -> Config:
    """The config saved in a checkpoint (without building the model)."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise WsenseError(f"{path}: not a wsense checkpoint (no {CONFIG_FILE})")
    try:
        return config_from_dict(yaml.safe_load(file.read_text(encoding="utf-8")), file)
    except yaml.YAMLError as exc:
        raise WsenseError(f"{file}: damaged checkpoint config ({type(exc).__name__})") from None


def load_checkpoint(path: str | Path) -> tuple[RelevanceModel, Config, dict]:
    """Rebuild the model a checkpoint describes and load its weights; clear errors for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise WsenseError(f"{path}: checkpoint folder not found (`python train.py --no-validation --output-dir runs/final` trains the search checkpoint, runs/final/best)")
    for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE):
        if not (path / name).is_file():
            raise WsenseError(f"{path}: not a wsense checkpoint (no {name})")
    try:
        metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        values = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise WsenseError(f"{path}: damaged checkpoint metadata ({type(exc).__name__})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != "wsense-relevance-1":
        raise WsenseError(f"{path / METADATA_FILE}: not a wsense relevance checkpoint (unknown format)")
    config = config_from_dict(values, path / CONFIG_FILE)
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WsenseError(f"{path / WEIGHTS_FILE}: damaged weights file ({exc})") from None
    model = build_relevance_model(config, for_checkpoint=True)
    expected = _saved_state(model, bool(metadata.get("with_towers")))
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"wrong shape {', '.join(sorted(wrong_shape)[:3])}" if wrong_shape else "",
        ) if part)
        raise WsenseError(f"{path / WEIGHTS_FILE}: weights are from another model than {CONFIG_FILE} describes "
                          f"({detail})")
    model.load_state_dict(state, strict=False)
    return model.eval(), config, metadata
