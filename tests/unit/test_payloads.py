"""Decoding at the edge: topics and payloads into typed readings, or dead letters with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.journal import Journal, dedup_key
from ingest.payloads import MAX_AGE_S, DeadLetter, Reading, decode
from ingest.topics import TopicError, parse_topic

NOW = 1_795_777_822.0  # 2026-11-27T03:10:22Z


def ok(topic: str, body: dict[str, object] | bytes, received: float = NOW) -> Reading:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = decode(topic, raw, received)
    assert isinstance(r, Reading), r
    return r


def dead(topic: str, raw: bytes) -> DeadLetter:
    d = decode(topic, raw, NOW)
    assert isinstance(d, DeadLetter), d
    return d


def test_a_wearable_reading_is_typed_and_keeps_unknown_fields() -> None:
    r = ok(
        "community/y/wearable/wr-1/telemetry",
        {"heart_rate": 72, "spo2": 97.5, "worn": True, "steps": 1200, "seq": 9, "model": "X2"},
    )
    assert (r.community, r.kind, r.device_id, r.stream, r.seq) == (
        "y",
        "wearable",
        "wr-1",
        "telemetry",
        9,
    )
    assert r.values == {"heart_rate": 72.0, "spo2": 97.5, "worn": True, "steps": 1200}
    assert r.extra == {"model": "X2"}
    assert r.ts == r.received == NOW  # no ts: the receive time


def test_events_and_status_carry_their_name_and_text_fields() -> None:
    g = ok(
        "community/y/gate/g-1/event",
        {"event": "denied", "direction": "in", "method": "card", "credential": "c-77"},
    )
    assert g.event == "denied"
    assert g.attrs == {"direction": "in", "method": "card", "credential": "c-77"}
    s = ok("community/y/smoke/s-1/status", {"state": "offline", "fw": "1.0.3"})
    assert (s.event, s.attrs) == ("offline", {"fw": "1.0.3"})


def test_device_time_in_rfc3339_with_offset_or_epoch_ms_is_the_event_time() -> None:
    r = ok("community/y/smoke/s-1/telemetry", {"ts": "2026-11-27T10:00:00+08:00"})
    assert r.ts == 1_795_744_800.0 and r.ts_flag is None
    r = ok("community/y/smoke/s-1/telemetry", {"ts": 1_795_777_000_000})
    assert r.ts == 1_795_777_000.0 and r.lag == pytest.approx(822.0)


@pytest.mark.parametrize(
    ("ts", "flag"),
    [(int((NOW + 600) * 1000), "future"), (int((NOW - MAX_AGE_S - 60) * 1000), "too_old")],
)
def test_an_unbelievable_device_time_is_replaced_by_the_receive_time_and_flagged(
    ts: int, flag: str
) -> None:
    r = ok("community/y/wearable/wr-1/telemetry", {"ts": ts, "heart_rate": 70})
    assert (r.ts, r.ts_flag) == (NOW, flag)


@pytest.mark.parametrize(
    ("topic", "raw", "reason"),
    [
        ("community/y/wearable/wr-1/telemetry", b"{nope", "not_json"),
        ("community/y/wearable/wr-1/telemetry", b'{"x": NaN}', "not_json"),
        ("community/y/wearable/wr-1/telemetry", b"\xff\xfe{}", "bad_utf8"),
        ("community/y/wearable/wr-1/telemetry", b"[1, 2]", "not_object"),
        ("community/y/wearable/wr-1/telemetry", b'{"heart_rate": "72"}', "wrong_type"),
        ("community/y/wearable/wr-1/telemetry", b'{"worn": 1}', "wrong_type"),
        ("community/y/wearable/wr-1/telemetry", b'{"ts": "2026-11-27T10:00:00"}', "wrong_type"),
        ("community/y/wearable/wr-1/telemetry", b'{"heart_rate": 251}', "out_of_range"),
        ("community/y/wearable/wr-1/telemetry", b'{"spo2": 49}', "out_of_range"),
        ("community/y/smoke/s-1/telemetry", b'{"co_ppm": Infinity}', "not_json"),
        ("community/y/smoke/s-1/telemetry", b'{"seq": -1}', "out_of_range"),
        ("community/y/smoke/s-1/event", b'{"event": "fall"}', "bad_value"),
        ("community/y/gate/g-1/event", b'{"event": "granted", "method": "magic"}', "bad_value"),
        ("community/y/gate/g-1/event", b"{}", "missing_field"),
        ("community/y/toaster/t-1/telemetry", b"{}", "unknown_topic"),
        ("community/y/gate/g 1/event", b"{}", "unknown_topic"),
        ("community/y/gate/g-1/event/extra", b"{}", "unknown_topic"),
        ("community/y/gate/g-1/event", b'{"p": "' + b"x" * 4100 + b'"}', "too_large"),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_its_reason(
    topic: str, raw: bytes, reason: str
) -> None:
    d = dead(topic, raw)
    assert d.reason == reason
    assert d.topic == topic and len(d.payload) <= 4096 and d.detail


def test_a_dead_letter_detail_names_the_field_but_not_the_value() -> None:
    d = dead("community/y/wearable/wr-1/telemetry", b'{"heart_rate": 251}')
    assert "heart_rate" in d.detail and "251" not in d.detail


def test_topics_are_split_once_and_bad_ones_say_why() -> None:
    t = parse_topic("community/y/wearable/wr-1/event")
    assert (t.community, t.kind, t.device_id, t.stream) == ("y", "wearable", "wr-1", "event")
    with pytest.raises(TopicError, match="unknown stream"):
        parse_topic("community/y/wearable/wr-1/log")


def test_duplicates_are_recognised_by_seq_and_device_time_not_by_seq_alone(
    tmp_path: Path,
) -> None:
    body = {"seq": 5, "ts": 1_795_777_000_000, "event": "fall"}
    first = ok("community/y/wearable/wr-1/event", body)
    again = ok("community/y/wearable/wr-1/event", body, received=NOW + 30)  # redelivered
    rebooted = ok("community/y/wearable/wr-1/event", {**body, "ts": 1_795_777_500_000})
    no_ts = ok("community/y/wearable/wr-1/event", {"seq": 5, "event": "fall"})
    no_ts_again = ok("community/y/wearable/wr-1/event", {"seq": 5, "event": "fall"}, NOW + 30)
    other = ok("community/y/wearable/wr-2/event", {"seq": 5, "event": "fall"})
    neither = ok("community/y/wearable/wr-1/event", {"event": "fall"})
    assert dedup_key(neither) is None  # nothing tells a resend from a new message
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    try:
        kept = journal.write_batch([first, again, rebooted, no_ts, no_ts_again, other], []).new
        # counter restarted (a new time): a new fall; without the device's time, seq alone
        assert kept == [first, rebooted, no_ts, other]
        assert journal.write_batch([neither, neither], []).new == [neither, neither]
    finally:
        journal.close()
