"""The inbox hands urgent messages (the urgent session's: events, status) out before telemetry,
each class in arrival order, through the same calls the pipeline makes on a queue.Queue."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.inbox import Inbox
from ingest.listener import TELEMETRY, URGENT, Inbound


def msg(n: int, session: str = TELEMETRY) -> Inbound:
    stream = "telemetry" if session == TELEMETRY else "event"
    return Inbound(f"community/y/wearable/w-{n}/{stream}", b"{}", n, 1, False, 0.0, session)


def test_urgent_messages_come_out_first_and_each_kind_keeps_its_order() -> None:
    inbox = Inbox()
    for n in range(1000):
        inbox.put(msg(n))
    inbox.put(msg(5000, URGENT))
    inbox.put(msg(5001, URGENT))
    assert inbox.qsize() == 1002 and inbox.urgent_waiting() == 2
    assert [inbox.get(timeout=1).mid for _ in range(3)] == [5000, 5001, 0]
    assert [inbox.get_nowait().mid for _ in range(999)] == list(range(1, 1000))
    with pytest.raises(queue.Empty):
        inbox.get_nowait()
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.01)
    assert inbox.qsize() == 0


def test_a_waiting_reader_is_woken_by_an_urgent_message() -> None:
    inbox = Inbox()
    got: list[Inbound] = []
    reader = threading.Thread(target=lambda: got.append(inbox.get(timeout=30)))
    reader.start()
    inbox.put(msg(1, URGENT))
    reader.join(30)
    assert [m.mid for m in got] == [1] and got[0].urgent


def test_many_are_put_and_taken_under_one_lock_in_the_order_get_gives() -> None:
    inbox = Inbox()
    t = [msg(i) for i in range(3)]
    u = [msg(10 + i, URGENT) for i in range(2)]
    inbox.put_many([t[0], u[0], t[1]])
    inbox.put_many([])
    inbox.put_many([u[1], t[2]])
    assert inbox.qsize() == 5
    assert inbox.get_many(3) == [u[0], u[1], t[0]]
    assert inbox.get_many(10) == [t[1], t[2]]
    assert inbox.get_many(10) == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.lists(st.sampled_from([TELEMETRY, URGENT, "urgent-slot-0", "slot-1"]), max_size=6),
            st.integers(min_value=0, max_value=8),
        ),
        max_size=30,
    )
)
def test_put_many_and_get_many_give_what_put_and_get_give_one_by_one(ops: list[Any]) -> None:
    """Many at once under one lock (the MQTT loop's pass, the pipeline's batch) hand messages
    out in exactly the order that putting and getting them one by one does."""
    many, single = Inbox(), Inbox()
    n = 0
    for op in ops:
        if isinstance(op, list):
            items = [msg(n + i, s) for i, s in enumerate(op)]
            n += len(items)
            many.put_many(items)
            for m in items:
                single.put(m)
        else:
            one_by_one = [single.get_nowait() for _ in range(min(op, single.qsize()))]
            assert many.get_many(op) == one_by_one
        assert many.qsize() == single.qsize()
        assert many.urgent_waiting() == single.urgent_waiting()
    assert many.get_many(10_000) == [single.get_nowait() for _ in range(single.qsize())]
