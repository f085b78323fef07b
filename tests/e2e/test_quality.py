"""Quality floors on the real data, a little under the figures of reports/report.md, so that a ranking regression
fails CI: the search model shipped with wsense evaluated as search runs it, and a fold-0 training run's validation
Spearman (training itself reaches its measured level, in half the default epochs)."""
import copy

import pytest

from conftest import FULL_DATA
from wsense.config import load_config
from wsense.evaluation.report import model_name
from wsense.evaluation.trained import evaluate_checkpoint, train_validated
from wsense.models.shipped import copy_shipped_model

pytestmark = pytest.mark.full_data
# Russian R@1 of the search ranking against English on the test queries: 0.310 against 0.310 (reports/report.md),
# with the gloss beside the map; on held-out validation captions the gap is 0.027 (docs/experiments.md).
RUSSIAN_GAP = 0.03


@pytest.fixture(scope="module")
def config(full_data_cache, tmp_path_factory):
    config = load_config()
    config.data.dir = str(FULL_DATA)
    config.cache_dir = str(full_data_cache)
    config.training.output_dir = str(tmp_path_factory.mktemp("runs") / "final")
    return config


def test_the_shipped_search_model_finds_the_right_photo_as_reported(config, tmp_path):
    checkpoint = copy_shipped_model(tmp_path / "best")  # the model a fresh install searches with
    rows = {row["model"].removeprefix(model_name(config)): row for row in evaluate_checkpoint(checkpoint, config)}
    print({name: (round(row["r1"], 3), round(row["r5"], 3)) for name, row in rows.items()})
    # reports/report.md (2026-12-07, the search checkpoint shipped as wsense/models/search_model): fusion 0.308 /
    # 0.662, cosine 0.320 / 0.668, allowed queries 0.341, Russian 0.304 / 0.616. The model is fixed, so the floors
    # sit just under: runtimes and machines move a figure by a query or two in 500.
    assert rows[""]["r1"] >= 0.30 and rows[""]["r5"] >= 0.65, rows[""]
    assert rows[" [cosine]"]["r1"] >= 0.31 and rows[" [cosine]"]["r5"] >= 0.66, rows[" [cosine]"]
    assert rows[" [allowed queries]"]["r1"] >= 0.33, rows[" [allowed queries]"]
    assert rows[" [ru]"]["r1"] >= 0.29 and rows[" [ru]"]["r5"] >= 0.60, rows[" [ru]"]
    # What search ranks by (search.ranking: qb_cosine): 0.310 / 0.684, Russian 0.310 / 0.674.
    qb, qb_ru = rows[" [cosine, query bank]"], rows[" [ru] [cosine, query bank]"]
    assert qb["r1"] >= 0.30 and qb["r5"] >= 0.67 and qb_ru["r1"] >= 0.30, (qb, qb_ru)
    assert abs(qb_ru["r1"] - qb["r1"]) <= RUSSIAN_GAP


def test_fold_0_validation_spearman_is_as_reported(config):
    config = copy.deepcopy(config)
    config.training.val_fold = 0
    config.training.epochs = 8  # half the default: fold 0 peaks by then
    config.training.output_dir = config.training.output_dir + "-fold0"
    result = train_validated(config)
    # Fold 0 since the photos labelled child by looking left training (2026-12-07, fresh processes): 8 epochs 0.760
    # (best epoch 6, fusion R@1 0.290, cosine 0.267), 16 epochs 0.758. A broken pipeline falls far below the floor.
    assert result.best["val_spearman"] >= 0.74, result.best
    assert result.best["val_r1_fusion"] >= 0.25 and result.best["val_r1_cosine"] >= 0.23, result.best  # 131 queries
