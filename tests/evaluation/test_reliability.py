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


def _pairs(seed: int = 0, n: int = 900) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    raw = rng.uniform(-0.2, 0.6, n)  # a ranking score on its own scale
    expert_mean = np.clip(1 + 3 * (raw + 0.2) / 0.8 + rng.normal(0, 0.4, n), 1, 4)
    return pd.DataFrame({"fold": np.arange(n) % 3, "qb_cosine": raw, "cosine": raw + 0.1,
                         "fusion": 1 / (1 + np.exp(-raw)), "expert_mean": expert_mean})


def test_the_shown_score_is_calibrated_on_other_folds_and_follows_the_ranking():
    import numpy as np

    from wsense.evaluation.reliability import calibration_error, cross_fitted, fit_calibrations

    scores = _pairs()
    curves = {c.ranking: c for c in fit_calibrations(scores)}
    assert set(curves) == {"qb_cosine", "cosine", "fusion"}
    shown = cross_fitted(scores, "qb_cosine")
    for fold in range(3):  # within a fold, the order of the ranking score is kept
        part = (scores["fold"] == fold).to_numpy()
        order = np.argsort(scores.loc[part, "qb_cosine"].to_numpy())
        assert np.all(np.diff(shown[part][order]) >= 0)
    raw_table = reliability_table(scores.assign(score=scores["qb_cosine"].clip(0, 1)))
    calibrated_table = reliability_table(scores.assign(score=shown))
    assert calibration_error(calibrated_table) < 0.05 < calibration_error(raw_table)


def test_a_fold_is_never_calibrated_on_its_own_pairs():
    from wsense.evaluation.reliability import cross_fitted

    scores = _pairs()
    changed = scores.copy()
    changed.loc[changed["fold"] == 0, "expert_mean"] = 1.0  # fold 0's own judgments change...
    shown, again = cross_fitted(scores, "qb_cosine"), cross_fitted(changed, "qb_cosine")
    own = (scores["fold"] == 0).to_numpy()
    assert (shown[own] == again[own]).all() and not (shown[~own] == again[~own]).all()  # ...its scores do not
