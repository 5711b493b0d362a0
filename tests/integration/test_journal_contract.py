"""One behaviour, two journals: every check here runs on the SQLite journal
(:class:`ingest.journal.Journal`) and on the PostgreSQL one (:class:`ingest.journal_pg.PgJournal`,
on the throwaway cluster), through the interface both offer
(:class:`ingest.journal_store.JournalStore`): a redelivered message is stored once, dead letters
are kept and counted, devices are listed with their state and last reading, readings are read
back by time, metric and bucket, and retention removes old days."""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devtools.postgres import Postgres
from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from ingest.journal_store import JournalStore
from ingest.payloads import DeadLetter, Reading, decode
from registry import Building, Device, Registry

DAY = 86_400.0
NOW = math.floor(time.time() / DAY) * DAY + 12 * 3600.0
"""Noon today (UTC): the PostgreSQL journal makes its partitions around the real day."""


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalStore]:
    j: JournalStore
    if request.param == "sqlite":
        j = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    else:
        j = PgJournal(request.getfixturevalue("pg_url"))
    try:
        yield j
    finally:
        j.close()


def msg(
    device: str,
    stream: str,
    received: float,
    kind: str = "wearable",
    **body: Any,
) -> Reading:
    r = decode(f"community/y/{kind}/{device}/{stream}", json.dumps(body).encode(), received)
    assert isinstance(r, Reading), r
    return r


def test_a_redelivered_message_is_stored_once(journal: JournalStore) -> None:
    ms = round((NOW - 30) * 1000)
    first = [
        msg("w-1", "telemetry", NOW, ts=ms, seq=1, heart_rate=70),  # the device's time and seq
        msg("w-1", "telemetry", NOW, ts=ms + 1000, heart_rate=71),  # its time, no seq
        msg("w-1", "telemetry", NOW, seq=3, heart_rate=72),  # no time: its seq alone
        msg("w-1", "telemetry", NOW, heart_rate=73),  # neither: nothing tells a resend
        msg("s-1", "event", NOW, kind="smoke", ts=ms, seq=9, event="alarm"),
    ]
    assert len(journal.write_batch(first, []).new) == 5
    # the broker delivers them again, a minute later, and one new message with them
    again = [
        msg("w-1", "telemetry", NOW + 60, ts=ms, seq=1, heart_rate=70),
        msg("w-1", "telemetry", NOW + 60, ts=ms + 1000, heart_rate=71),
        msg("w-1", "telemetry", NOW + 60, seq=3, heart_rate=72),
        msg("w-1", "telemetry", NOW + 60, heart_rate=73),
        msg("s-1", "event", NOW + 60, kind="smoke", ts=ms, seq=9, event="alarm"),
        msg("w-1", "telemetry", NOW + 60, ts=ms + 2000, seq=2, heart_rate=74),
    ]
    result = journal.write_batch(again, [])
    assert [r.values.get("heart_rate") for r in result.new] == [73, 74]
    assert result.duplicates == 4
    assert journal.count_readings("w-1") == 6
    assert journal.count_readings() == 7
    # a rebooted wearable counting from 1 again, with new times: not a duplicate
    rebooted = msg("w-1", "telemetry", NOW + 90, ts=ms + 90_000, seq=1, heart_rate=75)
    assert journal.write_batch([rebooted], []).new == [rebooted]


def test_dead_letters_are_kept_and_counted(journal: JournalStore) -> None:
    dead = [
        DeadLetter("community/y/wearable/w-1/telemetry", b"{oops", "not_json", "line 1", NOW),
        DeadLetter("community/y/wearable/w-1/telemetry", b"[]", "not_object", "", NOW + 1),
        DeadLetter(
            "community/y/nope/x/telemetry", "\u4f60".encode(), "unknown_topic", "kind", NOW + 2
        ),
    ]
    result = journal.write_batch([msg("w-1", "telemetry", NOW, seq=1, heart_rate=70)], dead)
    assert (len(result.new), result.dead_letters) == (1, 3)
    assert journal.dead_letter_counts() == {"not_json": 1, "not_object": 1, "unknown_topic": 1}
    items, total = journal.dead_letters(limit=2)
    assert total == 3
    assert [i["reason"] for i in items] == ["unknown_topic", "not_object"]  # newest first
    assert items[0]["payload"] == "\u4f60"
    items, total = journal.dead_letters(reason="not_json")
    assert (total, items[0]["payload"], items[0]["topic"]) == (1, "{oops", dead[0].topic)
    assert journal.dead_letters(since=NOW + 1, until=NOW + 2)[1] == 1


