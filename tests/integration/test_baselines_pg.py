"""Personal baselines from the PostgreSQL journal (no rollups there: its raw readings, through
``PgJournal.hourly_means``) are the ones the SQLite journal's hourly rollups give."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from ingest.payloads import Reading, decode
from ingest.rollups import RollupWorker
from ingest.topics import topic_for
from rules.baselines import compute

DAY = 86_400
AT = 1_700_006_400.0  # a midnight UTC


def readings() -> list[Reading]:
    out = []
    for d in range(1, 10):
        for m in range(0, 60, 15):  # four an hour
            for dev, hour, hr in (("w1", 10, 80 + d + m // 15), ("w2", 3, 55 + d % 3)):
                ts = AT - d * DAY + hour * 3600 + m * 60
                body = json.dumps({"ts": round(ts * 1000), "heart_rate": hr, "seq": m})
                r = decode(topic_for("y", "wearable", dev, "telemetry"), body.encode(), ts + 1)
                assert isinstance(r, Reading), r
                out.append(r)
    return out


def test_baselines_from_the_postgresql_journal_match_the_sqlite_rollups(
    tmp_path: Path, pg_url: str
) -> None:
    batch = readings()
    sqlite = Journal(tmp_path / "journal.db")
    sqlite.write_batch(batch, [])
    RollupWorker(tmp_path / "journal.db").run_until_idle()
    pg = PgJournal(pg_url)
    try:
        pg.write_batch(batch, [])
        specs = [("heart_rate", 14, 7), ("heart_rate", 14, 9), ("heart_rate", 5, 3)]
        from_rollups = compute(tmp_path / "journal.db", specs, UTC, AT)
        from_pg = compute(pg, specs, UTC, AT)
        assert from_pg.table == from_rollups.table
        assert from_pg.hours("w1", specs[0])[10] is not None  # learned, not two empty tables
        assert from_pg.hours("w2", specs[0])[3] is not None
        one = compute(pg, specs, UTC, AT, device_id="w2")
        assert {dev for dev, _ in one.table} == {"w2"}
    finally:
        pg.close()
        sqlite.close()
