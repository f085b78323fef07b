"""What a server imports to start: not pandas, pyarrow or torch (75, 27 and hundreds of MB of its resident memory),
which only training, data set tables and indexing runs need."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

START = """
import json, sys
import wsense.cli.commands, wsense.serving.web, wsense.serving.search, wsense.safety
from wsense.data import demo_catalog
from wsense.serving.index import described_children, index_exists
folder, descriptions = demo_catalog(sys.argv[1])
children = described_children(descriptions)
assert not index_exists(sys.argv[2])
print(json.dumps({"children": sorted(children),
                  "heavy": sorted({m.split(".")[0] for m in sys.modules} & {"pandas", "pyarrow", "torch"})}))
"""


def test_a_server_starts_without_pandas_pyarrow_or_torch(shared_data, tmp_path):
    done = subprocess.run([sys.executable, "-c", START, str(shared_data), str(tmp_path / "index")],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["heavy"] == []
    assert found["children"]  # the demo captions' legal filter works on plain pairs
