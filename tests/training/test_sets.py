"""Training sets (wsense/training/sets.py): the legal filter and the validation fold."""
from wsense.data import load_data
from wsense.training import Trainer


def test_training_data_respects_the_legal_filter_and_the_fold(tiny_config):
    data = load_data(tiny_config.data.dir)
    trainer = Trainer(tiny_config, data)
    sets = trainer.sets
    assert "1002_a2.jpg" not in set(sets.judged["image"]) | set(sets.positives["image"])
    assert not sets.judged["query_text"].str.contains("girl").any()
    assert not set(sets.val_pairs["image"]) & (set(sets.judged["image"]) | set(sets.positives["image"]))


def test_validation_queries_are_texts_training_never_saw(tiny_config):
    data = load_data(tiny_config.data.dir)
    sets = Trainer(tiny_config, data).sets
    val_images = set(sets.val_pairs["image"])
    held = set(data.captions.loc[data.captions["image"].isin(val_images), "query_text"])
    assert set(sets.val_positives["query_text"]) <= held
    # The tables do pair these captions with training images; training leaves those pairs out.
    assert (data.pairs["query_text"].isin(held) & ~data.pairs["image"].isin(val_images)).any()
    assert not held & (set(sets.judged["query_text"]) | set(sets.positives["query_text"]))
    assert len(sets.judged) and len(sets.positives)
