"""The legal query check on the development and held-out query tables (the real USE weights), against its report."""
import json
from pathlib import Path

import numpy as np
import pytest

from wsense.evaluation.query_check import HELDOUT_TABLES, TABLES, development_table, read_query_table
from wsense.safety.query_check import check_queries

REPORT = Path(__file__).resolve().parents[2] / "reports" / "query_check.json"


def _refused(table) -> tuple:
    frame = read_query_table(TABLES / table) if isinstance(table, str) else table
    refused = np.array([v.refused for v in check_queries(list(frame["query"]))])
    child = frame["child"].to_numpy() == 1
    return frame, refused, child


@pytest.mark.weights
def test_development_tables_in_sample():
    frame, refused, child = _refused(development_table())
    assert len(frame) >= 4500 and 0.4 < child.mean() < 0.6
    # Fitted on these rows: better than out of fold (reports/query_check.md), and the rules' own calls stand.
    assert refused[child].mean() >= 0.87 and refused[~child].mean() <= 0.06


@pytest.mark.weights
@pytest.mark.parametrize("table", HELDOUT_TABLES)
def test_heldout_tables_do_no_worse_than_their_report(table):
    """The held-out tables are never used to fit or tune; this only keeps the reported figures from slipping."""
    frame, refused, child = _refused(table)
    reported = json.loads(REPORT.read_text(encoding="utf-8"))["heldout"][table]["rules_and_learned"]
    assert len(frame) == reported["child"] + reported["harmless"]
    assert int((child & ~refused).sum()) <= reported["child_passed"]
    assert int((~child & refused).sum()) <= reported["harmless_refused"]
