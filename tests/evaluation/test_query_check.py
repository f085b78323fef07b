"""The query check's tables (wsense/evaluation/query_check.py); their figures are e2e/test_query_check_tables.py."""
import pytest

from wsense.errors import WsenseError
from wsense.evaluation.query_check import read_query_table


def test_query_tables_are_read_with_one_line_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("query\tchild\tlang\tkind\ntwo dogs\t2\ten\tplain\n", encoding="utf-8")
    with pytest.raises(WsenseError, match="row 2"):
        read_query_table(bad)
    (tmp_path / "short.tsv").write_text("query\tchild\n", encoding="utf-8")
    with pytest.raises(WsenseError, match="missing column"):
        read_query_table(tmp_path / "short.tsv")
