"""The ingest pipeline's rate on a real journal, alone in its process: a backlog of distinct
readings waiting in the inbox, drained into a SQLite journal (``synchronous=FULL``, as the
service writes it) by a running :class:`Pipeline` (take, decode, write, commit, acknowledge).
What the service reaches beyond this is lost elsewhere (its other threads, the broker's window).

``python -m bench.pipeline_rate [--messages 100000] [--rounds 3]`` prints each round's rate and
``pipeline_msgs_per_s=X`` (the best round).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from bench.decode import NOW
from ingest.inbox import Inbox
from ingest.journal import Journal
from ingest.listener import Inbound
from ingest.pipeline import Pipeline


def backlog(n: int, devices: int = 2000) -> list[Inbound]:
    """``n`` wearable readings of ``devices`` devices, each distinct (no duplicates)."""
    out = []
    for i in range(n):
        payload = json.dumps(
            {
                "ts": 1_795_777_822_000 + i,
                "seq": i,
                "heart_rate": 60 + i % 40,
                "spo2": 97.5,
                "skin_temp_c": 33.1,
                "steps": 4021 + i,
                "battery": 81.0,
                "worn": True,
            }
        ).encode()
        topic = f"community/y/wearable/wr-{i % devices:05d}/telemetry"
        out.append(Inbound(topic, payload, i % 65_535 + 1, 1, False, NOW))
    return out


def drain(messages: list[Inbound], folder: Path, *, batch_max: int) -> float:
    """Messages per second from a full inbox to the last commit."""
    journal = Journal(folder / "journal.db")
    inbox = Inbox()

    def ack(_batch: Iterable[Inbound]) -> None:
        pass

    p = Pipeline(inbox, journal, ack, batch_max=batch_max)
    inbox.put_many(messages)
    t0 = time.perf_counter()
    p.start()
    while p.committed < len(messages):
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    p.stop()
    journal.close()
    return len(messages) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-max", type=int, default=1000)
    a = ap.parse_args()
    logging.getLogger("ingest").setLevel(logging.ERROR)
    messages = backlog(a.messages)
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="jiayuan-pipeline-rate-") as tmp:
        for r in range(a.rounds):
            rate = drain(messages, Path(tmp) / str(r), batch_max=a.batch_max)
            rates.append(rate)
            print(f"bench: pipeline_rate round {r + 1}: {rate:,.0f} msg/s", flush=True)
    print(f"pipeline_msgs_per_s={max(rates):.0f}")


if __name__ == "__main__":
    main()
