"""The query text path in ONNX Runtime: the torch tower's embeddings, an export kept per model, clear errors."""
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from conftest import settings
from wsense.config import load_config
from wsense.errors import WsenseError
from wsense.models.text_onnx import FILE_PREFIX, text_path_key
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


def test_export_is_reused_and_rebuilt_when_missing_or_damaged(exported_checkpoint_copy, capsys):
    folder = exported_checkpoint_copy
    path = RelevanceScorer.from_checkpoint(folder, FP32).onnx_text.path
    written = path.stat()
    scorer = RelevanceScorer.from_checkpoint(folder, FP32)
    assert scorer.onnx_text.path == path and path.stat().st_mtime_ns == written.st_mtime_ns
    reference = scorer.embed_english(TEXTS[:2])

    path.write_bytes(path.read_bytes()[:100_000])  # cut short, as by a full disk
    scorer = RelevanceScorer.from_checkpoint(folder, FP32)
    assert "damaged ONNX text tower" in capsys.readouterr().err
    assert np.allclose(scorer.embed_english(TEXTS[:2]), reference, atol=1e-6)

    path.unlink()
    assert RelevanceScorer.from_checkpoint(folder, FP32).onnx_text.path == path and path.is_file()
    assert exports(folder) == [path]


def test_another_model_never_reuses_an_export(exported_checkpoint_copy):
    folder = exported_checkpoint_copy
    scorer = RelevanceScorer.from_checkpoint(folder, FP32)
    old = scorer.onnx_text.path
    with torch.no_grad():
        scorer.model.text_projection.weight.mul_(-1)
    assert text_path_key(scorer.model) != old.name[len(FILE_PREFIX):-len(".onnx")]
    scorer.use_text_runtime("onnx", folder)
    assert scorer.onnx_text.path != old and exports(folder) == [scorer.onnx_text.path]  # the stale one is gone
    scorer_vectors = scorer.embed_english(TEXTS[:2])
    scorer.use_text_runtime("torch")
    assert np.allclose(scorer_vectors, scorer.embed_english(TEXTS[:2]), atol=1e-5)


def test_text_runtime_is_chosen_by_the_users_config(checkpoint_copy, tmp_path):
    folder = checkpoint_copy
    assert RelevanceScorer.from_checkpoint(folder, TORCH).onnx_text is None and not exports(folder)
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  text_runtime: tensorrt\n")
    with pytest.raises(WsenseError, match="text_runtime must be one of onnx, onnx_int8, torch"):
        load_config(bad)


def test_int8_runtime_keeps_the_embeddings_close_and_its_export_beside_the_fp32_one(exported_checkpoint_copy):
    folder = exported_checkpoint_copy
    scorer = RelevanceScorer.from_checkpoint(folder, INT8)
    int8 = scorer.embed_english(TEXTS)
    assert scorer.onnx_text.path.name.endswith("-int8.onnx") and len(exports(folder)) == 2
    operators = {node.op_type for node in onnx.load(str(scorer.onnx_text.path)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & operators
    alone = np.concatenate([scorer.embed_english([text]) for text in TEXTS])
    # A text's embedding does not depend on its batch (one scale per tensor), nor on whether the batch ran side by
    # side on one-thread sessions (search.query_threads 2) or the text alone on the two-thread session.
    assert scorer.onnx_text.lanes is not None and scorer.onnx_text.threads == 2
    assert np.array_equal(int8, alone)
    scorer.use_text_runtime("torch")
    fp32 = scorer.embed_english(TEXTS)
    cosine = (int8 * fp32).sum(axis=1)
    assert (cosine > 0.95).all() and not np.allclose(int8, fp32, atol=1e-5), cosine
    # the fp32 graph is reused, and the int8 one kept
    assert RelevanceScorer.from_checkpoint(folder, FP32).onnx_text.path in exports(folder) and len(exports(folder)) == 2


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
