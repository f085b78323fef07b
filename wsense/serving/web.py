"""The web page and JSON API over a `SearchEngine`: a search box, a grid of thumbnails, and the catalog's images.
The routes are `Routes`' methods, which `create_app` registers; the page's HTML is `wsense.serving.pages`'.

Security rules (see docs/web.md): every query goes through `engine.search`, so the legal filter always runs and a
refused query never shows an image; `/images/` serves only files listed in `engine.images` that really lie inside
the catalog folder, so no path from a request is ever opened as such.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import io
import json
import posixpath
import sys
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response
from PIL import Image, UnidentifiedImageError

from wsense.errors import WsenseError
from wsense.safety import check_query
from wsense.serving import pages
from wsense.serving.access import API_KEY_ENV, LOCAL_HOSTS, ApiKeyGate
from wsense.serving.batching import QueryBatcher
from wsense.serving.metadata import FILTER_NAMES, MetadataFilter
from wsense.serving.metrics import RequestMetrics, ServerMetrics
from wsense.serving.rate_limit import RateLimit, parse_rate
from wsense.serving.requests import MAX_TOP_K, SearchRequest, SearchResult, UnknownPhoto
from wsense.serving.thumbnails import make_thumbnail, thumbnail_path
from wsense.serving.watch import CatalogWatcher

PAGE_K = 12  # thumbnails on the page unless the form asks otherwise
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
UPLOAD_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 50_000_000  # past any camera's: a small file that decodes to more is a decompression bomb
UPLOADS_AT_ONCE = 2  # photos looked at together; each holds its decoded pixels and the image check
UPLOADED = "upload"  # the example's name in the answer to an uploaded photo


class UploadError(WsenseError):
    """An upload refused before it is looked at, with its HTTP status (415, 413, 400 or 503)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


