"""Multilingual validation (wsense/evaluation/multilingual.py): the validation captions are held out of the map."""
from conftest import russian_captions
from wsense.models.checkpoint import save_checkpoint
from wsense.models.relevance import build_relevance_model


def test_multilingual_validation_holds_the_validation_captions_out_of_the_map(tiny_data, tmp_path, monkeypatch,
                                                                                few_label_prompts):
    from wsense.config import load_config
    from wsense.evaluation.multilingual import validate_multilingual
    from wsense.models.multilingual import TextMap

    monkeypatch.delenv("WSENSE_DATA_DIR", raising=False)  # CI points it at the full data set
    config = load_config()
    config.data.dir = str(tiny_data)
    config.data.russian_train_captions = str(russian_captions(tmp_path / "ru.csv"))
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
