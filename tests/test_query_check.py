"""The legal query check as a whole: rules, then the shipped learned second opinion (wsense/safety/query_check.py)."""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from wsense.errors import WsenseError
from wsense.evaluation.query_check import HELDOUT_TABLES, TABLES, development_table, read_query_table
from wsense.safety import query_check
from wsense.safety.query_check import QueryClassifier, check_queries, check_query, shipped_classifier

REPORT = Path(__file__).resolve().parents[1] / "reports" / "query_check.json"


def _refused(table) -> tuple:
    frame = read_query_table(TABLES / table) if isinstance(table, str) else table
    refused = np.array([v.refused for v in check_queries(list(frame["query"]))])
    child = frame["child"].to_numpy() == 1
    return frame, refused, child


def test_the_shipped_classifier_loads_and_is_the_reported_one():
    classifier = shipped_classifier()
    assert 0.5 < classifier.threshold < 1.0
    assert classifier.version == json.loads(REPORT.read_text(encoding="utf-8"))["classifier"]


def _classifier(sentence: float = 0.0, intercept: float = 0.0) -> QueryClassifier:
    return QueryClassifier(np.full(512, sentence), np.zeros(query_check.GRAM_FEATURES), intercept, 0.5)


def test_a_saved_classifier_loads_as_it_was(tmp_path):
    classifier = _classifier(0.25, -1.0)
    loaded = QueryClassifier.load(classifier.save(tmp_path / "q.npz"))
    assert loaded.version == classifier.version and loaded.threshold == 0.5


@pytest.mark.parametrize("damage, why", [("truncate", "damaged"), ("format", "not a"), ("shape", "expected 512")])
def test_a_damaged_classifier_file_is_a_one_line_error(tmp_path, damage, why):
    path = _classifier().save(tmp_path / "q.npz")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        with np.load(path) as stored:
            arrays = dict(stored)
        if damage == "format":
            arrays["meta"] = json.dumps({**json.loads(str(arrays["meta"])), "format": "wsense-query-classifier-1"})
        else:
            arrays["sentence_coef"] = arrays["sentence_coef"][:10]
        np.savez(path.open("wb"), **arrays)
    with pytest.raises(WsenseError, match=why) as error:
        QueryClassifier.load(path)
    assert "\n" not in str(error.value) and "fit-query-check" in str(error.value)


def test_the_learned_check_refuses_what_no_rule_holds_and_says_so_in_the_query_language(monkeypatch):
    asked = []
    monkeypatch.setattr(query_check, "query_inputs", lambda texts: asked.extend(texts) or (
        np.zeros((len(texts), 512)), sparse.csr_matrix((len(texts), query_check.GRAM_FEATURES))))
    always = _classifier(intercept=5.0)  # a classifier that refuses everything it is asked about
    english, russian, by_rule, empty = check_queries(["a lighthouse", "маяк на скале", "two boys", ""], always)
    assert english.refused and english.reason.startswith("reads as a query about children")
    assert russian.refused and russian.reason.startswith("похоже на запрос о детях")
    assert by_rule.reason == 'mentions a child ("boys")'  # the rules answer first, with their reason
    assert not empty.refused  # an empty query is the caller's to handle
    assert asked == ["a lighthouse", "маяк на скале"]  # only what the rules allow, and not the empty query
    never = _classifier(intercept=-5.0)
    assert not check_query("a lighthouse", never).refused


@pytest.mark.e2e
@pytest.mark.weights
def test_development_tables_in_sample():
    frame, refused, child = _refused(development_table())
    assert len(frame) >= 4500 and 0.4 < child.mean() < 0.6
    # Fitted on these rows: better than out of fold (reports/query_check.md), and the rules' own calls stand.
    assert refused[child].mean() >= 0.87 and refused[~child].mean() <= 0.06


@pytest.mark.e2e
@pytest.mark.weights
@pytest.mark.parametrize("table", HELDOUT_TABLES)
def test_heldout_tables_do_no_worse_than_their_report(table):
    """The held-out tables are never used to fit or tune; this only keeps the reported figures from slipping."""
    frame, refused, child = _refused(table)
    reported = json.loads(REPORT.read_text(encoding="utf-8"))["heldout"][table]["rules_and_learned"]
    assert len(frame) == reported["child"] + reported["harmless"]
    assert int((child & ~refused).sum()) <= reported["child_passed"]
    assert int((~child & refused).sum()) <= reported["harmless_refused"]


def test_query_tables_are_read_with_one_line_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("query\tchild\tlang\tkind\ntwo dogs\t2\ten\tplain\n", encoding="utf-8")
    with pytest.raises(WsenseError, match="row 2"):
        read_query_table(bad)
    (tmp_path / "short.tsv").write_text("query\tchild\n", encoding="utf-8")
    with pytest.raises(WsenseError, match="missing column"):
        read_query_table(tmp_path / "short.tsv")