def test_devices_are_listed_with_their_state_and_last_reading(journal: JournalStore) -> None:
    registry = Registry(
        community="y",
        buildings=[Building(building="b1", compound="c1")],
        devices=[
            Device(device_id="w-1", kind="wearable", compound="c1", building="b1", unit="1-1"),
            Device(device_id="s-1", kind="smoke", compound="c1", building="b1", unit="1-2"),
        ],
    )
    assert journal.sync_registry(registry) == 2
    journal.write_batch(
        [
            msg("w-1", "telemetry", NOW, ts=round(NOW * 1000), seq=1, heart_rate=70, battery=80),
            msg("w-1", "status", NOW + 1, state="online", fw="2.1"),
            msg("w-1", "telemetry", NOW + 2, ts=round((NOW + 2) * 1000), seq=2, heart_rate=90),
            msg("x-9", "telemetry", NOW + 3, seq=1, heart_rate=60),  # not registered
        ],
        [],
    )
    journal.flush()
    page, total = journal.list_devices(registered=True)
    assert total == 2 and [d["device_id"] for d in page] == ["s-1", "w-1"]
    page, total = journal.list_devices(registered=False)
    assert [d["device_id"] for d in page] == ["x-9"] and total == 1
    page, total = journal.list_devices(among=({"s-1"}, {"wearable"}))
    assert [d["device_id"] for d in page] == ["s-1", "w-1", "x-9"]
    assert journal.list_devices(among=(set(), set()))[1] == 0
    assert journal.list_devices(online=True)[0][0]["device_id"] == "w-1"
    w1 = journal.get_device("w-1")
    assert w1 is not None
    assert (w1["online"], w1["fw"], w1["battery"], w1["registered"]) == (True, "2.1", 80.0, True)
    assert (w1["last_seen"], w1["unit"]) == (NOW + 2, "1-1") and w1["first_seen"] is not None
    assert list(w1) == [
        *("device_id", "kind", "community", "compound", "building", "unit", "floor", "room"),
        *("resident_id", "name", "registered", "first_seen", "last_seen", "online"),
        *("state_since", "fw", "battery"),
    ]
    assert journal.get_device("nobody") is None
    last = journal.last_reading("w-1")
    assert last is not None
    assert (last["ts"], last["stream"], last["values"]["heart_rate"]) == (NOW + 2, "telemetry", 90)
    assert journal.last_reading("s-1") is None


