"""A wearable given to another resident starts a new history: her caretaker never reads the
previous wearer's heart rates, and they are not her baseline."""

from __future__ import annotations

import sqlite3
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from jiayuan.api import create_app
from registry import Device, Registry
from registry.assignments import floors, stamp_assignments
from rules.baselines import compute
from tests.staff import ADMIN, bearer
from tests.unit.api_world import world

WR1 = Device(device_id="wr-1", kind="wearable", compound="C01", building="B01", unit="1-1-101",
             resident_id="r-1")  # fmt: skip
GATE = Device(device_id="g-1", kind="gate", compound="C01")


def with_devices(*devices: Device) -> Registry:
    return Registry("y", devices=list(devices))


def test_a_new_wearer_is_stamped_the_same_one_kept() -> None:
    old = with_devices(WR1.model_copy(update={"assigned_since": 100.0}), GATE)
    same = with_devices(WR1, GATE)  # rebuilt from a file that does not say it
    assert stamp_assignments(old, same, 500.0).devices["wr-1"].assigned_since == 100.0
    moved = with_devices(
        WR1.model_copy(update={"resident_id": "r-3", "assigned_since": 100.0}), GATE
    )  # the previous record copied, its mark with it
    new = stamp_assignments(old, moved, 500.0)
    assert new.devices["wr-1"].assigned_since == 500.0
    assert new.devices["g-1"].assigned_since is None
    back = stamp_assignments(with_devices(GATE), moved, 700.0)  # retired, registered again
    assert back.devices["wr-1"].assigned_since == 700.0
    unworn = with_devices(WR1.model_copy(update={"resident_id": None, "assigned_since": 1.0}))
    assert stamp_assignments(old, unworn, 500.0).devices["wr-1"].assigned_since is None
    unchanged = with_devices(WR1.model_copy(update={"assigned_since": 100.0}), GATE)
    assert stamp_assignments(old, unchanged, 500.0) is unchanged
    assert floors(new) == {"wr-1": 500.0}


def test_a_caretaker_does_not_read_the_previous_wearers_readings(tmp_path: Path) -> None:
    with ExitStack() as stack:
        ctx = world(tmp_path, stack)
        with TestClient(create_app(ctx)) as c:
            care1, care3 = bearer(ctx, "care-1"), bearer(ctx, "care-3")
            before = c.get("/api/devices/wr-1/readings", headers=care1).json()["items"]
            assert any(i["values"].get("heart_rate") == 70 for i in before)
            last = max(i["ts"] for i in before)
            admin = ctx.registry_admin
            assert admin is not None
            current = admin.current
            wr1 = current.devices["wr-1"]
            moved = Registry(
                "y",
                buildings=list(current.buildings.values()),
                devices=[
                    *(d for d in current.devices.values() if d.device_id != "wr-1"),
                    wr1.model_copy(
                        update={
                            "compound": "C02",
                            "building": "B03",
                            "unit": "3-1-101",
                            "resident_id": "r-3",
                        }
                    ),
                ],
                residents=list(current.residents.values()),
                staff=list(current.staff.values()),
            )
            admin.apply(
                stamp_assignments(current, moved, now=datetime.fromisoformat(last).timestamp() + 1),
                actor="admin",
                action="registry.device.update",
            )
            r = c.get("/api/devices/wr-1/readings", headers=care3)
            assert r.status_code == 200 and r.json()["items"] == []
            hourly = c.get("/api/devices/wr-1/readings?step=1h&metric=heart_rate", headers=care3)
            assert hourly.status_code == 200 and hourly.json()["items"] == []


def test_the_previous_wearers_hours_are_not_the_new_wearers_baseline(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "journal.db")
    db.executescript(
        "CREATE TABLE rollup_series (id INTEGER PRIMARY KEY, device_id TEXT, metric TEXT);"
        "CREATE TABLE rollup_1h (series INTEGER, bucket REAL, vsum REAL, n INTEGER);"
        "INSERT INTO rollup_series VALUES (1, 'wr-1', 'heart_rate');"
    )
    day, at = 86_400, 1_700_006_400.0  # at a midnight UTC
    rows = [(1, at - d * day + 3600 * 10, 60.0 * 4, 4) for d in range(1, 15)]
    db.executemany("INSERT INTO rollup_1h VALUES (?, ?, ?, ?)", rows)
    db.commit()
    spec = ("heart_rate", 14, 1)
    full = compute(db, [spec], UTC, at)
    assert full.hours("wr-1", spec)[10] is not None
    moved = compute(db, [spec], UTC, at, floors={"wr-1": at - 3 * day})
    hour = moved.hours("wr-1", spec)[10]
    assert hour is not None and hour.days == 3  # only the days since she wears it
    gone = compute(db, [spec], UTC, at, floors={"wr-1": at - 3600})
    assert gone.hours("wr-1", spec)[10] is None


def test_a_wearable_retired_and_registered_to_another_resident_shows_her_caretaker_nothing_before(
    tmp_path: Path,
) -> None:
    """Through the API as staff do it: an admin retires r-1's watch, an operator registers it
    to r-3 from the commissioning list; r-3's caretaker reads none of r-1's heart rates (before
    the registry stamped the new wearer, care-3 read them all), while the stamp is kept in the
    registry's files for the next start."""
    with ExitStack() as stack:
        ctx = world(tmp_path, stack)
        with TestClient(create_app(ctx)) as c:
            care3, ops = bearer(ctx, "care-3"), bearer(ctx, "ops-1")
            assert c.get("/api/devices/wr-1/readings", headers=care3).status_code == 404
            assert c.delete("/api/registry/devices/wr-1", headers=ADMIN).status_code == 200
            place = {"compound": "C02", "building": "B03", "unit": "3-1-101", "resident_id": "r-3"}
            r = c.post("/api/devices/unregistered/wr-1/register", headers=ops, json=place)
            assert r.status_code == 200, r.text
            seen = c.get("/api/devices/wr-1/readings", headers=care3)
            assert seen.status_code == 200
            assert seen.json()["items"] == []
            admin = ctx.registry_admin
            assert admin is not None
            stamped = admin.current.devices["wr-1"].assigned_since
            assert stamped is not None
            assert admin.files.read().devices["wr-1"].assigned_since == stamped
