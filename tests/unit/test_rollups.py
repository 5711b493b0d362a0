"""Rollups against a real journal in tmp_path: they must agree exactly with aggregating the raw
readings, whether the worker is caught up, half way, or never ran."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ingest import follower, rollups, rowcodec
from ingest import rows as jrows
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.rollups import RollupWorker
from rules.sources import SqliteRows

T0 = 1_699_999_200.0  # on an hour boundary


def reading(device: str, at: float, kind: str = "wearable", **body: Any) -> Reading:
    r = decode(
        f"community/y/{kind}/{device}/telemetry",
        json.dumps({"ts": int(at * 1000), **body}).encode(),
        at + 5,
    )
    assert isinstance(r, Reading), r
    return r


def raw_buckets(path: Path, device: str, metric: str, width: int) -> list[tuple[Any, ...]]:
    """The reference: every raw reading aggregated by SQL, as the journal did before rollups."""
    db = rowcodec.register(sqlite3.connect(path))
    try:
        return db.execute(
            "SELECT CAST(ts / ?1 AS INTEGER) * ?1 AS b, min(v), max(v), avg(v), count(v) FROM"
            " (SELECT ts, json_extract(payload_json(payload, ts, seq), ?2) AS v FROM readings"
            "  WHERE device_id = ?3 AND stream = 'telemetry') WHERE v IS NOT NULL"
            " GROUP BY b ORDER BY b",
            (width, "$." + metric, device),
        ).fetchall()
    finally:
        db.close()


def as_tuples(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(int(i["ts"]), i["min"], i["max"], i["mean"], i["count"]) for i in items]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    rng = random.Random(3)
    batch = []
    for i in range(3000):
        at = T0 + i * 7 + rng.random()
        batch.append(
            reading(
                "w-1",
                at,
                heart_rate=rng.randint(55, 120),
                worn=rng.random() > 0.1,
                skin_temp_c=round(rng.uniform(34, 37), 2),
                seq=i,
            )
        )
        batch.append(reading("w-2", at, steps=i * 3, lat=36.06, seq=i))
        batch.append(reading("s-1", at, kind="smoke", obscuration_pct_m=rng.random(), seq=i))
    for i in range(50):  # late: an hour and more in the past, after later ones were journaled
        batch.append(reading("w-1", T0 + 600 + i, heart_rate=150, seq=10_000 + i))
    for n in range(0, len(batch), 700):
        j.write_batch(batch[n : n + 700], [])
    return j


@pytest.mark.parametrize(
    ("device", "metric"),
    [
        ("w-1", "heart_rate"),
        ("w-1", "worn"),
        ("w-1", "skin_temp_c"),
        ("w-2", "steps"),
        ("s-1", "obscuration_pct_m"),
    ],
)
@pytest.mark.parametrize("step", ["1m", "1h"])
def test_rollups_agree_with_the_raw_readings(
    journal: Journal, device: str, metric: str, step: str
) -> None:
    width = rollups.WIDTHS[step]
    expected = raw_buckets(journal.path, device, metric, width)
    before = as_tuples(journal.readings(device, metric=metric, step=step))  # type: ignore[arg-type]
    worker = RollupWorker(journal.path, batch_rows=997, duty=1.0)
    db = worker.open()
    for _ in range(4):  # part of the way: rollups for the first rows, raw for the rest
        worker.step(db)
    half = as_tuples(journal.readings(device, metric=metric, step=step))  # type: ignore[arg-type]
    while worker.step(db):
        pass
    db.close()
    done = as_tuples(journal.readings(device, metric=metric, step=step))  # type: ignore[arg-type]
    for got in (before, half, done):
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert [g[4] for g in got] == [e[4] for e in expected]
        assert [g[1] for g in got] == [e[1] for e in expected]
        assert [g[2] for g in got] == [e[2] for e in expected]
        assert [g[3] for g in got] == pytest.approx([e[3] for e in expected])


def test_a_chart_window_and_limit(journal: Journal) -> None:
    RollupWorker(journal.path).run_until_idle()
    since, until = T0 + 90, T0 + 300  # buckets starting 60 (holds since), 120, 180, 240
    items = journal.readings("w-1", metric="heart_rate", step="1m", since=since, until=until)
    assert [i["ts"] for i in items] == [T0 + 60, T0 + 120, T0 + 180, T0 + 240]
    first = journal.readings("w-1", metric="heart_rate", step="1m", limit=3)
    assert [i["ts"] for i in first] == [T0, T0 + 60, T0 + 120]


def test_each_reading_counts_once_across_restarts(journal: Journal) -> None:
    w = RollupWorker(journal.path, batch_rows=1000, duty=1.0)
    db = w.open()
    w.step(db)
    db.close()
    RollupWorker(journal.path).run_until_idle()  # a new process: resumes from the cursor
    RollupWorker(journal.path).run_until_idle()
    total = sum(i["count"] for i in journal.readings("w-2", metric="steps", step="1h"))
    assert total == 3000


def test_unknown_metrics_are_aggregated_from_raw_readings(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", synchronous="NORMAL")
    j.write_batch([reading("w-1", T0 + i, heart_rate=60, pressure=i, seq=i) for i in range(4)], [])
    RollupWorker(j.path).run_until_idle()
    (bucket,) = j.readings("w-1", metric="pressure", step="1m")
    assert (bucket["min"], bucket["max"], bucket["count"]) == (0, 3, 4)


def test_non_finite_values_are_left_out(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", synchronous="NORMAL")
    rows = [reading("s-1", T0, kind="smoke", co_ppm=3, seq=1)]
    for n, text in enumerate([b'{"co_ppm": 1e400, "seq": 2}', b'{"co_ppm": Infinity, "seq": 3}']):
        r = decode("community/y/smoke/s-1/telemetry", text, T0 + 1 + n)
        if isinstance(r, Reading):
            rows.append(r)
    j.write_batch(rows, [])
    for run in (False, True):
        if run:
            RollupWorker(j.path).run_until_idle()
        (bucket,) = j.readings("s-1", metric="co_ppm", step="1m")
        assert (bucket["max"], bucket["count"]) == (3, 1)


def test_pruning_keeps_recent_buckets(journal: Journal) -> None:
    RollupWorker(journal.path).run_until_idle()
    db = sqlite3.connect(journal.path)
    deleted = rollups.prune_buckets(db, {"1m": T0 + 3600, "1h": T0}, pause_s=0)
    db.close()
    assert deleted > 0
    items = journal.readings("w-1", metric="heart_rate", step="1m")
    assert items[0]["ts"] == T0 + 3600
    assert journal.readings("w-1", metric="heart_rate", step="1h")[0]["ts"] == T0


_ODD = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=3), st.none())
_VALID = {  # values each field accepts (others make the message a dead letter)
    "heart_rate": st.one_of(st.integers(20, 250), st.floats(20, 250)),
    "spo2": st.integers(50, 100),
    "steps": st.integers(0, 10**6),
    "worn": st.booleans(),
    "battery": st.integers(0, 100),
    "co_ppm": st.one_of(st.floats(0, 1000), st.sampled_from([0.0, -0.0, 0])),
    "temperature_c": st.floats(-40, 100),
    "extra": _ODD,
}
_BODIES = st.lists(st.sampled_from(list(_VALID)), unique=True, min_size=1, max_size=4).flatmap(
    lambda names: st.fixed_dictionaries(
        {n: st.one_of(_VALID[n], _VALID[n], _VALID[n], _ODD) for n in names}
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["wearable", "smoke", "gate"]),
            st.sampled_from(["d-1", "d-2", "d-3"]),
            st.floats(0, 7200),
            _BODIES,
            st.sampled_from(["compact", "text", "text_nan"]),
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(0, 40),
)
def test_staging_by_stored_keys_is_staging_by_name(
    tmp_path_factory: Any, items: list[tuple[str, str, float, dict[str, Any], str]], cut: int
) -> None:
    """:func:`rollups.stage` (a compact payload's fields looked up by their stored keys) gives
    what naming every field first gives (:func:`rollups.stage_by_name`), for compact rows, rows
    kept as JSON text (NaN in them: no values) and values of every type, exactly."""
    j = Journal(tmp_path_factory.mktemp("r") / "j.db", synchronous="NORMAL")
    texts: list[tuple[str, int]] = []
    for n, (kind, device, at, body, form) in enumerate(items):
        r = decode(
            f"community/y/{kind}/{device}/telemetry",
            json.dumps({"seq": n, **body}).encode(),
            T0 + at,
        )
        if not isinstance(r, Reading):
            continue
        j.write_batch([r], [])
        if form != "compact":
            text = {**body, "x": float("nan")} if form == "text_nan" else body
            texts.append((json.dumps(text), n))
    db = sqlite3.connect(j.path)
    assume(db.execute("SELECT count(*) FROM readings").fetchone()[0] > 0)
    db.executemany("UPDATE readings SET payload = ? WHERE seq = ?", texts)
    db.commit()
    (top,) = db.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()
    for after, upto in ((0, top), (min(cut, top), top), (0, min(cut, top))):
        fast = rollups.stage(db, after, upto)
        slow = rollups.stage_by_name(db, after, upto)
        read = db.execute(rollups._READ, (after, upto)).fetchall()
        assert fast == rollups.fold_by_key(read)  # the same rows in the same order
        key = lambda t: t[:3]  # noqa: E731
        assert sorted(fast, key=key) == sorted(slow, key=key)
        for f, s in zip(sorted(fast, key=key), sorted(slow, key=key), strict=True):
            assert [math.copysign(1.0, x) for x in f[3:6]] == [
                math.copysign(1.0, x) for x in s[3:6]
            ]
    db.close()


_NUMBER = {  # rolled-up values that are all finite numbers: what the columns path answers
    "heart_rate": st.one_of(st.integers(20, 250), st.floats(20, 250)),
    "spo2": st.integers(50, 100),
    "steps": st.integers(0, 10**6),
    "worn": st.booleans(),
    "battery": st.integers(0, 100),
    "co_ppm": st.one_of(st.floats(0, 1000), st.sampled_from([0.0, -0.0, 0])),
    "temperature_c": st.floats(-40, 100),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["wearable", "smoke", "gate", "smoke"]),
            st.sampled_from(["d-1", "d-2", "d-3"]),
            st.floats(0, 200),
            st.lists(st.sampled_from(list(_NUMBER)), unique=True, max_size=4).flatmap(
                lambda names: st.fixed_dictionaries({n: _NUMBER[n] for n in names})
            ),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_folding_by_columns_is_folding_by_key(
    tmp_path_factory: Any, items: list[tuple[str, str, float, dict[str, Any]]]
) -> None:
    """:func:`rollups.fold` (each metric's values of a minute at once) gives exactly what
    folding one value at a time gives, in the same order and with the same signs of zero,
    for valid readings of several kinds, devices and minutes (a device under two kinds, a
    minute whose first row has no metric)."""
    j = Journal(tmp_path_factory.mktemp("r") / "j.db", synchronous="NORMAL")
    got = [
        decode(
            f"community/y/{kind}/{device}/telemetry",
            json.dumps({"seq": n, **body}).encode(),
            T0 + at,
        )
        for n, (kind, device, at, body) in enumerate(items)
    ]
    j.write_batch([r for r in got if isinstance(r, Reading)], [])
    db = sqlite3.connect(j.path)
    read = db.execute(rollups._READ, (0, 10**9)).fetchall()
    db.close()
    fast, slow = rollups.fold(read), rollups.fold_by_key(read)
    assert fast == slow
    for f, s in zip(fast, slow, strict=True):
        assert [math.copysign(1.0, x) for x in f[3:6]] == [math.copysign(1.0, x) for x in s[3:6]]


def _rollup_rows(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return [
            (step, *row)
            for step in rollups.WIDTHS
            for row in db.execute(
                f"SELECT s.device_id, s.metric, r.bucket, r.vmin, r.vmax, r.vsum, r.n"
                f" FROM rollup_{step} AS r JOIN rollup_series AS s ON s.id = r.series"
                " ORDER BY s.device_id, s.metric, r.bucket"
            )
        ]
    finally:
        db.close()


def _copy(journal: Journal, to: Path) -> Path:
    src, dst = sqlite3.connect(journal.path), sqlite3.connect(to)
    src.backup(dst)
    src.close()
    dst.close()
    return to


@pytest.mark.parametrize("seed", range(16))
def test_rows_offered_by_the_rules_worker_roll_up_as_the_journal_does(
    tmp_path: Path, journal: Journal, seed: int
) -> None:
    """The rollups folding the rows the rules worker read (:meth:`RollupWorker.offer`) write
    exactly the rollups of reading the journal themselves, each reading once: the worker's
    reads in batches of any size, the rollups behind, ahead or level with it, the same rows
    offered again (a worker that read again from its committed cursor), offers dropped."""
    rng = random.Random(seed)
    alone, fed = _copy(journal, tmp_path / "alone.db"), _copy(journal, tmp_path / "fed.db")
    RollupWorker(alone, batch_rows=500, duty=1.0).run_until_idle()
    worker = RollupWorker(fed, batch_rows=rng.choice([50, 500, 3000]), duty=1.0)
    worker.fed_max = rng.choice([1_000, 100_000])
    db = worker.open()
    reader = follower.connect(fed, readonly=True)
    (top,) = reader.execute("SELECT max(id) FROM readings").fetchone()
    read = rng.randrange(0, 2000)  # the rules worker's cursor: behind or ahead of the rollups
    while read < top:
        if rng.random() < 0.1:
            read = max(0, read - rng.randrange(0, 1500))  # read again from an older cursor
        batch = jrows.after(reader, read, rng.randrange(1, 1200))
        worker.offer(read, batch)
        read = batch[-1][0]
        for _ in range(rng.randrange(0, 3)):
            worker.step(db)
    while worker.step(db):
        pass
    reader.close()
    db.close()
    assert worker.position == top
    got, expected = _rollup_rows(fed), _rollup_rows(alone)
    assert [g[:6] + g[7:] for g in got] == [e[:6] + e[7:] for e in expected]
    # a bucket's sum is added up batch by batch, and where batches end depends on when the
    # worker looked (the journal's head), as before: equal to the last bits only
    assert [g[6] for g in got] == pytest.approx([e[6] for e in expected], rel=1e-12)


def test_the_rules_source_offers_what_it_read(journal: Journal) -> None:
    """The rules worker's journal source hands each batch it read, with the id it read after,
    to its tap (the service wires the rollups' :meth:`RollupWorker.offer` there)."""
    worker = RollupWorker(journal.path, batch_rows=10_000, duty=1.0)
    source = SqliteRows(journal.path, tap=worker.offer)
    while source.read(700)[1]:
        pass
    source.close()
    worker.run_until_idle()
    assert worker.from_journal == 0
    assert worker.position == journal_head(journal.path)


def journal_head(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT max(id) FROM readings").fetchone()[0])
    finally:
        db.close()
