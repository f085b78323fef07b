"""The learned query check (wsense/safety/query_check.py): the shipped classifier, its file, and how it answers
after the rules."""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from wsense.errors import WsenseError
from wsense.safety import query_check
from wsense.safety.query_check import QueryClassifier, check_queries, check_query, shipped_classifier

REPORT = Path(__file__).resolve().parents[2] / "reports" / "query_check.json"


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
