"""Request bodies capped before they are read, on every route (:class:`BodyLimitMiddleware`).

- A ``Content-Length`` past the route's cap is answered 413 before a byte of the body is read;
  a body without one (chunked) is counted as it streams in and refused the moment it passes.
- A body must arrive in full within ``body_timeout_s`` of the first read (a slow upload holds
  a connection like a slowloris does): 408.
- Any response sent while part of the body is still unread (a refusal, a 401 before the body
  was looked at) closes the connection (``Connection: close``), so a client cannot keep
  feeding a body that nobody reads.

Errors are ``{"detail": ...}`` like every other. Starlette's own ``max_body_size`` is not
used: it answers in plain text when the route never reads the body, and leaves the connection
open to be fed the rest of it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Final

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGIN_MAX_BODY: Final = 4096
"""The public sign-in route takes a staff id and a password: 4 KiB is plenty."""


class _Refused(HTTPException):
    """An HTTPException, so that FastAPI passes it on while reading a body (it turns other
    errors there into a 400) and renders it as every other error."""


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        body_timeout_s: float,
        per_path: Mapping[str, int] | None = None,
        per_prefix: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.per_path = dict(per_path or {})
        self.per_prefix = dict(per_prefix or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cap = self.per_path.get(path) or next(
            (n for p, n in self.per_prefix.items() if path.startswith(p)), self.max_bytes
        )
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        # the body is done when nothing was announced; else once more_body is False
        done = not chunked and declared in (None, "0")
        started = False
        received = 0
        deadline = math.inf

        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await _answer(send, 413, _too_large(cap))
            return

        async def limited_receive() -> Message:
            nonlocal done, received, deadline
            if done:
                return await receive()
            if deadline == math.inf:
                deadline = anyio.current_time() + self.body_timeout_s
            with anyio.move_on_after(deadline - anyio.current_time()) as waited:
                message = await receive()
            if waited.cancelled_caught:
                if started:  # too late to answer: the response reads it as a disconnect
                    done = True
                    return {"type": "http.disconnect"}
                raise _Refused(408, f"the request body took longer than {self.body_timeout_s:g} s")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise _Refused(413, _too_large(cap))
                done = not message.get("more_body", False)
            else:
                done = True  # http.disconnect
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not done:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"connection", b"close")],
                    }
            await send(message)

        try:
            await self.app(scope, limited_receive, closing_send)
        except Exception as e:
            refused = _refusal(e)
            if refused is None or started:
                raise
            await _answer(send, refused.status_code, refused.detail)


def _too_large(cap: int) -> str:
    return f"request body too large: at most {cap} bytes"


def _refusal(e: BaseException) -> _Refused | None:
    """Our refusal, also when a task group wrapped it (streaming responses read the body in
    one)."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e if isinstance(e, _Refused) else None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
