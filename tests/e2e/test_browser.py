"""End to end: the app under uvicorn on a free localhost port, driven by headless Debian Chromium (--dump-dom,
--screenshot). The page marks its grid with data-loaded once the window has loaded, so the DOM tells whether the
thumbnails really arrived."""
import http.client
import io
import json
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from html import unescape
import urllib.request
from urllib.parse import quote, urlencode

import numpy as np
import pytest

import uvicorn
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from conftest import TEST_IMAGES, artefact, make_check, require, visible_text
from wsense.safety.screener import PhotoScreener
from wsense.serving.requests import disclaimer
from wsense.serving.web import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]


@pytest.fixture
def needs_chromium():
    require(CHROMIUM is not None, "chromium (apt-get install chromium; .ci/run installs it)")


# Test-only page: loads the real start page in a frame, fills in its form (the fields named in the URL's fragment, as
# JSON: the query box, the cut-off, the filter panel's fields), submits it, then copies the result page's body (and
# URL) into its own DOM, which is what --dump-dom prints.
HARNESS = """<!doctype html><meta charset="utf-8">
<iframe src="/" width="1100" height="700"></iframe><div id="out"></div>
<script>
const frame = document.querySelector("iframe"), out = document.getElementById("out");
let loads = 0;
frame.addEventListener("load", () => {
  const doc = frame.contentDocument;
  if (loads++ === 0) {
    try {
      for (const [name, value] of Object.entries(JSON.parse(decodeURIComponent(location.hash.slice(1))))) {
        doc.querySelector(`[name=${name}]`).value = value;
      }
      doc.querySelector("form").requestSubmit();
    } catch (error) {
      out.dataset.error = error;
    }
  } else {
    out.dataset.url = doc.location.href;
    out.innerHTML = doc.body.innerHTML;
  }
});
</script>"""