def check_upload_pixels(data: bytes) -> None:
    """Refuse a photo with more than MAX_UPLOAD_PIXELS from its header alone, before anything is decoded (an
    unreadable one is left to the photo path, which names what is wrong with it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise UploadError(413, f"photo too large: more than {MAX_UPLOAD_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return
    if width * height > MAX_UPLOAD_PIXELS:
        raise UploadError(413, f"photo too large: {width} x {height} pixels (at most "
                               f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels)")


def parse_number(raw: str | None, name: str, cast: type, low: float, high: float | None, default):
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


class Routes:
    """The page's and the API's handlers over one engine, one method a route."""

    def __init__(self, engine, batcher: QueryBatcher, watcher: CatalogWatcher | None, max_k: int,
                 metrics: ServerMetrics):
        self.engine, self.batcher, self.watcher, self.max_k = engine, batcher, watcher, max_k
        self.metrics = metrics
        self.root = Path(engine.root).resolve()
        self.page_k = min(PAGE_K, max_k)  # the box's default must pass its own max, or the browser won't submit it
        self.upload_slots = asyncio.Semaphore(UPLOADS_AT_ONCE)

    async def page(self, request: Request) -> HTMLResponse:
        """The start page (no q, no like), or a page of results; with fragment=1 the results alone, for the page's
        script to add to its grid."""
        params = request.query_params
        q, like = params.get("q"), params.get("like") or None
        given = {name: params.get(name, "") for name in FILTER_NAMES}
        if q is None and not like:
            return pages.page(self.form())
        q, top_k = q or "", self.page_k
        shown = {"min_score": params.get("min_score") or "", "like": like, "filters": given}
        try:
            options = self.paging(params, self.page_k)
            top_k = options["top_k"]
            filters = MetadataFilter.parse(*(given[name] or None for name in FILTER_NAMES))
            result = await self.search(q, **options, like=like, filters=filters or None)
            view = pages.ResultsView(result, top_k, options["min_score"], given, self.shown_metadata(result))
        except WsenseError as e:
            status = 404 if isinstance(e, UnknownPhoto) else 400
            if params.get("fragment"):
                return pages.error(e, status)
            return pages.page(self.form(q, top_k, **shown), error=e, status=status)
        if params.get("fragment"):
            return pages.results(view)
        return pages.page(self.form(q, top_k, **shown), results=view)

    async def page_upload(self, request: Request) -> HTMLResponse:
        """The page's upload button: the results for an uploaded photo, as the part of the page they fill."""
        try:
            result, options = await self.search_upload(request, self.page_k)
        except WsenseError as e:
            return pages.error(e, getattr(e, "status", 400))
        return pages.results(pages.ResultsView(result, options["top_k"], options["min_score"], None,
                                               self.shown_metadata(result), upload=True))

    def form(self, q: str = "", k: int | None = None, **shown) -> pages.SearchForm:
        return pages.SearchForm(k=self.page_k if k is None else k, max_k=self.max_k,
                                upload_types=tuple(UPLOAD_TYPES), q=q, **shown)

    def shown_metadata(self, result: dict) -> dict[str, dict | None]:
        catalog = self.engine.catalog
        return {item["image"]: catalog.meta(item["image"]) for item in result["results"]}

    async def api_search(self, request: Request) -> Response:
        """Parameters: q, k, offset, min_score, like, like_weight, not (repeatable), not_weight (docs/web.md)."""
        return await self.api_answer(request.query_params)

    async def api_similar(self, request: Request) -> Response:
        """More like a photo of the catalog: image, k, offset, min_score."""
        image = request.query_params.get("image", "")
        if not image:
            raise HTTPException(400, "image: name a photo of the catalog (as in the results' `image`)")
        return await self.api_answer(request.query_params, q="", like=image, negatives=[])

    async def api_similar_upload(self, request: Request) -> dict:
        """More like an uploaded photo (the request body, Content-Type image/jpeg, image/png or image/webp), which
        the image check looks at first; nothing of it is kept. Parameters: q, k, offset, min_score."""
        try:
            return (await self.search_upload(request, 1))[0]
        except UploadError as e:
            raise HTTPException(e.status, str(e), headers=e.headers) from None
        except WsenseError as e:
            raise HTTPException(400, str(e)) from None

    def healthz(self) -> dict:
        """For an operator's monitoring: ready, the catalog's size, and what checks and ranks it."""
        catalog = self.engine.catalog
        checks = sorted(catalog.check_versions())
        return {"ready": True, "photos": len(catalog.images), "kept_out": len(catalog.excluded),
                "image_check": checks, "model": catalog.index.fingerprint}

    def api_catalog(self) -> dict:
        """What is being served: photos searchable and kept out, and (with --watch) the last refresh."""
        catalog, watcher = self.engine.catalog, self.watcher
        status = {"root": str(self.root), "photos": len(catalog.images), "kept_out": len(catalog.excluded),
                  "watching": watcher is not None}
        if watcher is not None:
            status.update(refreshes=watcher.refreshes, refreshed_at=watcher.refreshed_at,
                          last_error=watcher.last_error)
        return status

    async def api_answer(self, params, **fixed) -> Response:
        """The JSON answer to the query parameters of /api/search (`fixed`: those a route sets itself). The
        parameters are read from the request as they are: this is the hot path of a busy server."""
        get = params.get
        try:
            filters = MetadataFilter.parse(*(get(name) for name in FILTER_NAMES))
            result = await self.search(fixed.get("q", get("q", "")), **self.paging(params, 1),
                                       filters=filters or None, like=fixed.get("like", get("like")),
                                       negatives=fixed.get("negatives", params.getlist("not")),
                                       like_weight=parse_number(get("like_weight"), "like_weight", float, 0, 10, 1.0),
                                       negative_weight=parse_number(get("not_weight"), "not_weight", float, 0, 10,
                                                                    0.5))
        except UnknownPhoto as e:
            raise HTTPException(404, str(e)) from None
        except WsenseError as e:
            raise HTTPException(400, str(e)) from None
        return Response(json.dumps(result, ensure_ascii=False), media_type="application/json")

    async def search(self, q: str, **options) -> dict:
        result = (await asyncio.wrap_future(self.batcher.submit(SearchRequest(q, **options)))).to_dict()
        if result["refused"]:
            self.metrics.refused("query")
        return result

    def prometheus(self) -> Response:
        return self.metrics.exposition()

    def paging(self, params, default_k: int) -> dict:
        """top_k, offset and min_score from the query parameters, as every route takes them."""
        return {"top_k": parse_number(params.get("k"), "k", int, 1, self.max_k, default_k),
                "offset": parse_number(params.get("offset"), "offset", int, 0, None, 0),
                "min_score": parse_number(params.get("min_score"), "min_score", float, 0, 1, None)}

    async def search_upload(self, request: Request, default_k: int) -> tuple[dict, dict]:
        """The search "more like the uploaded photo" (and the query text q, where given), and its paging."""
        q = request.query_params.get("q", "")
        options = self.paging(request.query_params, default_k)
        example = await self.read_upload(request)
        if isinstance(example, str):  # the image check keeps it out: refused like a child query
            self.metrics.refused("photo")
            return SearchResult(q, True, example, like=UPLOADED).to_dict(), options
        return await self.search(q, like=example, **options), options

    async def read_upload(self, request: Request):
        """The uploaded photo (the request body) as an example, or why the image check keeps it out (a str)."""
        try:
            return await self.look_at_upload(request)
        except UploadError as e:
            self.metrics.upload_refused(e.status)
            raise

    async def look_at_upload(self, request: Request):
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
        check_upload_pixels(bytes(body))
        if self.upload_slots.locked():  # a queue of decoded photos is what takes a server down: refuse instead
            raise UploadError(503, f"{UPLOADS_AT_ONCE} photos are being looked at already; try again in a moment",
                              {"Retry-After": "2"})
        async with self.upload_slots:
            return await run_in_threadpool(self.uploaded_example, bytes(body), UPLOAD_TYPES[kind])

    def uploaded_example(self, data: bytes, suffix: str):
        with tempfile.TemporaryDirectory(prefix="wsense-upload-") as folder:
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                return self.engine.uploaded_example(path, UPLOADED)
            except WsenseError as e:
                raise WsenseError(str(e).replace(str(path), "the uploaded photo")) from None
            finally:
                release_freed_memory()

    def image(self, path: str) -> FileResponse:
        file = self.catalog_file(path)[1]
        return FileResponse(file, media_type=MEDIA_TYPES.get(file.suffix.lower(), "application/octet-stream"),
                            headers={"X-Content-Type-Options": "nosniff"})

    def thumbnail(self, path: str) -> FileResponse:
        """The photo's thumbnail, made now where the index has none yet (an index from before thumbnails)."""
        sha256, file = self.catalog_file(path)
        target = thumbnail_path(self.engine.config.cache_dir, sha256)
        if not target.is_file():
            try:
                make_thumbnail(file, target)
            except WsenseError:
                return self.image(path)
        return FileResponse(target, media_type="image/jpeg",
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"})

    def catalog_file(self, path: str) -> tuple[str, Path]:
        # The request only selects an entry of the catalog; the file opened is built from that entry, and must
        # resolve inside the catalog folder (a symlink in it may point anywhere).
        name = posixpath.normpath(path)
        sha256 = self.engine.catalog.sha256.get(name)  # only the photos searchable now
        if sha256 is None:
            raise HTTPException(404, "not found")
        file = (self.root / name).resolve()
        if not file.is_relative_to(self.root) or not file.is_file():
            raise HTTPException(404, "not found")
        return sha256, file


@asynccontextmanager
async def follow_catalog(app: FastAPI):
    """The app's lifespan: the catalog watcher (with watch=True) runs while the app serves."""
    watcher = app.state.watcher
    if watcher is not None:
        await run_in_threadpool(watcher.start)
    yield
    if watcher is not None:
        await run_in_threadpool(watcher.stop)


def create_app(engine, max_k: int = MAX_TOP_K, max_batch: int = 64, watch: bool = False,
               api_key: str | None = None, rate_limit: str | None = None) -> FastAPI:
    """The page and the API over `engine`; `max_k`: most results in one answer (at most the engine's own limit,
    MAX_TOP_K, which the command line shares); `max_batch`: most queries put through the text tower together (1: each
    alone); `watch`: follow the catalog folder while serving (wsense.serving.watch); `api_key`: what every route but
    /healthz needs (wsense.serving.access); `rate_limit`: searches a client may send ("20/second"; None: no limit;
wsense.serving.rate_limit)."""
    if not 1 <= max_k <= MAX_TOP_K:
        raise ValueError(f"max_k must be from 1 to {MAX_TOP_K}, not {max_k}")
    app = FastAPI(title="wsense", docs_url=None, redoc_url=None, openapi_url=None, lifespan=follow_catalog)
    app.state.watcher = CatalogWatcher(engine) if watch else None
    # Text searches run on the batcher's one worker thread (the tokenizer is not known to be thread-safe, and
    # queries arriving together share one text-tower batch); uploads run the image check and the photo path in
    # FastAPI's thread pool, one at a time (the engine's photo lock).
    app.state.batcher = QueryBatcher(engine, max_batch)
    app.state.metrics = ServerMetrics(lambda: (len(engine.catalog.images), len(engine.catalog.excluded)))
    routes = Routes(engine, app.state.batcher, app.state.watcher, max_k, app.state.metrics)
    app.add_api_route("/", routes.page, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/similar", routes.page_upload, methods=["POST"], response_class=HTMLResponse)
    app.add_api_route("/api/search", routes.api_search, methods=["GET"])
    app.add_api_route("/api/similar", routes.api_similar, methods=["GET"])
    app.add_api_route("/api/similar", routes.api_similar_upload, methods=["POST"])
    app.add_api_route("/api/catalog", routes.api_catalog, methods=["GET"])
    app.add_api_route("/images/{path:path}", routes.image, methods=["GET"])
    app.add_api_route("/thumbnails/{path:path}", routes.thumbnail, methods=["GET"])
    app.add_api_route("/healthz", routes.healthz, methods=["GET"])
    app.add_api_route("/metrics", routes.prometheus, methods=["GET"])
    app.mount("/static", pages.StaticAssets(), name="static")
    # Added last, run first: the metrics see every answer, the rate limit's and the key gate's refusals included.
    rate = parse_rate(rate_limit)
    if rate is not None:
        app.add_middleware(RateLimit, rate=rate, on_refused=app.state.metrics.rate_limited.inc)
    if api_key:
        app.add_middleware(ApiKeyGate, key=api_key)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app


def release_freed_memory() -> None:
    """Give the memory freed by the last upload (its pixels, the towers' and MTCNN's activations: about 100 MB) back
    to the system: glibc keeps freed heap memory for the process otherwise. Nothing to do off glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def serve(engine, host: str = "127.0.0.1", port: int = 8000, watch: bool = False, api_key: str | None = None,
          rate_limit: str | None = None) -> None:
    import uvicorn

    if host not in LOCAL_HOSTS and not api_key:
        print(f"warning: serving on {host} without an API key: anyone who can reach it can search and upload; set "
              f"--api-key or {API_KEY_ENV}", file=sys.stderr)
    app = create_app(engine, watch=watch, api_key=api_key, rate_limit=rate_limit)
    # The query check's sentence encoder loads its weights on first use (seconds): before the first request.
    check_query("warm-up query")
    # The model and the catalog are long-lived: kept out of the garbage collector's full passes, which otherwise
    # stop every request in flight now and then.
    gc.freeze()
    release_freed_memory()  # what loading the model and the catalog freed again
    uvicorn.run(app, host=host, port=port)
