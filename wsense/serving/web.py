"""The web page and JSON API over a `SearchEngine`: a search box, a grid of thumbnails, and the catalog's images.

Security rules (see docs/web.md): every query goes through `engine.search`, so the legal filter always runs and a
refused query never shows an image; `/images/` serves only files listed in `engine.images` that really lie inside
the catalog folder, so no path from a request is ever opened as such.
"""
from __future__ import annotations

import base64
import hashlib
import posixpath
import threading
from html import escape
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from wsense.errors import WsenseError
from wsense.serving.search import MAX_QUERY_CHARS, disclaimer

PAGE_K = 12  # thumbnails on the page unless the form asks otherwise
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 1rem}h1 a{color:inherit;text-decoration:none}
form{display:flex;gap:.5rem;margin-bottom:1.2rem}
input[name=q]{flex:1;font-size:1.1rem;padding:.5rem}input[name=k]{width:4.5rem;font-size:1.1rem;padding:.5rem}
button{font-size:1.1rem;padding:.5rem 1.2rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:1rem}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden}
figure img{display:block;width:100%;height:160px;object-fit:cover;background:#eee}
figcaption{padding:.4rem .6rem;font-size:.85rem;display:flex;justify-content:space-between;gap:.5rem}
figcaption span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.notice{padding:.2rem 1rem;border-radius:6px;background:#fff4e5;border:1px solid #f0c36d}
.error{padding:1rem;border-radius:6px;background:#fdecea;border:1px solid #e57373}
"""
# Marks the grid once every thumbnail has really loaded (or not): the browser tests read it from the DOM.
SCRIPT = """
addEventListener("load", () => {
  const grid = document.querySelector(".grid");
  if (grid) grid.dataset.loaded = [...grid.querySelectorAll("img")].every(i => i.complete && i.naturalWidth > 0);
});
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only our own inline style and script run, and images come only from this server: an injection that slipped past
# the escaping could neither run code nor pull images in from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; img-src 'self'; style-src {_csp_hash(STYLE)}; "
                               f"script-src {_csp_hash(SCRIPT)}; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}


def _parse_k(raw: str | None, default: int, max_k: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        k = int(raw)
    except ValueError:
        raise WsenseError(f"k must be a whole number from 1 to {max_k}, not {raw!r}") from None
    if not 1 <= k <= max_k:
        raise WsenseError(f"k must be from 1 to {max_k}, not {k}")
    return k


def _page(q: str = "", k: int = PAGE_K, max_k: int = 50, body: str = "", status: int = 200) -> HTMLResponse:
    title = f"{q} — wsense" if q else "wsense photo search"
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>
<body><h1><a href="/">wsense photo search</a></h1>
<form method="get" action="/" role="search">
<input name="q" value="{escape(q)}" maxlength="{MAX_QUERY_CHARS}" aria-label="query" autofocus
  placeholder="Describe the scene, e.g. a dog swimming in a lake">
<input name="k" type="number" min="1" max="{max_k}" value="{k}" aria-label="number of photos">
<button type="submit">Search</button></form>
{body}</body></html>"""
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _results_html(result: dict) -> str:
    query = escape(result["query"])
    if result["refused"]:
        return (f'<div class="notice" role="alert"><p>{escape(disclaimer(result["query"]))}</p>'
                f'<p>Reason: {escape(result["reason"] or "")}</p></div>')
    if not result["results"]:
        return f"<p>No photos found for “{query}”.</p>"
    figures = "".join(
        f'<figure><a href="/images/{quote(item["image"])}"><img src="/images/{quote(item["image"])}" '
        f'alt="{escape(item["image"])}" loading="eager"></a><figcaption><span>{escape(item["image"])}</span>'
        f'<b>{item["score"]:.3f}</b></figcaption></figure>'
        for item in result["results"])
    return f'<p>Results for “{query}”:</p><div class="grid">{figures}</div>'


def create_app(engine, max_k: int = 50) -> FastAPI:
    app = FastAPI(title="wsense", docs_url=None, redoc_url=None, openapi_url=None)
    root = Path(engine.root).resolve()
    servable = frozenset(engine.images)
    # The tokenizer and model are not known to be thread-safe, and FastAPI runs these handlers in a thread pool;
    # searches are CPU-bound anyway, so serialising them costs little.
    lock = threading.Lock()
    page_k = min(PAGE_K, max_k)  # the box's default must pass its own max, or the browser won't submit the form

    def search(q: str, k: int) -> dict:
        with lock:
            return engine.search(q, k).to_dict()

    @app.get("/", response_class=HTMLResponse)
    def page(q: str | None = None, k: str | None = None):
        if q is None:  # the start page: just the box
            return _page(k=page_k, max_k=max_k)
        top_k = page_k
        try:
            top_k = _parse_k(k, page_k, max_k)
            return _page(q, top_k, max_k, _results_html(search(q, top_k)))
        except WsenseError as e:
            return _page(q, top_k, max_k, f'<p class="error" role="alert">{escape(str(e))}</p>', status=400)

    @app.get("/api/search")
    def api_search(q: str = "", k: str | None = None) -> dict:
        try:
            return search(q, _parse_k(k, 1, max_k))
        except WsenseError as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/images/{path:path}")
    def image(path: str) -> FileResponse:
        # The request only selects an entry of the catalog; the file opened is built from that entry, and must
        # resolve inside the catalog folder (a symlink in it may point anywhere).
        name = posixpath.normpath(path)
        if name not in servable:
            raise HTTPException(404, "not found")
        file = (root / name).resolve()
        if not file.is_relative_to(root) or not file.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(file, media_type=MEDIA_TYPES.get(file.suffix.lower(), "application/octet-stream"),
                            headers={"X-Content-Type-Options": "nosniff"})

    return app


def serve(engine, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(engine), host=host, port=port)

