"""``/api/stream``: alert changes as server-sent events.

The alert store's live feed (:func:`alerts.live.open_feed`: on SQLite the store's subscribers,
on whatever thread made the change, its lock held; on PostgreSQL every instance's committed
changes in commit order, on the feed's thread) calls the :class:`Broadcaster`, which only hands
each change to the event loop (``call_soon_threadsafe``); on the loop it is offered to every
client's bounded queue. A client whose queue is full is too slow: it is disconnected (it may
reconnect with ``Last-Event-ID`` and catch up from the history), and nobody else waits for it.

Each connection sees only the alerts its caller may see (:class:`jiayuan.api.view.View`),
with a wearable's measured value withheld but from the wearer's caretakers; a stream whose
session or token ends (signed out, expired, revoked) is closed at its next keep-alive.

Wire format: ``event: alert``, ``id:`` the history entry id (a reconnecting client's
``Last-Event-ID`` resumes after that entry in commit order, from the database), ``data:`` JSON
``{"action", "change", "alert"}``; a ``: keep-alive`` comment when idle; ``event: resync`` when
a reconnecting client missed more than can be replayed (fetch ``/api/alerts`` again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Final

import anyio.to_thread
from fastapi import APIRouter, Header, HTTPException, Query, Request
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from alerts import AlertChange, AlertStore
from alerts.live import LiveChange, LiveFeed, PositionGone, open_feed
from alerts.model import Action
from jiayuan.api.alerts import AlertOut, HistoryOut, alert_out, history_out
from jiayuan.api.bounds import event_id
from jiayuan.api.deps import ANYONE, ID_PATTERN, AuthDep, Community, ViewDep, allow
from jiayuan.api.security import COOKIE, SECURE_COOKIE
from jiayuan.auth.authn import Authenticator
from jiayuan.auth.scope import Principal
from rules.transitions import Route

log = logging.getLogger(__name__)

CLIENTS = Gauge("jiayuan_stream_clients", "Clients connected to the live alert stream")
DROPPED = Counter(
    "jiayuan_stream_dropped_total", "Live stream clients disconnected for falling behind"
)

REPLAY_MAX = 500
"""A reconnecting client is sent at most this many missed changes, else ``resync``."""
SEND_TIMEOUT_S = 5.0
"""A write the client has not taken within this long (its socket's buffers are full: it reads
nothing) ends the stream, whether or not it has fallen behind yet."""
RETRY_MS = 5000
"""How long a browser's ``EventSource`` waits before it reconnects."""

router = APIRouter(tags=["stream"])


class AlertEvent(BaseModel):
    """The ``data`` of one ``alert`` event."""

    action: Action
    change: HistoryOut
    alert: AlertOut


def encode(change: AlertChange) -> ServerSentEvent:
    data = AlertEvent(
        action=change.action, change=history_out(change.entry), alert=alert_out(change.alert)
    )
    return ServerSentEvent(data.model_dump_json(), event="alert", id=str(change.entry.id))


def keep_alive() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive")


RESYNC_GAP: Final = '{"reason": "changes were missed; list /api/alerts again"}'
"""``resync``'s data when this instance's feed itself missed changes (``after_gap``)."""

_IDLE: Final = LiveChange.__new__(LiveChange)
"""Stands for "nothing came within the keep-alive time" in the loop below."""


class StreamClient:
    """One connection's queue, on the event loop only."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[LiveChange | None] = asyncio.Queue(size)
        self.ended = asyncio.Event()

    def offer(self, change: LiveChange) -> bool:
        """Queue a change; False (and the stream ends) when the client is too far behind."""
        if self.ended.is_set():
            return True
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.end()
            return False
        return True

    def end(self) -> None:
        """Drop what is queued and let the stream finish."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
        self.ended.set()


