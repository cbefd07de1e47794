"""The web application: routes, and the guard every request passes.

The guard (one ASGI layer) answers before any route: it refuses a ``Host`` that is not this
machine when serving on loopback (so a web page elsewhere cannot reach the API through DNS
rebinding), asks for the token when there is one, and puts a strict Content-Security-Policy
and friends on every response. Only GET and HEAD exist, plus the token form's POST.

The token: scripts send it (``Authorization: Bearer``); the page asks for it once and keeps a
session value derived from it (HMAC-SHA256 keyed with the token) in an HttpOnly cookie, so the
token itself never sits in a browser; the cookie is ``Secure`` when the request came over
HTTPS (``--tls-cert``, or a proxy given as ``--trusted-proxy`` said so). Wrong tokens are
rate-limited per client address: after five, each costs a doubling wait (up to a minute)
during which that address gets 429.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from streams.errors import RpfsError, UsageError
from streams.lru import LRU
from rpfs.tree import Tree
from rpfs.web import api, pages
from rpfs.web.nodes import decode_url


COOKIE = "rpfs_session"
SESSION_LABEL = b"rpfs web session v1"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
MAX_LOGIN_BODY = 4096


def create_app(tree: Tree, *, source: str = "", token: str | None = None,
               loopback: bool = True, limit=None, ops_config=None,
               ops_config_error: str | None = None) -> "Guard":
    """The ASGI application for ``tree``. ``loopback``: only requests naming this machine
    in ``Host`` are answered; ``token``: every request must carry it; ``limit``: a
    RateLimit every download shares; ``ops_config``: the protection groups the dashboard
    and /metrics report on."""
    from rpfs.web import dashboard
    routes = [
        Route("/dashboard", dashboard.dashboard),
        Route("/metrics", dashboard.metrics),
        Route("/", pages.home),
        Route("/vm/{vm}", pages.vm_page),
        Route("/browse/{path:path}", pages.browse),
        Route("/browse", lambda r: RedirectResponse("/browse/", status_code=308)),
        Route("/search", pages.search),
        Route("/history/{path:path}", pages.history),
        Route("/favicon.ico", lambda r: Response(status_code=204)),
        Route("/login", login_form),
        Route("/login", login, methods=["POST"]),
        Route("/api/ls", api.api_ls),
        Route("/api/info", api.api_info),
        Route("/api/download", api.api_download),
        Route("/api/find", api.api_find),
        Route("/api/history", api.api_history),
        Mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static"))),
    ]
    app = Starlette(routes=routes, exception_handlers={
        RpfsError: on_error, HTTPException: on_http_error, Exception: on_error})
    app.state.tree = tree
    app.state.source = source or "rpfs"
    app.state.token = token
    app.state.session = session_value(token) if token else None
    app.state.attempts = Attempts()
    app.state.limit = limit
    app.state.ops_config = ops_config
    app.state.ops_config_error = ops_config_error
    return Guard(app, token=token, loopback=loopback)


def session_value(token: str) -> str:
    """What the login cookie holds: derived from the token, which it does not reveal."""
    return hmac.new(token.encode(), SESSION_LABEL, hashlib.sha256).hexdigest()


def is_loopback_name(name: str | None) -> bool:
    """``localhost`` or a loopback address literal (127.0.0.0/8, ::1): a name a web page
    elsewhere cannot point at this machine by DNS rebinding (an address is not looked up)."""
    if name is None:
        return False
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Attempts:
    """Wrong tokens per client address: the first ``FREE`` cost nothing, then each one makes
    that address wait twice as long as the last (1 s, 2 s, ... ``LONGEST``), during which
    every request from it carrying a token is answered 429 and counts as one more wrong try
    (its token is not even compared). A right token clears it. At most ``ADDRESSES``
    addresses are remembered (the least recently seen go first)."""

    FREE = 5
    LONGEST = 60.0
    ADDRESSES = 10_000

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._seen = LRU(self.ADDRESSES)  # address -> (wrong tries, until)

    def wait(self, address: str) -> float:
        """Seconds ``address`` must still wait (0: it may try)."""
        _, until = self._seen.get(address, (0, 0.0))
        return max(0.0, until - self.clock())

    def wrong(self, address: str) -> None:
        count, _ = self._seen.pop(address, (0, 0.0))
        count += 1
        delay = 0.0 if count <= self.FREE else min(self.LONGEST, 2.0 ** (count - self.FREE - 1))
        self._seen.put(address, (count, self.clock() + delay))

    def right(self, address: str) -> None:
        self._seen.pop(address, None)


def _client(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "?"


def _too_many(wait: float) -> Response:
    seconds = max(1, int(wait + 0.999))
    return api.Json({"error": f"too many wrong tokens from this address: wait {seconds} s"},
                    status_code=429, headers={"Retry-After": str(seconds)})


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def on_error(request: Request, exc: Exception):
    """An RpfsError is the user's answer. Anything else is a bug: the server logs it (Starlette
    re-raises it after this answer) and the client gets one line."""
    if isinstance(exc, api.StreamAborted):
        return Response(status_code=500)  # too late to answer: the guard closes the connection
    if _is_api(request):
        return api.error_json(exc)
    return pages.error_page(request, exc, api.status_of(exc))


async def on_http_error(request: Request, exc: HTTPException):
    if _is_api(request):
        return api.Json({"error": exc.detail}, status_code=exc.status_code)
    return pages.error_page(request, UsageError(exc.detail), exc.status_code)


# -- the token ----------------------------------------------------------------------------


async def login_form(request: Request):
    return pages.page(request, "login.html", title="token — rpfs",
                      next=_local(request.query_params.get("next")), wrong=False)


async def login(request: Request):
    """The token form: checks the token, keeps it in an HttpOnly cookie, goes back."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return Response("too large", status_code=413)
    form = parse_qs(body.decode("utf-8", "replace"))
    given = (form.get("token") or [""])[0].strip()
    nxt = _local((form.get("next") or ["/"])[0])
    token = request.app.state.token
    if token is None:
        return RedirectResponse(nxt, status_code=303)
    attempts, client = request.app.state.attempts, _client(request)
    if attempts.wait(client):
        attempts.wrong(client)
        return _too_many(attempts.wait(client))
    if not hmac.compare_digest(given.encode(), token.encode()):
        attempts.wrong(client)
        return pages.page(request, "login.html", status=403, title="token — rpfs", next=nxt,
                          wrong=True)
    attempts.right(client)
    response = RedirectResponse(nxt, status_code=303)
    response.set_cookie(COOKIE, request.app.state.session, httponly=True, samesite="lax",
                        path="/", secure=request.url.scheme == "https")
    return response


