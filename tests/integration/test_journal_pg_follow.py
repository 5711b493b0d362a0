"""The PostgreSQL journal's read side for the rules worker
(:class:`ingest.journal_pg.JournalFollower`): rows written by several instances at once reach
the follower once each, every device's in the order written, none past a transaction still
open; and they are the rows the SQLite journal gives its followers, so the rules worker can
evaluate them as they are."""

from __future__ import annotations

import json
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from ingest import rows
from ingest.journal import Journal
from ingest.journal_pg import JournalFollower, PgJournal
from ingest.payloads import Reading, decode
from registry import Device, Registry, Resident
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.replay import FastRows
from rules.worker import _Readings

NOW = math.floor(time.time() / 86_400) * 86_400 + 12 * 3600.0
PARTITIONS = 4
RULES = load_rules([builtin_pack()])
REGISTRY = Registry(
    "y",
    devices=[
        Device(
            device_id="w-1", kind="wearable", compound="c", building="b", unit="1-1",
            resident_id="r1",
        )
    ],
    residents=[Resident(resident_id="r1", building="b", unit="1-1")],
)  # fmt: skip


def msg(device: str, seq: int, stream: str = "telemetry", **body: Any) -> Reading:
    body = {"ts": round((NOW + seq) * 1000), "seq": seq, **body}
    if stream == "telemetry":
        body.setdefault("heart_rate", 60 + seq % 50)
    r = decode(f"community/y/wearable/{device}/{stream}", json.dumps(body).encode(), NOW + seq)
    assert isinstance(r, Reading), r
    return r


def drain(follower: JournalFollower, db: psycopg.Connection[Any]) -> list[rows.Row]:
    out: list[rows.Row] = []
    while got := follower.next_rows(db, limit=50):
        out += [row for _, row in got]
    return out


def wait_for(cond: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_an_open_transaction_holds_later_rows_back_and_none_is_skipped(pg_url: str) -> None:
    one, two = PgJournal(pg_url, partitions=PARTITIONS), PgJournal(pg_url, partitions=PARTITIONS)
    reader = psycopg.connect(pg_url, autocommit=True)
    admin = psycopg.connect(pg_url)
    try:
        one.write_batch([msg("w-lock", 0, "status", state="online")], [])
        one.write_batch([msg("a-1", i) for i in range(1, 4)], [])
        two.write_batch([msg("b-1", i) for i in range(1, 4)], [])
        follower = JournalFollower(reader, "rules", range(PARTITIONS))
        first = drain(follower, reader)
        assert sorted(r[1] for r in first) == ["a-1"] * 3 + ["b-1"] * 3 + ["w-lock"]
        seen = max(r[0] for r in first)

        # instance one's batch stops half-way (its readings inserted, not committed): it waits
        # for a device row another transaction holds
        admin.execute("SELECT 1 FROM devices WHERE device_id = 'w-lock' FOR UPDATE")
        batch = [msg("a-1", 4), msg("a-1", 5), msg("w-lock", 6, "status", state="offline")]
        blocked = threading.Thread(target=one.write_batch, args=(batch, []))
        blocked.start()
        wait_for(
            lambda: (
                reader.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                ).fetchone()
                == (1,)
            ),
            "the first instance's batch waits for the lock",
        )
        two.write_batch([msg("b-1", i) for i in range(4, 7)], [])  # committed meanwhile
        naive = reader.execute("SELECT id FROM readings WHERE id > %s", (seen,)).fetchall()
        assert len(naive) == 3  # what a follower by id would take now, and then move past
        assert follower.next_rows(reader) == []  # held back: nothing is given out of order

        admin.commit()
        blocked.join(30)
        assert not blocked.is_alive()
        later = drain(follower, reader)
        assert [(r[1], r[6]) for r in later] == [
            ("a-1", 4),
            ("a-1", 5),
            ("w-lock", 6),
            ("b-1", 4),
            ("b-1", 5),
            ("b-1", 6),
        ]
        assert follower.next_rows(reader) == []
        # the cursors committed: a follower that takes over starts after them
        with reader.transaction():
            follower.save(reader)
        follower.saved()
        assert drain(JournalFollower(reader, "rules", range(PARTITIONS)), reader) == []
        assert len(drain(JournalFollower(reader, "backtest", range(PARTITIONS)), reader)) == 13
    finally:
        admin.close()
        reader.close()
        one.close()
        two.close()


