"""Crash-safe indexing: `wsense index` killed with SIGKILL mid-way leaves no half-written index, and the rerun embeds
only the photos not yet committed, ending with the same index as a run that was never interrupted."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TEST_CHECK, write_image
from wsense.cli import main
from wsense.errors import WsenseError
from wsense.serving.index import CatalogIndex
from wsense.serving.store import IndexStore

PHOTOS = 64


@pytest.fixture
def catalog(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(PHOTOS):
        write_image(folder / ("sub" if i % 4 else ".") / f"p{i:03d}.jpg", 4000 + i, size=(64, 48))
    config = tmp_path / "config.yaml"
    config.write_text(f"cache_dir: {tmp_path / 'cache'}\nembedding:\n  image_batch_size: 8\n  commit_every: 8\n"
                      f"search:\n  multilingual: none\n  text_runtime: torch\n  ranking: fusion\n"
                      f"safety:\n  check: {TEST_CHECK}\n", encoding="utf-8")
    return folder, config


def index_command(folder, index_dir, checkpoint, config) -> list[str]:
    return ["index", str(folder), "--index-dir", str(index_dir), "--checkpoint", str(checkpoint),
            "--config", str(config)]


def committed_photos(index_dir) -> int:
    """Photos the run has committed as progress (0 while its store is not there yet, or is being created)."""
    try:
        return IndexStore(index_dir).progress_count()
    except WsenseError:
        return 0


def test_a_killed_index_run_resumes_with_only_the_missing_photos(catalog, checkpoint, tmp_path, capsys):
    folder, config = catalog
    index_dir = tmp_path / "ix"
    process = subprocess.Popen([sys.executable, "-m", "wsense.cli",
                                *index_command(folder, index_dir, checkpoint, config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 180
    while committed_photos(index_dir) < 16:  # two commits of 8
        if process.poll() is not None:
            pytest.fail(f"wsense index ended before it was killed:\n{process.stderr.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, "no progress committed in 180 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    with pytest.raises(WsenseError, match="no index here"):  # nothing half-written is seen as an index
        CatalogIndex.load(index_dir)
    committed = committed_photos(index_dir)
    assert 16 <= committed < PHOTOS

    capsys.readouterr()
    assert main(index_command(folder, index_dir, checkpoint, config)) == 0
    report = capsys.readouterr().err
    added, resumed = map(int, re.search(r"index: (\d+) added.*; (\d+) embedded by an interrupted run", report).groups())
    assert (added, resumed) == (PHOTOS, committed)  # so this run embedded only the other PHOTOS - committed
    assert f"indexing: 100%|██████████| {PHOTOS - committed}/{PHOTOS - committed}" in report
    assert committed_photos(index_dir) == 0  # taken in by the index, in the transaction that committed it

    assert main(index_command(folder, tmp_path / "whole", checkpoint, config)) == 0  # never interrupted
    resumed_index, whole = CatalogIndex.load(index_dir), CatalogIndex.load(tmp_path / "whole")
    assert resumed_index.entries == whole.entries
    np.testing.assert_allclose(resumed_index.embeddings, whole.embeddings, atol=1e-5)
