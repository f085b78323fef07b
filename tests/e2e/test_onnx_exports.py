"""The ONNX exports' life in a checkpoint folder, with the real towers: an export is reused, rebuilt when missing or
damaged, never shared by other weights, and the int8 query tower is kept beside the fp32 one. Each export takes
seconds, so these run end to end; tests/models/ checks that the exported paths give the torch towers' embeddings."""
import json

import numpy as np
import onnx
import torch

from models.test_image_onnx import ONNX
from models.test_image_onnx import exports as image_exports
from models.test_text_onnx import FP32, INT8, TEXTS
from models.test_text_onnx import exports
from wsense.models.photos import PhotoEncoder
from wsense.models.serving import MANIFEST_FILE
from wsense.models.text_onnx import FILE_PREFIX, text_path_key
from wsense.serving.scoring import RelevanceScorer


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


def test_export_is_reused_rebuilt_when_damaged_and_never_shared_by_other_weights(checkpoint_copy, shaped_photos,
                                                                                 capsys):
    folder, photos = checkpoint_copy, shaped_photos
    path, other = (onnx.path for onnx in RelevanceScorer.from_checkpoint(folder, ONNX).photos.onnx)
    written = path.stat().st_mtime_ns
    scorer = RelevanceScorer.from_checkpoint(folder, ONNX)
    assert scorer.photos.onnx[0].path == path and path.stat().st_mtime_ns == written
    reference = scorer.embed_images(photos[:1], progress=False)

    path.write_bytes(path.read_bytes()[:50_000])  # cut short, as by a full disk
    scorer = RelevanceScorer.from_checkpoint(folder, ONNX)
    assert scorer.photos.onnx[0].path == path and "damaged ONNX image tower" in capsys.readouterr().err
    assert np.allclose(scorer.embed_images(photos[:1], progress=False), reference, atol=1e-6)

    with torch.no_grad():  # other first-backbone weights: another export, the stale one removed, the other kept
        next(scorer.model.image_backbone.parameters()).mul_(1.5)
    changed_path = PhotoEncoder(scorer.model.image_backbone, scorer.config.image_backbone, runtime="onnx",
                                onnx_dir=folder)
    assert changed_path.onnx[0].path != path and changed_path.onnx[1].path == other
    assert image_exports(folder) == sorted([changed_path.onnx[0].path, other])
    changed = changed_path.encode(photos[:1])
    in_torch = PhotoEncoder(scorer.model.image_backbone, scorer.config.image_backbone).encode(photos[:1])
    assert torch.allclose(changed, in_torch, atol=1e-5)
    assert not np.allclose(scorer.embed_features(changed), reference, atol=1e-3)


def test_another_text_runtime_is_added_to_the_serving_files_beside_the_first(exported_checkpoint_copy):
    folder = exported_checkpoint_copy
    RelevanceScorer.from_checkpoint(folder, FP32)
    RelevanceScorer.from_checkpoint(folder, INT8)  # quantised on first use (seconds)
    assert set(json.loads((folder / MANIFEST_FILE).read_text())["text"]) == {"onnx", "onnx_int8"}
