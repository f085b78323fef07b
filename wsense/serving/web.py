"""The web page and JSON API over a `SearchEngine`: a search box, a grid of thumbnails, and the catalog's images.

Security rules (see docs/web.md): every query goes through `engine.search`, so the legal filter always runs and a
refused query never shows an image; `/images/` serves only files listed in `engine.images` that really lie inside
the catalog folder, so no path from a request is ever opened as such.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
import gc
import base64
import hashlib
import json
import posixpath
from html import escape
from pathlib import Path
from urllib.parse import quote, urlencode

import tempfile

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response

from wsense.errors import WsenseError
from wsense.serving.batching import QueryBatcher
from wsense.serving.metadata import FILTER_NAMES, ORIENTATIONS, PhotoFilter
from wsense.serving.thumbnails import make_thumbnail, thumbnail_path
from wsense.serving.watch import CatalogWatcher
from wsense.safety import check_query
from wsense.serving.search import (MAX_QUERY_CHARS, SearchRequest, SearchResult, UnknownPhoto, disclaimer,
                                   reason_label)

PAGE_K = 12  # thumbnails on the page unless the form asks otherwise
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
UPLOAD_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOADED = "upload"  # the example's name in the answer to an uploaded photo


class UploadError(WsenseError):
    """An upload refused before it is looked at, with its HTTP status (415, 413 or 400)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 1rem}h1 a{color:inherit;text-decoration:none}
