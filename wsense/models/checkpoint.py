"""Model checkpoints: a folder with the config that rebuilds the model, its weights and metadata.

`config.yaml` holds the sections that rebuild the model and the training settings it was made with
(config.CHECKPOINT_SECTIONS); search and runtime settings are never stored, they come from the config of whoever
loads it. Written atomically (into a temporary folder, then renamed), so an interrupted save never leaves a
half-written checkpoint in place of a good one.

Reading a checkpoint's config and fingerprint needs no torch (a serving process never imports it: see
wsense.models.serving); rebuilding or saving the torch model loads it then.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typing import TYPE_CHECKING

import yaml
from safetensors import SafetensorError

from wsense.config import CHECKPOINT_SECTIONS, MODEL_SECTIONS, Config, config_from_dict
from wsense.errors import WsenseError
from wsense.io import atomic_dir, file_sha256

if TYPE_CHECKING:
    import torch

    from wsense.models.relevance import RelevanceModel

CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = "config.yaml", "model.safetensors", "metadata.json"
FORMAT = "wsense-relevance-3"
OLD_FORMATS = ("wsense-relevance-1", "wsense-relevance-2")
TOWER_PREFIXES = ("image_backbone.", "text_encoder.")
TRAIN_HINT = "`python train.py --no-validation --output-dir runs/final` trains the search checkpoint"

# Format 1 stored the whole config, search and runtime sections included, and its files could leave out keys
# that did not exist yet; those keys then took the defaults of their day, listed here.
V1_RUNTIME_SECTIONS = ("search", "embedding", "cache_dir", "reports_dir")
V1_DEFAULTS = {
    ("image_backbone", "views"): ["center"],
    ("model", "crowd_head"): False,
    ("training", "epochs"): 8,
    ("training", "crowd_weight"): 0.5,
    ("training", "contrastive_weight"): 1.0,
}


def migrate_v2(values: dict) -> dict:
    """A format-2 checkpoint config as format 3 stores it: format 2 had one image backbone, and no key for more."""
    image = dict(values.get("image_backbone") or {})
    image.setdefault("extra_backbones", [])
    return {**values, "image_backbone": image}


def migrate_v2_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Format 2's tower weights (partial and full modes) under format 3's names: its one backbone is the first of the
    image tower's backbones."""
    old, new = "image_backbone.model.", "image_backbone.backbones.0.model."
    return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}


def migrate_v1(values: dict) -> dict:
    """A format-1 checkpoint config as format 2 would store it: runtime sections dropped, keys it lacks set to
    the defaults it was written under."""
    values = {k: v for k, v in values.items() if k not in V1_RUNTIME_SECTIONS}
    for (section, key), default in V1_DEFAULTS.items():
        part = values.setdefault(section, {}) or {}
        part.setdefault(key, default)
        values[section] = part
    return values


def save_file(tensors: dict, filename: str) -> None:
    """safetensors' writer of torch tensors (imported here, on use: it imports torch)."""
    from safetensors.torch import save_file as write

    write(tensors, filename)


def _saved_state(model: RelevanceModel, with_towers: bool) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if not with_towers:
        state = {k: v for k, v in state.items() if not k.startswith(TOWER_PREFIXES)}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_checkpoint(model: RelevanceModel, config: Config, path: str | Path, metadata: dict) -> Path:
    """Frozen-mode checkpoints leave out the towers: their pretrained weights come from the config."""
    path = Path(path)
    with_towers = config.training.mode != "frozen"
    values = {name: value for name, value in config.to_dict().items() if name in CHECKPOINT_SECTIONS}
    with atomic_dir(path) as tmp:
        save_file(_saved_state(model, with_towers), str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
        meta = {"format": FORMAT, "with_towers": with_towers, **metadata}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return path


def _read(path: Path) -> tuple[dict, dict]:
    """(metadata, config values in the current format) of a checkpoint folder, with one-line errors."""
    if not path.is_dir():
        raise WsenseError(f"{path}: checkpoint folder not found ({TRAIN_HINT}, runs/final/best)")
    for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE):
        if not (path / name).is_file():
            raise WsenseError(f"{path}: not a wsense checkpoint (no {name})")
    try:
        metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        values = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise WsenseError(f"{path}: damaged checkpoint metadata ({type(exc).__name__})") from None
    if not isinstance(metadata, dict) or not isinstance(values, dict):
        raise WsenseError(f"{path}: damaged checkpoint metadata (not a mapping)")
    if metadata.get("format") == "wsense-relevance-1":
        values = migrate_v1(values)
    if metadata.get("format") in OLD_FORMATS:
        values = migrate_v2(values)
    elif metadata.get("format") != FORMAT:
        raise WsenseError(f"{path / METADATA_FILE}: not a wsense relevance checkpoint (format "
                          f"{metadata.get('format')!r}; this version reads {FORMAT} and {', '.join(OLD_FORMATS)})")
    unknown = sorted(set(values) - set(CHECKPOINT_SECTIONS))
    if unknown:
        raise WsenseError(f"{path / CONFIG_FILE}: unexpected section(s) {', '.join(unknown)} in a {FORMAT} "
                          "checkpoint")
    return metadata, values


def _with_checkpoint_sections(path: Path, values: dict, settings: Config | None) -> Config:
    saved = config_from_dict(values, path / CONFIG_FILE)
    return (settings or config_from_dict({}, "defaults")).with_sections(saved, CHECKPOINT_SECTIONS)


def load_checkpoint_config(path: str | Path, settings: Config | None = None) -> Config:
    """`settings` (the caller's config; default: the built-in defaults) with the checkpoint's model and training
    sections, without building the model."""
    _, values = _read(Path(path))
    return _with_checkpoint_sections(Path(path), values, settings)


def model_fingerprint(path: str | Path) -> str:
    """Which embeddings a checkpoint makes: a hash of its weights and of the settings that rebuild its model
    (towers, views, heads). Search and runtime settings, and the training record, leave it unchanged."""
    config = load_checkpoint_config(path)
    model = {name: config.to_dict()[name] for name in MODEL_SECTIONS}
    digest = hashlib.sha256(file_sha256(Path(path) / WEIGHTS_FILE).encode())
    digest.update(json.dumps(model, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def load_checkpoint(path: str | Path, settings: Config | None = None) -> tuple[RelevanceModel, Config, dict]:
    """Rebuild the model a checkpoint describes and load its weights; the config returned is `settings` (the
    caller's runtime settings) with the checkpoint's model and training sections. Clear errors otherwise."""
    from safetensors.torch import load_file

    from wsense.models.relevance import build_relevance_model

    path = Path(path)
    metadata, values = _read(path)
    config = _with_checkpoint_sections(path, values, settings)
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WsenseError(f"{path / WEIGHTS_FILE}: damaged weights file ({exc})") from None
    if metadata.get("format") in OLD_FORMATS:
        state = migrate_v2_state(state)
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
