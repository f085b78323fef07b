"""The relevance model (wsense/models/relevance.py): shapes and score range, the fusion head, the label-bridge start
and the crowd head."""
import torch

from wsense.models.relevance import build_relevance_model
from wsense.training import Trainer


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


def test_label_embeddings_are_computed_once_a_process_and_every_model_gets_its_own_copy(model_config, monkeypatch):
    from wsense.models import relevance

    first = build_relevance_model(model_config)
    calls = []
    monkeypatch.setattr(relevance, "imagenet_label_prompts", lambda: calls.append(1) or [])
    second = build_relevance_model(model_config)
    assert not calls  # the second model of the same pretrained text tower reuses the first one's
    assert torch.equal(first.label_embeddings, second.label_embeddings)
    with torch.no_grad():
        first.label_embeddings.zero_()
    assert build_relevance_model(model_config).label_embeddings.abs().sum() > 0


def test_the_heads_start_from_the_training_seed_whatever_drew_random_numbers_before(model_config):
    torch.manual_seed(123)
    first = build_relevance_model(model_config)
    torch.randn(1000)  # what building a backbone, or anything else in the process, may have drawn
    second = build_relevance_model(model_config)
    heads = [name for name, _ in first.named_parameters()
             if not name.startswith(("image_backbone.", "text_encoder."))]
    assert heads
    for name in heads:
        assert torch.equal(first.get_parameter(name), second.get_parameter(name)), name
    model_config.training.seed += 1
    other = build_relevance_model(model_config)
    assert not all(torch.equal(first.get_parameter(name), other.get_parameter(name)) for name in heads)
