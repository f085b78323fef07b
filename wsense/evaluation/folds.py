"""Grouped cross-validation folds: no image is in both the training and the validation part of a fold."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold


def grouped_folds(pairs: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train positions, validation positions) per fold, grouped by the pair's image. Same seed, same folds."""
    splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(pairs, groups=pairs["image"].to_numpy()))