def test_readings_are_read_back_by_time_metric_and_bucket(journal: JournalStore) -> None:
    t0 = math.floor(NOW / 3600) * 3600.0
    batch = [
        msg("w-1", "telemetry", t0 + 10 * i + 1, ts=round((t0 + 10 * i) * 1000), seq=i, **body)
        for i, body in enumerate(
            [
                dict[str, Any](heart_rate=60 + i, steps=i, worn=i % 2 == 0, note="x", level=5 * i)
                for i in range(12)
            ]
        )
    ]
    batch.append(msg("w-1", "event", t0 + 30, ts=round((t0 + 30) * 1000), event="fall"))
    journal.write_batch(batch, [])
    raw = journal.readings("w-1", since=t0 + 20, until=t0 + 50)
    assert [(r["ts"], r["stream"]) for r in raw] == [
        (t0 + 20, "telemetry"),
        (t0 + 30, "telemetry"),
        (t0 + 30, "event"),
        (t0 + 40, "telemetry"),
    ] or [(r["ts"], r["stream"]) for r in raw] == [
        (t0 + 20, "telemetry"),
        (t0 + 30, "event"),
        (t0 + 30, "telemetry"),
        (t0 + 40, "telemetry"),
    ]
    telemetry = [r for r in raw if r["stream"] == "telemetry"]
    assert telemetry[0]["values"] == {
        "ts": round((t0 + 20) * 1000),
        "seq": 2,
        "heart_rate": 62,
        "steps": 2,
        "worn": True,
        "note": "x",
        "level": 10,
    }
    assert telemetry[0]["received"] == t0 + 21 and telemetry[0]["ts_flag"] is None
    hr = journal.readings("w-1", metric="heart_rate", since=t0, until=t0 + 120)
    assert [r["values"] for r in hr] == [{"heart_rate": 60 + i} for i in range(12)]
    assert len(journal.readings("w-1", limit=3)) == 3
    # a metric the SQLite journal rolls up, and one it aggregates from the raw rows
    for metric, values in (("heart_rate", range(60, 72)), ("level", range(0, 60, 5))):
        buckets = journal.readings("w-1", metric=metric, step="1m", since=t0, until=t0 + 120)
        expected = [
            {"ts": t0 + 60 * b, "min": v[0], "max": v[-1], "mean": sum(v) / 6, "count": 6}
            for b, v in enumerate([list(values)[:6], list(values)[6:]])
            if v
        ]
        assert buckets == expected, metric
    with pytest.raises(ValueError):
        journal.readings("w-1", step="1h")


def test_retention_removes_old_days_and_forgets_stray_devices(journal: JournalStore) -> None:
    days = [NOW - 3 * DAY, NOW - 2 * DAY, NOW]
    journal.write_batch([msg("stray", "telemetry", NOW - 3 * DAY - 1, seq=1)], [])
    for i, at in enumerate(days):
        journal.write_batch(
            [
                msg("w-1", "telemetry", at + k, ts=round((at + k) * 1000), seq=10 * i + k)
                for k in range(3)
            ],
            [],
        )
    journal.flush()
    assert journal.count_readings() == 10
    midnight = math.floor(NOW / DAY) * DAY
    assert journal.prune(midnight - DAY, forget_idle_s=DAY) == 7  # the two days before
    assert journal.count_readings() == 3
    assert [r["ts"] for r in journal.readings("w-1")] == [NOW, NOW + 1, NOW + 2]
    assert journal.get_device("stray") is None and journal.get_device("w-1") is not None
    assert journal.prune(midnight - DAY) == 0
    # and writing goes on, duplicates still dropped
    again = msg("w-1", "telemetry", NOW + 5, ts=round(NOW * 1000), seq=20)
    assert journal.write_batch([again], []).duplicates == 1


def test_a_store_that_takes_writes_answers_the_probe(journal: JournalStore) -> None:
    journal.probe()
    assert journal.trouble(ValueError("a value that cannot be bound")) is None
    assert journal.flush() is False
    journal.write_batch([msg("w-1", "telemetry", NOW, seq=1)], [])
    assert journal.pending_devices == 1
    assert journal.flush() is True and journal.pending_devices == 0


# ------------------------------------------------------------------ generated batches


_STEP = st.tuples(
    st.integers(0, 2),  # device
    st.sampled_from(["timed-seq", "timed", "seq", "none"]),
    st.integers(0, 5),  # which message of the device (its seq and time)
    st.integers(0, 3),  # which delivery (the receive time)
)


@pytest.fixture(scope="module")
def shared_pg(postgres: Postgres) -> Iterator[PgJournal]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    j = PgJournal(postgres.create_database(name))
    try:
        yield j
    finally:
        j.close()
        postgres.drop_database(name)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(_STEP, max_size=12), min_size=1, max_size=4))
