"""The pipeline counts once per batch what /metrics shows per message: readings by kind and
stream, dead letters by reason, duplicates — the totals those who watch the service read."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ingest.journal import Journal
from ingest.listener import Inbound
from ingest.pipeline import Pipeline

NOW = 1_795_777_822.0


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def inbound(topic: str, payload: bytes, mid: int, received: float = NOW) -> Inbound:
    return Inbound(topic, payload, mid, 1, False, received)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    yield j
    j.close()


def test_a_batch_is_counted_by_kind_stream_and_reason(journal: Journal) -> None:
    acked: list[int] = []

    def ack(batch: Iterable[Inbound]) -> None:
        acked.extend(m.mid for m in batch)

    pipeline = Pipeline(queue.Queue(), journal, ack)
    batch = [
        *(
            inbound(
                f"community/y/wearable/wm-{i % 3}/telemetry",
                json.dumps({"seq": i, "heart_rate": 70}).encode(),
                i,
            )
            for i in range(7)
        ),
        inbound("community/y/smoke/sm-1/event", b'{"seq": 1, "event": "alarm"}', 7),
        inbound("community/y/smoke/sm-1/event", b'{"seq": 2, "event": "alarm"}', 8),
        inbound("community/y/wearable/wm-1/telemetry", b'{"x": NaN}', 10),
        inbound("community/y/wearable/wm-1/telemetry", b"{nope", 11),
        inbound("community/y/wearable/wm-1/telemetry", b"[1]", 12),
        inbound("community/y/toaster/t-1/telemetry", b"{}", 13),
    ]
    names = {
        "telemetry": (
            "jiayuan_messages_received_total",
            {"kind": "wearable", "stream": "telemetry"},
        ),
        "smoke": ("jiayuan_messages_received_total", {"kind": "smoke", "stream": "event"}),
        "not_json": ("jiayuan_dead_letters_total", {"reason": "not_json"}),
        "not_object": ("jiayuan_dead_letters_total", {"reason": "not_object"}),
        "unknown_topic": ("jiayuan_dead_letters_total", {"reason": "unknown_topic"}),
        "duplicates": ("jiayuan_duplicates_total", {}),
    }
    before = {k: metric(n, **labels) for k, (n, labels) in names.items()}
    new = pipeline.process(batch)
    again = json.dumps({"seq": 5, "heart_rate": 70}).encode()  # wm-2's, once more
    redelivered = inbound("community/y/wearable/wm-2/telemetry", again, 9, NOW + 1)
    assert pipeline.process([redelivered]) == []
    after = {k: metric(n, **labels) for k, (n, labels) in names.items()}
    assert {k: after[k] - before[k] for k in names} == {
        "telemetry": 7,
        "smoke": 2,
        "not_json": 2,
        "not_object": 1,
        "unknown_topic": 1,
        "duplicates": 1,
    }
    assert len(new) == 9 and sorted(acked) == list(range(14))
