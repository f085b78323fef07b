"""End-to-end tests: everything in this folder is marked `e2e` (`-m "not e2e"` leaves it out), and what its tests
share: a tiny trained run, trained once for the session."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_dataset, tiny_training_config

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def tiny_run(tiny_cache, tmp_path_factory) -> Path:
    """The run folder of one epoch of `train` on the tiny data set (frozen towers), trained once for the session
    for the tests that only need a finished run and its checkpoint. Copy it before changing anything in it."""
    from wsense.training import train

    root = tmp_path_factory.mktemp("tiny-run")
    config = tiny_training_config(make_dataset(root / "data"), tiny_cache, root / "run")
    config.training.epochs = 1
    return train(config).output_dir
