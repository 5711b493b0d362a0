"""Micro-benchmark of ``decode``, the hot path of ingestion: µs per message for a typical mix
of the four common shapes, and for a mix of poison (dead letters with the slow, strict parse).

``python -m bench.decode`` prints ``decode_us=X poison_us=Y`` for the msgspec decoder and
``reference_us`` / ``reference_poison_us`` for the pydantic one it replaced (same run, same
messages: the ratio holds on a noisy machine), then what each step of the fast path costs on
the typical mix, each timed alone (so they add up to a little less than ``decode_us``). Best of
5 runs, in CPU time: the machine is shared.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ingest import payloads
from ingest.payloads import decode, decode_reference
from ingest.wiretypes import aware_time

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


NOW = 1_795_777_822.0
Decoder = Callable[[str, bytes, float], object]


def per_message(mix: list[tuple[str, bytes]], n: int, fn: Decoder = decode) -> float:
    """Best of 5 runs of ``n`` messages, in µs per message."""
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for i in range(n):
            topic, payload = mix[i % len(mix)]
            fn(topic, payload, NOW)
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def _step(fn: Callable[[Any], object], args: list[Any], n: int) -> float:
    """Best of 5 runs of ``fn`` over ``args`` in turn, in µs per call."""
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for i in range(n):
            fn(args[i % len(args)])
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def steps(n: int = 40_000) -> dict[str, float]:
    """What each step of the fast path costs on the typical mix, alone (µs per message)."""
    wires = [payloads._route(t)[1] for t, _ in TYPICAL]
    bodies = [p for _, p in TYPICAL]
    structs = [w.decoder.decode(p) for w, p in zip(wires, bodies, strict=True)]
    times = [None if s.ts is msgspec.UNSET else s.ts for s in structs]
    readings = [
        r for r in (decode(t, p, NOW) for t, p in TYPICAL) if isinstance(r, payloads.Reading)
    ]

    def rebuilt(r: payloads.Reading) -> object:
        return payloads.Reading(
            community=r.community,
            kind=r.kind,
            device_id=r.device_id,
            stream=r.stream,
            ts=r.ts,
            received=r.received,
            seq=r.seq,
            values=r.values,
            event=r.event,
            attrs=r.attrs,
            extra=r.extra,
            ts_flag=r.ts_flag,
            payload=r.payload,
        )

    def checks(p: bytes) -> object:
        return len(p) > payloads.MAX_PAYLOAD or not p.isascii() or 92 in p

    def event_time(ts: object) -> object:
        return payloads._event_time(aware_time(ts) if isinstance(ts, str) else ts, NOW)  # type: ignore[arg-type]

    return {
        "topic": _step(payloads._route, [t for t, _ in TYPICAL], n),
        "checks": _step(checks, bodies, n),
        "msgspec": _step(lambda i: wires[i].decoder.decode(bodies[i]), list(range(4)), n),
        "fields": _step(msgspec.to_builtins, structs, n),
        "keys": _step(lambda p: p.translate(None, b" \t\n\r").count(b'":'), bodies, n),
        "time": _step(event_time, times, n),
        "reading": _step(rebuilt, readings, n),
    }


def main() -> None:
    fast, ref = per_message(TYPICAL, 40_000), per_message(TYPICAL, 40_000, decode_reference)
    poison = per_message(POISON, 2_000)
    poison_ref = per_message(POISON, 2_000, decode_reference)
    print(
        f"decode_us={fast:.2f} poison_us={poison:.1f}"
        f" reference_us={ref:.2f} reference_poison_us={poison_ref:.1f}"
    )
    print("steps_us " + " ".join(f"{k}={v:.2f}" for k, v in steps().items()))


if __name__ == "__main__":
    main()
