"""Changes every instance must hear of (the console's live stream): PostgreSQL LISTEN/NOTIFY.

A writer calls :func:`notify` inside the transaction that made the change; PostgreSQL delivers
the notification when (and only if) that transaction commits, in commit order, to every session
listening on the channel — every instance's :class:`Listener`. Payloads are small JSON objects
naming what changed (a kind and an id, the community): listeners read the row itself, so no
health data travels on the channel and the 8,000-byte limit is never near.

Notifications are not stored: one sent while a listener's connection was down is lost to it.
:class:`Listener` reconnects (base.retry's backoff) and then calls ``on_reconnect`` before it
hands on anything new, so its owner can read what changed meanwhile from the tables (since the
last id it saw) and nothing a console should show is missed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from base.retry import Backoff
from district.pg import connect

log = logging.getLogger(__name__)

CHANNEL = "jiayuan_live"
MAX_PAYLOAD = 7_999  # bytes: PostgreSQL refuses 8,000 and more
RECONNECT = Backoff(first_s=0.2, max_s=5.0, jitter=0.2)


def notify(db: psycopg.Connection[Any], event: dict[str, Any], channel: str = CHANNEL) -> None:
    """Queue ``event`` (a small JSON object) for every listener of ``channel``; it is sent when
    ``db``'s transaction commits, and never if it rolls back."""
    payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    if len(payload.encode()) > MAX_PAYLOAD:
        raise ValueError("a live event names what changed; it cannot carry the change itself")
    db.execute("SELECT pg_notify(%s, %s)", (channel, payload))


class Listener:
    """A thread with a connection of its own listening on ``channel``: ``on_event(event)`` for
    each notification (decoded), ``on_reconnect()`` after every reconnection and before the
    events that follow it. Both run on the listener's thread and must not block for long."""

    def __init__(
        self,
        url: str,
        on_event: Callable[[dict[str, Any]], None],
        *,
        on_reconnect: Callable[[], None] | None = None,
        channel: str = CHANNEL,
        name: str = "jiayuan-live",
    ) -> None:
        self.url = url
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.channel = channel
        self.name = name
        self.connected = threading.Event()
        """Set while listening (for tests and health)."""
        self.backend_pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> Listener:
        """Start listening; returns once the first LISTEN is in place."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self.connected.wait(timeout):
            raise TimeoutError(f"not listening on {self.channel} within {timeout}s")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            try:
                with connect(self.url, name=self.name, autocommit=True) as db:
                    db.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.backend_pid = db.info.backend_pid
                    attempt = 0
                    if not first and self.on_reconnect is not None:
                        self.on_reconnect()
                    first = False
                    self.connected.set()
                    while not self._stop.is_set():
                        for n in db.notifies(timeout=0.5):
                            self._hand_on(n.payload)
            except psycopg.OperationalError as e:
                self.connected.clear()
                attempt += 1
                log.warning("live listener lost its connection (attempt %d): %s", attempt, e)
                self._stop.wait(RECONNECT.delay(attempt))
        self.connected.clear()

    def _hand_on(self, payload: str) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            log.warning("live listener: a notification that is not JSON (%d bytes)", len(payload))
            return
        if isinstance(event, dict):
            self.on_event(event)
