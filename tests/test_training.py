"""The relevance model and its training loop on the tiny generated data set (real towers, CPU, seconds)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from wsense.config import load_config
from wsense.data import load_data
from wsense.errors import WsenseError
from wsense.models.relevance import build_relevance_model
from wsense.models.checkpoint import load_checkpoint, save_checkpoint
from wsense.evaluation.trained import train_validated
from wsense.training import Trainer, train
from wsense.training.losses import contrastive_loss, regression_loss


@pytest.fixture(scope="module")
def model_config():
    return load_config()


@pytest.fixture
def tiny_config(tiny_data, tmp_path):
    config = load_config()
    config.data.dir = str(tiny_data)
    config.cache_dir = str(tmp_path / "cache")
    config.training.output_dir = str(tmp_path / "run")
    config.baselines.folds = 2
    config.training.batch_size = 8
    config.training.contrastive_batch_size = 4
    config.training.epochs = 2
    config.training.warmup_steps = 1
    config.training.lr = 3e-3
    return config


def validated_trainer(config) -> Trainer:
    """A trainer scored after each epoch on its held-out fold, as `python train.py` runs it."""
    from wsense.evaluation import ValidationEvaluator
    from wsense.training.sets import build_training_sets

    data = load_data(config.data.dir)
    sets = build_training_sets(data, config, config.training.val_fold)
    return Trainer(config, data, sets=sets, evaluator=ValidationEvaluator(sets.val_pairs, sets.val_positives))


def test_model_shapes_and_score_range(model_config):
    torch.manual_seed(0)
    model = build_relevance_model(model_config).eval()
    tokens = model.text_encoder.tokenize(["a dog on the grass", "a red car", "snowy mountains"])
    images = {"pixels": (torch.randn(3, 3, 96, 96), torch.randn(3, 3, 112, 112))}  # per backbone, each its size
    texts = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    with torch.no_grad():
        u, v, logits = model(images, texts, n_pairs=3)
        relevance = model.relevance_matrix(v, u)
    assert u.shape == v.shape == (3, model_config.model.embed_dim)
    assert torch.allclose(u.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
    assert logits.shape == (3,) and relevance.shape == (3, 3)
    assert ((relevance >= 0) & (relevance <= 1)).all()
    assert torch.allclose(relevance.diagonal(), torch.sigmoid(logits), atol=1e-5)


def test_fusion_pair_logits_equal_the_head_on_every_concatenated_pair():
    from torch.nn import functional as F

    from wsense.models.relevance import FusionHead

    torch.manual_seed(0)
    head = FusionHead(dim=16, hidden=32, dropout=0.1, outputs=2).eval()
    u, v = F.normalize(torch.randn(7, 16), dim=-1), F.normalize(torch.randn(3, 16), dim=-1)
    with torch.no_grad():
        every_pair = head(u.repeat(3, 1), v.repeat_interleave(7, dim=0)).view(3, 7, 2)
        assert torch.allclose(head.pair_logits(v, u), every_pair, atol=1e-5)
        shortlist = torch.tensor([5, 0, 3])  # a catalog's kept image terms, indexed like its embeddings
        kept = head.image_part(u)
        assert torch.allclose(head.pair_logits(v[:1], u[shortlist], kept[shortlist]), every_pair[:1, shortlist],
                              atol=1e-5)


def test_untrained_cosine_is_the_label_bridge(model_config):
    model = build_relevance_model(model_config).eval()
    features = torch.randn(2, model.image_backbone.num_features)
    with torch.no_grad():
        probabilities = model.image_backbone.label_probabilities(features)
        bridge = torch.nn.functional.normalize(probabilities @ model.label_embeddings, dim=-1)
        assert torch.allclose(model.embed_image(features), bridge, atol=1e-5)


def test_losses():
    targets, weights = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    assert regression_loss(torch.tensor([-5.0, 5.0]), targets, weights) < regression_loss(
        torch.tensor([5.0, -5.0]), targets, weights)
    # A pair weighted 0 does not count.
    assert regression_loss(torch.tensor([-5.0, -5.0]), targets, torch.tensor([1.0, 0.0])) < 0.01
    eye = torch.eye(4)
    scale = torch.tensor(2.0)
    aligned = contrastive_loss(eye, eye, torch.eye(4, dtype=torch.bool), scale)
    shuffled = contrastive_loss(eye, eye.roll(1, 0), torch.eye(4, dtype=torch.bool), scale)
    assert aligned < shuffled
    # Two captions of one image: both are positives of it, neither is a negative.
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.0, 1.0]]), dim=-1)
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, False], [False, True]])
    assert contrastive_loss(texts, images, mask, torch.tensor(3.0)) < 0.2


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


def test_existing_run_needs_resume_and_resume_needs_a_run(tiny_config):
    with pytest.raises(WsenseError, match="nothing to resume"):
        train(tiny_config, resume=True)
    tiny_config.training.epochs = 1
    train(tiny_config)
    with pytest.raises(WsenseError, match="use --resume"):
        train(tiny_config)


def test_checkpoint_rebuilds_its_model(tiny_config, tmp_path):
    result = train(tiny_config)
    model, config, metadata = load_checkpoint(result.output_dir / "best")
    assert config.training.mode == "frozen" and metadata["with_towers"] is False
    saved = load_file(str(result.output_dir / "best" / "model.safetensors"))
    assert not any(key.startswith("image_backbone.") for key in saved)  # frozen towers come from the packages
    assert torch.equal(model.state_dict()["fusion.net.0.weight"], saved["fusion.net.0.weight"])


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


def test_training_data_respects_the_legal_filter_and_the_fold(tiny_config):
    data = load_data(tiny_config.data.dir)
    trainer = Trainer(tiny_config, data)
    sets = trainer.sets
    assert "1002_a2.jpg" not in set(sets.judged["image"]) | set(sets.positives["image"])
    assert not sets.judged["query_text"].str.contains("girl").any()
    assert not set(sets.val_pairs["image"]) & (set(sets.judged["image"]) | set(sets.positives["image"]))


def test_validation_queries_are_texts_training_never_saw(tiny_config):
    data = load_data(tiny_config.data.dir)
    sets = Trainer(tiny_config, data).sets
    val_images = set(sets.val_pairs["image"])
    held = set(data.captions.loc[data.captions["image"].isin(val_images), "query_text"])
    assert set(sets.val_positives["query_text"]) <= held
    # The tables do pair these captions with training images; training leaves those pairs out.
    assert (data.pairs["query_text"].isin(held) & ~data.pairs["image"].isin(val_images)).any()
    assert not held & (set(sets.judged["query_text"]) | set(sets.positives["query_text"]))
    assert len(sets.judged) and len(sets.positives)


def test_random_resized_crops_are_independent_per_image_and_stay_inside_it():
    from wsense.training.inputs import random_resized_crops

    torch.manual_seed(0)
    ramp = torch.linspace(0, 255, 32).expand(3, 32, 32)  # brightness grows left to right
    batch = ramp.expand(64, 3, 32, 32).contiguous()
    crops = random_resized_crops(batch, 16)
    assert crops.shape == (64, 3, 16, 16)
    assert crops.min() >= 0 and crops.max() <= 255  # sampled inside the image, never padded with zeros
    assert len({tuple(c[0, 0, [0, -1]].round().tolist()) for c in crops}) > 32  # one crop per image
    # Some come out mirrored (right darker than left), some not.
    mirrored = crops[:, 0, 0, 0] > crops[:, 0, 0, -1]
    assert 0 < int(mirrored.sum()) < 64
    unflipped = random_resized_crops(batch, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(unflipped, torch.nn.functional.interpolate(batch, size=16, mode="bilinear",
                                                                     align_corners=False), atol=1e-3)


def test_pixel_inputs_keep_views_decoded_and_evaluate_on_what_search_sees(tiny_config):
    from wsense.models.photos import PhotoEncoder
    from wsense.training.inputs import PixelInputs

    tiny_config.image_backbone.image_size = 64
    tiny_config.image_backbone.extra_backbones[0].image_size = 72
    tiny_config.image_backbone.views = ["center", "flip", "full", "first", "last"]
    model = build_relevance_model(tiny_config)
    data = load_data(tiny_config.data.dir)
    paths = {name: data.train_image_dir / name for name in data.train_images[:4]}
    inputs = PixelInputs(tiny_config, model, paths, ["a dog", "a cat"])
    assert [p.shape for p in inputs.pixels] == [(4, 5, 3, 64, 64), (4, 5, 3, 72, 72)]  # one per backbone
    assert all(p.dtype == torch.uint8 for p in inputs.pixels)
    index = torch.tensor([0, 0, 1])
    evaluation = inputs.image_batch(index, train=False)["pixels"]
    assert [p.shape for p in evaluation] == [(3, 5, 3, 64, 64), (3, 5, 3, 72, 72)]
    assert torch.equal(evaluation[0][0], evaluation[0][1])
    # Validation sees a photo exactly as search embeds it: the same views, the same normalisation.
    search = PhotoEncoder(model.image_backbone, tiny_config.image_backbone)
    for i, name in enumerate(data.train_images[j] for j in index):
        for part, searched in zip(evaluation, search.pixels(paths[name])):
            assert torch.allclose(part[i], searched, atol=1e-5)
    training = inputs.image_batch(index, train=True)["pixels"]
    assert [p.shape for p in training] == [(3, 3, 64, 64), (3, 3, 72, 72)]
    assert not torch.equal(training[0][0], training[0][1])
    assert all(p.min() >= -1 and p.max() <= 1 for p in training)  # normalised with mean = std = 0.5
    # Both backbones see the same crop of a photo: at one size, the other's resized looks alike.
    resized = torch.nn.functional.interpolate(training[1], size=64, mode="bilinear", antialias=True)
    same, other = (resized - training[0]).abs().mean(), (resized - training[0].roll(1, 0)).abs().mean()
    assert same < 0.5 * other
    # Without augmentation, training takes one whole view per photo, drawn at random.
    inputs.augment = False
    torch.manual_seed(0)
    drawn = inputs.image_batch(torch.zeros(40, dtype=torch.long), train=True)["pixels"]
    matches = [next(v for v in range(5) if torch.equal(row, evaluation[0][0, v])) for row in drawn[0]]
    assert set(matches) == set(range(5))
    assert all(torch.equal(big, evaluation[1][0, v]) for big, v in zip(drawn[1], matches))


def test_epochs_report_their_throughput_and_contrastive_positives_come_from_the_table(tiny_config):
    trainer = Trainer(tiny_config)
    positives = trainer.sets.positives
    for text, image in zip(positives["query_text"], positives["image"]):
        assert trainer.known_positives[trainer.inputs.text_index[text], trainer.inputs.image_index[image]]
    assert int(trainer.known_positives.sum()) == len(set(zip(positives["query_text"], positives["image"])))
    assert trainer.train_epoch()["train_pairs_per_s"] > 0


def test_text_tower_without_pretrained_weights_needs_only_config_and_tokenizer(tmp_path, model_config):
    from wsense.models.text import TextEncoder, minilm_path

    folder = tmp_path / "minilm"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_path(model_config.text_model) / name, folder / name)
    config = model_config.text_model.__class__(path=str(folder), pretrained=False)
    random_tower = TextEncoder(config)
    pretrained = TextEncoder(model_config.text_model)
    a, b = random_tower.encode(["a dog on the grass"]), pretrained.encode(["a dog on the grass"])
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-2)
    with pytest.raises(WsenseError, match="no readable model weights"):
        TextEncoder(model_config.text_model.__class__(path=str(folder), pretrained=True))


def test_crowd_head_scores_crowd_pairs_on_their_own_output(tiny_config):
    tiny_config.model.crowd_head = True
    model = build_relevance_model(tiny_config).eval()
    u = torch.nn.functional.normalize(torch.randn(4, tiny_config.model.embed_dim), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(4, tiny_config.model.embed_dim), dim=-1)
    with torch.no_grad():
        both = model.fusion(u, v)
        source = torch.tensor([0, 1, 1, 0])
        assert both.shape == (4, 2)
        assert torch.equal(model.fuse(u, v), both[:, 0])  # search and validation rank by the expert output
        assert torch.equal(model.fuse(u, v, source), torch.where(source == 1, both[:, 1], both[:, 0]))
        assert torch.allclose(model.relevance_matrix(v, u).diagonal(), torch.sigmoid(both[:, 0]), atol=1e-6)
    trainer = Trainer(tiny_config)
    judged = trainer.sets.judged
    assert ((judged["source"] == 1) == (judged["weight"] == tiny_config.training.crowd_weight)).all()
    assert trainer.train_epoch()["train_loss"] > 0


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


def test_resume_refuses_another_mode_and_a_damaged_state(tiny_config):
    tiny_config.training.epochs = 1
    train(tiny_config)
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
