"""The edge of the API: every request is authenticated here, before any route runs.

- Deny by default: a request without valid credentials gets 401, whatever its path (an unknown
  path too), except :data:`PUBLIC` — ``/healthz``, the sign-in route and the console's static
  shell, which carry no data.
- Device platforms' pushes (``/api/push/…``) are passed by untouched: the route checks the
  integration's own token (jiayuan/api/push.py); staff credentials open no push.
- Credentials: ``Authorization: Bearer`` (a minted token or ``JIAYUAN_ADMIN_TOKEN``), else the
  console's session cookie. A malformed, forged, expired or revoked credential is refused,
  never ignored in favour of another.
- Cross-site requests: an unsafe method (POST, DELETE…) authenticated by the cookie must send
  the session's CSRF token in ``X-CSRF-Token``, and a browser's ``Origin``, when sent, must be
  this site's. The sign-in route checks ``Origin`` too (no signing in a victim as someone else).
- Headers on every response: a strict Content-Security-Policy, nosniff, no framing, no
  referrer, no powerful features, ``no-store`` for data, and HSTS when served over https.
"""

from __future__ import annotations

import hmac
import json
from typing import Final

import anyio.to_thread
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jiayuan.auth.authn import Authenticator
from jiayuan.auth.scope import Principal
from jiayuan.settings import Settings

PUBLIC: Final = frozenset({"/healthz", "/api/auth/login", "/"})
PUBLIC_PREFIXES: Final = ("/console/",)
PUSH_PREFIX: Final = "/api/push/"
"""Device platforms' pushes: the route checks the integration's own token
(jiayuan/api/push.py); staff credentials are not looked at there, so none opens a push."""
COOKIE: Final = "jiayuan_session"
SECURE_COOKIE: Final = "__Host-jiayuan_session"
"""The ``__Host-`` prefix (https only): the browser keeps it to this host, path ``/``, Secure."""
CSRF_HEADER: Final = "x-csrf-token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
CSP: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com;"
    " object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""Swagger UI at ``/docs`` loads its script from a CDN and starts it inline (FastAPI's page)."""
HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
    "interest-cohort=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def is_public(path: str) -> bool:
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


def is_https(settings: Settings, scope: Scope) -> bool:
    return scope.get("scheme") == "https" or settings.public_url.startswith("https://")


def cookie_name(secure: bool) -> str:
    return SECURE_COOKIE if secure else COOKIE


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth
        self.settings = auth.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # none are served: refuse before the router sees one
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        https = is_https(self.settings, scope)
        send = self._with_headers(send, path, https)
        if path.startswith(PUSH_PREFIX):
            scope.setdefault("state", {})["principal"] = None
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        method: str = scope["method"]
        unsafe = method not in SAFE_METHODS
        principal, problem, clear = await self._authenticate(conn, https)
        cookie_or_none = principal is None or principal.via == "session" or path in PUBLIC
        if unsafe and cookie_or_none and not self._same_origin(conn, https):
            await _refuse(send, 403, "cross-site request refused (its Origin is not this site)")
            return
        if principal is None and not is_public(path):
            challenge = 'Bearer realm="jiayuan"' + (', error="invalid_token"' if problem else "")
            extra = {"WWW-Authenticate": challenge}
            if clear:
                extra["Set-Cookie"] = clear
            await _refuse(
                send,
                401,
                problem
                or "sign in first: a session cookie from POST "
                "/api/auth/login, or Authorization: Bearer <token>",
                extra,
            )
            return
        if principal is not None and principal.via == "session" and unsafe:
            sent = conn.headers.get(CSRF_HEADER, "")
            if not principal.csrf or not hmac.compare_digest(sent, principal.csrf):
                await _refuse(
                    send,
                    403,
                    "missing or wrong X-CSRF-Token header (the csrf_token of GET /api/auth/me)",
                )
                return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _authenticate(
        self, conn: HTTPConnection, https: bool
    ) -> tuple[Principal | None, str | None, str | None]:
        """(principal, why the credentials given were refused, a Set-Cookie clearing a dead
        session cookie)."""
        header = conn.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > 512:
                return None, "the Authorization header must be 'Bearer <token>'", None
            p = await anyio.to_thread.run_sync(self.auth.from_bearer, token)
            return p, None if p else "invalid, expired or revoked token", None
        name = cookie_name(self._secure_cookie(https))
        sid = conn.cookies.get(name) or conn.cookies.get(COOKIE)
        if not sid:
            return None, None, None
        p = await anyio.to_thread.run_sync(self.auth.from_session, sid[:128])
        if p is None:
            return None, "your session has ended: sign in again", clear_cookie(name, https)
        return p, None, None

    def _secure_cookie(self, https: bool) -> bool:
        s = self.settings.cookie_secure
        return https if s is None else s

    def _same_origin(self, conn: HTTPConnection, https: bool) -> bool:
        origin = conn.headers.get("origin")
        if origin is None:  # not a browser's cross-site fetch (curl, a program, old forms)
            return conn.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
        host = conn.headers.get("host", "")
        own = {f"{'https' if https else 'http'}://{host}"}
        if self.settings.public_url:
            own.add(_origin_of(self.settings.public_url))
        return origin.rstrip("/") in own

    def _with_headers(self, send: Send, path: str, https: bool) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = (
                        DOCS_CSP if path.startswith("/docs") else CSP
                    )
                for k, v in HEADERS.items():
                    if k not in headers:
                        headers[k] = v
                if https:
                    headers["Strict-Transport-Security"] = "max-age=31536000"
                if "cache-control" not in headers and not is_public(path):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        return send_with_headers


def clear_cookie(name: str, secure: bool) -> str:
    return f"{name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def _origin_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


async def _refuse(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
