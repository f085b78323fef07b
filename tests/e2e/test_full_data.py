"""Checks on the real With Sense data with the real pretrained weights (run in CI, which has both)."""
import numpy as np
import pytest

from conftest import FULL_DATA
from wsense.config import load_config
from wsense.data import load_data
from wsense.safety import mentions_child
from wsense.safety.filters import filter_training_pairs

pytestmark = pytest.mark.full_data


@pytest.fixture(scope="module")
def data():
    return load_data(FULL_DATA, decode_images=True)


def test_full_data_reads_with_its_quirks(data):
    assert len(data.pairs) == 5822 and len(data.crowd) == 47830
    assert len(data.test_queries) == 500 and len(data.test_images) == 100
    assert len(data.captions) == 977 and len(data.train_images) == 1000
    assert data.pairs["expert_target"].between(0, 1).all()
    assert data.pairs["crowd_share"].notna().sum() == 2329
    true = data.true_pairs()
    assert (true["query_id"].str.split("#").str[0] == true["image"]).all()


def test_legal_filter_on_training_pairs(data):
    kept, summary = filter_training_pairs(data.pairs, data.captions)
    assert summary.pairs_removed == len(data.pairs) - len(kept) > 1000
    assert not kept["query_text"].map(mentions_child).any()
    children = set(data.captions.loc[data.captions["query_text"].map(mentions_child), "image"])
    assert not children & set(kept["image"])


def test_frozen_baselines_and_label_bridge_reach_the_expected_levels(full_data_cache):
    from wsense.evaluation.frozen import run_frozen_baselines

    config = load_config()
    config.data.dir = str(FULL_DATA)
    config.cache_dir = str(full_data_cache)
    config.baselines.feature_sets = ["concat_bridge"]
    rows, notes = run_frozen_baselines(config, models=["dummy", "ridge"])
    by_model = {row["model"]: row for row in rows}
    bridge = by_model["label_bridge"]
    assert 0.15 <= bridge["r1"] <= 0.35, bridge  # about 0.2 is expected; far below means a bug
    assert bridge["r5"] > bridge["r1"] and bridge["median_rank"] < 15
    assert by_model["label_bridge [allowed queries]"]["queries"].startswith("allowed queries (331)")
    ridge = by_model["baseline/ridge [concat_bridge]"]
    assert ridge["spearman_mean"] >= 0.55 and ridge["kendall_tau_c_mean"] > 0.3
    assert len(ridge["spearman_folds"]) == 5
    assert np.isnan(by_model["baseline/dummy [concat_bridge]"]["spearman_mean"])
    assert "legal filter: removed" in notes[0]