form{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:1.2rem}
details.filters{flex-basis:100%;font-size:.95rem}details.filters label{margin-right:1rem;white-space:nowrap}
input[name=q]{flex:1;font-size:1.1rem;padding:.5rem}input[name=k]{width:4.5rem;font-size:1.1rem;padding:.5rem}
button{font-size:1.1rem;padding:.5rem 1.2rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:1rem}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden}
figure img{display:block;width:100%;height:160px;object-fit:cover;background:#eee}
figcaption{padding:.4rem .6rem;font-size:.85rem;display:flex;justify-content:space-between;gap:.5rem}
figcaption span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
figure a.like{display:block;padding:0 .6rem .4rem;font-size:.8rem}
details.similar{padding:0 .6rem .5rem;font-size:.8rem}details.similar img{width:30%;height:60px;display:inline-block;
margin:.2rem .2rem 0 0;object-fit:cover}
.pages{display:flex;gap:1.5rem;margin:1.2rem 0;font-size:1.05rem}
.lightbox{position:fixed;inset:0;background:rgba(0,0,0,.88);display:flex;flex-direction:column;align-items:center;
justify-content:center;z-index:10}.lightbox[hidden]{display:none}
.lightbox img{max-width:94vw;max-height:86vh;object-fit:contain}.lightbox p{color:#eee;margin:.6rem}
input[name=min_score]{width:6.5rem;font-size:1.1rem;padding:.5rem}
.notice{padding:.2rem 1rem;border-radius:6px;background:#fff4e5;border:1px solid #f0c36d}
.error{padding:1rem;border-radius:6px;background:#fdecea;border:1px solid #e57373}
"""
# Marks the grid once every thumbnail has really loaded (or not): the browser tests read it from the DOM. A click on a
# thumbnail opens the photo in a lightbox (arrow keys: previous and next result; Escape or a click: close); without
# JavaScript the thumbnail is a plain link to the photo. When the "Next" link scrolls into view, the next results are
# fetched (the same page as a fragment, rendered by the server) and added to the grid; without JavaScript it stays a
# link. A photo chosen with the upload button is sent to POST /similar, and the results it gets replace the page's.
SCRIPT = """
addEventListener("load", () => {
  const grid = document.querySelector(".grid");
  if (grid) grid.dataset.loaded = [...grid.querySelectorAll("img")].every(i => i.complete && i.naturalWidth > 0);
});
let shown = -1;
const photoLinks = () => [...document.querySelectorAll(".grid figure > a:first-child")];
function openPhoto(i) {
  const links = photoLinks();
  if (i < 0 || i >= links.length) return;
  shown = i;
  let box = document.querySelector(".lightbox");
  if (!box) {
    box = document.createElement("div");
    box.className = "lightbox";
    box.setAttribute("role", "dialog");
    box.append(document.createElement("img"), document.createElement("p"));
    box.addEventListener("click", closePhoto);
    document.body.append(box);
  }
  const figure = links[i].closest("figure");
  box.querySelector("img").src = links[i].getAttribute("href");
  box.querySelector("img").alt = figure.querySelector("figcaption span").textContent;
  box.querySelector("p").textContent = `${figure.querySelector("figcaption span").textContent} · score ` +
    `${figure.querySelector("figcaption b").textContent} · ${i + 1} of ${links.length}` +
    (figure.dataset.meta ? ` · ${figure.dataset.meta}` : "");
  box.hidden = false;
}
function closePhoto() {
  const box = document.querySelector(".lightbox");
  if (box) box.hidden = true;
  shown = -1;
}
document.addEventListener("click", event => {
  const link = event.target.closest && event.target.closest(".grid figure > a:first-child");
  if (!link) return;
  event.preventDefault();
  openPhoto(photoLinks().indexOf(link));
});
document.addEventListener("keydown", event => {
  if (shown < 0) return;
  if (event.key === "Escape") closePhoto();
  else if (event.key === "ArrowRight") openPhoto(shown + 1);
  else if (event.key === "ArrowLeft") openPhoto(shown - 1);
});
async function fragment(response) {
  const part = document.createElement("template");
  part.innerHTML = await response.text();
  return part.content;
}
const nextResults = new IntersectionObserver(entries => {
  for (const entry of entries) if (entry.isIntersecting) loadMore(entry.target);
});
function watchNext() {
  const next = document.querySelector("#results a[rel=next]");
  if (next) nextResults.observe(next);
}
async function loadMore(link) {
  nextResults.unobserve(link);
  const response = await fetch(link.getAttribute("href") + "&fragment=1");
  const more = await fragment(response);
  const grid = document.querySelector("#results .grid"), figures = more.querySelectorAll(".grid > figure");
  if (!response.ok || !grid || !figures.length) return;
  grid.append(...figures);
  document.querySelector("#results .last").textContent = more.querySelector(".last").textContent;
  const next = more.querySelector("a[rel=next]");
  if (next) {
    link.setAttribute("href", next.getAttribute("href"));
    nextResults.observe(link);
  } else {
    link.remove();
  }
}
addEventListener("DOMContentLoaded", watchNext);
document.addEventListener("change", async event => {
  if (!event.target.matches("input[name=photo]") || !event.target.files.length) return;
  const photo = event.target.files[0], results = document.getElementById("results");
  const params = new URLSearchParams({k: document.querySelector("input[name=k]").value});
  const response = await fetch("/similar?" + params, {method: "POST", body: photo,
    headers: {"Content-Type": photo.type || "application/octet-stream"}});
  results.replaceChildren(await fragment(response));
  results.dataset.upload = response.status;
});
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only our own inline style and script run, and images come only from this server: an injection that slipped past
# the escaping could neither run code nor pull images in from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; img-src 'self'; style-src {_csp_hash(STYLE)}; "
                               f"script-src {_csp_hash(SCRIPT)}; connect-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}


def _parse_number(raw: str | None, name: str, cast: type, low: float, high: float | None, default):
    """A number from a query parameter: `default` when it is absent, else `cast` of it within [low, high]."""
    if raw is None or raw == "":
        return default
    kind = "a whole number" if cast is int else "a number"
    span = f"from {low:g}" + (f" to {high:g}" if high is not None else "")
    try:
        value = cast(raw)
    except ValueError:
        raise WsenseError(f"{name} must be {kind} {span}, not {raw!r}") from None
    if not (low <= value and (high is None or value <= high)):  # written so that NaN fails too
        raise WsenseError(f"{name} must be {span}, not {value}")
    return value


def _parse_k(raw: str | None, default: int, max_k: int) -> int:
    return _parse_number(raw, "k", int, 1, max_k, default)


def _filter_panel(given: dict) -> str:
    """The filter panel of the search form, open when a filter is set."""
    value = {name: escape(given.get(name) or "") for name in FILTER_NAMES}
    options = "".join(f'<option value="{o}"{" selected" if given.get("orientation") == o else ""}>{o}</option>'
                      for o in ("", *ORIENTATIONS))
    return (f'<details class="filters"{" open" if any(given.values()) else ""}><summary>Filters</summary>'
            f'<label>folder <input name="folder" value="{value["folder"]}"></label>'
            f'<label>orientation <select name="orientation">{options}</select></label>'
            f'<label>camera <input name="camera" value="{value["camera"]}"></label>'
            f'<label>lens <input name="lens" value="{value["lens"]}"></label>'
            f'<label>taken from <input name="taken_from" type="date" value="{value["taken_from"]}"></label>'
            f'<label>to <input name="taken_to" type="date" value="{value["taken_to"]}"></label></details>')


def _page(q: str = "", k: int = PAGE_K, max_k: int = 50, body: str = "", status: int = 200, min_score: str = "",
          like: str | None = None, filters: dict | None = None) -> HTMLResponse:
    title = f"{q or like} — wsense" if q or like else "wsense photo search"
    keep_like = f'<input type="hidden" name="like" value="{escape(like)}">' if like else ""
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>
<body><h1><a href="/">wsense photo search</a></h1>
<form method="get" action="/" role="search">
<input name="q" value="{escape(q)}" maxlength="{MAX_QUERY_CHARS}" aria-label="query" autofocus
  placeholder="Describe the scene, e.g. a dog swimming in a lake">
<input name="k" type="number" min="1" max="{max_k}" value="{k}" aria-label="number of photos">
<input name="min_score" type="number" min="0" max="1" step="0.01" value="{escape(min_score)}"
  aria-label="lowest score" placeholder="min score">{keep_like}
<button type="submit">Search</button>{_filter_panel(filters or {})}</form>
<label class="upload">or find photos like one of yours: <input type="file" name="photo"
  accept="{",".join(UPLOAD_TYPES)}"></label>
<div id="results">{body}</div></body></html>"""
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _link(**params) -> str:
    return "/?" + urlencode({name: value for name, value in params.items() if value not in (None, "")})


def _similar_html(item: dict) -> str:
    """The near duplicates folded into a result: a marker that expands to their thumbnails."""
    similar = item.get("similar") or []
    if not similar:
        return ""
    links = "".join(f'<a href="/images/{quote(other["image"])}" title="{escape(other["image"])} '
                    f'({other["score"]:.3f})"><img src="/thumbnails/{quote(other["image"])}" '
                    f'alt="{escape(other["image"])}" loading="lazy"></a>' for other in similar)
    return f'<details class="similar"><summary>{len(similar)} similar</summary>{links}</details>'


def describe(meta: dict | None) -> str:
    """A photo's size and EXIF details in one line, for the lightbox."""
    meta = meta or {}
    size = f"{meta['width']} × {meta['height']}" if meta.get("width") else ""
    taken = (meta.get("taken") or "").replace("T", " ")
    return " · ".join(part for part in (size, meta.get("camera"), meta.get("lens"), taken) if part)


def _error_html(error: Exception) -> str:
    return f'<p class="error" role="alert">{escape(str(error))}</p>'


def _results_html(result: dict, k: int, min_score: float | None, filters: dict | None = None,
                  metadata: dict[str, dict] | None = None, pageable: bool = True) -> str:
    query, like = escape(result["query"]), result["like"]
    if result["refused"]:
        return (f'<div class="notice" role="alert"><p>{escape(disclaimer(result["query"]))}</p>'
                f'<p>{reason_label(result["query"])}: {escape(result["reason"] or "")}</p></div>')
    example = "your photo" if like == UPLOADED and not pageable else like
    what = " and ".join(part for part in (f"“{query}”" if query else "",
                                          f"photos like {escape(example)}" if like else "") if part)
    cut = f" scoring from {min_score:g}" if min_score is not None else ""
    if result["filters"]:
        cut += " (" + ", ".join(f"{escape(name.replace('_', ' '))} {escape(str(value))}"
                                for name, value in result["filters"].items()) + ")"
    if not result["results"]:
        return f"<p>No photos found for {what}{cut}.</p>"
    first, offset, total = result["offset"] + 1, result["offset"], result["total"]
    count = f"{total}" if result["total_exact"] else f"about {total}"
    metadata = metadata or {}
    figures = "".join(
        f'<figure data-meta="{escape(describe(metadata.get(item["image"])))}">'
        f'<a href="/images/{quote(item["image"])}"><img src="/thumbnails/{quote(item["image"])}" '
        f'alt="{escape(item["image"])}" loading="eager"></a><figcaption><span>{escape(item["image"])}</span>'
        f'<b>{item["score"]:.3f}</b></figcaption>'
        f'<a class="like" href="{escape(_link(like=item["image"], k=k))}">More like this</a>{_similar_html(item)}'
        '</figure>'
        for item in result["results"])
    state = {"q": result["query"], "k": k, "min_score": min_score, "like": like, **(filters or {})}
    links = []
    if offset > 0:
        links.append(f'<a rel="prev" href="{escape(_link(**state, offset=max(0, offset - k)))}">← Previous</a>')
    if offset + len(result["results"]) < total and pageable:
        links.append(f'<a rel="next" href="{escape(_link(**state, offset=offset + k))}">Next {k} →</a>')
    nav = f'<nav class="pages">{" ".join(links)}</nav>' if links else ""
    return (f'<p>Results for {what}{cut}: {first}–<span class="last">{offset + len(result["results"])}</span> of '
            f'{count}</p>'
            f'<div class="grid">{figures}</div>{nav}')


def create_app(engine, max_k: int = 50, max_batch: int = 64, watch: bool = False) -> FastAPI:
    """The page and the API over `engine`; `max_batch`: most queries put through the text tower together (1: each
    alone); `watch`: follow the catalog folder while serving (wsense.serving.watch)."""
    watcher = CatalogWatcher(engine) if watch else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if watcher is not None:
            await run_in_threadpool(watcher.start)
        yield
        if watcher is not None:
            await run_in_threadpool(watcher.stop)

    app = FastAPI(title="wsense", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.watcher = watcher
    root = Path(engine.root).resolve()
    # Text searches run on the batcher's one worker thread (the tokenizer is not known to be thread-safe, and
    # queries arriving together share one text-tower batch); uploads run the image check and the photo path in
    # FastAPI's thread pool, one at a time (the engine's photo lock).
    batcher = app.state.batcher = QueryBatcher(engine, max_batch)
    page_k = min(PAGE_K, max_k)  # the box's default must pass its own max, or the browser won't submit the form

    async def search(q: str, **options) -> dict:
        return (await asyncio.wrap_future(batcher.submit(SearchRequest(q, **options)))).to_dict()

    def paging(params, default_k: int) -> dict:
        """top_k, offset and min_score from the query parameters, as every route takes them."""
        return {"top_k": _parse_k(params.get("k"), default_k, max_k),
                "offset": _parse_number(params.get("offset"), "offset", int, 0, None, 0),
                "min_score": _parse_number(params.get("min_score"), "min_score", float, 0, 1, None)}

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request):
        params = request.query_params
        q, like = params.get("q"), params.get("like") or None
        given = {name: params.get(name, "") for name in FILTER_NAMES}
        if q is None and not like:  # the start page: just the box
            return _page(k=page_k, max_k=max_k)
        q, top_k = q or "", page_k
        shown = {"min_score": params.get("min_score") or "", "like": like, "filters": given}
        try:
            options = paging(params, page_k)
            top_k = options["top_k"]
            filters = PhotoFilter.parse(*(given[name] or None for name in FILTER_NAMES))
            result = await search(q, **options, like=like, filters=filters or None)
            body = _results_html(result, top_k, options["min_score"], given, shown_metadata(result))
        except WsenseError as e:
            body, status = _error_html(e), 404 if isinstance(e, UnknownPhoto) else 400
            if params.get("fragment"):
                return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
            return _page(q, top_k, max_k, body, status=status, **shown)
        if params.get("fragment"):  # the next results, for the page's script to add to its grid
            return HTMLResponse(body, headers=SECURITY_HEADERS)
        return _page(q, top_k, max_k, body, **shown)

    def shown_metadata(result: dict) -> dict[str, dict | None]:
        catalog = engine.catalog
        return {item["image"]: catalog.meta(item["image"]) for item in result["results"]}

    async def api_answer(params, **fixed) -> Response:
        """The JSON answer to the query parameters of /api/search (`fixed`: those a route sets itself). The
        parameters are read from the request as they are: this is the hot path of a busy server."""
        get = params.get
        try:
            filters = PhotoFilter.parse(*(get(name) for name in FILTER_NAMES))
            result = await search(fixed.get("q", get("q", "")), **paging(params, 1), filters=filters or None,
                                  like=fixed.get("like", get("like")),
                                  negatives=fixed.get("negatives", params.getlist("not")),
                                  like_weight=_parse_number(get("like_weight"), "like_weight", float, 0, 10, 1.0),
                                  negative_weight=_parse_number(get("not_weight"), "not_weight", float, 0, 10, 0.5))
        except UnknownPhoto as e:
            raise HTTPException(404, str(e)) from None
        except WsenseError as e:
            raise HTTPException(400, str(e)) from None
        return Response(json.dumps(result, ensure_ascii=False), media_type="application/json")

    @app.get("/api/search")
    async def api_search(request: Request) -> Response:
        """Parameters: q, k, offset, min_score, like, like_weight, not (repeatable), not_weight (docs/web.md)."""
        return await api_answer(request.query_params)

    @app.get("/api/similar")
    async def api_similar(request: Request) -> Response:
        """More like a photo of the catalog: image, k, offset, min_score."""
        image = request.query_params.get("image", "")
        if not image:
            raise HTTPException(400, "image: name a photo of the catalog (as in the results' `image`)")
        return await api_answer(request.query_params, q="", like=image, negatives=[])

    async def read_upload(request: Request):
        """The uploaded photo (the request body) as an example, or why the image check keeps it out (a str)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in UPLOAD_TYPES:
            raise UploadError(415, f"upload a photo as the request body with Content-Type "
                                   f"{', '.join(UPLOAD_TYPES)}, not {kind or 'none'!r}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            raise UploadError(413, f"photo too large: {int(declared)} bytes (at most {MAX_UPLOAD_BYTES})")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_UPLOAD_BYTES:
                raise UploadError(413, f"photo too large (at most {MAX_UPLOAD_BYTES} bytes)")
        if not body:
            raise UploadError(400, "empty upload: send the photo's bytes as the request body")
        return await run_in_threadpool(uploaded_example, bytes(body), UPLOAD_TYPES[kind])

    async def search_upload(request: Request, default_k: int) -> tuple[dict, dict]:
        """The search "more like the uploaded photo" (and the query text q, where given), and its paging."""
        q = request.query_params.get("q", "")
        options = paging(request.query_params, default_k)
        example = await read_upload(request)
        if isinstance(example, str):  # the image check keeps it out: refused like a child query
            return SearchResult(q, True, example, like=UPLOADED).to_dict(), options
        return await search(q, like=example, **options), options

    @app.post("/api/similar")
    async def api_similar_upload(request: Request) -> dict:
        """More like an uploaded photo (the request body, Content-Type image/jpeg, image/png or image/webp), which
        the image check looks at first; nothing of it is kept. Parameters: q, k, offset, min_score."""
        try:
            return (await search_upload(request, 1))[0]
        except UploadError as e:
            raise HTTPException(e.status, str(e)) from None
        except WsenseError as e:
            raise HTTPException(400, str(e)) from None

    @app.post("/similar", response_class=HTMLResponse)
    async def page_upload(request: Request) -> HTMLResponse:
        """The page's upload button: the results for an uploaded photo, as the part of the page they fill."""
        try:
            result, options = await search_upload(request, page_k)
        except WsenseError as e:
            return HTMLResponse(_error_html(e), status_code=getattr(e, "status", 400), headers=SECURITY_HEADERS)
        # Nothing of an upload is kept, so there is no link to its next page: k says how many to show.
        return HTMLResponse(_results_html(result, options["top_k"], options["min_score"], None,
                                          shown_metadata(result), pageable=False), headers=SECURITY_HEADERS)

    def uploaded_example(data: bytes, suffix: str):
        with tempfile.TemporaryDirectory(prefix="wsense-upload-") as folder:
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                return engine.uploaded_example(path, UPLOADED)
            except WsenseError as e:
                raise WsenseError(str(e).replace(str(path), "the uploaded photo")) from None

    @app.get("/api/catalog")
    def api_catalog() -> dict:
        """What is being served: photos searchable and kept out, and (with --watch) the last refresh."""
        catalog = engine.catalog
        status = {"root": str(root), "photos": len(catalog.images), "kept_out": len(catalog.excluded),
                  "watching": watcher is not None}
        if watcher is not None:
            status.update(refreshes=watcher.refreshes, refreshed_at=watcher.refreshed_at,
                          last_error=watcher.last_error)
        return status

    def catalog_file(path: str) -> tuple[str, Path]:
        # The request only selects an entry of the catalog; the file opened is built from that entry, and must
        # resolve inside the catalog folder (a symlink in it may point anywhere).
        name = posixpath.normpath(path)
        sha256 = engine.catalog.sha256.get(name)  # only the photos searchable now
        if sha256 is None:
            raise HTTPException(404, "not found")
        file = (root / name).resolve()
        if not file.is_relative_to(root) or not file.is_file():
            raise HTTPException(404, "not found")
        return sha256, file

    @app.get("/images/{path:path}")
    def image(path: str) -> FileResponse:
        file = catalog_file(path)[1]
        return FileResponse(file, media_type=MEDIA_TYPES.get(file.suffix.lower(), "application/octet-stream"),
                            headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/thumbnails/{path:path}")
    def thumbnail(path: str) -> FileResponse:
        """The photo's thumbnail, made now where the index has none yet (an index from before thumbnails)."""
        sha256, file = catalog_file(path)
        target = thumbnail_path(engine.config.cache_dir, sha256)
        if not target.is_file():
            try:
                make_thumbnail(file, target)
            except WsenseError:
                return image(path)
        return FileResponse(target, media_type="image/jpeg",
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"})

    return app


def serve(engine, host: str = "127.0.0.1", port: int = 8000, watch: bool = False) -> None:
    import uvicorn

    app = create_app(engine, watch=watch)
    # The query check's sentence encoder loads its weights on first use (seconds): before the first request.
    check_query("warm-up query")
    # The model and the catalog are long-lived: kept out of the garbage collector's full passes, which otherwise
    # stop every request in flight now and then.
    gc.freeze()
    uvicorn.run(app, host=host, port=port)

