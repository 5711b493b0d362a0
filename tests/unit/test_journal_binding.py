"""The journal's insert (:func:`ingest.journal._row_runs`: null columns left out of the statement,
payloads bound as ``bytearray``, runs of rows with the same null columns) stores exactly what the
one nine-column insert before it stored: the same rows with the same ids, column values and
types (a payload still a BLOB, JSON text still TEXT), the same duplicates dropped and the same
readings reported new, batch after batch, on generated messages of every kind — with and without
``seq``, the device's time, a source's message id, events and states, repeats within a batch and
across batches."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from ingest.journal import SHAPES, BatchResult, Journal, dedup_key
from ingest.payloads import DeadLetter, Reading, decode
from ingest.rowcodec import dump
from tests.unit.test_decode_equivalence import SETTINGS
from tests.unit.test_journal_rows import NOW, messages

_NINE_COLUMNS = (
    "INSERT OR IGNORE INTO readings"
    " (device_id, shape, ts, received, seq, dedup, event, ts_flag, payload)"
    " VALUES (?,?,?,?,?,?,?,?,?)"
)


class _NineColumns(Journal):
    """The journal as it inserted before: every row through one statement, null columns bound
    as None, the payload as ``bytes``; duplicates found row by row the same way."""

    def write_batch(self, readings: Sequence[Reading], dead: Sequence[DeadLetter]) -> BatchResult:
        rows = [
            (
                r.device_id,
                SHAPES[r.kind, r.stream],
                r.ts,
                r.received,
                r.seq,
                None if (key := dedup_key(r)) == r.seq else key,
                r.event,
                r.ts_flag,
                dump(r.payload, r.ts, r.ts_flag, r.seq),
            )
            for r in readings
        ]
        with self._tx() as db:
            before = db.total_changes
            db.executemany(_NINE_COLUMNS, rows)
            new = (
                list(readings)
                if db.total_changes - before == len(rows)
                else self._new_only(readings)
            )
        return BatchResult(new, len(readings) - len(new), len(dead), 0.0)


def _stored(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT id, device_id, shape, ts, received, seq, dedup, event, ts_flag, payload,"
            " typeof(seq), typeof(dedup), typeof(event), typeof(ts_flag), typeof(payload)"
            " FROM readings ORDER BY id"
        ).fetchall()
    finally:
        db.close()


@st.composite
def batches(draw: st.DrawFn) -> list[list[Reading]]:
    """Batches of decoded messages, some again (a redelivery: the same message received later),
    some with a source's own message id."""
    out: list[list[Reading]] = []
    sent: list[Reading] = []
    for b in range(draw(st.integers(1, 3))):
        batch: list[Reading] = []
        for i, (topic, payload) in enumerate(draw(st.lists(messages(), min_size=1, max_size=6))):
            r = decode(topic, payload, NOW + b * 10 + i * 0.25)
            if not isinstance(r, Reading):
                continue
            if draw(st.booleans()) and draw(st.booleans()):
                r = msgspec.structs.replace(r, key=draw(st.sampled_from(["m-1", "m-2"])))
            batch.append(r)
            if draw(st.booleans()) and len(sent) > 0:
                again = draw(st.sampled_from(sent))
                batch.append(msgspec.structs.replace(again, received=NOW + b * 10 + i * 0.25))
        sent += batch
        out.append(batch)
    return out


@SETTINGS
@given(batches())
def test_the_insert_stores_what_the_nine_column_insert_stored(
    written: list[list[Reading]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "runs.db", synchronous="NORMAL")
        before = _NineColumns(Path(tmp) / "nine.db", synchronous="NORMAL")
        try:
            for batch in written:
                got, want = journal.write_batch(batch, []), before.write_batch(batch, [])
                assert (got.new, got.duplicates) == (want.new, want.duplicates)
            assert _stored(journal.path) == _stored(before.path)
        finally:
            journal.close()
            before.close()


_SHAPES = [
    ("telemetry", '{{"seq": {n}, "ts": {ms}, "heart_rate": 70, "steps": {n}}}'),
    ("telemetry", '{{"heart_rate": 71, "steps": {n}}}'),
    ("event", '{{"seq": {n}, "event": "fall"}}'),
    ("status", '{{"state": "online", "ts": 1000, "seq": {n}}}'),
]


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 80), st.sampled_from(["w-1", "w-2"])),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2),
)
def test_long_runs_store_what_the_nine_column_insert_stored(
    runs: list[tuple[int, int, str]], again: int
) -> None:
    """Runs longer than one multi-row insert (``_CHUNK`` rows) and their remainders, each row
    where it came, and the batch delivered ``again`` times more (a row with a key a duplicate)."""
    batch = []
    n = 0
    for shape, length, device in runs:
        stream, body = _SHAPES[shape]
        for _ in range(length):
            n += 1
            topic = f"community/y/wearable/{device}/{stream}"
            r = decode(topic, body.format(n=n, ms=int(NOW * 1000) - n).encode(), NOW)
            assert isinstance(r, Reading), r
            batch.append(r)
    redelivered = [msgspec.structs.replace(r, received=NOW + 5) for r in batch]
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "runs.db", synchronous="NORMAL")
        before = _NineColumns(Path(tmp) / "nine.db", synchronous="NORMAL")
        try:
            for b in [batch] + [redelivered] * again:
                got, want = journal.write_batch(b, []), before.write_batch(b, [])
                assert (got.new, got.duplicates) == (want.new, want.duplicates)
            assert _stored(journal.path) == _stored(before.path)
        finally:
            journal.close()
            before.close()


def test_a_batch_of_every_shape_of_null_columns_keeps_its_arrival_order(tmp_path: Path) -> None:
    """Rows of alternating null columns (telemetry, an event, a status with its ``ts_flag``, a
    message without ``seq``) are stored in arrival order, each with its own columns."""
    topics = [
        ("community/y/wearable/w-1/telemetry", b'{"seq": 1, "heart_rate": 70}'),
        ("community/y/wearable/w-1/event", b'{"seq": 2, "event": "fall"}'),
        ("community/y/wearable/w-1/telemetry", b'{"heart_rate": 71}'),
        ("community/y/wearable/w-1/status", b'{"state": "online", "ts": 1000}'),
        ("community/y/wearable/w-1/telemetry", b'{"seq": 3, "heart_rate": 72}'),
    ]
    readings = [decode(t, p, NOW + i) for i, (t, p) in enumerate(topics)]
    assert all(isinstance(r, Reading) for r in readings), readings
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    try:
        result = journal.write_batch([r for r in readings if isinstance(r, Reading)], [])
        assert result.duplicates == 0
        stored = _stored(journal.path)
    finally:
        journal.close()
    assert [(row[4], row[5], row[7], row[8]) for row in stored] == [
        (NOW, 1, None, None),
        (NOW + 1, 2, "fall", None),
        (NOW + 2, None, None, None),
        (NOW + 3, None, "online", "too_old"),
        (NOW + 4, 3, None, None),
    ]
    assert {row[14] for row in stored} == {"blob"}
