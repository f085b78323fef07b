"""The reliability report's arithmetic: held-out scores binned against the experts' judgments."""
import pandas as pd
import pytest

from wsense.evaluation.reliability import readings, reliability_table


def test_reliability_bins_and_readings_of_held_out_scores():
    scores = pd.DataFrame({"score": [0.02, 0.08, 0.31, 0.29, 0.52, 0.83, 0.97],
                           "expert_mean": [1.0, 1.0, 2.0, 1.0, 3.0, 4.0, 3.0 + 2 / 3]})
    table = {row["bin"]: row for row in reliability_table(scores)}
    assert set(table) == {"0.0-0.1", "0.2-0.3", "0.3-0.4", "0.5-0.6", "0.8-0.9", "0.9-1.0"}
    assert table["0.0-0.1"]["pairs"] == 2 and table["0.0-0.1"]["no_match_share"] == 1.0
    assert table["0.9-1.0"]["expert_target"] == pytest.approx((3 + 2 / 3 - 1) / 3)
    assert table["0.5-0.6"]["match_share"] == 1.0 and table["0.2-0.3"]["match_share"] == 0.0
    meaning = {row["score"]: row for row in readings(scores)}
    assert meaning[0.3]["pairs"] == 2 and meaning[0.3]["expert_mean"] == 1.5 and meaning[0.3]["match_share"] == 0
    assert meaning[0.8]["pairs"] == 1 and meaning[0.8]["match_share"] == 1.0
