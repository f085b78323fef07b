"""A self-contained HTML contact sheet of search results (thumbnails embedded, opens anywhere)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from wsense.io import atomic_write_text
from wsense.serving.pages import TEMPLATES
from wsense.serving.requests import SearchResult, disclaimer


def _thumbnail(path: Path, size: int = 240) -> str:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_contact_sheet(path: str | Path, root: Path, results: list[SearchResult],
                        expected: list[str | None] | None = None) -> Path:
    """One row per query: its results with scores, and (for the demo) the image the query was written for."""
    expected = expected or [None] * len(results)
    rows = []
    for result, truth in zip(results, expected):
        rows.append({
            "query": result.query, "refused": result.refused, "disclaimer": disclaimer(result.query),
            "reason": result.reason or "",
            "photos": [{"image": item["image"], "score": item["score"], "src": _thumbnail(root / item["image"]),
                       "hit": bool(truth) and item["image"] == truth} for item in result.results],
            "expected": {"image": truth, "src": _thumbnail(root / truth)} if truth and not result.refused else None})
    atomic_write_text(path, TEMPLATES.get_template("contact_sheet.html").render(rows=rows))
    return Path(path)