# found by hypothesis: a timed message whose time is its receive time, a duplicate, held the
# key of a later message without the device's time on PostgreSQL (stored 1, SQLite 2)
@example(batches=[[(0, "timed-seq", 0, 1), (0, "timed-seq", 0, 0), (0, "seq", 0, 1)]])
@example(batches=[[(0, "timed-seq", 0, 1)], [(0, "timed-seq", 0, 0), (0, "seq", 0, 1)]])
@example(batches=[[(0, "seq", 0, 1), (0, "timed-seq", 0, 0), (0, "seq", 0, 1)]])
def test_generated_batches_with_repeats_store_the_same_on_both(
    shared_pg: PgJournal, batches: list[list[tuple[int, str, int, int]]]
) -> None:
    """Whatever is delivered, however often and in whatever batches, both journals hold the
    same count per device."""
    prefix = uuid.uuid4().hex[:8]  # this example's devices, in the database all examples share
    with tempfile.TemporaryDirectory() as tmp:
        lite = Journal(Path(tmp) / "journal.db", synchronous="NORMAL")
        try:
            for batch in batches:
                readings = []
                for device, how, n, delivery in batch:
                    body: dict[str, Any] = {"heart_rate": 60 + n}
                    if how in ("timed-seq", "timed"):
                        body["ts"] = round((NOW + n) * 1000)
                    if how in ("timed-seq", "seq"):
                        body["seq"] = n
                    readings.append(
                        msg(f"{prefix}-{device}", "telemetry", NOW + 100 * delivery + n, **body)
                    )
                had = shared_pg.count_readings()
                lite.write_batch(readings, [])
                b = shared_pg.write_batch(readings, [])
                for device in range(3):
                    d = f"{prefix}-{device}"
                    assert lite.count_readings(d) == shared_pg.count_readings(d)
                # PostgreSQL's answer names exactly the readings it stored (the SQLite journal
                # counts a repeat with the same receive time as new: see docs/district.md)
                assert shared_pg.count_readings() - had == len(b.new)
                assert b.duplicates == len(readings) - len(b.new)
        finally:
            lite.close()


def test_listings_keep_to_the_communities_asked_for(journal: JournalStore) -> None:
    """Devices by the devices table's community, dead letters by their topic's
    ``community/<id>/`` (the API's ``?community=`` and a manager's scope), on both journals."""
    journal.write_batch(
        [msg("w-1", "telemetry", NOW, seq=1, heart_rate=70)],
        [
            DeadLetter("community/y/wearable/w-1/telemetry", b"{", "not_json", "", NOW),
            DeadLetter("community/h/wearable/w-2/telemetry", b"{", "not_json", "", NOW + 1),
            DeadLetter("community/yy/wearable/w-3/telemetry", b"{", "not_json", "", NOW + 2),
            DeadLetter("elsewhere/y/wearable/w-4/telemetry", b"{", "unknown_topic", "", NOW + 3),
        ],
    )
    journal.flush()
    assert journal.list_devices(communities={"y"})[1] == 1
    assert journal.list_devices(communities={"h"})[1] == 0
    assert journal.list_devices(communities=set())[1] == 0
    items, total = journal.dead_letters(communities={"y"})
    assert total == 1 and items[0]["topic"] == "community/y/wearable/w-1/telemetry"
    assert journal.dead_letters(communities={"h", "yy"})[1] == 2
    assert journal.dead_letters(communities=set())[1] == 0
    assert journal.dead_letters()[1] == 4


def test_registered_devices_are_listed_in_their_own_community(journal: JournalStore) -> None:
    """An installation of two communities: each registered device in the devices table under
    the community whose registry lists it (PostgreSQL put every one under the first: a manager
    of y was shown h's devices)."""

    def one(community: str, device_id: str) -> Registry:
        return Registry(
            community=community,
            buildings=[Building(building=f"b-{community}", compound=f"c-{community}")],
            devices=[
                Device(device_id=device_id, kind="wearable", compound=f"c-{community}",
                       building=f"b-{community}")
            ],
        )  # fmt: skip

    both = Registry.combine({"y": one("y", "w-y"), "h": one("h", "w-h")})
    assert journal.sync_registry(both) == 2
    items, total = journal.list_devices(communities={"h"})
    assert total == 1 and items[0]["device_id"] == "w-h"
    items, total = journal.list_devices(communities={"y"})
    assert total == 1 and items[0]["device_id"] == "w-y"