def _local(target: str | None) -> str:
    """Only a path on this server is a place to go back to (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class Guard:
    """Host check, token check and security headers around the application (pure ASGI, so
    streamed responses pass through untouched)."""

    def __init__(self, app: Starlette, *, token: str | None, loopback: bool):
        self.app = app
        self.token = token
        self.loopback = loopback
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("raw_path"):  # the path's bytes as sent: an escaped name's stay as they are
            scope = {**scope, "path": decode_url(scope["raw_path"].decode("latin-1"))}
        conn = HTTPConnection(scope)
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        refusal = self._refuse(conn)
        if refusal is not None:
            return await refusal(scope, receive, send_with_headers)
        try:
            await self.app(scope, receive, send_with_headers)
        except api.StreamAborted:
            if not started:
                raise
            # Damage found in the middle of a download: the server closes the connection
            # without completing the response, so the client sees a failed download.

    def _refuse(self, conn: HTTPConnection) -> Response | None:
        if self.loopback:
            host = Headers(scope=conn.scope).get("host", "")
            try:
                name = urlsplit("//" + host).hostname if host else None
            except ValueError:
                name = None
            if not is_loopback_name(name):
                return api.Json({"error": "this server answers only requests for localhost or a "
                                          "loopback address"}, status_code=403)
        if self.token is None:
            return None
        path = conn.url.path
        if path == "/login" or path.startswith("/static/"):
            return None
        auth = conn.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):  # a guess at the token: rate-limited
            attempts, client = self.state.attempts, _client(conn)
            if attempts.wait(client):
                attempts.wrong(client)
                return _too_many(attempts.wait(client))
            if hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
                attempts.right(client)
                return None
            attempts.wrong(client)
        else:  # a session value: 256 bits no one guesses, nothing to limit
            cookie = conn.cookies.get(COOKIE, "")
            if cookie and hmac.compare_digest(cookie.encode(), self.state.session.encode()):
                return None
        if path.startswith("/api/"):
            return api.Json({"error": "a token is needed: send 'Authorization: Bearer TOKEN' "
                                      "(the server's --token-file)"}, status_code=403)
        nxt = path + ("?" + conn.url.query if conn.url.query else "")
        return RedirectResponse("/login?next=" + quote(nxt, safe=""), status_code=303)

