import json

import pandas as pd
import pytest
import torch

from wsense.cli import main
from wsense.errors import WsenseError
from conftest import TEST_IMAGES, settings
from wsense.models.checkpoint import save_checkpoint
from wsense.models.relevance import build_relevance_model
from wsense.serving.requests import MAX_QUERY_CHARS
from wsense.serving.search import SearchEngine


def test_search_ranks_the_catalog_and_keeps_described_children_out(tiny_data, checkpoint):
    descriptions = pd.DataFrame({"image": [TEST_IMAGES[1]], "text": ["Two boys play football ."]})
    engine = SearchEngine(checkpoint, tiny_data / "test_images", descriptions, index_dir=tiny_data.parent / "index",
                          settings=settings())
    assert engine.images == [TEST_IMAGES[0], TEST_IMAGES[2]]
    result = engine.search("a dog swimming in a lake", top_k=5)
    assert not result.refused and len(result.results) == 2
    scores = [item["score"] for item in result.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert {item["image"] for item in result.results} == {TEST_IMAGES[0], TEST_IMAGES[2]}
    assert len(engine.search("a dog").results) == 1  # top-1 by default


@pytest.mark.parametrize("candidates", [1, 2, 100])
def test_the_fusion_head_reranks_the_first_stage_shortlist(tiny_data, checkpoint, candidates):
    engine = SearchEngine(checkpoint, tiny_data / "test_images", None, candidates=candidates,
                          index_dir=tiny_data.parent / "index", settings=settings())
    query = "a dog swimming in a lake"
    v = engine.scorer.embed_texts([query])
    cosine_order = torch.argsort((v @ engine.embeddings.T)[0], descending=True)
    shortlist = cosine_order[:max(candidates, 3)]
    relevance = engine.scorer.relevance(v, engine.embeddings[shortlist])[0]
    calibrated = engine.ranker.calibration(relevance.numpy())  # the score shown: the fusion ranking's, calibrated
    expected = [(engine.images[int(shortlist[i])], pytest.approx(float(calibrated[i]), abs=2e-4))
                for i in torch.argsort(relevance, descending=True, stable=True)]
    found = [(item["image"], item["score"]) for item in engine.search(query, top_k=3).results]
    assert found == expected
    engine.ranker.candidates = candidates  # top-1: only the first stage's best `candidates` photos are re-ranked
    shortlist = cosine_order[:candidates]
    relevance = engine.scorer.relevance(v, engine.embeddings[shortlist])[0]
    best = engine.images[int(shortlist[int(relevance.argmax())])]
    assert engine.search(query).results[0]["image"] == best


@pytest.mark.parametrize("query", ["two boys on the beach", "ДЕВОЧКА с шариком", "a 7-year-old at the fair",
                                   "toddler", "kids playing", "малыши в парке", "newborn photo shoot"])
def test_refused_queries_never_show_an_image(tiny_data, checkpoint, query):
    engine = SearchEngine(checkpoint, tiny_data / "test_images", None, index_dir=tiny_data.parent / "index",
                          settings=settings())
    result = engine.search(query, top_k=10)
    assert result.refused and result.results == [] and result.reason


def test_a_query_runs_on_query_threads_and_restores_the_setting(tiny_data, checkpoint, monkeypatch):
    engine = SearchEngine(checkpoint, tiny_data / "test_images", None, index_dir=tiny_data.parent / "index",
                          settings=settings())
    assert engine.query_threads == 2  # the default
    engine.query_threads = 1
    relevance, seen = engine.scorer.relevance, []
    monkeypatch.setattr(engine.scorer, "relevance",
                        lambda *args: seen.append(torch.get_num_threads()) or relevance(*args))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert engine.search("a dog in a lake").results
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_bad_queries_are_clear_errors(tiny_data, checkpoint):
    engine = SearchEngine(checkpoint, tiny_data / "test_images", None, index_dir=tiny_data.parent / "index",
                          settings=settings())
    with pytest.raises(WsenseError, match="empty query"):
        engine.search("   ")
    with pytest.raises(WsenseError, match="query too long"):
        engine.search("dog " * MAX_QUERY_CHARS)
    with pytest.raises(WsenseError, match="image folder not found"):
        SearchEngine(checkpoint, tiny_data / "nowhere", settings=settings())


def test_cli_batch_prints_one_json_line_per_query_in_order(tiny_data, checkpoint, config_file, tmp_path, capsys):
    batch = tmp_path / "queries.txt"
    batch.write_text("a man on a mountain\ntwo girls dancing\n\nчёрная собака\n", encoding="utf-8")
    assert main(["search", "--checkpoint", str(checkpoint), "--config", str(config_file), "--data-dir", str(tiny_data),
                 "--batch", str(batch),
                 "--top-k", "2", "--index-dir", str(tmp_path / "index")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == ["a man on a mountain", "two girls dancing", "чёрная собака"]
    assert [line["refused"] for line in lines] == [False, True, False]
    assert lines[1]["results"] == [] and len(lines[0]["results"]) == 2
    # The test catalog's own captions keep the photo described as showing boys out of every result.
    assert all(item["image"] != TEST_IMAGES[1] for line in lines for item in line["results"])


def test_contact_sheet_never_shows_a_photo_kept_out_of_the_catalog(tiny_data, checkpoint, config_file, tmp_path,
                                                                    monkeypatch):
    # A harmless caption of the photo that another caption describes as showing boys.
    with open(tiny_data / "test_queries.csv", "a", encoding="utf-8") as table:
        table.write(f"4|{TEST_IMAGES[1]}#1|Players on a football field .|{TEST_IMAGES[1]}\n")
    # --demo draws test queries; make the draw land on that caption and on an ordinary one.
    monkeypatch.setattr(pd.DataFrame, "sample", lambda self, n, random_state=None: self.iloc[[4, 3]])
    sheet = tmp_path / "demo.html"
    assert main(["search", "--checkpoint", str(checkpoint), "--config", str(config_file), "--data-dir", str(tiny_data),
                 "--demo", "--html",
                 str(sheet), "--index-dir", str(tmp_path / "index")]) == 0
    html = sheet.read_text(encoding="utf-8")
    assert "Players on a football field" in html
    assert TEST_IMAGES[1] not in html  # neither as a result nor as the expected photo
    assert "expected · " + TEST_IMAGES[2] in html


def tiny_map_settings(data, tmp_path, **changes):
    """The multilingual map fitted on the tiny data set's captions and their Russian versions (seconds)."""
    return settings(search__multilingual="use_map", data__dir=str(data),
                    data__russian_train_captions=str(_russian_captions(tmp_path / "ru.csv")), **changes)


def test_cyrillic_queries_take_the_multilingual_path_chosen_by_config(checkpoint_copy, shared_data, tmp_path):
    from wsense.serving.scoring import RelevanceScorer

    checkpoint = checkpoint_copy
    scorer = RelevanceScorer.from_checkpoint(checkpoint, tiny_map_settings(shared_data, tmp_path))
    assert scorer.text_map is not None and (checkpoint / "text_map.npz").is_file()
    queries = ["чёрная собака прыгает через бревно", "black dog jumping over a log"]
    vectors = scorer.embed_texts(queries)
    # Russian: the map and the gloss through the English tower, at the config's share.
    gloss_weight = scorer.config.search.multilingual_gloss
    assert gloss_weight == 0.5 and scorer.text_map.glossary is not None
    assert torch.allclose(vectors[0], scorer.text_map([queries[0]], scorer.embed_english, gloss_weight)[0], atol=1e-5)
    assert torch.allclose(vectors[1], scorer.embed_english([queries[1]])[0], atol=1e-5)
    # Translations land near each other through the map; the English tower alone cannot read Russian.
    english_only = scorer.embed_english(queries)
    assert (vectors[0] @ vectors[1]) > (english_only[0] @ english_only[1]) + 0.1

    # The setting is the user's (search.multilingual in their config), not the checkpoint's.
    assert RelevanceScorer.from_checkpoint(checkpoint, settings(search__multilingual="none")).text_map is None


def test_the_multilingual_maps_teacher_is_the_torch_tower_whatever_the_query_runtime(checkpoint_copy, shared_data,
                                                                                     tmp_path, monkeypatch):
    from wsense.models.multilingual import TextMap
    from wsense.serving.scoring import RelevanceScorer

    teachers = []
    original = TextMap.fit.__func__
    monkeypatch.setattr(TextMap, "fit", classmethod(lambda cls, pairs, teacher, *a: teachers.append(teacher)
                                                    or original(cls, pairs, teacher, *a)))
    int8 = tiny_map_settings(shared_data, tmp_path, search__text_runtime="onnx_int8", embedding__image_runtime="torch")
    scorer = RelevanceScorer.from_checkpoint(checkpoint_copy, int8)
    texts = ["a dog swims in a lake", "two men climb a red rock wall"]
    assert scorer.onnx_text is not None and len(teachers) == 1
    assert torch.equal(teachers[0](texts), scorer.embed_english(texts, torch_tower=True))
    assert not torch.allclose(teachers[0](texts), scorer.embed_english(texts), atol=1e-4)  # int8 differs


@pytest.mark.e2e
def test_multilingual_map_is_kept_and_refitted_when_its_settings_or_format_change(checkpoint_copy, shared_data,
                                                                                  tmp_path):
    import numpy as np

    from wsense.serving.scoring import TEXT_MAP_FILE, RelevanceScorer

    folder = checkpoint_copy
    use_map = tiny_map_settings(shared_data, tmp_path)
    scorer = RelevanceScorer.from_checkpoint(folder, use_map)
    written = (folder / TEXT_MAP_FILE).stat().st_mtime_ns
    # A fitting text maps onto its teacher embedding (kernel ridge interpolates its own fitting points).
    english = "a photo of a goldfish"  # a label prompt: one of the map's fitting texts
    assert float(scorer.text_map([english])[0] @ scorer.embed_english([english])[0]) > 0.9
    assert (folder / TEXT_MAP_FILE).stat().st_mtime_ns == written
    RelevanceScorer.from_checkpoint(folder, use_map)
    assert (folder / TEXT_MAP_FILE).stat().st_mtime_ns == written  # reused

    use_map.search.multilingual_gamma = 2.0
    assert RelevanceScorer.from_checkpoint(folder, use_map).text_map.gamma == 2.0
    with np.load(folder / TEXT_MAP_FILE) as stored:
        assert float(stored["gamma"]) == 2.0

    np.savez(folder / TEXT_MAP_FILE, weight=np.zeros((512, 384)), bias=np.zeros(384))  # an older linear map
    assert RelevanceScorer.from_checkpoint(folder, use_map).text_map.sources.shape[1] == 512
    (folder / TEXT_MAP_FILE).write_bytes(b"not a map")
    with pytest.raises(WsenseError, match="damaged multilingual map"):
        RelevanceScorer.from_checkpoint(folder, use_map)


def _russian_captions(path):
    from conftest import CAPTIONS

    russian = ["Чёрная собака бежит по зелёной траве", "Двое мужчин лезут на красную скалу",
               "Маленькая девочка в розовом платье", "Сёрфер катится на большой волне",
               "Женщина едет на велосипеде по улице", "Снежные горы под голубым небом"]
    lines = ["query_id|query_text_ru"] + [f"{qid}|{text}" for qid, text in zip(CAPTIONS, russian)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_map_pairs_leave_out_every_caption_of_the_excluded_images(tiny_data, tmp_path):
    from conftest import TRAIN_IMAGES
    from wsense.config import load_config
    from wsense.data import load_data
    from wsense.serving.scoring import text_map_pairs

    config = load_config()
    config.data.russian_train_captions = str(_russian_captions(tmp_path / "ru.csv"))
    captions = load_data(tiny_data, check_images=False).captions
    everything = text_map_pairs(config, captions)
    assert ("Чёрная собака бежит по зелёной траве", 'A black dog runs on the "green" grass .') in everything
    kept = text_map_pairs(config, captions, exclude_images=[TRAIN_IMAGES[0]])
    assert len(everything) - len(kept) == 2  # the English caption and its Russian version
    assert all("black dog" not in english and "собака" not in source for source, english in kept)


def test_multilingual_validation_holds_the_validation_captions_out_of_the_map(tiny_data, tmp_path, monkeypatch):
    from wsense.config import load_config
    from wsense.evaluation.multilingual import validate_multilingual
    from wsense.models.multilingual import TextMap

    monkeypatch.delenv("WSENSE_DATA_DIR", raising=False)  # CI points it at the full data set
    config = load_config()
    config.data.dir = str(tiny_data)
    config.data.russian_train_captions = str(_russian_captions(tmp_path / "ru.csv"))
    config.training.val_fold = 0
    path = save_checkpoint(build_relevance_model(config), config, tmp_path / "best", {"epoch": 0})
    fitted = []
    original = TextMap.fit.__func__
    monkeypatch.setattr(TextMap, "fit", classmethod(lambda cls, pairs, *a: fitted.append(list(pairs))
                                                    or original(cls, pairs, *a)))
    rows = validate_multilingual(path, config)
    names = [row["model"] for row in rows]
    # fusion, cosine and the query-bank cosine (search.ranking's default), in English and in Russian
    assert len(rows) == 6 and sum("[ru]" in name for name in names) == 3
    assert sum(name.endswith("[cosine, query bank]") for name in names) == 2
    assert all("[val captions]" in name and 0 <= row["r1"] <= row["r5"] <= 1 for name, row in zip(names, rows))
    held = int(rows[0]["queries"].split("(")[1].split(")")[0])
    assert held >= 1
    sources = {source for source, _ in fitted[0]}
    assert len([s for s in sources if any("\u0400" <= ch <= "\u04ff" for ch in s)]) == 6 - held
