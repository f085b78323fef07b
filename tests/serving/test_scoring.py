"""The scorer (wsense/serving/scoring.py): the query cache, and Cyrillic queries through the multilingual map fitted
with the torch text tower as its teacher."""
from __future__ import annotations

import numpy as np

from conftest import russian_captions, settings, tiny_map_settings


def test_repeated_queries_skip_the_text_tower_and_the_cache_stays_bounded(checkpoint, monkeypatch):
    from wsense.serving.scoring import RelevanceScorer

    scorer = RelevanceScorer.from_checkpoint(checkpoint, settings(search__query_cache=3))
    fresh = scorer.embed_english(["a dog", "a cat", "a red car", "snow"])
    calls = []
    embed = scorer._embed_texts
    monkeypatch.setattr(scorer, "_embed_texts", lambda texts, size: calls.append(list(texts)) or embed(texts, size))
    first = scorer.embed_texts(["a dog", "a cat", "a dog"])
    assert calls == [["a dog", "a cat"]] and np.allclose(first, fresh[[0, 1, 0]], atol=1e-6)
    again = scorer.embed_texts(["a cat", "a red car"])
    assert calls[-1] == ["a red car"] and np.allclose(again, fresh[[1, 2]], atol=1e-6)
    scorer.embed_texts(["snow"])  # four texts seen, three kept: the least recently used ("a dog") goes
    assert list(scorer.query_cache) == ["a cat", "a red car", "snow"]
    off = RelevanceScorer.from_checkpoint(checkpoint, settings(search__query_cache=0))
    off.embed_texts(["a dog"])
    assert not off.query_cache


def test_cyrillic_queries_take_the_multilingual_path_chosen_by_config(exported_checkpoint_copy, shared_data,
                                                                      tmp_path, monkeypatch, few_label_prompts):
    from wsense.serving.scoring import RelevanceScorer

    checkpoint = exported_checkpoint_copy
    scorer = RelevanceScorer.from_checkpoint(checkpoint,
                                             tiny_map_settings(checkpoint, shared_data, tmp_path, monkeypatch))
    assert scorer.text_map is not None and (checkpoint / "text_map.npz").is_file()
    queries = ["чёрная собака прыгает через бревно", "black dog jumping over a log"]
    vectors = scorer.embed_texts(queries)
    # Russian: the map and the gloss through the English tower, at the config's share.
    gloss_weight = scorer.config.search.multilingual_gloss
    assert gloss_weight == 0.5 and scorer.text_map.glossary is not None
    assert np.allclose(vectors[0], scorer.text_map([queries[0]], scorer.embed_english, gloss_weight)[0], atol=1e-5)
    assert np.allclose(vectors[1], scorer.embed_english([queries[1]])[0], atol=1e-5)
    # Translations land near each other through the map; the English tower alone cannot read Russian.
    english_only = scorer.embed_english(queries)
    assert (vectors[0] @ vectors[1]) > (english_only[0] @ english_only[1]) + 0.1

    # The setting is the user's (search.multilingual in their config), not the checkpoint's.
    assert RelevanceScorer.from_checkpoint(checkpoint, settings(search__multilingual="none")).text_map is None


def test_the_multilingual_maps_teacher_is_the_torch_tower_whatever_the_query_runtime(exported_checkpoint_copy,
                                                                                     shared_data, tmp_path,
                                                                                     monkeypatch, few_label_prompts):
    from wsense.models.multilingual import TextMap
    from wsense.serving.scoring import RelevanceScorer

    teachers = []
    original = TextMap.fit.__func__
    monkeypatch.setattr(TextMap, "fit", classmethod(lambda cls, pairs, teacher, *a: teachers.append(teacher)
                                                    or original(cls, pairs, teacher, *a)))
    int8 = tiny_map_settings(exported_checkpoint_copy, shared_data, tmp_path, monkeypatch,
                             search__text_runtime="onnx_int8", embedding__image_runtime="torch")
    scorer = RelevanceScorer.from_checkpoint(exported_checkpoint_copy, int8)
    texts = ["a dog swims in a lake", "two men climb a red rock wall"]
    assert scorer.onnx_text is not None and len(teachers) == 1
    assert np.array_equal(teachers[0](texts), scorer.embed_english(texts, torch_tower=True))
    assert not np.allclose(teachers[0](texts), scorer.embed_english(texts), atol=1e-4)  # int8 differs


def test_map_pairs_leave_out_every_caption_of_the_excluded_images(tiny_data, tmp_path):
    from conftest import TRAIN_IMAGES
    from wsense.config import load_config
    from wsense.data import load_data
    from wsense.serving.scoring import text_map_pairs

    config = load_config()
    config.data.russian_train_captions = str(russian_captions(tmp_path / "ru.csv"))
    captions = load_data(tiny_data, check_images=False).captions
    everything = text_map_pairs(config, captions)
    assert ("Чёрная собака бежит по зелёной траве", 'A black dog runs on the "green" grass .') in everything
    kept = text_map_pairs(config, captions, exclude_images=[TRAIN_IMAGES[0]])
    assert len(everything) - len(kept) == 2  # the English caption and its Russian version
    assert all("black dog" not in english and "собака" not in source for source, english in kept)
