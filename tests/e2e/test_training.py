"""Training runs on the tiny data set (real towers, CPU): best and last saved and a resumed run continuing
exactly, resumes refused with clear errors, a run without validation, cross-validation checkpoints and their
folds, and a trained run's checkpoint rebuilding its model. The units of training: tests/training/."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import validated_trainer
from wsense.data import load_data
from wsense.errors import WsenseError
from wsense.evaluation.trained import train_validated
from wsense.models.checkpoint import load_checkpoint
from wsense.training import Trainer, train


def test_training_saves_best_and_resume_continues_exactly(tiny_config, tmp_path):
    straight = train_validated(tiny_config)
    assert (straight.output_dir / "best" / "model.safetensors").is_file()
    state = json.loads((straight.output_dir / "last" / "train_state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all("val_spearman" in epoch and "val_r1_fusion" in epoch for epoch in state["history"])

    tiny_config.training.output_dir = str(tmp_path / "interrupted")
    validated_trainer(tiny_config).fit(stop_after=1)
    resumed = train_validated(tiny_config, resume=True)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in straight.history])
    a = load_file(str(straight.output_dir / "last" / "model.safetensors"))
    b = load_file(str(resumed.output_dir / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_existing_run_needs_resume_and_resume_needs_a_run(tiny_config, tiny_run):
    with pytest.raises(WsenseError, match="nothing to resume"):
        train(tiny_config, resume=True)
    tiny_config.training.epochs = 1
    shutil.copytree(tiny_run, tiny_config.training.output_dir)  # a finished run of one epoch
    with pytest.raises(WsenseError, match="use --resume"):
        train(tiny_config)


def test_resume_refuses_another_mode_and_a_damaged_state(tiny_config, tiny_run):
    tiny_config.training.epochs = 1
    shutil.copytree(tiny_run, tiny_config.training.output_dir)  # a finished run of one epoch
    last = Path(tiny_config.training.output_dir) / "last"
    tiny_config.training.epochs = 2
    tiny_config.training.mode = "partial"
    with pytest.raises(WsenseError, match="the run was in mode 'frozen', the config says 'partial'"):
        train(tiny_config, resume=True)
    tiny_config.training.mode = "frozen"
    for state in last.glob("*.safetensors"):
        state.write_bytes(b"\x00" * 16)  # cut short, as by a full disk
    with pytest.raises(WsenseError, match="cannot resume from this training state"):
        train(tiny_config, resume=True)
    (last / "train_state.json").unlink()
    with pytest.raises(WsenseError, match="nothing to resume"):
        train(tiny_config, resume=True)


def test_training_without_validation_records_no_fold(tiny_config, monkeypatch):
    from wsense.cli import main

    monkeypatch.delenv("WSENSE_DATA_DIR", raising=False)
    tiny_config.training.epochs = 2
    config_file = tiny_config.training.output_dir + ".yaml"
    Path(config_file).write_text(yaml.safe_dump(tiny_config.to_dict()), encoding="utf-8")
    assert main(["train", "--config", config_file, "--no-validation"]) == 0
    _, config, metadata = load_checkpoint(f"{tiny_config.training.output_dir}/best")
    assert config.training.val_fold is None
    # Without validation the kept checkpoint is the last epoch's, and no validation figure is made up.
    assert metadata["epoch"] == 2
    assert not any(key.startswith("val_") for key in metadata["metrics"])
    state = json.loads(Path(f"{tiny_config.training.output_dir}/last/train_state.json").read_text())
    assert state["best_epoch"] == 2


def test_cross_validation_checkpoints_record_the_fold_they_never_saw(tiny_config):
    from wsense.evaluation.trained import cross_validate_training

    tiny_config.training.epochs = 1
    cross_validate_training(tiny_config)
    data = load_data(tiny_config.data.dir)
    held_out = []
    for fold in range(2):
        _, config, _ = load_checkpoint(f"{tiny_config.training.output_dir}/cv/fold{fold}/best")
        assert config.training.val_fold == fold
        held_out.append(set(Trainer(config, data).sets.val_pairs["image"]))
    assert held_out[0] and held_out[1] and not held_out[0] & held_out[1]


def test_checkpoint_rebuilds_its_model(tiny_run):
    model, config, metadata = load_checkpoint(tiny_run / "best")  # a trained run's
    assert config.training.mode == "frozen" and metadata["with_towers"] is False
    saved = load_file(str(tiny_run / "best" / "model.safetensors"))
    assert not any(key.startswith("image_backbone.") for key in saved)  # frozen towers come from the packages
    assert torch.equal(model.state_dict()["fusion.net.0.weight"], saved["fusion.net.0.weight"])
