"""The live stream across instances (district/live.py) on the real throwaway PostgreSQL:
every listener hears each committed change once, in commit order, nothing rolled back, and a
listener whose connection was cut is told to catch up before it hears anything new."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from district.live import Listener, notify


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


class Heard:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    def ids(self) -> list[Any]:
        with self.lock:
            return [e.get("id", e.get("marker")) for e in self.events]


@pytest.fixture
def listeners(pg_url: str) -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(on_event: Callable[[dict[str, Any]], None], **kw: Any) -> Listener:
        listener = Listener(pg_url, on_event, **kw).start()
        made.append(listener)
        return listener

    try:
        yield make
    finally:
        for listener in made:
            listener.stop()


def test_every_instance_hears_each_committed_change_in_order(
    pg_url: str, listeners: Callable[..., Listener]
) -> None:
    a, b = Heard(), Heard()
    listeners(a)
    listeners(b)
    with psycopg.connect(pg_url) as writer:
        for i in range(5):
            with writer.transaction():
                notify(writer, {"kind": "alert", "id": i, "community": "y"})
        with pytest.raises(RuntimeError), writer.transaction():
            notify(writer, {"kind": "alert", "id": 99})
            raise RuntimeError("the change failed")  # rolled back: never heard
        with writer.transaction():
            notify(writer, {"marker": "end"})
    wait_for(lambda: "end" in a.ids() and "end" in b.ids(), "both hear the last change")
    assert a.ids() == b.ids() == [0, 1, 2, 3, 4, "end"]
    assert a.events[0] == {"kind": "alert", "id": 0, "community": "y"}


def test_an_event_too_big_for_the_channel_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url) as writer, pytest.raises(ValueError):
        notify(writer, {"kind": "alert", "detail": "x" * 8000})


def test_a_cut_listener_catches_up_before_hearing_more(
    pg_url: str, listeners: Callable[..., Listener]
) -> None:
    heard = Heard()
    order: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        order.append(f"event {event.get('id')}")
        heard(event)

    listener = listeners(on_event, on_reconnect=lambda: order.append("catch up"))
    pid = listener.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: listener.backend_pid != pid and listener.connected.is_set(), "reconnected")
    with psycopg.connect(pg_url) as writer, writer.transaction():
        notify(writer, {"kind": "alert", "id": 7})
    wait_for(lambda: heard.ids() == [7], "the change after the reconnection is heard")
    assert order == ["catch up", "event 7"]
