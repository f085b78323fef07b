"""The evaluation report: one table of rows (a model each), written as reports/report.{json,md}."""
from __future__ import annotations

import json
import math
from pathlib import Path

from wsense.io import atomic_write_text

CORRELATION_COLUMNS = ["spearman_mean", "spearman_std", "kendall_tau_c_mean", "kendall_tau_c_std"]
RETRIEVAL_COLUMNS = ["r1", "r5", "r10", "mrr", "median_rank"]


def model_name(config) -> str:
    """A trained model's report name: its training mode and image backbones."""
    return f"relevance/{config.training.mode} ({' + '.join(b.name for b in config.image_backbone.backbones())})"


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pm(row: dict, name: str) -> str:
    if f"{name}_mean" not in row:
        return ""
    return f"{_cell(row[f'{name}_mean'])} ± {_cell(row.get(f'{name}_std'))}"


def merge_rows(existing: list[dict], new: list[dict]) -> list[dict]:
    """A new row updates the row of the same model (its values win) or is appended; other rows stay."""
    merged = {row["model"]: dict(row) for row in existing}
    for row in new:
        merged[row["model"]] = {**merged.get(row["model"], {}), **row}
    return list(merged.values())


def read_report(directory: Path) -> list[dict]:
    path = Path(directory) / "report.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return []


def render_markdown(rows: list[dict], notes: list[str]) -> str:
    lines = [
        "# wsense evaluation report",
        "",
        "Correlation: Spearman with the expert-mean target and Kendall tau-c over one row per expert judgment,",
        "mean ± std over 5 grouped folds (no image in both training and validation), on the expert pairs left",
        "after the legal filter. Retrieval: 500 test queries over the 100 test images (each query's own image",
        "is the true one); ties count against the model.",
        "",
        "| model | features | Spearman | Kendall tau-c | R@1 | R@5 | R@10 | MRR | median rank |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        retrieval = [_cell(row.get(c)) if c in row else "" for c in RETRIEVAL_COLUMNS]
        lines.append(
            f"| {row['model']} | {row.get('features', '')} | {_pm(row, 'spearman')} | {_pm(row, 'kendall_tau_c')} | "
            + " | ".join(retrieval) + " |"
        )
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


NOTES_FILE = "report_notes.json"


def write_report(directory: str | Path, rows: list[dict], notes: list[str] | None = None,
                 notes_topic: str = "") -> tuple[Path, Path]:
    """Write the rows; `notes` replace the earlier notes of the same topic, other topics' notes stay."""
    directory = Path(directory)
    rows = [{key: _clean(value) for key, value in row.items()} for row in rows]
    json_path, md_path = directory / "report.json", directory / "report.md"
    notes_path = directory / NOTES_FILE
    topics = json.loads(notes_path.read_text(encoding="utf-8")) if notes_path.is_file() else {}
    if notes is not None:
        topics[notes_topic] = notes
    atomic_write_text(json_path, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(notes_path, json.dumps(topics, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(md_path, render_markdown(rows, [note for topic in topics.values() for note in topic]))
    return json_path, md_path
