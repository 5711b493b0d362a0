"""Backtests on PostgreSQL: the same journal content and alert store on SQLite and on
PostgreSQL give the same report (per rule, per day, rows replayed, what the store raised), in
one process and in several; personal baselines from PostgreSQL's raw readings give the
figures the SQLite rollups give; ``POST /api/rules/backtest`` answers on a service whose stores
are in PostgreSQL; and a backtest under way holds back no follower of the live journal."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from alerts import AlertStore
from alerts.db import Database
from alerts.noise import FlapGate
from district.pg import connect
from ingest.journal import Journal
from ingest.journal_pg import JournalFollower, PgJournal
from ingest.payloads import Reading, decode
from ingest.rollups import RollupWorker
from ingest.topics import topic_for
from jiayuan.api import create_app
from jiayuan.backtest import _stores
from jiayuan.cli import main
from jiayuan.context import AppContext
from jiayuan.settings import Settings
from registry.loader import write_registry
from rules.backtest import Report, _pg_batches, backtest
from rules.model import Rule, builtin_pack, load_rules
from tests.alerting import TZ
from tests.integration.test_journal_pg_follow import drain
from tests.staff import ADMIN, ADMIN_TOKEN
from tests.unit.test_rules_backtest import RULES, T0, registry, run_live, stream

DAY = 86_400
GATE = lambda clock: FlapGate(threshold=3, window_s=600, clock=clock)  # noqa: E731


def figures(report: Report) -> tuple[object, ...]:
    """Everything a report says but the time it took."""
    text = report.text().split("\n", 1)[1]  # the first line says how long it took
    return report.new, report.in_force, report.actual, report.rows, report.days, text


def tried(tmp: Path, **change: float) -> list[Rule]:
    """The wearables' rules of the pack with ``change`` made to wearable_heart_rate_high."""
    rules = [
        r.model_dump(by_alias=True, exclude_defaults=True) for r in RULES if r.id.startswith("wear")
    ]
    for r in rules:
        if r["id"] == "wearable_heart_rate_high":
            r.update(change)
    path = tmp / "tried.yaml"
    path.write_text(yaml.safe_dump({"rules": rules}, sort_keys=False), encoding="utf-8")
    return load_rules([path])


def copy_alerts(alerts_db: Path, url: str) -> int:
    """The SQLite alert store's alerts into the PostgreSQL one (the same columns)."""
    src = sqlite3.connect(alerts_db)
    src.row_factory = sqlite3.Row
    rows = src.execute("SELECT * FROM alerts ORDER BY id").fetchall()
    src.close()
    with connect(url) as db:
        have = {
            r[0]
            for r in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'alerts'"
            )
        }
        for row in rows:
            cols = [c for c in row.keys() if c in have]  # noqa: SIM118 (sqlite3.Row)
            db.execute(
                f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                [row[c] for c in cols],
            )
    return len(rows)


def live_readings() -> list[Reading]:
    """The readings ``run_live`` journals, in its order."""
    out = []
    for seq, (received, kind, device, stream_, ts, body) in enumerate(stream(), 1):
        payload = json.dumps({"ts": round(ts * 1000), "seq": seq, **body}).encode()
        r = decode(topic_for("y", kind, device, stream_), payload, received)
        assert isinstance(r, Reading), r
        out.append(r)
    return out


def write_pg(url: str, readings: list[Reading], *, one_by_one: bool) -> PgJournal:
    """``readings`` into the PostgreSQL journal at ``url``. ``one_by_one``: a batch each, as
    run_live journals them (a batch's ids go by device, then arrival)."""
    pg = PgJournal(url)
    for batch in [[r] for r in readings] if one_by_one else [readings]:
        pg.write_batch(batch, [])
    return pg


