"""Checkpoint files (wsense/models/checkpoint.py): what config.yaml stores, which settings win on load, the model
fingerprint, migration of older formats, atomic writes, a trained run's checkpoint rebuilding its model, and
clear errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import wsense.models.checkpoint as checkpoint_module
from conftest import settings
from wsense.config import CHECKPOINT_SECTIONS, load_config
from wsense.errors import WsenseError
from wsense.models.checkpoint import (
    CONFIG_FILE,
    FORMAT,
    METADATA_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_checkpoint_config,
    model_fingerprint,
    save_checkpoint,
)
from wsense.models.relevance import build_relevance_model


@pytest.fixture(scope="module")
def model(checkpoint):
    """The session checkpoint's model, to save again under other configs (never written back there)."""
    return load_checkpoint(checkpoint)[0]


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_yaml(path: Path, values: dict) -> None:
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")


def temp_leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def test_checkpoint_stores_only_model_and_training_sections(checkpoint):
    stored = read_yaml(checkpoint / CONFIG_FILE)
    assert set(stored) == set(CHECKPOINT_SECTIONS)
    for runtime in ("search", "embedding", "cache_dir", "reports_dir"):
        assert runtime not in stored
    metadata = json.loads((checkpoint / METADATA_FILE).read_text(encoding="utf-8"))
    assert metadata["format"] == FORMAT


def test_loading_keeps_the_callers_runtime_settings_and_the_checkpoints_model_and_training(model, tmp_path):
    config = load_config()
    config.training.epochs = 3
    path = save_checkpoint(model, config, tmp_path / "best", {"epoch": 2})
    caller = settings(search__candidates=7, embedding__image_runtime="torch")
    assert caller.training.epochs != 3
    caller.image_backbone.views = ["center"]  # the caller's model sections never replace the checkpoint's
    loaded = load_checkpoint_config(path, caller)
    assert loaded.search.candidates == 7 and loaded.embedding.image_runtime == "torch"
    assert loaded.search.multilingual == "none" and loaded.search.text_runtime == "torch"
    assert loaded.training.epochs == 3
    assert loaded.image_backbone.views == config.image_backbone.views
    for section in ("image_backbone", "text_model", "model", "training"):
        assert loaded.to_dict()[section] == config.to_dict()[section], section
    assert load_checkpoint(path, caller)[1].to_dict() == loaded.to_dict()


def test_fingerprint_ignores_runtime_settings_and_the_training_record(model, checkpoint_copy, tmp_path):
    plain = load_config()
    runtime = load_config()
    runtime.search.candidates, runtime.search.first_stage = 7, "faiss"
    runtime.embedding.image_runtime, runtime.cache_dir, runtime.reports_dir = "torch", "elsewhere", "other"
    a = save_checkpoint(model, plain, tmp_path / "a" / "best", {"epoch": 0})
    b = save_checkpoint(model, runtime, tmp_path / "b" / "best", {"epoch": 0})
    assert (a / CONFIG_FILE).read_text() == (b / CONFIG_FILE).read_text()
    assert model_fingerprint(a) == model_fingerprint(b)

    before = model_fingerprint(checkpoint_copy)
    values = read_yaml(checkpoint_copy / CONFIG_FILE)
    values["training"]["epochs"] = values["training"]["epochs"] + 5
    values["training"]["lr"] = 0.123
    write_yaml(checkpoint_copy / CONFIG_FILE, values)
    assert model_fingerprint(checkpoint_copy) == before


def test_fingerprint_changes_with_the_views(checkpoint_copy):
    before = model_fingerprint(checkpoint_copy)
    values = read_yaml(checkpoint_copy / CONFIG_FILE)
    values["image_backbone"]["views"] = ["center"]
    write_yaml(checkpoint_copy / CONFIG_FILE, values)
    assert model_fingerprint(checkpoint_copy) != before


def test_fingerprint_changes_with_the_weights(checkpoint_copy):
    before = model_fingerprint(checkpoint_copy)
    state = load_file(str(checkpoint_copy / WEIGHTS_FILE))
    name = sorted(k for k in state if k.startswith("fusion."))[0]
    state[name] = state[name] + 0.01
    save_file(state, str(checkpoint_copy / WEIGHTS_FILE))
    assert model_fingerprint(checkpoint_copy) != before


