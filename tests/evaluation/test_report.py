import json

from wsense.evaluation.report import merge_rows, read_report, write_report


def test_report_writes_json_rows_and_a_markdown_table(tmp_path):
    rows = [
        {"model": "baseline/ridge [concat]", "features": "frozen, concat", "spearman_mean": 0.31,
         "spearman_std": 0.04, "kendall_tau_c_mean": 0.2, "kendall_tau_c_std": 0.03},
        {"model": "baseline/dummy [concat]", "spearman_mean": float("nan"), "spearman_std": float("nan")},
        {"model": "label_bridge", "r1": 0.2, "r5": 0.47, "r10": 0.63, "mrr": 0.33, "median_rank": 6.0},
    ]
    json_path, md_path = write_report(tmp_path, rows, ["a note"])
    stored = json.loads(json_path.read_text())
    assert [row["model"] for row in stored] == [row["model"] for row in rows]
    assert stored[1]["spearman_mean"] is None  # NaN is not valid JSON
    markdown = md_path.read_text()
    assert "| baseline/ridge [concat] | frozen, concat | 0.310 ± 0.040 | 0.200 ± 0.030 |" in markdown
    assert "| label_bridge |  |  |  | 0.200 | 0.470 | 0.630 | 0.330 | 6.000 |" in markdown
    assert "- a note" in markdown
    assert read_report(tmp_path) == stored


def test_new_rows_update_rows_of_the_same_model_only():
    existing = [{"model": "a", "r1": 0.1, "spearman_mean": 0.7}, {"model": "b", "r1": 0.2}]
    merged = merge_rows(existing, [{"model": "a", "r1": 0.3}, {"model": "c", "r1": 0.4}])
    assert merged == [{"model": "a", "r1": 0.3, "spearman_mean": 0.7}, {"model": "b", "r1": 0.2},
                      {"model": "c", "r1": 0.4}]


def test_notes_of_one_topic_survive_a_report_of_another(tmp_path):
    write_report(tmp_path, [{"model": "a", "r1": 0.1}], ["about the baselines"], "frozen")
    write_report(tmp_path, [{"model": "a", "r1": 0.1}, {"model": "b", "r1": 0.2}], ["about training"], "trained")
    markdown = (tmp_path / "report.md").read_text()
    assert "- about the baselines" in markdown and "- about training" in markdown
    write_report(tmp_path, [{"model": "a", "r1": 0.1}], ["baselines, again"], "frozen")
    markdown = (tmp_path / "report.md").read_text()
    assert "about the baselines" not in markdown and "- baselines, again" in markdown and "- about training" in markdown
