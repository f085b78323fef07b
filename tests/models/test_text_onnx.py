"""The query text path in ONNX Runtime: the torch tower's embeddings, an export kept per model, clear errors."""
import sys

import numpy as np
import onnx
import onnxruntime
import pytest

from conftest import settings
from wsense.config import load_config
from wsense.errors import WsenseError
from wsense.models.text_onnx import FILE_PREFIX
from wsense.serving.scoring import RelevanceScorer

TEXTS = ["a dog", "two men climb a red rock wall in the evening sun", "word " * 200, "Ünïcödé café"]


# fp32 gives the torch tower's embeddings (onnx_int8 has its own test); the image path has its own tests.
FP32 = settings(search__text_runtime="onnx", embedding__image_runtime="torch")
INT8 = settings(search__text_runtime="onnx_int8", embedding__image_runtime="torch")
TORCH = settings(search__text_runtime="torch", embedding__image_runtime="torch")


def exports(folder):
    return sorted(folder.glob(f"{FILE_PREFIX}*.onnx"))


def test_onnx_text_path_gives_the_torch_embeddings(exported_checkpoint_copy):
    checkpoint = exported_checkpoint_copy
    scorer = RelevanceScorer.from_checkpoint(checkpoint, FP32)
    assert scorer.onnx_text is not None and exports(checkpoint) == [scorer.onnx_text.path]
    batched = scorer.embed_english(TEXTS)
    single = np.concatenate([scorer.embed_english([text]) for text in TEXTS])
    scorer.use_text_runtime("torch")
    reference = scorer.embed_english(TEXTS)
    assert np.allclose(batched, reference, atol=1e-5) and np.allclose(single, reference, atol=1e-5)
    # The exported graph runs the transformer blocks as fused kernels.
    operators = {node.op_type for node in onnx.load(str(exports(checkpoint)[0])).graph.node}
    assert {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization"} <= operators
    # The query path's tokens are the transformers tokenizer's, padding included.
    encoder = scorer.model.text_encoder
    ids, mask = encoder.token_arrays(TEXTS)
    tokens = encoder.tokenize(TEXTS)
    assert np.array_equal(ids, tokens["input_ids"].numpy()) and np.array_equal(mask, tokens["attention_mask"].numpy())


def test_text_runtime_is_chosen_by_the_users_config(checkpoint_copy, tmp_path):
    folder = checkpoint_copy
    assert RelevanceScorer.from_checkpoint(folder, TORCH).onnx_text is None and not exports(folder)
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  text_runtime: tensorrt\n")
    with pytest.raises(WsenseError, match="text_runtime must be one of onnx, onnx_int8, torch"):
        load_config(bad)


def test_missing_onnxruntime_is_a_clear_error(checkpoint_copy, monkeypatch):
    folder = checkpoint_copy
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(WsenseError, match=r"onnx needs onnxruntime \(pip install onnxruntime\)"):
        RelevanceScorer.from_checkpoint(folder, FP32)
    monkeypatch.setitem(sys.modules, "onnxruntime", onnxruntime)
    monkeypatch.setitem(sys.modules, "onnx", None)  # needed to export, not to run an export made before
    with pytest.raises(WsenseError, match=r"pip install onnx\)"):
        RelevanceScorer.from_checkpoint(folder, FP32)
    assert RelevanceScorer.from_checkpoint(folder, TORCH).onnx_text is None
