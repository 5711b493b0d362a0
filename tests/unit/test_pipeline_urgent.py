"""An urgent message (a fall, a fire alarm) is committed and handed to the rules as soon as the
pipeline takes it, with whatever is already waiting: it does not wait out the batch window
(``batch_wait``) for companions, which held every fall 5 ms of its ~10 ms publish→alert.
Telemetry still gathers for the window, so that a trickle is committed in batches."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from ingest.inbox import Inbox
from ingest.journal import Journal
from ingest.listener import TELEMETRY, URGENT, Inbound
from ingest.payloads import Reading
from ingest.pipeline import Pipeline
from tests.mqtt import wait_for

NOW = 1_796_430_000.0
HOUR = 3600.0


def fall(device: str, mid: int) -> Inbound:
    body = json.dumps({"event": "fall", "seq": mid, "ts": int(NOW * 1000)}).encode()
    return Inbound(f"community/y/wearable/{device}/event", body, mid, 1, False, NOW, URGENT)


def heartbeat(device: str, mid: int) -> Inbound:
    body = json.dumps({"heart_rate": 70, "seq": mid, "ts": int(NOW * 1000)}).encode()
    return Inbound(f"community/y/wearable/{device}/telemetry", body, mid, 1, False, NOW, TELEMETRY)


@pytest.fixture
def handed(tmp_path: Path) -> Iterator[tuple[Inbox, list[list[Reading]]]]:
    """A pipeline whose batch window is an hour, and the batches it handed on."""
    inbox = Inbox()
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    out: list[list[Reading]] = []

    def ack(batch: Iterable[Inbound]) -> None:
        pass

    def hand_on(readings: Sequence[Reading]) -> None:
        out.append(list(readings))

    p = Pipeline(inbox, journal, ack, hand_on, batch_wait=HOUR, batch_max=100)
    p.start()
    try:
        yield inbox, out
    finally:
        p.stop()
        journal.close()


def test_a_fall_is_handed_on_without_waiting_for_the_batch_window(
    handed: tuple[Inbox, list[list[Reading]]],
) -> None:
    inbox, out = handed
    inbox.put(fall("w-1", 1))
    wait_for(lambda: len(out) == 1)  # not an hour later
    assert [(r.device_id, r.event) for r in out[0]] == [("w-1", "fall")]


def test_telemetry_waits_for_the_window_until_an_urgent_message_ends_it(
    handed: tuple[Inbox, list[list[Reading]]],
) -> None:
    inbox, out = handed
    inbox.put(heartbeat("w-2", 1))
    wait_for(lambda: inbox.qsize() == 0)  # taken: the batch waits for more
    inbox.put(heartbeat("w-3", 2))
    wait_for(lambda: inbox.qsize() == 0)
    assert out == [], "telemetry alone waits for the batch window (an hour here)"
    inbox.put(fall("w-4", 3))
    wait_for(lambda: len(out) == 1)
    assert sorted((r.device_id, r.stream) for r in out[0]) == [
        ("w-2", "telemetry"),
        ("w-3", "telemetry"),
        ("w-4", "event"),
    ], "committed together, at once"