@contextmanager
def live_server(app):
    """The app under uvicorn (with its lifespan) on a free localhost port: its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on so nobody can take it first
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def base_url(engine):
    app = create_app(engine, max_k=5)
    app.add_api_route("/_test/submit", lambda: HTMLResponse(HARNESS))
    app.add_api_route("/_test/lightbox", lambda: HTMLResponse(LIGHTBOX))
    app.add_api_route("/_test/duplicates", lambda: HTMLResponse(DUPLICATES))
    app.add_api_route("/_test/upload", lambda: HTMLResponse(UPLOAD))
    app.add_api_route("/_test/more", lambda: HTMLResponse(MORE))
    app.add_api_route("/_test/photo.jpg", lambda: Response(jpeg_bytes(5), media_type="image/jpeg"))
    app.add_api_route("/_test/text", lambda: Response(b"not a photo at all", media_type="text/plain"))
    with live_server(app) as url:
        yield url


def chromium(tmp_path, url: str, *extra: str) -> str:
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout


def submit(tmp_path, base_url: str, query: str, **fields: str) -> tuple[str, str]:
    """URL and DOM of the result page after typing `query` into the start page's box (and `fields` into the form's
    other fields) and submitting the form."""
    values = json.dumps({"q": query, **fields}, ensure_ascii=False)
    dom = chromium(tmp_path, f"{base_url}/_test/submit#{quote(values)}", "--dump-dom")
    out = re.search(r'<div id="out" data-url="([^"]*)">(.*)</div>', dom, re.S)
    assert out, f"the form was not submitted:\n{dom}"
    return out.group(1), out.group(2)


def thumbnails(dom: str) -> list[str]:
    return re.findall(r'<img[^>]*src="/thumbnails/[^"]*"', dom)


@pytest.mark.usefixtures("needs_chromium")
@pytest.mark.parametrize("query", ["a dog swimming in a lake", "чёрная собака на снегу"])
def test_submitting_a_query_shows_loaded_thumbnails(tmp_path, base_url, query):
    url, dom = submit(tmp_path, base_url, query)
    assert "?" + urlencode({"q": query, "k": 5}) in unescape(url)  # the form sends UTF-8
    assert f"Results for “{query}”" in dom and f'value="{query}"' in dom  # shown back, readable
    assert len(thumbnails(dom)) == 2 and 'class="grid" data-loaded="true"' in dom


@pytest.mark.usefixtures("needs_chromium")
@pytest.mark.parametrize("query", ["two boys playing", "девочка в парке", "a 5-year-old"])
def test_refused_query_shows_the_disclaimer_and_no_thumbnails(tmp_path, base_url, query):
    _, dom = submit(tmp_path, base_url, query)
    reason = "Причина: упоминает ребёнка" if query == "девочка в парке" else "Reason: mentions a child"
    assert unescape(disclaimer(query)) in unescape(dom) and reason in unescape(dom)
    assert "<img" not in dom and 'class="grid"' not in dom


@pytest.mark.usefixtures("needs_chromium")
def test_screenshot_of_a_result_page(tmp_path, base_url):
    png = tmp_path / "results.png"
    chromium(tmp_path, f"{base_url}/?q=a+dog&k=3", f"--screenshot={png}", "--window-size=1200,900")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1200, 900)
    assert len(data) > 5000  # a page with text and thumbnails, not a blank frame


@pytest.mark.parametrize("path", ["/images/../train_dataset.csv", "/images/../../../../etc/passwd",
                                  "/images/./../train_images/1000_a0.jpg", "/images/..%2f..%2fetc%2fpasswd"])
def test_raw_traversal_paths_are_refused_by_the_live_server(base_url, path):
    """Clients normally resolve '../' before sending; a raw request reaches the server unresolved."""
    connection = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=10)
    connection.request("GET", path)
    assert connection.getresponse().status == 404
    connection.close()


def page_body(tmp_path, url: str) -> str:
    return chromium(tmp_path, url, "--dump-dom")


@pytest.mark.usefixtures("needs_chromium")
def test_more_like_this_from_a_result_and_the_next_page(tmp_path, base_url, engine):
    served = urllib.request.urlopen(f"{base_url}/?q=a+dog&k=1", timeout=30).read().decode()
    assert "Results for “a dog”: 1–1 of 2" in visible_text(served)  # without JavaScript: a link to the next page
    following = unescape(re.search(r'rel="next" href="([^"]*)"', served).group(1))
    second = page_body(tmp_path, base_url + following)
    assert "2–2 of 2" in visible_text(second) and 'class="grid" data-loaded="true"' in second
    assert 'rel="prev"' in second and 'rel="next"' not in second
    # In a frame, the Next link is in view at once: the next result is fetched and added to the grid.
    dom = chromium(tmp_path, f"{base_url}/_test/more#{quote('/?q=a+dog&k=1')}", "--dump-dom",
                   "--window-size=1200,900", "--virtual-time-budget=60000")
    dom = re.search(r'<div id="out"[^>]*>(.*)</div>', dom, re.S).group(1)
    assert "Results for “a dog”: 1–2 of 2" in visible_text(dom) and 'rel="next"' not in dom
    assert [name for name in re.findall(r'<img[^>]*src="/thumbnails/([^"]*)"', dom)] == [
        item["image"] for item in engine.search("a dog", 2).results]
    like = unescape(re.search(r'class="like" href="([^"]*)"', dom).group(1))
    png = artefact("more_like_this.png")
    chromium(tmp_path, base_url + like, f"--screenshot={png}", "--window-size=1200,900")
    similar = page_body(tmp_path, base_url + like)
    example = re.search(r"like=([^&]*)", like).group(1)
    assert f"photos like {example}" in similar and len(thumbnails(similar)) == 1
    assert f'src="/thumbnails/{example}"' not in similar  # the example itself is not among its results
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.usefixtures("needs_chromium")
def test_a_child_example_photo_and_a_stranger_show_no_photos(tmp_path, base_url):
    kept_out = page_body(tmp_path, f"{base_url}/?like={quote(TEST_IMAGES[1])}")
    chromium(tmp_path, f"{base_url}/?like={quote(TEST_IMAGES[1])}", f"--screenshot={artefact('child_example.png')}",
             "--window-size=1200,900")
    assert "legal filter" in kept_out and "<img" not in kept_out
    stranger = page_body(tmp_path, f"{base_url}/?like=nowhere.jpg")
    assert "not a photo of this catalog" in stranger and "<img" not in stranger


# Test-only page: opens a result page in a frame and copies the frame's results into its own DOM every 100 ms until no
# Next link is left. There is no cap on the polls: under CI's load a slow fetch once outlasted a 10 s cap, and the
# virtual-time budget already ends the page; whatever the frame showed last is what --dump-dom prints.
MORE = """<!doctype html><meta charset="utf-8">
<iframe width="1100" height="700"></iframe><div id="out"></div>
<script>
const frame = document.querySelector("iframe"), out = document.getElementById("out");
frame.addEventListener("load", () => {
  const wait = setInterval(() => {
    const results = frame.contentDocument.getElementById("results");
    out.innerHTML = results.innerHTML;
    if (!results.querySelector("a[rel=next]")) clearInterval(wait);
  }, 100);
});
frame.src = decodeURIComponent(location.hash.slice(1));
</script>"""


# Test-only page: opens a result page in a frame, clicks the first thumbnail, presses the right arrow, and copies
# what the lightbox showed each time into its own DOM.
LIGHTBOX = """<!doctype html><meta charset="utf-8">
<iframe width="1100" height="700"></iframe><div id="out"></div>
<script>
const frame = document.querySelector("iframe"), out = document.getElementById("out");
frame.addEventListener("load", () => {
  const doc = frame.contentDocument, box = () => doc.querySelector(".lightbox");
  doc.querySelector(".grid figure > a").click();
  out.dataset.first = box().querySelector("p").textContent;
  out.dataset.firstSrc = box().querySelector("img").getAttribute("src");
  out.dataset.url = doc.location.href;
  doc.dispatchEvent(new KeyboardEvent("keydown", {key: "ArrowRight"}));
  out.dataset.second = box().querySelector("p").textContent;
  doc.dispatchEvent(new KeyboardEvent("keydown", {key: "Escape"}));
  out.dataset.closed = box().hidden;
});
frame.src = decodeURIComponent(location.hash.slice(1));
</script>"""


@pytest.mark.usefixtures("needs_chromium")
def test_a_thumbnail_opens_the_photo_in_a_lightbox_with_arrow_keys(tmp_path, base_url, engine):
    dom = chromium(tmp_path, f"{base_url}/_test/lightbox#{quote('/?q=a+dog&k=2')}", "--dump-dom")
    out = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r'<div id="out"([^>]*)>', dom).group(1)))
    result = engine.search("a dog", 2).results
    first, second = (unescape(out["first"]), unescape(out["second"]))
    assert first.startswith(f"{result[0]['image']} · score {result[0]['score']:.3f} · 1 of 2")
    assert second.startswith(f"{result[1]['image']} · score") and second.endswith("2 of 2 · 48 × 40")  # + size
    assert out["first-src"] == f"/images/{quote(result[0]['image'])}"  # the full photo, not the thumbnail
    assert unescape(out["url"]).endswith("/?q=a+dog&k=2") and out["closed"] == "true"  # no navigation happened


# Test-only page: loads a result page in a frame, reads its near-duplicate marker, clicks it and reads again.
DUPLICATES = """<!doctype html><meta charset="utf-8">
<iframe width="1100" height="700"></iframe><div id="out"></div>
<script>
const frame = document.querySelector("iframe"), out = document.getElementById("out");
frame.addEventListener("load", () => {
  const doc = frame.contentDocument, marker = doc.querySelector(".grid details.similar");
  const shown = () => [...marker.querySelectorAll("img")].filter(img => img.checkVisibility()).length;
  out.dataset.summary = marker.querySelector("summary").textContent;
  out.dataset.before = shown();
  marker.querySelector("summary").click();
  out.dataset.after = shown();
  out.dataset.figures = doc.querySelectorAll(".grid figure").length;
});
frame.src = decodeURIComponent(location.hash.slice(1));
</script>"""


@pytest.mark.usefixtures("needs_chromium")
def test_near_duplicates_show_as_one_result_whose_marker_expands(tmp_path, base_url, engine, monkeypatch):
    monkeypatch.setattr(engine.ranker, "duplicate_threshold", 0.0)  # every photo folds into the first
    similar = len(engine.search("a dog", 3).results[0]["similar"])
    page = f"{base_url}/?q=a+dog&k=3"
    chromium(tmp_path, page, f"--screenshot={artefact('near_duplicates.png')}", "--window-size=1200,900")
    dom = chromium(tmp_path, f"{base_url}/_test/duplicates#{quote('/?q=a+dog&k=3')}", "--dump-dom")
    out = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r'<div id="out"([^>]*)>', dom).group(1)))
    assert out["summary"] == f"{similar} similar" and similar >= 1 and out["figures"] == "1"
    assert (out["before"], out["after"]) == ("0", str(similar))  # folded until clicked, then every duplicate shows


@pytest.mark.usefixtures("needs_chromium")
def test_the_filter_panel_and_the_cut_off_narrow_the_results(tmp_path, base_url):
    url, dom = submit(tmp_path, base_url, "a dog", orientation="landscape", min_score="0")
    assert "orientation=landscape" in url and "min_score=0" in url and len(thumbnails(dom)) == 2
    assert "scoring from 0 (orientation landscape)" in visible_text(dom)
    url, dom = submit(tmp_path, base_url, "a dog", orientation="portrait")  # the test photos are 48 × 40
    assert "orientation=portrait" in url and "No photos found for “a dog” (orientation portrait)." in dom
    assert 'class="filters" open' in dom and '<option value="portrait" selected' in dom  # the panel shows the filter
    url, dom = submit(tmp_path, base_url, "a dog", min_score="0.99")
    assert "No photos found for “a dog” scoring from 0.99." in dom and "<img" not in dom
    png = artefact("filter_panel.png")
    chromium(tmp_path, f"{base_url}/?q=a+dog&orientation=landscape&min_score=0.1", f"--screenshot={png}",
             "--window-size=1200,900")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def jpeg_bytes(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


# Test-only page: opens the start page in a frame, chooses a photo with its upload button (the bytes fetched from the
# URL in the fragment, with the given type), waits for the results to arrive, and copies them into its own DOM.
UPLOAD = """<!doctype html><meta charset="utf-8">
<iframe src="/" width="1100" height="700"></iframe><div id="out"></div>
<script>
const frame = document.querySelector("iframe"), out = document.getElementById("out");
const [source, type] = decodeURIComponent(location.hash.slice(1)).split("|");
frame.addEventListener("load", async () => {
  const doc = frame.contentDocument, input = doc.querySelector("input[name=photo]");
  const chosen = new DataTransfer();
  chosen.items.add(new File([await (await fetch(source)).arrayBuffer()], "mine", {type}));
  input.files = chosen.files;
  input.dispatchEvent(new Event("change", {bubbles: true}));
  const wait = setInterval(() => {
    const results = doc.getElementById("results");
    if (!results.dataset.upload) return;
    clearInterval(wait);
    out.dataset.status = results.dataset.upload;
    out.innerHTML = results.innerHTML;
  }, 50);
});
</script>"""


def upload(tmp_path, base_url: str, source: str, kind: str) -> tuple[str, str]:
    dom = chromium(tmp_path, f"{base_url}/_test/upload#{quote(source + '|' + kind)}", "--dump-dom")
    out = re.search(r'<div id="out" data-status="(\d+)">(.*)</div>', dom, re.S)
    assert out, f"the upload got no answer:\n{dom}"
    return out.group(1), out.group(2)


@pytest.mark.usefixtures("needs_chromium")
def test_the_upload_button_shows_photos_like_the_chosen_one(tmp_path, base_url, engine, monkeypatch):
    status, dom = upload(tmp_path, base_url, "/_test/photo.jpg", "image/jpeg")
    assert status == "200" and "Results for photos like your photo: 1–2 of 2" in visible_text(dom)
    assert len(thumbnails(dom)) == 2 and 'rel="next"' not in dom
    status, dom = upload(tmp_path, base_url, "/_test/text", "image/jpeg")  # a malformed upload
    assert status == "400" and "the uploaded photo" in dom and "<img" not in dom
    status, dom = upload(tmp_path, base_url, "/_test/photo.jpg", "image/gif")
    assert status == "415" and "Content-Type" in dom
    monkeypatch.setattr(engine.live, "checker", PhotoScreener(make_check(intercept=8.0), engine.config))
    status, dom = upload(tmp_path, base_url, "/_test/photo.jpg", "image/jpeg")  # the image check keeps it out
    assert status == "200" and "image check" in dom and "<img" not in dom


@pytest.mark.usefixtures("needs_chromium")
def test_a_photo_added_while_serving_with_watch_appears_on_the_page(tmp_path, checkpoint):
    from conftest import settings, write_image
    from wsense.serving.search import SearchEngine

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        write_image(folder / f"photo{i}.jpg", 300 + i)
    engine = SearchEngine(checkpoint, folder, index_dir=tmp_path / "ix", settings=settings())
    with live_server(create_app(engine, watch=True)) as url:
        before = page_body(tmp_path, f"{url}/?q=a+dog&k=5")
        write_image(tmp_path / "new.jpg", 9)
        (tmp_path / "new.jpg").rename(folder / "new.jpg")
        deadline = time.monotonic() + 60
        while json.loads(urllib.request.urlopen(f"{url}/api/catalog", timeout=10).read())["photos"] != 3:
            assert time.monotonic() < deadline, "the new photo was not picked up"
            time.sleep(0.2)
        after = page_body(tmp_path, f"{url}/?q=a+dog&k=5")
        chromium(tmp_path, f"{url}/?q=a+dog&k=5", f"--screenshot={artefact('watch_new_photo.png')}",
                 "--window-size=1200,900")
    assert len(thumbnails(before)) == 2 and "new.jpg" not in before
    assert len(thumbnails(after)) == 3 and 'src="/thumbnails/new.jpg"' in after
    assert 'class="grid" data-loaded="true"' in after  # its thumbnail, made by the refresh, really loads