class Broadcaster:
    """From the alert store's live feed (any thread) to the live stream's clients (the loop).

    ``start()`` on the event loop (the app's lifespan does it); ``close()`` from any thread
    ends every stream, so a server can shut down without waiting for clients to leave.
    """

    def __init__(
        self, store: AlertStore, *, queue_size: int = 256, keepalive_s: float = 15.0
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self.keepalive_s = keepalive_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._feed: LiveFeed | None = None
        self._clients: set[StreamClient] = set()
        self._closed = False

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._closed

    @property
    def feed(self) -> LiveFeed | None:
        """Where the changes come from (:func:`alerts.live.open_feed`), while started."""
        return self._feed

    @property
    def clients(self) -> int:
        return len(self._clients)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._feed = open_feed(self.store)
        self._unsubscribe = self._feed.subscribe(self._on_change)

    def close(self) -> None:
        """End every stream and stop listening. Thread-safe; idempotent."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        self._closed = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._end_all()
        else:
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                loop.call_soon_threadsafe(self._end_all)

    def _on_change(self, change: LiveChange) -> None:
        """The feed's subscriber: any thread (the store's lock held on SQLite). Hands over."""
        loop = self._loop
        if loop is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody is listening
            loop.call_soon_threadsafe(self._fan_out, change)

    def _fan_out(self, change: LiveChange) -> None:
        for client in list(self._clients):
            if not client.offer(change):
                DROPPED.inc()
                log.warning(
                    "live stream client fell %d changes behind: disconnected", self.queue_size
                )

    def _end_all(self) -> None:
        for client in list(self._clients):
            client.end()

    def client(self) -> StreamClient:
        return StreamClient(self.queue_size)

    def _connect(self, client: StreamClient) -> None:
        if self._closed:
            client.end()
        self._clients.add(client)
        CLIENTS.set(len(self._clients))

    def _disconnect(self, client: StreamClient) -> None:
        self._clients.discard(client)
        CLIENTS.set(len(self._clients))

    async def events(
        self,
        client: StreamClient,
        last_event_id: int | None,
        show: Callable[[AlertChange], AlertChange | None],
        alive: Callable[[], bool] | None = None,
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """The events of one client. It is connected before the first one (so a client that
        has read ``: connected`` misses nothing) and before the history is replayed. ``show``
        gives a change as this client may see it, or None to skip it; ``alive`` (asked in a
        worker thread once per keep-alive period) False ends the stream. The keep-alive
        comments themselves are :class:`EventStream`'s."""
        self._connect(client)
        try:
            yield ServerSentEvent(retry=RETRY_MS)
            yield ServerSentEvent(comment="connected")  # the last line of the greeting
            seen = 0
            feed = self._feed  # None once closed: the stream ends below
            if last_event_id is not None and feed is not None:
                missed: list[LiveChange] | None
                try:
                    missed = await anyio.to_thread.run_sync(
                        feed.since, last_event_id, REPLAY_MAX + 1
                    )
                except PositionGone:  # its entry is no longer kept: not a replay with a gap
                    missed = None
                if missed is None or len(missed) > REPLAY_MAX:
                    yield ServerSentEvent(
                        '{"reason": "too many changes missed; list /api/alerts again"}',
                        event="resync",
                    )
                    missed = []
                for live in missed:
                    seen = live.position
                    if (shown := show(live.change)) is not None:
                        yield encode(shown)
            loop = asyncio.get_running_loop()
            check_at = loop.time() + self.keepalive_s
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), self.keepalive_s)
                except TimeoutError:
                    item = _IDLE
                if alive is not None and loop.time() >= check_at:
                    check_at = loop.time() + self.keepalive_s
                    if not await anyio.to_thread.run_sync(alive):
                        return
                if item is None:
                    return
                if item is _IDLE or item.position <= seen:
                    continue
                if item.after_gap:  # this instance's feed missed changes: list them again
                    yield ServerSentEvent(RESYNC_GAP, event="resync")
                if (shown := show(item.change)) is not None:
                    yield encode(shown)
        finally:
            self._disconnect(client)


class EventStream(EventSourceResponse):
    """sse-starlette's response: keep-alive comments every ``keepalive_s``; the client's
    disconnect or a server shutdown ends the stream, and so does a write the client has not
    taken within :data:`SEND_TIMEOUT_S`, which is how a client that reads nothing is let go
    once it has fallen behind or the broadcaster has closed."""

    def __init__(self, content: AsyncGenerator[ServerSentEvent, None], keepalive_s: float) -> None:
        super().__init__(
            content,
            ping=keepalive_s,
            ping_message_factory=keep_alive,
            send_timeout=SEND_TIMEOUT_S,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # a client that takes nothing more, or went away mid-write: the stream is over
        with contextlib.suppress(SendTimeoutError, OSError):
            await super().__call__(scope, receive, send)


@router.get(
    "/api/stream",
    summary="Live stream of alert changes (server-sent events)",
    response_class=EventStream,
    status_code=200,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: alert` with `{action, change, alert}` data",
        }
    },
    dependencies=[allow(*ANYONE)],
)
async def stream_alerts(
    request: Request,
    view: ViewDep,
    auth: AuthDep,
    building: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    route: Annotated[Route | None, Query(description="Only alerts of this route.")] = None,
    community: Community = None,
    last_event_id: Annotated[
        str | None, Header(max_length=40, description="Resume after this id.")
    ] = None,
) -> EventStream:
    """The changes of the alerts the caller may see."""
    broadcaster: Broadcaster | None = getattr(request.app.state, "broadcaster", None)
    if broadcaster is None or not broadcaster.running:
        raise HTTPException(503, "the live stream is not running")
    shown = view.communities(community)  # 403/404 before the stream opens

    def show(change: AlertChange) -> AlertChange | None:
        a = change.alert
        if (
            (building is not None and a.building != building)
            or (route is not None and a.route != route)
            or (shown is not None and a.labels.get("community") not in shown)
            or not view.sees(a)
        ):
            return None
        redacted = view.scope.redact(a)
        return change if redacted is a else AlertChange(redacted, change.entry)

    resume = event_id(last_event_id)
    client = broadcaster.client()
    alive = still_signed_in(auth, view.principal, request)
    events = broadcaster.events(client, resume, show, alive)
    return EventStream(events, broadcaster.keepalive_s)


def still_signed_in(auth: Authenticator, p: Principal, request: Request) -> Callable[[], bool]:
    """Whether the credentials that opened a stream are still good (not signed out, expired,
    revoked, nor the person removed from the registry)."""
    if p.via == "admin-token":
        return lambda: True
    bearer = request.headers.get("authorization", "").partition(" ")[2].strip()
    cookie = request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE) or ""

    def alive() -> bool:
        again = auth.from_bearer(bearer) if p.via == "token" else auth.from_session(cookie)
        return again is not None and again.id == p.id

    return alive
