"""The journal's compact rows (:mod:`ingest.rowcodec`, kind and stream as one number, one index
for reads and duplicates) read back exactly as the text rows they replaced: every reader — the
rules worker's and the backtest's readings (``rows.to_reading``), the API's readings and
aggregates, the InfluxDB sink's lines, the rollups — gives the same answer from both, on
generated payloads of every kind. And a journal written by the version before (text rows, two
indexes) is moved to compact rows when opened, keeping its rows, ids and answers, and goes on
ingesting and dropping duplicates of what it held."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from ingest import rowcodec, rows
from ingest.journal import Journal
from ingest.lineproto import COLUMNS as LINE_COLUMNS
from ingest.lineproto import LineFormatter
from ingest.payloads import MODELS, Reading, decode
from ingest.rollups import RollupWorker
from tests.unit.test_decode_equivalence import SETTINGS, _valid, device_times, mutated, written

NOW = 1_795_777_822.0
DATA = Path(__file__).parent.parent / "data"
METRICS = ("heart_rate", "steps", "worn", "temperature_c", "co_ppm", "seq", "ts", "note")


def test_every_payload_field_has_its_number() -> None:
    fields = {name for model in MODELS.values() for name in model.model_fields}
    assert fields <= set(rowcodec.NAMES)


def _exact(v: Any) -> str:
    """``v`` as text that tells 1 from 1.0 from True, and keeps the order of keys."""
    return json.dumps(msgspec.to_builtins(v))


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    shape = draw(st.sampled_from(sorted(MODELS)))
    model = MODELS[shape]
    device = draw(st.sampled_from(["d-1", "d-2"]))
    topic = f"community/y/{shape[0]}/{device}/{shape[1]}"
    payload = draw(
        st.one_of(
            _valid(model).flatmap(lambda d: written(list(d.items()))),
            st.fixed_dictionaries({"ts": device_times, "seq": st.integers(0, 50)})
            .flatmap(lambda d, m=model: _valid(m).map(lambda v: {**v, **d}))  # type: ignore[misc]
            .flatmap(lambda d: written(list(d.items()))),
            mutated(model),
        )
    )
    return topic, payload


def _answers(journal: Journal) -> dict[str, Any]:
    """What every reader of the journal's rows answers."""
    RollupWorker(journal.path).run_until_idle()
    db = rowcodec.register(sqlite3.connect(journal.path))
    try:
        got = rows.after(db, 0, 10_000)
        lines = LineFormatter("y").lines(
            db.execute(f"SELECT {LINE_COLUMNS} FROM readings ORDER BY id").fetchall()
        )
    finally:
        db.close()
    devices = sorted({r[1] for r in got})
    return {
        "readings": [_exact(rows.to_reading(r, "y")) for r in got],
        "lines": lines,
        "api": {d: _exact(journal.readings(d)) for d in devices},
        "api_metric": {d: _exact(journal.readings(d, metric="heart_rate")) for d in devices},
        "aggregates": {
            (d, m, step): _exact(journal.readings(d, metric=m, step=step))
            for d in devices
            for m in METRICS
            for step in ("1m", "1h")
        },
    }


