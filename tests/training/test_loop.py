"""The training loop (wsense/training/loop.py) on the tiny generated data set (real towers, CPU): the loss falls,
best and last are saved and a resumed run continues exactly, partial mode, runs without validation, clear
errors."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from wsense.data import load_data
from wsense.errors import WsenseError
from wsense.evaluation.trained import train_validated
from wsense.models.checkpoint import load_checkpoint
from wsense.training import Trainer, train


def validated_trainer(config) -> Trainer:
    """A trainer scored after each epoch on its held-out fold, as `python train.py` runs it."""
    from wsense.evaluation import ValidationEvaluator
    from wsense.training.sets import build_training_sets

    data = load_data(config.data.dir)
    sets = build_training_sets(data, config, config.training.val_fold)
    return Trainer(config, data, sets=sets, evaluator=ValidationEvaluator(sets.val_pairs, sets.val_positives))


def test_a_few_epochs_lower_the_loss(tiny_config):
    tiny_config.training.epochs = 6
    tiny_config.training.val_fold = None  # every pair of the tiny set trains: a held-out fold leaves too few
    trainer = Trainer(tiny_config)
    losses = []
    for _ in range(6):
        losses.append(trainer.train_epoch()["train_loss"])
        trainer.epoch += 1
    assert losses[-1] < losses[0] * 0.9, losses


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


def test_partial_mode_trains_only_the_top_of_the_towers(tiny_config):
    tiny_config.training.mode = "partial"
    tiny_config.training.epochs = 1
    tiny_config.image_backbone.image_size = 64
    tiny_config.image_backbone.extra_backbones[0].image_size = 72
    trainer = validated_trainer(tiny_config)
    model = trainer.unwrapped
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train_epoch()
    after = model.state_dict()
    for backbone in ("image_backbone.backbones.0.model.", "image_backbone.backbones.1.model."):
        assert not torch.equal(before[backbone + "conv_head.weight"], after[backbone + "conv_head.weight"])
        assert torch.equal(before[backbone + "conv_stem.weight"], after[backbone + "conv_stem.weight"])
        assert torch.equal(before[backbone + "classifier.weight"], after[backbone + "classifier.weight"])
    last_layer = "text_encoder.model.encoder.layer.5.output.dense.weight"
    assert not torch.equal(before[last_layer], after[last_layer])
    assert torch.equal(before["text_encoder.model.embeddings.word_embeddings.weight"],
                       after["text_encoder.model.embeddings.word_embeddings.weight"])
    assert trainer.validate()["val_spearman"] == trainer.validate()["val_spearman"]  # eval is deterministic


def test_epochs_report_their_throughput_and_contrastive_positives_come_from_the_table(tiny_config):
    trainer = Trainer(tiny_config)
    positives = trainer.sets.positives
    for text, image in zip(positives["query_text"], positives["image"]):
        assert trainer.known_positives[trainer.inputs.text_index[text], trainer.inputs.image_index[image]]
    assert int(trainer.known_positives.sum()) == len(set(zip(positives["query_text"], positives["image"])))
    assert trainer.train_epoch()["train_pairs_per_s"] > 0


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
