"""The InfluxDB sink over a real journal with a scripted writer: what it retries, what it sets
aside, when it raises and clears the trouble, and that a restart resumes from the cursor.
(The real server is met in tests/integration/test_influx_sink.py.)"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from base.sql import PgDb
from district.migrate import migrate
from district.pg import connect as pg_connect
from ingest import follower
from ingest.follower import Retry
from ingest.influx import SCHEMA, InfluxSink, SinkSource
from ingest.influx_pg import PgSource
from ingest.influx_writer import WriteError
from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from ingest.payloads import Reading, decode
from tests.clock import FakeClock as Clock
from tests.mqtt import wait_for
from tests.schemas import columns

T0 = 1_700_000_000.0


class ScriptedWriter:
    """Accepts what ``verdict`` lets through; records every accepted line."""

    def __init__(self, verdict: Callable[[list[str]], WriteError | None] | None = None) -> None:
        self.verdict = verdict or (lambda lines: None)
        self.accepted: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()

    def write(self, body: bytes) -> None:
        lines = body.decode().split("\n")
        with self.lock:
            self.calls += 1
            err = self.verdict(lines)
            if err is not None:
                raise err
            self.accepted.extend(lines)

    def close(self) -> None:
        pass


def fill(journal: Journal | PgJournal, n: int, device: str = "w-1", start: int = 0) -> None:
    readings = []
    for i in range(start, start + n):
        body = {"seq": i, "ts": int((T0 + i) * 1000), "heart_rate": 60 + i % 40}
        r = decode(f"community/y/wearable/{device}/telemetry", json.dumps(body).encode(), T0 + i)
        assert isinstance(r, Reading)
        readings.append(r)
    journal.write_batch(readings, [])


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    yield j
    j.close()


class Store:
    """A journal to fill, and the sink's source over it: the SQLite file, or PostgreSQL's
    partitions (``url``)."""

    def __init__(self, journal: Journal | PgJournal, url: str | None = None) -> None:
        self.journal = journal
        self.url = url

    def source(self) -> Path | SinkSource:
        if isinstance(self.journal, Journal):
            return self.journal.path
        assert self.url is not None
        return PgSource(self.url, partitions=range(self.journal.partitions))

    def rejects(self) -> list[tuple[int | None, str, str]]:
        """(status, reason, line) of the points set aside, in reading order."""
        query = "SELECT status, reason, line FROM sink_rejects ORDER BY reading_id"
        if self.url is None:
            assert isinstance(self.journal, Journal)
            with closing(sqlite3.connect(self.journal.path)) as db:
                return db.execute(query).fetchall()
        with pg_connect(self.url) as pg:
            return pg.execute(query).fetchall()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        j = Journal(tmp_path / "journal.db", synchronous="NORMAL")
        yield Store(j)
        j.close()
        return
    url: str = request.getfixturevalue("pg_url")
    pj = PgJournal(url)
    yield Store(pj, url)
    pj.close()


def sink(journal: Journal | Store, writer: ScriptedWriter, **kw: object) -> InfluxSink:
    options: dict[str, object] = {
        "community": "y",
        "batch": 100,
        "backoff_max_s": 0.05,
        "idle_s": 0.02,
    }
    options.update(kw)
    where = journal.path if isinstance(journal, Journal) else journal.source()
    s = InfluxSink(where, writer, **options)  # type: ignore[arg-type]
    s.start()
    return s


def timestamps(lines: list[str]) -> Counter[str]:
    return Counter(line.rsplit(" ", 1)[1] for line in lines)


def test_every_reading_once_in_order_with_the_cursor_kept(journal: Journal) -> None:
    fill(journal, 1234)
    w = ScriptedWriter()
    s = sink(journal, w)
    wait_for(lambda: s.position == 1234 and s.backlog_rows == 0, timeout=20)
    fill(journal, 66, start=1234)  # ingestion goes on: the sink follows
    wait_for(lambda: s.position == 1300, timeout=20)
    s.stop()
    assert len(w.accepted) == 1300 and set(timestamps(w.accepted).values()) == {1}
    assert w.accepted == sorted(w.accepted, key=lambda line: int(line.rsplit(" ", 1)[1]))
    db = sqlite3.connect(journal.path)
    assert db.execute("SELECT last_id FROM cursors WHERE name = 'influx'").fetchone() == (1300,)


@pytest.mark.expect_errors("jiayuan_influx_write_errors_total")
@pytest.mark.parametrize(
    "error",
    [
        WriteError(None, "connection refused"),
        WriteError(503, "unavailable"),
        WriteError(429, "slow down", retry_after=0.01),
        WriteError(401, "bad token"),
        WriteError(404, "bucket not found"),
    ],
    ids=["connection", "5xx", "429", "auth", "404"],
)
def test_failures_that_can_pass_are_retried_and_lose_nothing(
    journal: Journal, error: WriteError
) -> None:
    fill(journal, 500)
    failures = iter(range(7))
    w = ScriptedWriter(lambda lines: error if next(failures, None) is not None else None)
    s = sink(journal, w)
    wait_for(lambda: s.position == 500, timeout=20)
    s.stop()
    assert w.calls >= 12 and len(w.accepted) == 500 and len(set(w.accepted)) == 500
    assert s.rejected == 0


@pytest.mark.expect_errors('jiayuan_log_errors_total{logger="ingest.follower"}')
def test_an_unexpected_failure_loses_no_batch(journal: Journal) -> None:
    # a request that fails in a way nobody planned for (not a WriteError) is logged by the
    # follower and taken again from the cursor: its batch is not skipped
    fill(journal, 500)
    calls = iter(range(10_000))

    def verdict(lines: list[str]) -> WriteError | None:
        if next(calls) == 1:
            raise RuntimeError("a bug in the client library")
        return None

    w = ScriptedWriter(verdict)
    s = sink(journal, w)
    wait_for(lambda: s.position == 500, timeout=20)
    s.stop()
    assert len(w.accepted) == 500 and len(set(w.accepted)) == 500


@pytest.mark.expect_errors(
    "jiayuan_influx_write_errors_total", "jiayuan_influx_points_rejected_total"
)
def test_refused_points_are_set_aside_and_never_block_the_rest(store: Store) -> None:
    fill(store.journal, 300)
    fill(store.journal, 3, device="bad-1", start=300)
    fill(store.journal, 200, start=303)
    refusal = WriteError(400, 'partial write: field type conflict: input field "heart_rate"')

    def verdict(lines: list[str]) -> WriteError | None:  # all or nothing, like a 400 can be
        return refusal if any("device_id=bad-1" in line for line in lines) else None

    w = ScriptedWriter(verdict)
    s = sink(store, w, batch=64)
    wait_for(lambda: s.rejected == 3 and s.backlog_rows == 0, timeout=20)
    s.stop()
    assert len(set(w.accepted)) == 500 and s.health()["rejected_points"] == 3
    if store.url is None:  # the cursor stops within a batch: nothing was sent twice
        assert len(w.accepted) == 500
    rows = store.rejects()
    assert [int(r[2].rsplit(" ", 1)[1]) for r in rows] == [(T0 + i) * 1000 for i in (300, 301, 302)]
    assert all(r[0] == 400 and "field type conflict" in r[1] and "bad-1" in r[2] for r in rows)
    assert s.prune_rejects(time.time() + 1) == 3 and s.rejected == 0 and store.rejects() == []


@pytest.mark.expect_errors(
    "jiayuan_influx_write_errors_total", "jiayuan_influx_points_rejected_total"
)
def test_an_outage_in_the_middle_of_a_split_resends_nothing_settled(store: Store) -> None:
    # the step is taken again from the cursor after an outage: on SQLite the halves the split
    # already settled (written or set aside) lie behind it, so none is sent or set aside twice;
    # on PostgreSQL the cursors move per batch, so a settled half may go again (kept once by
    # the store) and a refused point is set aside once all the same
    fill(store.journal, 300)
    fill(store.journal, 3, device="bad-1", start=300)
    fill(store.journal, 200, start=303)
    refusal = WriteError(400, 'partial write: field type conflict: input field "heart_rate"')
    calls = iter(range(10_000))
    refused: list[int] = []
    outages: list[int] = []

    def verdict(lines: list[str]) -> WriteError | None:
        n = next(calls)
        if refused and len(outages) < 4 and n % 2 == 0:
            outages.append(n)
            return WriteError(503, "unavailable")
        if any("device_id=bad-1" in line for line in lines):
            refused.append(n)
            return refusal
        return None

    w = ScriptedWriter(verdict)
    s = sink(store, w, batch=64)
    wait_for(lambda: s.rejected == 3 and s.backlog_rows == 0, timeout=20)
    s.stop()
    assert len(outages) == 4  # the outages came while the split was under way
    assert len(set(w.accepted)) == 500 and len(store.rejects()) == 3
    if store.url is None:
        assert len(w.accepted) == 500


@pytest.mark.expect_errors("jiayuan_influx_write_errors_total")
def test_a_server_asking_to_wait_is_waited_for(journal: Journal) -> None:
    fill(journal, 10)
    w = ScriptedWriter(lambda lines: WriteError(429, "slow down", retry_after=30.0))
    s = InfluxSink(journal.path, w, community="y", backoff_max_s=2.0)
    db = s.open()
    with pytest.raises(Retry) as raised:
        s.step(db)
    s.failures = 1
    assert s.retry_delay(raised.value.after_s) == 30.0  # longer than its own backoff
    w.verdict = lambda lines: WriteError(429, "slow down", retry_after=86_400.0)
    with pytest.raises(Retry) as raised:
        s.step(db)
    assert s.retry_delay(raised.value.after_s) == 60.0  # but not for a day
    assert s.position == 0 and s.health()["status"] == "retrying"
    db.close()
    s.stop()


@pytest.mark.expect_errors(
    "jiayuan_influx_write_errors_total", "jiayuan_influx_points_rejected_total"
)
def test_a_line_too_large_alone_is_set_aside(journal: Journal) -> None:
    fill(journal, 40)
    w = ScriptedWriter(lambda lines: WriteError(413, "too large") if len(lines) > 8 else None)
    s = sink(journal, w, batch=40)
    wait_for(lambda: s.position == 40, timeout=20)
    s.stop()
    assert len(w.accepted) == 40 and s.rejected == 0


@pytest.mark.expect_errors(
    "jiayuan_influx_write_errors_total", 'jiayuan_log_errors_total{logger="ingest.influx"}'
)
def test_trouble_is_raised_after_the_configured_time_and_cleared_on_drain(
    journal: Journal,
) -> None:
    fill(journal, 250)
    clock = Clock()
    down = threading.Event()
    down.set()

    def verdict(lines: list[str]) -> WriteError | None:
        if down.is_set():
            clock.t += 1.0  # each failed attempt "takes" a second
            return WriteError(None, "connection refused")
        return None

    calls: list[tuple[bool, float]] = []
    w = ScriptedWriter(verdict)
    s = sink(
        journal,
        w,
        trouble_after_s=5.0,
        clock=clock,
        on_trouble=lambda raised, at: calls.append((raised, at)),
    )
    wait_for(lambda: calls, timeout=20)
    assert calls == [(True, T0 + 1)]  # since the first failure
    assert s.health()["status"] == "unreachable" and s.health()["backlog_rows"] == 250
    down.clear()
    wait_for(lambda: len(calls) == 2, timeout=20)
    assert calls[1][0] is False and s.position == 250
    assert s.health()["status"] == "ok"
    s.stop()


def test_an_open_trouble_from_before_a_restart_is_cleared_on_drain(journal: Journal) -> None:
    fill(journal, 10)
    calls: list[bool] = []
    s = sink(
        journal,
        ScriptedWriter(),
        trouble_open=True,
        on_trouble=lambda raised, at: calls.append(raised),
    )
    wait_for(lambda: calls == [False], timeout=20)
    s.stop()


@pytest.mark.expect_errors("jiayuan_influx_write_errors_total")
def test_a_restart_resumes_from_the_cursor_and_resends_nothing_accepted(
    journal: Journal,
) -> None:
    fill(journal, 1000)
    budget = iter(range(4))  # four batches go through, then the server vanishes
    first = ScriptedWriter(
        lambda lines: None if next(budget, None) is not None else WriteError(None, "gone")
    )
    s = sink(journal, first)
    wait_for(lambda: s.position == 400 and s.down_since is not None, timeout=20)
    s.stop()
    second = ScriptedWriter()
    s2 = sink(journal, second)
    wait_for(lambda: s2.position == 1000, timeout=20)
    s2.stop()
    both = first.accepted + second.accepted
    assert len(both) == 1000 and len(set(both)) == 1000


def test_retention_keeps_what_the_sink_has_not_sent(journal: Journal) -> None:
    fill(journal, 100)  # received T0 … T0 + 99
    assert journal.prune(T0 + 1000, keep_after=40, pause_s=0) == 40
    assert journal.count_readings() == 60
    assert journal.prune(T0 + 1000, pause_s=0) == 59  # all but the newest


def test_retention_never_empties_the_journal_so_new_readings_follow_the_cursors(
    journal: Journal,
) -> None:
    """Ids are rowids: an empty table would hand out 1, 2, … again, below every follower's
    cursor, and the rules, rollups and sink would skip that many new readings."""
    fill(journal, 100)
    with closing(follower.connect(journal.path)) as db:
        top = follower.head(db)
        journal.prune(T0 + 10_000, pause_s=0)
        assert journal.count_readings() == 1
        fill(journal, 5, start=100)
        assert follower.head(db) == top + 5


def test_both_journals_set_points_aside_in_the_same_columns(pg_url: str) -> None:
    """``sink_rejects``: ingest/influx.py's SCHEMA on SQLite, district/migrations/0008_sink.sql
    on PostgreSQL (the sink's cursors differ on purpose: ``cursors``, ``follower_cursors``)."""
    with closing(sqlite3.connect(":memory:")) as db, pg_connect(pg_url, autocommit=True) as pg:
        db.executescript(SCHEMA)
        migrate(pg)
        lite = columns(db, ["sink_rejects"])
        on_both = columns(PgDb(pg), lite)
    assert set(lite) == {"sink_rejects"}
    assert on_both == lite


def test_settings_turn_the_sink_on_and_fail_fast() -> None:
    from pydantic import ValidationError

    from jiayuan.settings import Settings

    assert Settings(influx_url="").influx_url is None
    on = Settings(influx_url="http://127.0.0.1:8086", influx_token="s3cret")
    assert on.influx_url == "http://127.0.0.1:8086" and "s3cret" not in repr(on)
    with pytest.raises(ValidationError, match="influx_url"):
        Settings(influx_url="influx:8086")
    with pytest.raises(ValidationError, match="influx_org"):
        Settings(influx_url="http://127.0.0.1:8086", influx_org="")