@SETTINGS
@given(st.lists(messages(), min_size=1, max_size=8))
def test_compact_rows_read_back_as_the_text_rows_they_replace(
    batch: list[tuple[str, bytes]],
) -> None:
    readings = [
        r
        for i, (topic, payload) in enumerate(batch)
        if isinstance(r := decode(topic, payload, NOW + i * 0.25), Reading)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        compact = Journal(Path(tmp) / "compact.db", synchronous="NORMAL")
        text = Journal(Path(tmp) / "text.db", synchronous="NORMAL")
        try:
            new = compact.write_batch(readings, []).new
            assert text.write_batch(readings, []).new == new
            db = sqlite3.connect(text.path)
            with db:  # as the version before stored them: the payload's text
                ids = [r[0] for r in db.execute("SELECT id FROM readings ORDER BY id")]
                db.executemany(
                    "UPDATE readings SET payload = ? WHERE id = ?",
                    [(r.payload.decode(), i) for i, r in zip(ids, new, strict=True)],
                )
            db.close()
            assert _answers(compact) == _answers(text)
        finally:
            compact.close()
            text.close()


def _old_journal(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript((DATA / "journal_text_rows.sql").read_text())
    db.close()


def test_a_journal_of_text_rows_is_moved_to_compact_rows_and_answers_as_before(
    tmp_path: Path,
) -> None:
    """tests/data/journal_text_rows.sql was written by the version before compact rows, and
    journal_text_rows.json holds what that version read back from it."""
    path = tmp_path / "journal.db"
    _old_journal(path)
    before = json.loads((DATA / "journal_text_rows.json").read_text())
    old = sqlite3.connect(path)
    cursor = old.execute("SELECT last_id FROM cursors WHERE name = 'rollup'").fetchone()[0]
    devices = old.execute("SELECT count(*) FROM devices").fetchone()[0]
    old.close()
    journal = Journal(path, synchronous="NORMAL")
    try:
        db = sqlite3.connect(path)
        columns = {r[1] for r in db.execute("PRAGMA table_xinfo(readings)")}
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type='index'")}
        got = rows.after(db, 0, 10_000)
        assert db.execute("SELECT last_id FROM cursors WHERE name = 'rollup'").fetchone()[0] == (
            cursor
        )
        assert db.execute("SELECT count(*) FROM devices").fetchone()[0] == devices
        assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 1
        db.close()
        assert "shape" in columns and "readings_dedup" not in indexes
        assert [r[0] for r in got] == before["ids"]
        # as that version read them, with the source id push added since (none for these)
        old_readings = [dict(r, key=None) for r in before["to_reading"]]
        assert [msgspec.to_builtins(rows.to_reading(r, "y")) for r in got] == old_readings
        for device, answer in before["api"].items():
            assert json.loads(json.dumps(journal.readings(device))) == answer
        hr = journal.readings("old-w1", metric="heart_rate", step="1m")
        assert json.loads(json.dumps(hr)) == before["api_hr_1m"]
        steps = journal.readings("old-w1", metric="steps", step="1m")
        assert json.loads(json.dumps(steps)) == before["api_note_1m"]

        # it goes on: messages it held come again (redelivered, resent) and are dropped; new
        # ones are kept, read back, and rolled up from where the rollups were
        ms = int(NOW * 1000)
        w = "community/y/wearable/old-w1/telemetry"
        again: list[tuple[str, dict[str, Any]]] = [
            (
                w,
                {"seq": 1, "ts": ms - 5000, "heart_rate": 71, "spo2": 97, "worn": True, "steps": 3},
            ),
            (w, {"seq": 3, "heart_rate": 73, "lat": 31.2, "lon": 121.4, "note": "x"}),
            (w, {"ts": ms - 4000, "heart_rate": 74}),
            ("community/y/wearable/old-w1/event", {"seq": 7, "ts": ms - 3000, "event": "fall"}),
        ]
        fresh: list[tuple[str, dict[str, Any]]] = [
            (w, {"seq": 12, "ts": ms + 1000, "heart_rate": 90}),
            (w, {"seq": 1, "ts": ms + 2000, "heart_rate": 91}),  # counter restarted
        ]
        out = journal.write_batch(
            [_reading(t, b, NOW + 500 + i) for i, (t, b) in enumerate(again + fresh)], []
        )
        assert out.duplicates == len(again)
        assert [r.values["heart_rate"] for r in out.new] == [90, 91]
        RollupWorker(path).run_until_idle()
        latest = journal.readings("old-w1", since=NOW + 0.5, until=NOW + 3)
        assert [r["values"] for r in latest] == [
            {"seq": 12, "ts": ms + 1000, "heart_rate": 90},
            {"seq": 1, "ts": ms + 2000, "heart_rate": 91},
        ]
        buckets = journal.readings("old-w1", metric="heart_rate", step="1h")
        held = sum(b["count"] for b in before["api_hr_1m"])
        assert sum(b["count"] for b in buckets) == held + 2
    finally:
        journal.close()


def _reading(topic: str, body: dict[str, Any], received: float) -> Reading:
    r = decode(topic, json.dumps(body).encode(), received)
    assert isinstance(r, Reading), r
    return r


def test_a_payload_msgpack_cannot_hold_stays_text() -> None:
    body = b'{"seq": 1, "huge": 1180591620717411303424}'  # 2**70: past MessagePack's integers
    assert rowcodec.dump(body, NOW, None, 1) == body.decode()
    packed = rowcodec.dump(b'{"seq": 1, "heart_rate": 70}', NOW, None, 1)
    assert isinstance(packed, bytes)
    assert rowcodec.load(packed, NOW, 1) == {"seq": 1, "heart_rate": 70}
