"""Hashed character n-grams within words, exactly as scikit-learn's HashingVectorizer(analyzer="char_wb",
alternate_sign=False, norm="l2") makes them (the query check was fitted on those), without scikit-learn: importing
it holds about 130 MB in a serving process that needs none of the rest."""
from __future__ import annotations

import re
from typing import Sequence

import mmh3
import numpy as np
from scipy import sparse

_SPACES = re.compile(r"\s\s+")
_INT32_MIN = -(2 ** 31)


def word_ngrams(text: str, low: int, high: int) -> list[str]:
    """The text's n-grams of `low` to `high` characters within each space-padded word (a word shorter than n gives
    itself once), lower-cased."""
    grams = []
    for word in _SPACES.sub(" ", text.lower()).split():
        padded = f" {word} "
        for n in range(low, high + 1):
            offset = 0
            grams.append(padded[:n])
            while offset + n < len(padded):
                offset += 1
                grams.append(padded[offset:offset + n])
            if offset == 0:
                break
    return grams


def gram_index(gram: str, n_features: int) -> int:
    """The column of an n-gram: its signed 32-bit MurmurHash3 (seed 0) of the UTF-8 bytes, made positive as
    scikit-learn does (abs(-2**31) defined as its modulo)."""
    h = mmh3.hash(gram.encode("utf-8"), 0, signed=True)
    return (2 ** 31 - 1 - (n_features - 1)) % n_features if h == _INT32_MIN else abs(h) % n_features


def hashed_ngrams(texts: Sequence[str], n_features: int, low: int = 3, high: int = 5) -> sparse.csr_matrix:
    """(texts, n_features) counts of each text's hashed n-grams, each row scaled to unit length."""
    rows, columns = [], []
    for row, text in enumerate(texts):
        found = [gram_index(gram, n_features) for gram in word_ngrams(text, low, high)]
        columns += found
        rows += [row] * len(found)
    counts = sparse.csr_matrix((np.ones(len(columns)), (rows, columns)), shape=(len(texts), n_features))
    counts.sum_duplicates()
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ counts
