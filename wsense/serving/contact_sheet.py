"""A self-contained HTML contact sheet of search results (thumbnails embedded, opens anywhere)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from wsense.io import atomic_write_text
from wsense.serving.search import SearchResult, disclaimer


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
        cells = []
        if result.refused:
            cells.append(f'<div class="refused">{html.escape(disclaimer(result.query))}<br>'
                         f'<small>{html.escape(result.reason or "")}</small></div>')
        for item in result.results:
            hit = " hit" if truth and item["image"] == truth else ""
            cells.append(f'<figure class="{hit.strip()}"><img src="{_thumbnail(root / item["image"])}">'
                         f'<figcaption>{item["score"]:.3f} · {html.escape(item["image"])}</figcaption></figure>')
        if truth and not result.refused:
            cells.append(f'<figure class="expected"><img src="{_thumbnail(root / truth)}">'
                         f"<figcaption>expected · {html.escape(truth)}</figcaption></figure>")
        rows.append(f'<section><h2>{html.escape(result.query)}</h2><div class="row">{"".join(cells)}</div></section>')
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>wsense results</title><style>
body{{font-family:sans-serif;margin:2em;background:#fafafa}} h2{{font-size:1.05em;margin:.2em 0}}
.row{{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:1.5em}} figure{{margin:0;background:#fff;padding:6px;
border:2px solid #ddd}} figure.hit{{border-color:#2a2}} figure.expected{{border-style:dashed}}
figcaption{{font-size:.8em;color:#444}} .refused{{color:#a00}}</style></head><body>
<h1>wsense results</h1>{"".join(rows)}</body></html>"""
    atomic_write_text(path, page)
    return Path(path)
