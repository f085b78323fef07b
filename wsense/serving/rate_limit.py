"""A per-client rate limit on the routes that search (the page, uploads, the API), kept by `limits` in memory.

A client is its address as uvicorn sees it: behind a reverse proxy on this machine, uvicorn takes it from
X-Forwarded-For (its --proxy-headers default). Photos, thumbnails, static files, /healthz and /metrics are not
counted: a page of results fetches dozens of them at once, and they cost a file read."""
from __future__ import annotations

import json
import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from wsense.errors import WsenseError

LIMITED_PREFIXES = ("/api/",)
LIMITED_PATHS = ("/", "/similar")


def parse_rate(text: str | None) -> RateLimitItem | None:
    """"20/second", "600/minute", ... as a `limits` item; None, "", "0" or "none": no limit."""
    if text is None or text.strip().lower() in ("", "0", "none", "off"):
        return None
    try:
        return parse(text)
    except ValueError:
        raise WsenseError(f"rate limit {text!r}: write it as N/second, N/minute or N/hour (or none)") from None


def describe(rate: RateLimitItem) -> str:
    """"20 a second", "3 in 5 minutes"."""
    unit = rate.GRANULARITY.name
    return f"{rate.amount} a {unit}" if rate.multiples == 1 else f"{rate.amount} in {rate.multiples} {unit}s"


class RateLimit:
    """ASGI middleware: a client over `rate` on a search route gets a 429 with Retry-After; `on_refused` (if given)
    is called for each, for the metrics."""

    def __init__(self, app, rate: RateLimitItem, on_refused=None):
        self.app, self.rate, self.on_refused = app, rate, on_refused
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.limited(scope["path"]):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        if self.limiter.hit(self.rate, client):
            return await self.app(scope, receive, send)
        if self.on_refused is not None:
            self.on_refused()
        reset = self.limiter.get_window_stats(self.rate, client).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        body = json.dumps({"detail": f"too many requests: at most {describe(self.rate)} from one client; try again "
                                     f"in {retry} s"}).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", str(retry).encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def limited(path: str) -> bool:
        return path in LIMITED_PATHS or path.startswith(LIMITED_PREFIXES)
