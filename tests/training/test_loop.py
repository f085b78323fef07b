"""The training loop (wsense/training/loop.py) on the tiny generated data set (real towers, CPU), epoch by epoch:
the loss falls, partial mode trains only the top of the towers, epochs report their throughput. Whole training runs
(saving, resuming, cross-validation): e2e/test_training.py."""
import torch

from conftest import validated_trainer
from wsense.training import Trainer


def test_a_few_epochs_lower_the_loss(tiny_config):
    tiny_config.training.epochs = 6
    tiny_config.training.val_fold = None  # every pair of the tiny set trains: a held-out fold leaves too few
    trainer = Trainer(tiny_config)
    losses = []
    for _ in range(6):
        losses.append(trainer.train_epoch()["train_loss"])
        trainer.epoch += 1
    assert losses[-1] < losses[0] * 0.9, losses


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
