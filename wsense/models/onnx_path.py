"""A torch path of the model exported once to ONNX and run in ONNX Runtime on CPU (the search side).

Each export is kept beside the checkpoint, named by a hash of the weights it holds, so another checkpoint or
model never reuses it. A missing file is exported; a damaged one (it does not load, or its output on a probe
input differs from the torch path's) is exported again, and exports of other weights are removed.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from wsense.errors import WsenseError
from wsense.onnx_session import cpu_session

if TYPE_CHECKING:
    from torch import nn


def require_onnxruntime(setting: str):
    try:
        import onnxruntime
    except ImportError:
        raise WsenseError(f"{setting}: onnx needs onnxruntime (pip install onnxruntime), or set {setting}: "
                          "torch") from None
    return onnxruntime


def require_onnx(setting: str, what: str) -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes through it)
    except ImportError:
        raise WsenseError(f"{setting}: onnx exports the {what} with the onnx package (pip install onnx), or set "
                          f"{setting}: torch") from None


def weights_key(export_format: str, modules: dict[str, nn.Module], extra: str = "") -> str:
    """A short hash of the export format, `extra` and every tensor of `modules` (prefix -> module)."""
    import torch

    digest = hashlib.sha256(f"{export_format}:{extra}".encode())
    for prefix, module in modules.items():
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{prefix}{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def default_threads() -> int:
    """Threads of a session nobody chose them for: torch's own setting where torch is loaded (a test or benchmark sets
    it for the whole process), else the CPUs this process may run on (a serving process without torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxPath:
    """An ONNX Runtime session on `path`, exported by `export` when missing or damaged and checked against the
    torch path's `reference` output for `probe` (input name -> array) within `tolerance`. Without `export` (a
    serving process, which has no torch model to export from) a missing or damaged file is a WsenseError."""

    what = "model path"       # in messages: "damaged ONNX <what>"
    setting = "search"        # the config key that picks the runtime
    file_prefix = ""          # exports of this kind in the folder start with it

    def __init__(self, path: Path, probe: dict[str, np.ndarray], reference: np.ndarray, tolerance: float,
                 export: Callable[[], None] | None, keep: tuple[Path, ...] = (), threads: int | None = None):
        self.ort = require_onnxruntime(self.setting)
        self.path, self.probe, self.reference, self.tolerance = Path(path), probe, reference, tolerance
        self.threads = threads or default_threads()
        session = None
        if self.path.is_file():
            try:
                session = self._checked_session(reference)
            except WsenseError as error:
                if export is None:
                    raise
                print(f"{error}; exporting it again", file=sys.stderr)
        if session is None and export is None:
            raise WsenseError(f"{self.path}: ONNX {self.what} not found")
        if session is None:
            try:
                export()
            except OSError as error:
                raise WsenseError(f"{self.path.parent}: cannot write the ONNX {self.what} "
                                  f"({error.strerror or error}); make the checkpoint folder writable or set "
                                  f"{self.setting}: torch") from None
            session = self._checked_session(reference)
            for stale in self.path.parent.glob(f"{self.file_prefix}*.onnx"):
                if stale != self.path and stale not in keep:
                    stale.unlink(missing_ok=True)
        self.session = session

    def _checked_session(self, reference: np.ndarray):
        """A session on the exported file, which must load and reproduce the torch path's probe output."""
        try:
            self.session = self.new_session(self.threads)
            found = self.run(**self.probe)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise WsenseError(f"{self.path}: damaged ONNX {self.what} ({type(error).__name__})") from None
        if found.shape != reference.shape or not self.agrees(found, reference):
            raise WsenseError(f"{self.path}: ONNX {self.what} disagrees with the torch {self.what} (max difference "
                              f"{np.abs(found - reference).max() if found.shape == reference.shape else 'shape'})")
        return self.session

    def agrees(self, found: np.ndarray, reference: np.ndarray) -> bool:
        """Whether the session's output on the probe is the torch path's."""
        return bool(np.allclose(found, reference, atol=self.tolerance))

    def new_session(self, threads: int):
        """A session on the exported file whose operators use `threads` threads."""
        return cpu_session(self.path, threads)

    def run(self, **inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, inputs)[0]
