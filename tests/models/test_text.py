"""The text tower (wsense/models/text.py): MiniLM from its package, with or without pretrained weights."""
import shutil

import pytest
import torch

from wsense.config import TextModelConfig
from wsense.errors import WsenseError
from wsense.models import create_text_encoder


def test_minilm_text_encoder_gives_unit_vectors_that_know_meaning():
    encoder = create_text_encoder(TextModelConfig())
    vectors = encoder.encode(["a dog runs on grass", "a puppy running in a field", "stock market report"])
    assert vectors.shape == (3, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_text_model_path_must_be_a_model_folder(tmp_path):
    with pytest.raises(WsenseError, match="not a transformers model folder"):
        create_text_encoder(TextModelConfig(path=str(tmp_path)))


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
