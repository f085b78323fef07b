"""The query text path in ONNX Runtime: MiniLM, mean pooling and the trained text projection as one graph.

fp32 (`text_tower-<key>.onnx`): the same numbers as the torch tower (embeddings agree within 1e-6), a
single query in about 0.6 of torch's time on CPU. int8 (`text_tower-<key>-int8.onnx`, quantized from it): about
0.35 of torch's time, embeddings within about 0.04. Each is made once per model and kept beside the
checkpoint, the key a hash of the text tower's and the projection's weights, so another checkpoint or text
model never reuses it. A missing file is exported (a few seconds); a damaged one (it does not load, or its
embedding of a probe text differs from the torch tower's) is exported again.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from wsense.io import atomic_path
from wsense.models.onnx_path import OnnxPath, require_onnx, weights_key

EXPORT_FORMAT = "wsense-text-onnx-2"  # 2: transformer operators fused
FILE_PREFIX = "text_tower-"
PROBE = "a black dog runs across the green grass"
TOLERANCE = 1e-4  # a correct export agrees within about 1e-6; a damaged one is far off
# int8 weights move an embedding by up to about 0.03 (cosine 0.98 to the fp32 one on the 500 test queries)
INT8_TOLERANCE = 0.1
INT8_SUFFIX = "-int8"


SETTING = "search.text_runtime"


def text_path_key(model) -> str:
    """Which weights the exported graph holds: the text tower's and the text projection's."""
    return weights_key(EXPORT_FORMAT, {"text_encoder.": model.text_encoder, "text_projection.": model.text_projection})


def export_path(model, directory: str | Path, int8: bool = False) -> Path:
    return Path(directory) / f"{FILE_PREFIX}{text_path_key(model)}{INT8_SUFFIX if int8 else ''}.onnx"


def export_text_path(model, path: str | Path) -> Path:
    """Export tokens -> projected, normalised text embedding (dynamic batch and length), written atomically."""
    import torch
    from torch import nn

    class _TextPath(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model.encode_texts({"input_ids": input_ids, "attention_mask": attention_mask}).float()

    require_onnx(SETTING, "text tower")
    encoder = model.text_encoder.model
    previous = encoder.config._attn_implementation
    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime runs faster than the exported SDPA.
    encoder.set_attn_implementation("eager")
    ids, mask = model.text_encoder.token_arrays(["a dog", "two dogs run on the grass"])  # padded: the mask is used
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_TextPath(model).eval(), (torch.from_numpy(ids), torch.from_numpy(mask)), str(tmp),
                              dynamo=False, opset_version=17, input_names=["input_ids", "attention_mask"],
                              output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
            fuse_transformer_operators(tmp, encoder.config)
    finally:
        encoder.set_attn_implementation(previous)
    return Path(path)


def fuse_transformer_operators(path: Path, config) -> None:
    """Rewrite the exported graph with ONNX Runtime's BERT fusions (embedding + LayerNorm, attention, bias +
    GELU, skip + LayerNorm as single kernels): the same numbers within 1e-6, one query about 0.83 of the time."""
    import logging

    from onnxruntime.transformers import optimizer

    # The optimizer logs each fusion it tries at WARNING level.
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        fused = optimizer.optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size, opt_level=1)
        fused.save_model_to_file(str(path))
    finally:
        logger.setLevel(level)


def quantize_text_path(source: Path, path: str | Path) -> Path:
    """The fp32 export with int8 weights (per output channel) and activations quantized per query, written
    atomically: a query's text tower in about 0.6 of the fp32 graph's time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(path) as tmp:
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return Path(path)


class OnnxTextPath(OnnxPath):
    """Callable like the torch text path: (input_ids, attention_mask) int64 arrays -> embeddings (float32).
    `int8`: the graph with int8 weights (search.text_runtime: onnx_int8), quantized from the fp32 export."""

    what, setting, file_prefix = "text tower", SETTING, FILE_PREFIX

    def __init__(self, model, directory: str | Path, threads: int | None = None, int8: bool = False):
        """The export of the torch `model`'s text path in `directory`, made or made again where needed."""
        import torch

        fp32_path = export_path(model, directory)
        path = export_path(model, directory, int8)
        ids, mask = model.text_encoder.token_arrays([PROBE])
        with torch.inference_mode():
            reference = model.encode_texts({"input_ids": torch.from_numpy(ids),
                                            "attention_mask": torch.from_numpy(mask)}).float().numpy()

        def export() -> None:
            export_text_path(model, fp32_path)
            if int8:
                quantize_text_path(fp32_path, path)

        self._open(path, {"input_ids": ids, "attention_mask": mask}, reference, export, threads, int8, (fp32_path,))

    @classmethod
    def exported(cls, path: str | Path, probe: dict[str, np.ndarray], reference: np.ndarray,
                 threads: int | None = None, int8: bool = False) -> "OnnxTextPath":
        """An export made before, without the torch model: it must reproduce `reference` (the torch path's output
        for `probe`, kept when it was exported); a missing or damaged file is a WsenseError."""
        self = cls.__new__(cls)
        self._open(Path(path), probe, reference, None, threads, int8)
        return self

    def _open(self, path: Path, probe: dict, reference: np.ndarray, export, threads: int | None, int8: bool,
              keep: tuple[Path, ...] = ()) -> None:
        self.int8 = int8
        self.lanes = self.single_thread = None  # int8, several texts: a thread pool and a one-thread session
        super().__init__(path, probe, reference, INT8_TOLERANCE if int8 else TOLERANCE, export, keep=keep,
                         threads=threads)
        if int8 and self.threads > 1:
            self.single_thread = self.new_session(1)
            self.lanes = ThreadPoolExecutor(self.threads, thread_name_prefix="wsense-text")

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if not self.int8:
            return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        # int8 activations are quantized with one scale per tensor, so in a batch a text's embedding would depend
        # on the other texts and the padding: each text runs alone, unpadded, as a query does.
        def alone(session, ids, mask):
            keep = mask.astype(bool)
            return session.run(None, {"input_ids": ids[None, keep], "attention_mask": mask[None, keep]})[0]

        if len(input_ids) > 1 and self.lanes is not None:
            # Several texts: one per thread, each on one core. A dozen tokens are too few to share an operator's
            # work between threads; whole texts side by side keep every core busy (benchmarks/README.md).
            return np.concatenate(list(self.lanes.map(lambda pair: alone(self.single_thread, *pair),
                                                      zip(input_ids, attention_mask))))
        return np.concatenate([alone(self.session, ids, mask) for ids, mask in zip(input_ids, attention_mask)])

    __call__ = run
