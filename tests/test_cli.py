import json
import subprocess
import sys

from wsense.cli import main


def test_check_query_prints_one_json_line_per_query_and_echoes_it(capsys):
    queries = ["Two  BOYS on a beach", "black dog leaping over a log", "Ребёнок с мячом", "kidney beans"]
    assert main(["check-query", *queries]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == queries
    assert [line["refused"] for line in lines] == [True, False, True, False]
    assert lines[0]["reason"] and lines[1]["reason"] is None


def test_check_query_reads_stdin_one_query_per_line():
    result = subprocess.run(
        [sys.executable, "-m", "wsense.cli", "check-query"],
        input="a 7-year-old at the fair\na 70-year-old fisherman\n\nдевушки в парке\n",
        capture_output=True, text=True, check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["query"], line["refused"]) for line in lines] == [
        ("a 7-year-old at the fair", True), ("a 70-year-old fisherman", False), ("девушки в парке", False),
    ]


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["evaluate", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wsense: error:") and "data directory not found" in err and "\n" not in err
