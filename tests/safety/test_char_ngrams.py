"""The query check's hashed character n-grams (wsense/safety/char_ngrams.py) are scikit-learn's HashingVectorizer's,
which the shipped classifier was fitted on, to the last bit."""
import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

from wsense.safety.char_ngrams import gram_index, hashed_ngrams, word_ngrams

TEXTS = ["a 7-year-old at the fair", "Two  boys\tplay football.", "девочка с собакой в парке", "a", "", "   ",
         "ÉTÉ à la plage, naïve café", "x" * 300, "kids kids kids", "5th graders 🍕 lunch", "a b c d"]


def test_hashed_ngrams_are_scikit_learns():
    reference = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=2 ** 16, alternate_sign=False,
                                  norm="l2").transform(TEXTS)
    ours = hashed_ngrams(TEXTS, 2 ** 16, 3, 5)
    assert ours.shape == reference.shape
    assert np.allclose(ours.toarray(), reference.toarray(), atol=1e-12)


def test_short_words_give_themselves_once_and_the_extreme_hash_has_a_column():
    assert word_ngrams("a go", 3, 5) == [" a ", " go", "go ", " go "]
    assert all(0 <= gram_index(gram, 2 ** 16) < 2 ** 16 for gram in word_ngrams(" ".join(TEXTS), 3, 5))
