"""The search model without torch: what a serving process runs, made once from a checkpoint and kept beside it.

A query needs the text tower (exported to ONNX: wsense.models.text_onnx), its tokenizer (the Rust `tokenizers`), and
the heads (wsense.models.serving_head: numpy arrays); an uploaded photo needs the image towers too (ONNX:
wsense.models.image_onnx) and the views cut from it (wsense.models.views). `serving.json` in the checkpoint folder
names these files, with the checkpoint's fingerprint and what each export gave for a probe input when it was made
from the torch model. A serving process opens them with safetensors, tokenizers and ONNX Runtime, and checks each
export on its probe; it never imports torch. Where the files are missing or stale (another checkpoint's weights,
another text runtime, a damaged export), the caller makes them from the torch model once (make_serving_model).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from wsense.config import Config
from wsense.errors import WsenseError
from wsense.io import atomic_path, atomic_write_text
from wsense.models.serving_head import ServingHead, head_arrays

FORMAT = "wsense-serving-1"
MANIFEST_FILE, HEAD_FILE, TOKENIZER_FILE = "serving.json", "serving_head.safetensors", "query_tokenizer.json"
ONNX_TEXT_RUNTIMES = ("onnx", "onnx_int8")
ONNX_TEXT_BATCH = 8  # texts per ONNX Runtime call of the fp32 query tower


def token_arrays(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 arrays of texts through a Rust tokenizer (tokenizers.Tokenizer)."""
    encodings = tokenizer.encode_batch(texts)
    return (np.array([e.ids for e in encodings], dtype=np.int64),
            np.array([e.attention_mask for e in encodings], dtype=np.int64))


def onnx_text_embeddings(onnx_text, tokenize, texts: Sequence[str], dim: int) -> np.ndarray:
    """Text embeddings through an OnnxTextPath. Texts of similar length go together, in small batches: the fp32
    tower's cost grows with the padded length, and on a CPU a batch saves little else (int8 runs each text alone
    anyway: OnnxTextPath.run)."""
    out = np.zeros((len(texts), dim), np.float32)
    if not len(texts):
        return out
    ids, mask = tokenize(list(texts))
    lengths = mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(texts), ONNX_TEXT_BATCH):
        rows = order[start:start + ONNX_TEXT_BATCH]
        width = int(lengths[rows].max())
        out[rows] = onnx_text(ids[rows, :width], mask[rows, :width])
    return out


