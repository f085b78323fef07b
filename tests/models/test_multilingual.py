"""The Russian query path's word-by-word gloss: alignment, glossary, blend with the map, storage."""
import numpy as np
import pytest

from wsense.errors import WsenseError
from wsense.models.multilingual import Glossary, TextMap, align_words, unit_rows, words_of

PAIRS = [("Собака бежит по траве", "A dog runs on the grass ."),
         ("Собака лежит на снегу", "A dog lies on the snow ."),
         ("Кошка бежит по снегу", "A cat runs on the snow ."),
         ("Кошка лежит на траве", "A cat lies on the grass ."),
         ("Мужчина в красной рубашке", "A man in a red shirt ."),
         ("Мужчина на снегу", "A man on the snow ."),
         ("Женщина в красной куртке", "A woman in a red jacket .")]


def test_russian_words_take_their_dictionary_form_and_latin_words_stay():
    assert words_of("Две собаки бегут, Nike!") == ["два", "собака", "бежать", "nike"]
    assert words_of("Зелёной ёлке") == ["зелёный".replace("ё", "е"), "ёлка".replace("ё", "е")]


def test_ibm_model_1_aligns_words_that_occur_together():
    pairs = [(["собака", "бежать"], ["dog", "runs"]), (["собака", "лежать"], ["dog", "lies"]),
             (["кошка", "бежать"], ["cat", "runs"]), (["кошка", "лежать"], ["cat", "lies"])]
    assert align_words(pairs) == {"собака": "dog", "бежать": "runs", "лежать": "lies", "кошка": "cat"}


def test_glossary_glosses_inflected_words_and_drops_what_it_cannot_place():
    glossary = Glossary.fit(PAIRS)
    assert glossary.dictionary["собака"] == "dog" and glossary.dictionary["кошка"] == "cat"
    assert glossary(["Собаки лежат на снегу"]) == ["dog lies on snow"]
    assert glossary.vectors.shape == (len(glossary.vocabulary), 512)
    # A word the captions never had: its nearest caption word in USE space, or nothing below the threshold.
    glossary.threshold = 2.0
    assert glossary(["Собака и жираф", "Жираф"]) == ["dog", ""]
    glossary.threshold = -1.0
    assert glossary(["Жираф"])[0] in glossary.vocabulary


def _map():
    sources = unit_rows(np.random.default_rng(0).standard_normal((6, 512)))
    return TextMap(sources, np.random.default_rng(0).normal(size=(6, 8)), 0.1, 1.0, Glossary.fit(PAIRS))


def test_the_map_and_the_gloss_are_averaged_at_the_configured_share():
    text_map = _map()
    seen = []

    def english(texts):
        seen.extend(texts)
        return unit_rows(np.ones((len(texts), 8)))

    texts = ["Собака на траве", "Жираф"]  # the second has no word to gloss (threshold: none placed)
    text_map.glossary.threshold = 2.0
    mapped = text_map(texts)
    assert np.allclose(text_map(texts, english, 0.0), mapped)
    assert np.allclose(text_map(texts, english, 1.0)[0], english(["x"])[0], atol=1e-6)
    half = text_map(texts, english, 0.5)
    assert np.allclose(half[0], unit_rows(0.5 * mapped[0] + 0.5 * english(["x"])[0]), atol=1e-6)
    assert np.allclose(half[1], mapped[1])  # nothing glossed: the map alone
    assert "dog on grass" in seen and "" not in seen


def test_the_glossary_is_kept_with_the_map_and_an_older_map_is_refitted(tmp_path):
    text_map = _map()
    path = tmp_path / "text_map.npz"
    text_map.save(path)
    loaded = TextMap.load(path, 0.1, 1.0)
    assert loaded.glossary.dictionary == text_map.glossary.dictionary
    assert loaded.glossary.vocabulary == text_map.glossary.vocabulary
    assert np.allclose(loaded.glossary.vectors, text_map.glossary.vectors, atol=1e-3)
    texts = ["Две кошки на снегу"]
    assert loaded.glossary(texts) == text_map.glossary(texts)

    np.savez(path, format="rbf-kernel-ridge-1", sources=np.zeros((2, 512)), coefficients=np.zeros((2, 8)),
             alpha=0.1, gamma=1.0)  # before the glossary
    assert TextMap.load(path, 0.1, 1.0) is None
    TextMap(np.zeros((2, 512)), np.zeros((2, 8)), 0.1, 1.0).save(path)  # fitted without Russian captions
    assert TextMap.load(path, 0.1, 1.0).glossary is None


def test_a_map_without_its_glossary_arrays_is_damaged(tmp_path):
    path = tmp_path / "text_map.npz"
    np.savez(path, format=TextMap.FORMAT, sources=np.zeros((2, 512)), coefficients=np.zeros((2, 8)), alpha=0.1,
             gamma=1.0)
    with pytest.raises(WsenseError, match="damaged multilingual map"):
        TextMap.load(path, 0.1, 1.0)
