"""Micro-benchmark of ``decode``, the hot path of ingestion: µs per message for a typical mix
of the four common shapes, and for a mix of poison (dead letters with the slow, strict parse).

``python -m bench.decode`` prints ``decode_us=X poison_us=Y`` (best of 5 runs, in CPU time:
the machine is shared).
"""

from __future__ import annotations

import json
import time

from ingest.payloads import decode

TYPICAL: list[tuple[str, bytes]] = [
    (
        "community/y/wearable/wr-00001/telemetry",
        json.dumps(
            {
                "ts": 1795777822000,
                "seq": 1234,
                "heart_rate": 72,
                "spo2": 97.5,
                "skin_temp_c": 33.1,
                "steps": 4021,
                "battery": 81.0,
                "worn": True,
                "lat": 36.0611,
                "lon": 103.8343,
            }
        ).encode(),
    ),
    (
        "community/y/smoke/smk-0001/telemetry",
        json.dumps(
            {
                "ts": "2026-11-27T10:00:00+08:00",
                "seq": 99,
                "obscuration_pct_m": 0.1,
                "temperature_c": 22.5,
                "co_ppm": 0,
                "battery": 90,
            }
        ).encode(),
    ),
    ("community/y/wearable/wr-00001/event", json.dumps({"seq": 1235, "event": "fall"}).encode()),
    (
        "community/y/gate/gt-1/event",
        json.dumps(
            {"seq": 5, "event": "granted", "direction": "in", "method": "card", "credential": "c"}
        ).encode(),
    ),
]
POISON: list[tuple[str, bytes]] = [
    ("community/y/wearable/wr-1/telemetry", b"[" * 1500 + b"]" * 1500),
    ("community/y/wearable/wr-1/telemetry", b'{"ts": ' + b"9" * 400 + b"}"),
    ("community/y/wearable/wr-1/telemetry", b'{"seq": 9223372036854775808}'),
    ("community/y/wearable/wr-1/telemetry", b'{"heart_rate": 72, "heart_rate": 190}'),
    ("community/y/wearable/wr-1/telemetry", b'{"note": "\\ud800"}'),
    ("community/y/wearable/wr-1/telemetry", b'{"x": NaN}'),
]


def per_message(mix: list[tuple[str, bytes]], n: int) -> float:
    """Best of 5 runs of ``n`` messages, in µs per message."""
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for i in range(n):
            topic, payload = mix[i % len(mix)]
            decode(topic, payload, 1_795_777_822.0)
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def main() -> None:
    print(
        f"decode_us={per_message(TYPICAL, 40_000):.2f} poison_us={per_message(POISON, 2_000):.1f}"
    )


if __name__ == "__main__":
    main()
