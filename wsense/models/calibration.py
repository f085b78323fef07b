"""The score a user sees: the ranking's own score, mapped onto the experts' scale by an isotonic fit.

Search orders photos by one number (search.ranking: the query-bank cosine by default). Shown as it is, that number
means nothing to a photographer; the fusion head's relevance, which does, goes up and down a list ranked by
another number. So the ranking score is mapped through a non-decreasing curve fitted on held-out expert pairs
(`python evaluate.py --reliability`): the order stays the ranking's, and a score reads as the experts' mean
judgment on the 0-1 training scale (reports/reliability.md).

The curve ships with the package (fitted on the default recipe's cross-validation folds); a checkpoint folder may
carry its own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from wsense.errors import WsenseError

CALIBRATION_FILE = "score_calibration.json"
FORMAT = "wsense-score-calibration-1"


@dataclass(frozen=True)
class ScoreCalibration:
    """A non-decreasing piecewise-linear map from a ranking score to [0, 1], flat beyond its end points."""
    ranking: str  # the search.ranking whose score it maps
    x: np.ndarray  # ranking scores, increasing
    y: np.ndarray  # their calibrated scores, non-decreasing, in [0, 1]
    pairs: int = 0  # the held-out expert pairs it was fitted on

    def __post_init__(self):
        x, y = np.asarray(self.x, np.float64), np.asarray(self.y, np.float64)
        if len(x) < 1 or x.shape != y.shape or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0) or (
                y.min() < 0 or y.max() > 1):
            raise WsenseError(f"score calibration for {self.ranking}: not a non-decreasing map into [0, 1]")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    def __call__(self, raw) -> np.ndarray:
        return np.interp(np.asarray(raw, np.float64), self.x, self.y)

    @classmethod
    def fit(cls, ranking: str, raw: np.ndarray, target: np.ndarray) -> "ScoreCalibration":
        """Isotonic regression of `target` (expert means on the 0-1 scale) on `raw` (the ranking's scores)."""
        from sklearn.isotonic import IsotonicRegression

        raw, target = np.asarray(raw, np.float64), np.asarray(target, np.float64)
        if len(raw) < 2:
            raise WsenseError("score calibration needs at least two held-out pairs")
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, target)
        return cls(ranking, fitted.X_thresholds_, fitted.y_thresholds_, len(raw))

    def to_dict(self) -> dict:
        return {"ranking": self.ranking, "pairs": self.pairs, "x": [round(float(v), 6) for v in self.x],
                "y": [round(float(v), 6) for v in self.y]}


def save_calibrations(path: str | Path, calibrations: list[ScoreCalibration], source: str) -> Path:
    """Write calibrations (one per ranking) atomically; `source`: how they were fitted, for a reader."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "source": source, "rankings": [c.to_dict() for c in calibrations]}
    part = path.with_suffix(".part")
    part.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    part.replace(path)
    return path


def read_calibration(path: str | Path, ranking: str) -> ScoreCalibration | None:
    """The calibration of `ranking` in a calibration file (None where the file has none for it)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise WsenseError(f"{path}: unreadable score calibration ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WsenseError(f"{path}: not a wsense score calibration (expected format {FORMAT})")
    for entry in payload.get("rankings", []):
        if entry.get("ranking") == ranking:
            return ScoreCalibration(ranking, entry["x"], entry["y"], entry.get("pairs", 0))
    return None


def shipped_calibration_path() -> Path:
    return Path(str(resources.files("wsense.models") / CALIBRATION_FILE))


def load_calibration(checkpoint: str | Path, ranking: str) -> ScoreCalibration:
    """The calibration for a checkpoint's ranking: the checkpoint folder's own, else the one shipped with wsense."""
    for path in (Path(checkpoint) / CALIBRATION_FILE, shipped_calibration_path()):
        if path.is_file():
            found = read_calibration(path, ranking)
            if found is not None:
                return found
    raise WsenseError(f"no score calibration for search.ranking {ranking}: `python evaluate.py --reliability "
                      f"--checkpoint {checkpoint}` fits one from the cross-validation folds")