def test_a_stream_backtested_on_sqlite_and_on_postgresql_gives_one_report(
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start, end = run_live(tmp_path)
    pg = write_pg(pg_url, live_readings(), one_by_one=True)
    try:
        assert pg.count_readings() == Journal(tmp_path / "journal.db").count_readings()
        assert copy_alerts(tmp_path / "alerts.db", pg_url) > 10
        rules = tried(tmp_path, above=74, clear=70, **{"for": 60.0})
        run = functools.partial(
            backtest, since=start + 1800, until=end, tz=TZ, warmup_s=1800, gate=GATE
        )
        on_sqlite = run(
            tmp_path / "journal.db", rules, RULES, registry(), alerts=tmp_path / "alerts.db"
        )
        alerts = Database.open(pg_url)
        try:
            with alerts.connection() as store:
                on_pg = run(pg, rules, RULES, registry(), alerts=store)
                split = run(pg, rules, RULES, registry(), alerts=store, jobs=3)
        finally:
            alerts.close()
    finally:
        pg.close()
    assert on_sqlite.actual is not None and sum(on_sqlite.actual["wearable_fall"].values()) == 2
    assert sum(on_sqlite.new["wearable_heart_rate_high"].values()) > 2  # the change shows
    assert figures(on_pg) == figures(on_sqlite)
    assert figures(split) == figures(on_sqlite)
    # the command, as the service's settings have it: the data directory, or the database
    write_registry(registry(), tmp_path / "registry")
    monkeypatch.setenv("JIAYUAN_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("JIAYUAN_TIMEZONE", "Asia/Shanghai")
    args = ["rules", "backtest", str(builtin_pack()), "--since", "2025-12-01T08:30",
            "--until", "2025-12-01T13:00", "--warmup", "30m"]  # fmt: skip
    assert main([*args, "--data-dir", str(tmp_path), "--jobs", "1"]) == 0
    sqlite_out = capsys.readouterr().out
    monkeypatch.setenv("JIAYUAN_DATABASE_URL", pg_url)
    monkeypatch.setenv("JIAYUAN_DATA_DIR", str(tmp_path / "elsewhere"))
    assert main([*args, "--jobs", "2"]) == 0
    pg_out = capsys.readouterr().out
    assert "wearable_fall: 2025-12-01 2/2" in sqlite_out
    assert pg_out.split("\n", 1)[1] == sqlite_out.split("\n", 1)[1]


def baseline_readings() -> list[Reading]:
    """w1: nine days at 70 bpm, four readings an hour; then a day at 70 a minute, but 110
    for half an hour at 02:00 UTC (a baseline rule fires; the fixed 120 bpm rule does not)."""
    out = []
    before = [T0 - d * DAY + m * 900 for d in range(9, 0, -1) for m in range(96)]
    for seq, t in enumerate(before + [T0 + m * 60 for m in range(6 * 60)], 1):
        hr = 110 if T0 + 2 * 3600 <= t < T0 + 2.5 * 3600 else 70 + seq % 3
        body = json.dumps({"ts": round(t * 1000), "seq": seq, "heart_rate": hr, "steps": seq})
        r = decode(topic_for("y", "wearable", "w1", "telemetry"), body.encode(), t + 1)
        assert isinstance(r, Reading), r
        out.append(r)
    return out


def test_baselines_from_postgresql_give_the_report_the_sqlite_rollups_give(
    tmp_path: Path, pg_url: str
) -> None:
    readings = baseline_readings()
    journal = Journal(tmp_path / "journal.db")
    journal.write_batch(readings, [])
    journal.close()
    RollupWorker(tmp_path / "journal.db").run_until_idle()
    pg = write_pg(pg_url, readings, one_by_one=False)  # one device: the same id order
    rules = tried(tmp_path)  # the baseline rule the same, the others too
    run = functools.partial(backtest, since=T0 + 3600, until=T0 + 6 * 3600, tz=TZ, warmup_s=3600)
    try:
        on_sqlite = run(tmp_path / "journal.db", rules, RULES, registry())
        on_pg = run(pg, rules, RULES, registry())
        split = run(pg, rules, RULES, registry(), jobs=2)
    finally:
        pg.close()
    assert sum(on_sqlite.in_force["wearable_heart_rate_above_baseline"].values()) == 1
    assert sum(on_sqlite.in_force["wearable_heart_rate_high"].values()) == 0
    assert figures(on_pg) == figures(on_sqlite)
    assert figures(split) == figures(on_sqlite)


@pytest.fixture
def pg_service(tmp_path: Path, pg_url: str) -> Iterator[TestClient]:
    """The API over a journal and alert store in PostgreSQL holding the baseline stream."""
    write_pg(pg_url, baseline_readings(), one_by_one=False).close()
    journal = PgJournal(pg_url)
    store = AlertStore(pg_url)
    ctx = AppContext(
        settings=Settings(
            data_dir=tmp_path, admin_token=ADMIN_TOKEN, database_url=pg_url, timezone=str(TZ)
        ),
        journal=journal,
        alerts=store,
        registry=registry(),
    )
    try:
        with TestClient(create_app(ctx), headers=ADMIN) as client:
            yield client
    finally:
        store.close()
        journal.close()


def test_the_api_backtests_on_postgresql(pg_service: TestClient) -> None:
    change = {"rule_id": "wearable_heart_rate_above_baseline", "above_by": 50}
    window = {"since": "2025-12-01T09:00:00+08:00", "until": "2025-12-01T14:00:00+08:00"}
    r = pg_service.post("/api/rules/backtest", json={"changes": [change], "warmup": "1h", **window})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == 6 * 60  # the day's minutes, 08:00 to 14:00 local
    out = {x["rule_id"]: x for x in body["rules"]}
    baseline = out["wearable_heart_rate_above_baseline"]
    assert (baseline["tried"], baseline["in_force"], baseline["raised"]) == (0, 1, 0)
    assert baseline["per_day"] == {"2025-12-01": [0, 1]}


def test_a_backtest_under_way_holds_back_no_follower_of_the_live_journal(
    tmp_path: Path, pg_url: str
) -> None:
    """The live rules worker reads only behind every open transaction that writes: a backtest's
    transactions (the alert store's, and the journal cursor's mid-read) must not be such."""
    readings = baseline_readings()
    pg = write_pg(pg_url, readings[:300], one_by_one=False)
    reader = connect(pg_url, autocommit=True)
    settings = Settings(data_dir=tmp_path, database_url=pg_url)
    try:
        live = JournalFollower(reader, "rules", range(pg.partitions))
        assert len(drain(live, reader)) == 300
        with _stores(settings, pg, None) as (journal, store):
            assert journal is pg and not isinstance(store, Path | None)
            assert store.execute("SELECT count(*) FROM alerts").fetchone()[0] == 0
            batches = _pg_batches(pg_url, T0 - 9 * DAY, T0 + DAY, None, True)
            assert len(next(batches)) == 300  # its transaction open, mid-read
            pg.write_batch(readings[300:310], [])
            assert [r[6] for r in drain(live, reader)] == [r.seq for r in readings[300:310]]
            batches.close()
    finally:
        reader.close()
        pg.close()
