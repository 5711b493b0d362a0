"""A corpus of messages that once stopped ingestion or were kept wrongly, each named: what
decode makes of it, and that the journal stores that and gives it back."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.journal import SHAPES, Journal
from ingest.payloads import MAX_NUMBER, DeadLetter, Reading, decode

NOW = 1_795_777_822.0
WT = "community/y/wearable/wr-1/telemetry"
WE = "community/y/wearable/wr-1/event"

CORPUS: list[tuple[str, str, bytes, str]] = [
    # name, topic, payload, reason (or "reading")
    ("array 1500 deep", WT, b"[" * 1500 + b"]" * 1500, "too_deep"),
    ("array 900 deep is not 'not an object'", WT, b"[" * 900 + b"]" * 900, "too_deep"),
    ("object holding 300 arrays deep", WT, b'{"x": ' + b"[" * 300 + b"]" * 300 + b"}", "too_deep"),
    ("unclosed 2000 deep", WT, b"[" * 2000, "too_deep"),
    ("20 deep is kept", WT, b'{"x": ' + b"[" * 20 + b"]" * 20 + b"}", "reading"),
    ("ts of 400 digits", WT, b'{"ts": ' + b"9" * 400 + b"}", "too_large_number"),
    ("seq 2^63", WT, b'{"seq": 9223372036854775808}', "too_large_number"),
    (
        "seq as unsigned 64-bit -1",
        WE,
        b'{"event": "fall", "seq": 18446744073709551615}',
        "too_large_number",
    ),
    ("steps of 400 digits", WT, b'{"steps": ' + b"9" * 400 + b"}", "too_large_number"),
    ("steps 2^63 - 1", WT, b'{"steps": 9223372036854775807}', "too_large_number"),
    ("steps 2^53 - 1 is kept", WT, b'{"steps": %d}' % MAX_NUMBER, "reading"),
    ("negative 400 digits unknown", WT, b'{"x": -' + b"9" * 400 + b"}", "too_large_number"),
    ("1e400 in an unknown field", WT, b'{"x": 1e400}', "too_large_number"),
    ("1e400 in a list", WT, b'{"x": [1, 2, 1e400]}', "too_large_number"),
    ("heart rate 1e400", WT, b'{"heart_rate": 1e400}', "too_large_number"),
    ("co_ppm 1e300", "community/y/smoke/s-1/telemetry", b'{"co_ppm": 1e300}', "too_large_number"),
    ("1e-400 is zero, kept", WT, b'{"x": 1e-400}', "reading"),
    ("NaN", WT, b'{"x": NaN}', "not_json"),
    ("-Infinity in a known field", WT, b'{"heart_rate": -Infinity}', "not_json"),
    ("repeated key", WT, b'{"steps": 1, "steps": 2}', "duplicate_key"),
    ("repeated heart rate", WT, b'{"heart_rate": 72, "heart_rate": 190}', "duplicate_key"),
    ("repeated unknown key", WT, b'{"x": 1, "x": 2}', "duplicate_key"),
    ("repeated key, blank before colon", WT, b'{"x" : 1, "x" : 2}', "duplicate_key"),
    ("repeated key in a nested object", WT, b'{"a": {"b": 1, "b": 1}}', "duplicate_key"),
    ("repeated escaped key", WT, b'{"\\u0078": 1, "x": 2}', "duplicate_key"),
    ("a value starting with a colon", WT, b'{"a": ":x", "heart_rate": 70}', "reading"),
    ("a value starting with a blank, a colon", WT, b'{"a": " :x", "b": 1}', "reading"),
    ("repeated key, tab before colon", WT, b'{"x"\t: 1, "x"\t: 2}', "duplicate_key"),
    ("lone high surrogate", WT, b'{"note": "\\ud800"}', "lone_surrogate"),
    ("lone low surrogate key", WT, b'{"\\udc00": 1}', "lone_surrogate"),
    (
        "surrogate in fw",
        "community/y/gate/g-1/status",
        b'{"state": "online", "fw": "\\udfff"}',
        "lone_surrogate",
    ),
    ("surrogate pair is kept", WT, b'{"note": "\\ud83d\\ude00"}', "reading"),
    ("UTF-8 encoded surrogate", WT, b'{"note": "\xed\xa0\x80"}', "bad_utf8"),
    ("BOM, then an object", WT, b'\xef\xbb\xbf{"heart_rate": 70}', "reading"),
    ("UTF-16 with its BOM", WT, '{"heart_rate": 70}'.encode("utf-16"), "bad_utf8"),
    ("invalid UTF-8", WT, b'{"note": "\xc3\x28"}', "bad_utf8"),
    ("escaped NUL is kept", WT, b'{"note": "a\\u0000b"}', "reading"),
    ("raw NUL", WT, b'{"note": "a\x00b"}', "not_json"),
    ("empty", WT, b"", "not_json"),
    ("a string", WT, b'"fall"', "not_object"),
    ("a number", WT, b"72", "not_object"),
    ("year 9999 at -23:59", WT, b'{"ts": "9999-12-31T23:59:59-23:59"}', "reading"),
    ("year 1 at +23:59", WT, b'{"ts": "0001-01-01T00:00:00+23:59"}', "reading"),
    ("ts -2^53", WT, b'{"ts": -9007199254740991}', "reading"),
    ("trailing comma", WT, b'{"heart_rate": 70,}', "not_json"),
    ("topic with a lone surrogate", "community/y/\udc80/wr-1/telemetry", b"{}", "unknown_topic"),
]


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journal]:
    j = Journal(Path(tmp_path_factory.mktemp("corpus")) / "journal.db", synchronous="NORMAL")
    yield j
    j.close()


@pytest.mark.parametrize(
    ("name", "topic", "payload", "expected"), CORPUS, ids=[c[0] for c in CORPUS]
)
def test_each_case_is_decoded_truly_and_kept(
    journal: Journal, name: str, topic: str, payload: bytes, expected: str
) -> None:
    out = decode(topic, payload, NOW)
    if expected != "reading":
        assert isinstance(out, DeadLetter), out
        assert out.reason == expected, out.detail
        before = journal.dead_letter_counts().get(expected, 0)
        journal.write_batch([], [out])
        assert journal.dead_letter_counts()[expected] == before + 1
        items, _ = journal.dead_letters(reason=expected, limit=1)
        json.dumps(items, allow_nan=False)
        return
    assert isinstance(out, Reading), out
    device = f"c{CORPUS.index((name, topic, payload, expected))}"
    r = decode(topic.replace("wr-1", device), payload, NOW)
    assert isinstance(r, Reading)
    assert journal.write_batch([r], []).new == [r]
    rows = journal.readings(device)
    assert len(rows) == 1 and rows[0]["values"] == json.loads(r.payload)
    json.dumps(rows, allow_nan=False)


def test_a_bom_is_not_stored_and_far_dates_are_flagged() -> None:
    r = decode(WT, b'\xef\xbb\xbf{"heart_rate": 70}', NOW)
    assert isinstance(r, Reading) and r.payload == b'{"heart_rate": 70}'
    far = decode(WT, b'{"ts": "9999-12-31T23:59:59-23:59"}', NOW)
    assert isinstance(far, Reading) and (far.ts, far.ts_flag) == (NOW, "future")
    old = decode(WT, b'{"ts": "0001-01-01T00:00:00+23:59"}', NOW)
    assert isinstance(old, Reading) and (old.ts, old.ts_flag) == (NOW, "too_old")


def test_details_name_where_but_never_the_value() -> None:
    d = decode(WT, b'{"note": "Zhang \\ud800 Wei"}', NOW)
    assert isinstance(d, DeadLetter) and "note" in d.detail and "Zhang" not in d.detail
    d = decode(WT, b'{"heart_rate": 72, "heart_rate": 191}', NOW)
    assert isinstance(d, DeadLetter) and "heart_rate" in d.detail and "191" not in d.detail
    d = decode(WT, b'{"steps": 123456789012345678901}', NOW)
    assert isinstance(d, DeadLetter) and "123456789012345678901" not in d.detail


def test_rows_stored_before_decode_refused_them_still_read_as_json(tmp_path: Path) -> None:
    """A journal written by an older version holds ``NaN``, ``1e400`` and 400-digit numbers:
    its history reads them as null or leaves them out of sums, never an answer that cannot be
    encoded (which was a 500)."""
    j = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    body = '{"x": NaN, "y": 1e400, "big": ' + "9" * 400 + ', "heart_rate": 70}'
    with sqlite3.connect(tmp_path / "journal.db") as db:
        for i in range(3):
            db.execute(
                "INSERT INTO readings (device_id, shape, ts, received, payload)"
                " VALUES ('old-1', ?, ?, ?, ?)",
                (SHAPES["wearable", "telemetry"], NOW + i, NOW + i, body),
            )
    rows = j.readings("old-1")
    assert len(rows) == 3 and rows[0]["values"]["x"] is None and rows[0]["values"]["y"] is None
    json.dumps(rows, allow_nan=False)
    for metric in ("big", "y", "x"):
        json.dumps(j.readings("old-1", metric=metric, step="1m"), allow_nan=False)
    j.close()


def test_a_topic_of_a_community_not_installed_is_a_dead_letter_kept(journal: Journal) -> None:
    """With several communities declared, a topic of any other is ``unknown_community`` (even
    when its payload is bad too), stored and counted; one community alone takes any topic."""
    mine = frozenset({"y", "h"})
    good = b'{"heart_rate": 72}'
    out = decode("community/q/wearable/wr-1/telemetry", good, NOW, mine)
    assert isinstance(out, DeadLetter) and out.reason == "unknown_community"
    assert "'q'" in out.detail
    bad = decode("community/q/wearable/wr-1/telemetry", b"[" * 2000, NOW, mine)
    assert isinstance(bad, DeadLetter) and bad.reason == "unknown_community"
    assert isinstance(decode("community/h/wearable/wr-1/telemetry", good, NOW, mine), Reading)
    assert isinstance(decode("community/q/wearable/wr-1/telemetry", good, NOW), Reading)
    before = journal.dead_letter_counts().get("unknown_community", 0)
    journal.write_batch([], [out])
    assert journal.dead_letter_counts()["unknown_community"] == before + 1
