"""Connections the HTTP server keeps, bounded: a header timeout, a connection cap that sheds
idle connections first, and refusals logged once per interval.

uvicorn closes an idle keep-alive connection only after it has answered a request on it: a
connection that never sends a request, or sends its headers a byte at a time (slowloris), is
kept forever, and enough of them exhaust the open-files limit (then ``accept`` fails, asyncio
logs a traceback per attempt, and ``/healthz`` is unreachable). :func:`guarded_protocol` gives
uvicorn an h11 protocol that

- closes a connection whose request line and headers have not arrived in full within
  ``header_timeout_s`` of it opening or of the previous response (the headers' size is bounded
  by h11's ``max_incomplete_event_size``);
- holds at most ``max_connections``: a new connection past it closes the longest-idle one (no
  request under way: between requests, or still sending headers), as nginx reuses keep-alive
  connections when short of them, so a crowd of idle clients cannot lock out ``/healthz``;
  only when every connection is busy with a request is the new one answered 503.

uvicorn's own ``limit_concurrency`` is not used: it answers 503 to every request while the
count of open connections, idle ones included, is at the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("jiayuan.api.connections")

RESERVED_FILES: Final = 256
"""Open files kept for everything but HTTP connections (databases, MQTT, logs)."""
ACCEPT_BACKLOG: Final = 64
"""Connections the kernel queues for the server to accept (uvicorn's default is 2048).
asyncio accepts up to the backlog in one pass before any new connection's protocol runs, so
before the cap can shed an idle connection for a new one: with 2048, a burst of idle
connections took every descriptor (a rules worker's commit then failed to open its database,
and ``/healthz`` said 503). A pass of at most this many fits in :data:`RESERVED_FILES`;
clients past it wait in the kernel's queue or retry their connect."""
_BUSY_BODY: Final = b'{"detail": "too many connections: try again later"}'
BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\nretry-after: 1\r\ncontent-length: %d\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)
"""The answer to a connection past the cap when none can be shed, written before it is
closed."""


@dataclass
class Throttled:
    """Counts events by kind and logs them at most once per ``every_s``, as a total."""

    every_s: float = 60.0
    counts: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    _last: float = -1e18

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.totals[kind] = self.totals.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.flush()

    def flush(self) -> None:
        """Log what was counted since the last line, if anything (also at shutdown)."""
        if self.counts:
            what = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
            log.warning("HTTP connections shed in the last %g s: %s", self.every_s, what)
            self.counts.clear()


@dataclass
class ConnectionGuard:
    max_connections: int
    header_timeout_s: float
    shed: Throttled = field(default_factory=Throttled)
    idle: dict[GuardedH11Protocol, float] = field(default_factory=dict)
    """Connections with no request under way, by when they became so (insertion order)."""
    open: int = 0


class GuardedH11Protocol(H11Protocol):
    guard: ConnectionGuard  # set by guarded_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        g = self.guard
        if g.open >= g.max_connections:
            oldest = next(iter(g.idle), None)
            if oldest is None:
                g.shed.add("refused (every connection busy)")
                transport.write(BUSY)
                transport.close()
                self.transport = transport
                self._refused = True
                return
            g.shed.add("idle closed for a new one")
            oldest._drop()
        g.open += 1
        super().connection_made(transport)
        self._waiting_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self.guard.open -= 1
        self._request_started()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self._busy():
            self._request_started()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._busy() and not self.transport.is_closing():
            self._waiting_for_request()

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _waiting_for_request(self) -> None:
        self.guard.idle.pop(self, None)
        self.guard.idle[self] = time.monotonic()
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.guard.header_timeout_s, self._too_slow)

    def _request_started(self) -> None:
        self.guard.idle.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self._busy() and not self.transport.is_closing():
            if self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]:
                self.guard.shed.add("closed sending headers too slowly")
            self._drop()

    def _drop(self) -> None:
        self._request_started()
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` bound to ``guard``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


def fit_open_files(max_connections: int) -> int:
    """Raise the open-files limit to fit ``max_connections`` and what the service keeps open
    besides; when the hard limit forbids it, fewer connections (a warning says so)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    if soft != resource.RLIM_INFINITY and soft < want:
        fitted = max(16, soft - RESERVED_FILES)
        log.warning(
            "open-files limit %d: serving at most %d HTTP connections, not %d"
            " (http_max_connections)",
            soft,
            fitted,
            max_connections,
        )
        return fitted
    return max_connections


class CountInvalidRequests(logging.Filter):
    """uvicorn logs a warning for every malformed request it answers 400 (headers past
    ``max_incomplete_event_size`` among them): counted in ``shed`` instead, so a flood of
    them cannot flood the log."""

    MESSAGE: Final = "Invalid HTTP request received."

    def __init__(self, shed: Throttled) -> None:
        super().__init__()
        self.shed = shed

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == self.MESSAGE:
            self.shed.add("malformed or oversized requests answered 400")
            return False
        return True


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, shed: Throttled) -> None:
    """asyncio logs a traceback for every ``accept`` that fails for want of file descriptors
    (and retries a second later); count them in ``shed`` instead. A retry that comes due after
    the server closed its socket at shutdown fails with "Invalid file descriptor: -1": nothing is
    wrong then, it is dropped. Other errors go on to the loop's handler as before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            shed.add("accept failed: out of file descriptors")
            return
        exc, handle = context.get("exception"), str(context.get("handle", ""))
        if isinstance(exc, ValueError) and "_start_serving" in handle and "-1" in str(exc):
            log.debug("accept retry after the server closed: %s", exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
