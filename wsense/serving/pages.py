"""The search page as the browser gets it: Jinja2 templates (templates/) filled from the engine's answers, the
stylesheet and script (static/), and the security headers they go out with (docs/web.md, Security rules)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from wsense.serving.metadata import ORIENTATIONS
from wsense.serving.requests import MAX_QUERY_CHARS, disclaimer, reason_label

STATIC_DIR = Path(__file__).with_name("static")

# Only this server's own stylesheet, script and images: an injection that slipped past the escaping could neither
# run code of its own nor pull anything in from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}
# Kept, but checked against the server (ETag) on every use: after an upgrade no old script runs on a new page.
STATIC_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}


def _html_escaped(value) -> Markup:
    # The entities html.escape writes (&quot;, &#x27;), not MarkupSafe's (&#34;, &#39;): the same characters are
    # escaped either way, and the page's text stays byte for byte what clients and tests have always read.
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


TEMPLATES = Environment(loader=PackageLoader("wsense.serving", "templates"), autoescape=True,
                         finalize=_html_escaped, undefined=StrictUndefined, trim_blocks=True,
                         lstrip_blocks=True)
TEMPLATES.filters["urlquote"] = quote


def describe(meta: dict | None) -> str:
    """A photo's size and EXIF details in one line, for the lightbox."""
    meta = meta or {}
    size = f"{meta['width']} × {meta['height']}" if meta.get("width") else ""
    taken = (meta.get("taken") or "").replace("T", " ")
    return " · ".join(part for part in (size, meta.get("camera"), meta.get("lens"), taken) if part)


def page_link(**params) -> str:
    """A link to the page with these parameters, the empty ones left out."""
    return "/?" + urlencode({name: value for name, value in params.items() if value not in (None, "")})


@dataclass
class SearchForm:
    """The search form as the page shows it: what was asked (the raw parameters), or empty on the start page."""
    k: int
    max_k: int
    upload_types: tuple[str, ...]  # the content types the upload button accepts
    q: str = ""
    min_score: str = ""
    like: str | None = None
    filters: dict[str, str] = field(default_factory=dict)  # FILTER_NAMES -> as given

    @property
    def title(self) -> str:
        return f"{self.q or self.like} — wsense" if self.q or self.like else "wsense photo search"

    @property
    def filters_open(self) -> bool:
        return any(self.filters.values())


@dataclass
class ResultsView:
    """One answer of the engine (`SearchResult.to_dict()`) as the page shows it."""
    result: dict
    k: int
    min_score: float | None
    filters: dict[str, str] | None = None  # as given, for the paging links
    metadata: dict[str, dict | None] = field(default_factory=dict)  # image -> its metadata, for the lightbox
    upload: bool = False  # the results for an uploaded photo: nothing of it is kept, so they have no next page

    @property
    def example(self) -> str | None:
        return "your photo" if self.upload else self.result["like"]

    @property
    def notice(self) -> str:
        return disclaimer(self.result["query"])

    @property
    def reason_heading(self) -> str:
        return reason_label(self.result["query"])

    @property
    def last(self) -> int:
        return self.result["offset"] + len(self.result["results"])

    def meta_line(self, image: str) -> str:
        return describe(self.metadata.get(image))

    def like_link(self, image: str) -> str:
        return page_link(like=image, k=self.k)

    def _link_to(self, offset: int) -> str:
        state = {"q": self.result["query"], "k": self.k, "min_score": self.min_score, "like": self.result["like"],
                 **(self.filters or {})}
        return page_link(**state, offset=offset)

    @property
    def previous_page(self) -> str | None:
        offset = self.result["offset"]
        return self._link_to(max(0, offset - self.k)) if offset > 0 else None

    @property
    def next_page(self) -> str | None:
        more = self.last < self.result["total"]
        return self._link_to(self.result["offset"] + self.k) if more and not self.upload else None


def page(form: SearchForm, results: ResultsView | None = None, error: Exception | None = None,
         status: int = 200) -> HTMLResponse:
    """The whole page: the form, and below it the results or the error (neither on the start page)."""
    text = TEMPLATES.get_template("page.html").render(
        form=form, view=results, error=error, max_query_chars=MAX_QUERY_CHARS, orientations=("", *ORIENTATIONS))
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def results(view: ResultsView) -> HTMLResponse:
    """The results alone, for the page's script to put in place (the next results, or an upload's)."""
    return HTMLResponse(TEMPLATES.get_template("results.html").render(view=view), headers=SECURITY_HEADERS)


def error(error: Exception, status: int) -> HTMLResponse:
    """The error alone, in place of the results."""
    return HTMLResponse(TEMPLATES.get_template("error.html").render(error=error), status_code=status,
                        headers=SECURITY_HEADERS)


class StaticAssets(StaticFiles):
    """static/ (the stylesheet and the script) with the page's security headers."""

    def __init__(self):
        super().__init__(directory=STATIC_DIR)

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(STATIC_HEADERS)
        return response
