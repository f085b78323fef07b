"""Grouped folds (wsense/folds.py)."""
import numpy as np
import pandas as pd

from wsense.folds import captions_of, grouped_folds


def test_grouped_folds_never_split_an_image_and_are_reproducible():
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"image": rng.choice([f"i{k}.jpg" for k in range(40)], size=300)})
    folds = grouped_folds(pairs, n_folds=5, seed=1)
    assert len(folds) == 5
    seen = np.concatenate([valid for _, valid in folds])
    assert sorted(seen.tolist()) == list(range(300))
    for train, valid in folds:
        assert not set(pairs.image.iloc[train]) & set(pairs.image.iloc[valid])
    again = grouped_folds(pairs, n_folds=5, seed=1)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))


def test_grouped_folds_keep_the_captions_of_validation_images_out_of_training():
    rng = np.random.default_rng(0)
    images = [f"i{k}.jpg" for k in range(40)]
    captions = pd.DataFrame({"image": images, "query_text": [f"caption of {name}" for name in images]})
    pairs = pd.DataFrame({"image": rng.choice(images, size=300)})
    pairs["query_text"] = [f"caption of {name}" for name in rng.choice(images, size=300)]
    plain = grouped_folds(pairs, n_folds=5, seed=1)
    folds = grouped_folds(pairs, n_folds=5, seed=1, captions=captions)
    for (train, valid), (plain_train, plain_valid) in zip(folds, plain):
        assert (valid == plain_valid).all()
        held = captions_of(captions, pairs.image.iloc[valid])
        assert pairs.query_text.iloc[plain_train].isin(held).any()  # the plain folds train on them
        assert not pairs.query_text.iloc[train].isin(held).any()
        assert set(train) == {i for i in plain_train if pairs.query_text.iloc[i] not in held}