def test_rows_of_concurrent_writers_reach_the_follower_once_each_in_order(pg_url: str) -> None:
    writers = [PgJournal(pg_url, partitions=PARTITIONS) for _ in range(3)]
    reader = psycopg.connect(pg_url, autocommit=True)
    got: list[rows.Row] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def write(n: int, journal: PgJournal) -> None:
        try:
            for b in range(15):
                journal.write_batch(
                    [msg(f"d{n}-{k}", 10 * b + i) for k in range(3) for i in range(3)], []
                )
        except BaseException as e:
            errors.append(e)

    def follow() -> None:
        follower = JournalFollower(reader, "rules", range(PARTITIONS))
        while True:
            last = done.is_set()
            got.extend(row for _, row in follower.next_rows(reader, limit=40))
            if last and not follower.next_rows(reader):
                return
            time.sleep(0.005)

    try:
        threads = [threading.Thread(target=write, args=(n, j)) for n, j in enumerate(writers)]
        following = threading.Thread(target=follow)
        following.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        following.join(60)
        assert errors == []
        assert not following.is_alive()
        stored = writers[0].count_readings()
        assert stored == 3 * 15 * 9
        ids = [r[0] for r in got]
        assert len(ids) == len(set(ids)) == stored  # each once
        by_device: dict[str, list[int]] = {}
        for r in got:
            assert r[6] is not None
            by_device.setdefault(r[1], []).append(r[6])
        assert len(by_device) == 9
        for seqs in by_device.values():
            assert seqs == sorted(seqs) and len(seqs) == 15 * 3  # each device in its order
    finally:
        reader.close()
        for j in writers:
            j.close()


def test_the_rows_are_the_sqlite_journals_rows_and_the_rules_take_them(pg_url: str) -> None:
    batch = [
        msg("w-1", 1, heart_rate=72, steps=10, worn=True, note="kept"),
        msg("w-1", 2, "event", event="fall"),
        msg("w-1", 3, "status", state="online", fw="1.2"),
        # a payload the compact form cannot hold (an integer past 64 bits: decode refuses it
        # now, but rows written before hold such), kept as JSON text
        msgspec.structs.replace(
            msg("w-1", 4), payload=b'{"seq": 4, "heart_rate": 64, "big": 1180591620717411303424}'
        ),
    ]
    pg = PgJournal(pg_url, partitions=PARTITIONS)
    reader = psycopg.connect(pg_url, autocommit=True)
    with tempfile.TemporaryDirectory() as tmp:
        lite = Journal(Path(tmp) / "journal.db", synchronous="NORMAL")
        try:
            pg.write_batch(batch, [])
            lite.write_batch(batch, [])
            from_pg = drain(JournalFollower(reader, "rules", range(PARTITIONS)), reader)
            from_lite = rows.after(lite._w.db, 0, 100)
            assert [r[1:] for r in from_pg] == [tuple(r[1:]) for r in from_lite]
            assert isinstance(from_pg[3][9], str) and isinstance(from_pg[0][9], bytes)
            assert [rows.to_reading(r, "y") for r in from_pg] == [
                rows.to_reading(r, "y") for r in from_lite
            ]
        finally:
            lite.close()
            reader.close()
            pg.close()
    # the rules worker's evaluators take them as they take the SQLite journal's
    for make in (FastRows, _Readings):
        out = []
        for source in (from_pg, from_lite):
            engine = RuleEngine(RULES, REGISTRY, clock=lambda: NOW + 10)
            evaluator = make(engine, "y")
            out.append([t for r in source for t in evaluator.evaluate(r)])
        assert out[0] == out[1]
        assert "wearable_fall" in {t.rule_id for t in out[0]}
