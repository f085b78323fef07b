"""Who may use a server: with an API key set (`wsense serve --api-key`, or WSENSE_API_KEY), every route but
/healthz and the page's static files needs it, as the X-API-Key header, `Authorization: Bearer KEY`, or the cookie a
browser gets from the key form. Keys are compared in constant time and never written to a log: they never travel in
a URL."""
from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware

from wsense.serving import pages

API_KEY_ENV = "WSENSE_API_KEY"
COOKIE = "wsense_key"
OPEN_PATHS = ("/healthz", "/static/", "/key")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def presented_key(request: Request) -> str:
    """The key a request carries, or "" (header first, then the browser's cookie)."""
    header = request.headers.get("x-api-key")
    if header:
        return header
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.cookies.get(COOKIE, "")


class ApiKeyGate(BaseHTTPMiddleware):
    def __init__(self, app, key: str):
        super().__init__(app)
        self.key = key.encode()

    def valid(self, key: str) -> bool:
        return hmac.compare_digest(key.encode(), self.key)

    async def dispatch(self, request: Request, call_next) -> Response:
        path = request.url.path
        if path == "/key" and request.method == "POST":
            return await self.key_form(request)
        if path.startswith(OPEN_PATHS) or self.valid(presented_key(request)):
            return await call_next(request)
        if path.startswith("/api/"):
            return JSONResponse({"detail": "API key required: send it as the X-API-Key header"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        if path == "/" or path == "/similar":
            return HTMLResponse(pages.TEMPLATES.get_template("key.html").render(wrong=False), status_code=401,
                                headers=pages.SECURITY_HEADERS)
        return Response("API key required", status_code=401, media_type="text/plain")

    async def key_form(self, request: Request) -> Response:
        """The page's key form: a right key becomes an HttpOnly cookie, so the page's images and fetches carry it."""
        given = parse_qs((await request.body()).decode("utf-8", "replace")).get("key", [""])[0]
        if not self.valid(given):
            return HTMLResponse(pages.TEMPLATES.get_template("key.html").render(wrong=True), status_code=401,
                                headers=pages.SECURITY_HEADERS)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response
