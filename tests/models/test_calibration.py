import json

import numpy as np
import pytest

from wsense.errors import WsenseError
from wsense.models.calibration import (CALIBRATION_FILE, ScoreCalibration, load_calibration, read_calibration,
                                       save_calibrations, shipped_calibration_path)


def test_the_fitted_curve_never_falls_and_stays_on_the_experts_scale():
    rng = np.random.default_rng(0)
    raw = rng.normal(0.2, 0.1, 500)
    target = np.clip(2 * raw + rng.normal(0, 0.1, 500), 0, 1)
    curve = ScoreCalibration.fit("qb_cosine", raw, target)
    grid = np.linspace(-1, 1, 2001)
    mapped = curve(grid)
    assert np.all(np.diff(mapped) >= 0) and mapped.min() >= 0 and mapped.max() <= 1
    assert mapped[0] == curve.y[0] and mapped[-1] == curve.y[-1]  # flat beyond the fitted scores
    low, high = curve([0.05, 0.35])
    assert high - low > 0.4  # it follows the data, not a constant


def test_calibrations_round_trip_per_ranking(tmp_path):
    curves = [ScoreCalibration.fit(name, [0.0, 0.5, 1.0], [0.1, 0.4, 0.9]) for name in ("qb_cosine", "fusion")]
    path = save_calibrations(tmp_path / CALIBRATION_FILE, curves, "a test")
    assert not list(tmp_path.glob("*.part"))
    fusion = read_calibration(path, "fusion")
    assert fusion.ranking == "fusion" and np.allclose(fusion([0.25, 0.75]), curves[1]([0.25, 0.75]))
    assert read_calibration(path, "cosine") is None


def test_a_checkpoints_own_calibration_comes_before_the_shipped_one(tmp_path):
    save_calibrations(tmp_path / CALIBRATION_FILE, [ScoreCalibration("fusion", [0.0, 1.0], [0.2, 0.3])], "own")
    assert np.allclose(load_calibration(tmp_path, "fusion")([0.0, 1.0]), [0.2, 0.3])
    shipped = read_calibration(shipped_calibration_path(), "qb_cosine")
    assert shipped is not None and shipped.pairs > 1000  # fitted on the cross-validation folds' held-out pairs
    assert np.allclose(load_calibration(tmp_path, "qb_cosine").y, shipped.y)


@pytest.mark.parametrize("content, message", [("not json", "unreadable"), (json.dumps({"format": "x"}), "not a wsense"),
                                              (json.dumps({"format": "wsense-score-calibration-1", "rankings": [
                                                  {"ranking": "fusion", "x": [0, 1], "y": [0.9, 0.1]}]}),
                                               "non-decreasing")])
def test_a_broken_calibration_file_is_a_clear_error(tmp_path, content, message):
    (tmp_path / CALIBRATION_FILE).write_text(content)
    with pytest.raises(WsenseError, match=message):
        load_calibration(tmp_path, "fusion")


def test_no_calibration_for_a_ranking_says_how_to_fit_one(tmp_path):
    with pytest.raises(WsenseError, match="evaluate.py --reliability"):
        load_calibration(tmp_path, "no_such_ranking")