def make_v1_checkpoint(path: Path) -> Path:
    """A format-1 checkpoint as version 1 wrote it: the whole config (runtime sections too), without the keys
    that did not exist yet (image_backbone.views, model.crowd_head), and weights of the model those meant."""
    config = load_config()
    config.model.crowd_head = False
    config.image_backbone.views = ["center"]
    save_checkpoint(build_relevance_model(config, for_checkpoint=True), config, path, {"epoch": 4})
    metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    metadata["format"] = "wsense-relevance-1"
    (path / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")
    values = read_yaml(path / CONFIG_FILE)
    del values["image_backbone"]["views"]
    del values["model"]["crowd_head"]
    values["search"] = {"checkpoint": "runs/old/best", "candidates": 3, "multilingual": "use_map",
                        "text_runtime": "onnx_int8", "a_key_of_v1_only": 1}
    values["embedding"] = {"image_batch_size": 4, "image_runtime": "onnx"}
    values["cache_dir"], values["reports_dir"] = "old-cache", "old-reports"
    write_yaml(path / CONFIG_FILE, values)
    return path


def test_format_1_checkpoint_loads_with_the_defaults_of_its_day(tmp_path):
    path = make_v1_checkpoint(tmp_path / "v1" / "best")
    caller = settings(search__candidates=7)
    model, config, metadata = load_checkpoint(path, caller)
    assert metadata["format"] == "wsense-relevance-1" and metadata["epoch"] == 4
    assert config.image_backbone.views == ["center"]
    assert config.model.crowd_head is False
    assert model.fusion.net[-1].out_features == 1
    # the v1 search and runtime sections are ignored: the caller's settings win
    assert config.search == caller.search and config.embedding == caller.embedding
    assert (config.cache_dir, config.reports_dir) == (caller.cache_dir, caller.reports_dir)
    assert config.search.candidates == 7 and config.search.checkpoint != "runs/old/best"
    assert load_checkpoint_config(path, caller).to_dict() == config.to_dict()
    assert isinstance(model_fingerprint(path), str)


def test_unknown_checkpoint_format_is_a_clear_error(checkpoint_copy):
    metadata = json.loads((checkpoint_copy / METADATA_FILE).read_text(encoding="utf-8"))
    metadata["format"] = "wsense-relevance-9"
    (checkpoint_copy / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(WsenseError, match="wsense-relevance-9"):
        load_checkpoint(checkpoint_copy)
    with pytest.raises(WsenseError, match="wsense-relevance-9"):
        load_checkpoint_config(checkpoint_copy)


def test_format_2_checkpoint_with_an_unexpected_section_is_a_clear_error(checkpoint_copy):
    values = read_yaml(checkpoint_copy / CONFIG_FILE)
    values["search"] = {"candidates": 3}
    write_yaml(checkpoint_copy / CONFIG_FILE, values)
    with pytest.raises(WsenseError, match=r"unexpected section\(s\) search") as error:
        load_checkpoint(checkpoint_copy)
    assert CONFIG_FILE in str(error.value)


def test_failed_save_over_a_checkpoint_keeps_the_old_one_and_no_temp_folder(model, tmp_path, monkeypatch):
    config = load_config()
    path = save_checkpoint(model, config, tmp_path / "run" / "best", {"epoch": 1})
    weights = (path / WEIGHTS_FILE).read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, config, path, {"epoch": 2})
    monkeypatch.undo()
    _, _, metadata = load_checkpoint(path)
    assert metadata["epoch"] == 1 and (path / WEIGHTS_FILE).read_bytes() == weights
    assert temp_leftovers(path.parent, "best") == []


@pytest.mark.parametrize("leftover", [".best.abc123", ".best.old"])
def test_a_killed_saves_leftover_folder_stops_neither_loading_nor_the_next_save(model, tmp_path, leftover):
    config = load_config()
    path = save_checkpoint(model, config, tmp_path / "run" / "best", {"epoch": 1})
    junk = path.parent / leftover
    junk.mkdir()
    (junk / WEIGHTS_FILE).write_bytes(b"half a file")
    (junk / "junk.txt").write_text("junk")
    assert load_checkpoint(path)[2]["epoch"] == 1
    save_checkpoint(model, config, path, {"epoch": 2})
    loaded, _, metadata = load_checkpoint(path)
    assert metadata["epoch"] == 2
    assert torch.equal(loaded.fusion.net[0].weight, model.fusion.net[0].weight)


def test_format_2_checkpoint_of_one_backbone_loads_with_its_tower_weights(tmp_path):
    """Format 2 had one image backbone: no image_backbone.extra_backbones key, tower weights under
    image_backbone.model."""
    from wsense.config import ImageBackboneConfig

    config = load_config()
    config.image_backbone = ImageBackboneConfig(name="resnet18", pretrained=False, image_size=64, extra_backbones=[])
    config.training.mode = "partial"  # tower weights are saved
    model = build_relevance_model(config, for_checkpoint=True)
    with torch.no_grad():
        model.image_backbone.backbones[0].model.conv1.weight.add_(0.5)  # not what a fresh random init gives
    path = save_checkpoint(model, config, tmp_path / "v2", {"epoch": 3})
    metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    metadata["format"] = "wsense-relevance-2"
    (path / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")
    values = read_yaml(path / CONFIG_FILE)
    del values["image_backbone"]["extra_backbones"]
    write_yaml(path / CONFIG_FILE, values)
    state = load_file(str(path / WEIGHTS_FILE))
    new, old = "image_backbone.backbones.0.model.", "image_backbone.model."
    save_file({(old + k[len(new):] if k.startswith(new) else k): v for k, v in state.items()},
              str(path / WEIGHTS_FILE))

    loaded, loaded_config, _ = load_checkpoint(path)
    assert loaded_config.image_backbone.extra_backbones == [] and len(loaded.image_backbone.backbones) == 1
    assert torch.equal(loaded.image_backbone.backbones[0].model.conv1.weight,
                       model.image_backbone.backbones[0].model.conv1.weight)


def test_checkpoint_errors(tiny_config, tmp_path, model_config):
    with pytest.raises(WsenseError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "none")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(WsenseError, match="not a wsense checkpoint"):
        load_checkpoint(tmp_path / "foreign")

    model = build_relevance_model(model_config)
    good = save_checkpoint(model, model_config, tmp_path / "good", {"epoch": 1})
    other = tmp_path / "other"
    shutil.copytree(good, other)
    values = yaml.safe_load((other / "config.yaml").read_text())
    values["model"]["embed_dim"] = 128
    (other / "config.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(WsenseError, match="weights are from another model") as error:
        load_checkpoint(other)
    assert "wrong shape" in str(error.value)

    damaged = tmp_path / "damaged"
    shutil.copytree(good, damaged)
    (damaged / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(WsenseError, match="damaged weights file"):
        load_checkpoint(damaged)