class ServingModel:
    """A checkpoint's serving files, opened: the heads, the tokenizer, the query text tower of one runtime (None for
    search.text_runtime: torch) and, on first use, the image towers."""

    def __init__(self, folder: Path, manifest: dict, arrays: dict[str, np.ndarray], tokenizer, text,
                 image_threads: int | None = None):
        self.folder, self.manifest, self.arrays = Path(folder), manifest, arrays
        self.head = ServingHead(arrays)
        self.tokenizer, self.text = tokenizer, text
        self.image_threads = image_threads
        self._photos = None

    def token_arrays(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return token_arrays(self.tokenizer, texts)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.text is None:
            raise WsenseError("these serving files have no ONNX text tower (search.text_runtime: torch)")
        return onnx_text_embeddings(self.text, self.token_arrays, texts, self.head.dim)

    @property
    def has_photo_path(self) -> bool:
        return bool(self.manifest.get("images"))

    @property
    def photos(self):
        """The ONNX photo path (wsense.models.views.OnnxPhotoPath), opened on first use (an upload)."""
        if self._photos is None:
            from wsense.models.image_onnx import OnnxImagePath
            from wsense.models.views import OnnxPhotoPath

            towers = self.manifest.get("images")
            if not towers:
                raise WsenseError(f"{self.folder}: the serving files name no image tower yet")
            paths = [OnnxImagePath.exported(self.folder / tower["file"], tower["size"],
                                            self.arrays[f"probe.image.{i}"], self.image_threads)
                     for i, tower in enumerate(towers)]
            self._photos = OnnxPhotoPath(paths, towers, self.manifest["views"])
        return self._photos


def _read_manifest(folder: Path, fingerprint: str) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("fingerprint") != fingerprint:
        return None
    return manifest


def _load_arrays(folder: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(folder / HEAD_FILE))
    except (SafetensorError, OSError, ValueError) as error:
        raise WsenseError(f"{folder / HEAD_FILE}: damaged serving head ({error})") from None


def serving_files_complete(folder: str | Path, config: Config, fingerprint: str) -> bool:
    """Whether the serving files of the checkpoint in `folder` name config's text runtime and the image towers, by
    their manifest alone (open_serving_model still checks each file when it opens them)."""
    manifest = _read_manifest(Path(folder), fingerprint)
    runtime = config.search.text_runtime
    return (manifest is not None and bool(manifest.get("images"))
            and (runtime == "torch" or runtime in manifest.get("text", {})))


def open_serving_model(folder: str | Path, config: Config, fingerprint: str) -> ServingModel | None:
    """The serving files of the checkpoint in `folder` for config's text runtime, opened without torch; None where
    they are missing, another checkpoint's, without that runtime's export, or damaged (say so, and make them again)."""
    from tokenizers import Tokenizer

    from wsense.models.text_onnx import OnnxTextPath

    folder = Path(folder)
    manifest = _read_manifest(folder, fingerprint)
    runtime = config.search.text_runtime
    if manifest is None or (runtime != "torch" and runtime not in manifest.get("text", {})):
        return None
    try:
        arrays = _load_arrays(folder)
        try:
            tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as error:  # tokenizers raises its own exception types for an unreadable file
            raise WsenseError(f"{folder / TOKENIZER_FILE}: unreadable query tokenizer ({error})") from None
        text = None
        if runtime != "torch":
            probe = {"input_ids": arrays["probe.text.input_ids"], "attention_mask": arrays["probe.text.attention_mask"]}
            text = OnnxTextPath.exported(folder / manifest["text"][runtime], probe, arrays[f"probe.text.{runtime}"],
                                         threads=config.search.query_threads, int8=runtime == "onnx_int8")
        return ServingModel(folder, manifest, arrays, tokenizer, text)
    except (WsenseError, KeyError) as error:
        print(f"{folder}: serving files unusable ({error}); making them again", file=sys.stderr)
        return None


def make_serving_model(model, folder: str | Path, config: Config, fingerprint: str, onnx_text=None) -> ServingModel:
    """Write the serving files of a torch RelevanceModel (the checkpoint in `folder`) and open them: the heads, the
    tokenizer and `onnx_text` (the OnnxTextPath of config's text runtime, exported beside the checkpoint), keeping
    what the files held for this checkpoint before (another runtime's text export, the image towers)."""
    folder = Path(folder)
    tokenizer = model.text_encoder.query_tokenizer
    if tokenizer is None:
        raise WsenseError(f"text model {config.text_model.name}: search without torch needs its fast (Rust) "
                          "tokenizer; set search.text_runtime: torch")
    manifest = _read_manifest(folder, fingerprint) or {}
    arrays = {}
    if manifest:
        try:
            arrays = {k: v for k, v in _load_arrays(folder).items() if k.startswith("probe.")}
        except WsenseError:
            manifest = {}
    manifest = {"format": FORMAT, "fingerprint": fingerprint, "head": HEAD_FILE, "tokenizer": TOKENIZER_FILE,
                "text": {runtime: name for runtime, name in manifest.get("text", {}).items()
                         if (folder / name).is_file()},
                "images": manifest.get("images") or [], "views": manifest.get("views")}
    arrays.update(head_arrays(model))
    runtime = config.search.text_runtime
    if onnx_text is not None:
        manifest["text"][runtime] = onnx_text.path.name
        arrays[f"probe.text.{runtime}"] = onnx_text.reference
        arrays["probe.text.input_ids"] = onnx_text.probe["input_ids"]
        arrays["probe.text.attention_mask"] = onnx_text.probe["attention_mask"]
    _write(folder, manifest, arrays, tokenizer)
    return ServingModel(folder, manifest, arrays, tokenizer, onnx_text)


def record_image_towers(served: ServingModel, onnx_paths: list, towers: list[dict], views: list[str]) -> None:
    """Name the image towers' exports (OnnxImagePath, one per backbone, made beside the checkpoint by the torch
    photo path) in the serving files, so that an upload runs without torch from then on. `towers`: per backbone its
    name, size, mean and std."""
    names = [{**tower, "file": onnx.path.name} for tower, onnx in zip(towers, onnx_paths)]
    if served.manifest.get("images") == names and served.manifest.get("views") == list(views):
        return
    served.manifest = {**served.manifest, "images": names, "views": list(views)}
    served.arrays = {**served.arrays, **{f"probe.image.{i}": onnx.reference for i, onnx in enumerate(onnx_paths)}}
    served._photos = None
    _write(served.folder, served.manifest, served.arrays, None)


def _write(folder: Path, manifest: dict, arrays: dict[str, np.ndarray], tokenizer) -> None:
    """The head's arrays and the tokenizer first, the manifest that names them last (atomic writes each)."""
    from safetensors.numpy import save_file

    with atomic_path(folder / HEAD_FILE) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    if tokenizer is not None:
        atomic_write_text(folder / TOKENIZER_FILE, tokenizer.to_str())
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=1))
