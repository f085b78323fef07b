"""ONNX Runtime sessions on the CPU, the house's settings in one place, without torch (a serving process that runs
only ONNX graphs never loads libtorch)."""
from __future__ import annotations

from pathlib import Path


# Whether sessions keep ONNX Runtime's memory arena: it makes batch after batch of indexing faster (Lite2's batch of
# ten: 264 against 435 ms once), but holds the largest activations for good, about 280 MB after a server's first
# upload (an image tower and MTCNN). A server turns it off before making its sessions (keep_memory_arenas(False)).
_ARENA = [True]


def keep_memory_arenas(keep: bool) -> None:
    """Whether the sessions made from now on keep a memory arena (a server: no)."""
    _ARENA[0] = keep


def cpu_session(path: str | Path, threads: int):
    """An ONNX Runtime session on `path` whose operators use `threads` threads (onnxruntime imported here, so that
    importing this module costs nothing)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Helper threads sleep between operators instead of spinning: on a busy CPU a spinning helper takes the
    # time slice the calling thread needs (one query: p50 22 against 27 ms with spinning, under load).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = _ARENA[0]
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
