"""Query-bank normalisation against hubness: a few photos are near many unrelated queries ("hubs") and come first
for them. Each photo gets an offset, the inverted-softmax log-partition of its cosines to a bank of training
captions, (1/beta) log sum_b exp(beta cos(b, photo)); ranking by cos(query, photo) - weight * offset demotes
photos that are close to every caption. The offsets are computed at index time, so a query costs nothing more.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Collection

import numpy as np

from wsense.errors import WsenseError
from wsense.io import atomic_path
from wsense.safety.rules import mentions_child

if TYPE_CHECKING:
    # pandas (75 MB, 0.4 s to import) only where a table is read: a server over its index never needs it
    import pandas as pd

BANK_FILE = "query_bank.npy"


def bank_texts(captions: pd.DataFrame, exclude_images: Collection[str] = ()) -> list[str]:
    """The bank: the training captions (query_text, image) the legal filter allows, none of `exclude_images`."""
    captions = captions[~captions["image"].isin(set(exclude_images))]
    return sorted(text for text in set(captions["query_text"]) if not mentions_child(text))


def bank_offsets(bank: np.ndarray, photos: np.ndarray, beta: float, chunk: int = 4096) -> np.ndarray:
    """(photos,) offsets (1/beta) logsumexp(beta * photos @ bank.T), in chunks of photos."""
    bank = np.asarray(bank, np.float32)
    out = np.zeros(len(photos), np.float32)
    for start in range(0, len(photos), chunk):
        logits = beta * (np.asarray(photos[start:start + chunk], np.float32) @ bank.T)
        top = logits.max(axis=1, keepdims=True)
        out[start:start + chunk] = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))) / beta
    return out


def save_bank(path: str | Path, bank: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(bank, np.float32))


def load_bank(path: str | Path, dim: int) -> np.ndarray | None:
    """The stored bank, or None when it is missing or unreadable (it is rebuilt then)."""
    try:
        bank = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if bank.ndim != 2 or bank.shape[1] != dim or not len(bank):
        raise WsenseError(f"{path}: query bank of another model ({bank.shape}); delete it to rebuild it")
    return bank
