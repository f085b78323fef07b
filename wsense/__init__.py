"""wsense: text-to-image search for photographers.

The entry points, loaded on first use (so that `import wsense.serving...` never pulls in training):

    from wsense import SearchEngine, load_config, train, check_query
"""
from __future__ import annotations

from importlib import import_module

_ENTRY_POINTS = {
    "SearchEngine": "wsense.serving.search",
    "load_config": "wsense.config",
    "train": "wsense.training",
    "check_query": "wsense.safety",
    "check_queries": "wsense.safety",
}
__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str):
    if name in _ENTRY_POINTS:
        return getattr(import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'wsense' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
