"""Caretakers know whom they look after: a resident's display name from the registry (YAML and
a spreadsheet's CSV), answered by the API only to that resident's caretakers, managers and
admins (never to another caretaker or a guard); units sorted as numbers; the list of caretakers
an admin chooses from, and a clear refusal for an id that is not one. Also the simulated
community's names and the demo receiver's local times."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from alerts import AlertStore
from devtools.receiver import Received, Receiver
from ingest.journal import Journal
from jiayuan.api import create_app
from jiayuan.auth.store import AuthStore
from jiayuan.context import AppContext
from registry import Building, Device, Registry, Resident, Staff, load_registry, write_registry
from registry.labels import labels_in
from simulators.fleet import build_fleet
from tests.staff import ADMIN, app_context, bearer


def registry() -> Registry:
    def wearable(n: int, unit: str) -> Device:
        return Device(
            device_id=f"wr-{n}", kind="wearable", compound="C01", building="B3", unit=unit,
            resident_id=f"r-{n}",
        )  # fmt: skip

    return Registry(
        "y",
        buildings=[Building(building="B3", compound="C01")],
        devices=[wearable(1, "3-1-1302"), wearable(2, "3-1-1302"), wearable(3, "3-1-201")],
        residents=[
            Resident(
                resident_id="r-1",
                display_name="王秀英",
                building="B3",
                unit="3-1-1302",
                caretakers=("cg-1",),
            ),
            Resident(
                resident_id="r-2",
                display_name="李建国",
                building="B3",
                unit="3-1-1302",
                caretakers=("cg-1",),
            ),
            Resident(
                resident_id="r-3",
                display_name="赵桂兰",
                building="B3",
                unit="3-1-201",
                caretakers=("cg-2", "cg-1"),
            ),
        ],
        staff=[
            Staff(staff_id="cg-1", name="张护理员", role="caretaker"),
            Staff(staff_id="cg-2", name="刘护理员", role="caretaker"),
            Staff(staff_id="guard", name="保安", role="security"),
            Staff(staff_id="mgr", name="主管", role="manager"),
        ],
    )


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    reg = registry()
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    journal.sync_registry(reg)
    store = AlertStore(tmp_path / "alerts.db")
    with app_context(tmp_path, journal, store, reg) as c:
        yield c


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def names(page: dict[str, object]) -> list[tuple[str, str | None]]:
    items = page["items"]
    assert isinstance(items, list)
    return [(r["resident_id"], r["display_name"]) for r in items]


def test_a_caretaker_tells_two_residents_of_one_unit_apart(
    ctx: AppContext, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mine = client.get("/api/residents", headers=bearer(ctx, "cg-1")).json()
    # 3-1-201 before 3-1-1302 (numbers, not text), and each of the couple by name
    assert names(mine) == [("r-3", "赵桂兰"), ("r-1", "王秀英"), ("r-2", "李建国")]
    one = client.get("/api/residents/r-2", headers=bearer(ctx, "cg-1")).json()
    assert one["display_name"] == "李建国"
    # cg-2 looks after r-3 only: r-3's name, and nothing of the others
    theirs = client.get("/api/residents", headers=bearer(ctx, "cg-2")).json()
    assert names(theirs) == [("r-3", "赵桂兰")]
    # managers and admins see the names; security sees no residents at all
    assert ("r-1", "王秀英") in names(
        client.get("/api/residents", headers=bearer(ctx, "mgr")).json()
    )
    assert ("r-2", "李建国") in names(client.get("/api/residents", headers=ADMIN).json())
    assert client.get("/api/residents", headers=bearer(ctx, "guard")).status_code == 403
    # nothing logged names anyone
    assert not [r for r in caplog.records if "王秀英" in r.getMessage()]


def test_an_admin_chooses_a_caretaker_from_a_list_and_a_wrong_id_is_refused(
    ctx: AppContext, client: TestClient
) -> None:
    listed = client.get("/api/residents/caretakers", headers=ADMIN).json()
    assert [(c["staff_id"], c["name"], c["residents"]) for c in listed["items"]] == [
        ("cg-1", "张护理员", 3),
        ("cg-2", "刘护理员", 1),
    ]
    own = client.get("/api/residents/caretakers", headers=bearer(ctx, "cg-2")).json()
    assert [c["staff_id"] for c in own["items"]] == ["cg-2"]
    got = client.get("/api/residents", params={"caretaker": "cg-2"}, headers=ADMIN).json()
    assert names(got) == [("r-3", "赵桂兰")]
    unknown = client.get("/api/residents", params={"caretaker": "cg-9"}, headers=ADMIN)
    assert unknown.status_code == 404 and "cg-9" in unknown.json()["detail"]
    guard = client.get("/api/residents", params={"caretaker": "guard"}, headers=ADMIN)
    assert guard.status_code == 404 and "not a caretaker" in guard.json()["detail"]


def test_display_names_load_from_yaml_and_from_a_spreadsheets_name_column(
    tmp_path: Path,
) -> None:
    write_registry(registry(), tmp_path / "yaml")
    back = load_registry(tmp_path / "yaml")
    assert back.residents["r-2"].display_name == "李建国"
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "residents.csv").write_text(
        "老人编号,姓名,楼栋,户号\nr-1,王秀英,B3,3-1-1302\nr-2,,B3,3-1-1302\n", encoding="utf-8"
    )
    loaded = load_registry(csv_dir)
    assert loaded.residents["r-1"].display_name == "王秀英"
    assert loaded.residents["r-2"].display_name == ""


def test_the_simulated_residents_have_names_and_a_couple_never_shares_one() -> None:
    residents = list(build_fleet(devices=400).registry.residents.values())
    assert residents and all(r.display_name for r in residents)
    homes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in build_fleet().registry.residents.values():
        homes[(r.building, r.unit)].append(r.display_name)
    couples = [n for n in homes.values() if len(n) > 1]
    assert couples and all(len(set(n)) == len(n) for n in couples)


def test_the_receiver_shows_the_communitys_local_time(tmp_path: Path) -> None:
    at = datetime(2026, 12, 3, 4, 5, 6, tzinfo=UTC).timestamp()
    m = Received(at, "care-1", "title", "body", "info")
    assert m.line(ZoneInfo("Asia/Shanghai")).startswith("2026-12-03 12:05:06 CST")
    rx = Receiver(port=0, tz=ZoneInfo("Asia/Shanghai"))
    rx._add(m)
    page = rx._page().decode()
    rx._server.server_close()
    assert "12-03 12:05:06" in page and "04:05:06" not in page and "Asia/Shanghai" in page


def test_a_caretaker_names_a_resident_and_only_those_allowed_see_it(
    ctx: AppContext, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cg1, cg2 = bearer(ctx, "cg-1"), bearer(ctx, "cg-2")
    got = client.put("/api/residents/r-2/label", json={"label": "1302 的李爷爷"}, headers=cg1)
    assert got.status_code == 200 and got.json()["display_name"] == "1302 的李爷爷"
    assert names(client.get("/api/residents", headers=bearer(ctx, "mgr")).json())[2] == (
        "r-2",
        "1302 的李爷爷",
    )
    # another caretaker may not name (nor see) someone else's resident; a guard has no residents
    assert (
        client.put("/api/residents/r-2/label", json={"label": "x"}, headers=cg2).status_code == 404
    )
    guard = client.put(
        "/api/residents/r-2/label", json={"label": "x"}, headers=bearer(ctx, "guard")
    )
    assert guard.status_code == 403
    # the label is audited as a change, never with its words, and never logged
    entries = client.get("/api/audit", params={"action": "resident.label"}, headers=ADMIN).json()
    assert [(e["actor"], e["target"]) for e in entries["items"]] == [("cg-1", "r-2")]
    assert "李爷爷" not in str(entries)
    assert not [r for r in caplog.records if "李爷爷" in r.getMessage()]
    # an empty label brings the registry's name back
    cleared = client.put("/api/residents/r-2/label", json={"label": " "}, headers=cg1).json()
    assert cleared["display_name"] == "李建国"


def test_a_name_given_through_one_instance_shows_on_the_others(
    auth_at: Path | str, tmp_path: Path
) -> None:
    """On PostgreSQL the instances of a district share the staff store, and the names
    caretakers give their residents with it: given through one instance's console, shown by
    another's (each has its own data directory). On SQLite the one instance's file keeps them."""
    one, two = AuthStore.open(auth_at), AuthStore.open(auth_at)
    try:
        shared = one.shared
        here = labels_in(tmp_path / "a", one)
        there = labels_in(tmp_path / ("b" if shared else "a"), two)
        here.set("r-2", "  1302 的  李爷爷 ", "cg-1")
        assert there.all() == {"r-2": "1302 的 李爷爷"}
        there.set("r-2", "李爷爷", "cg-2")
        assert here.all() == {"r-2": "李爷爷"}
        there.set("r-2", " ", "cg-2")  # cleared
        assert here.all() == {}
        # on PostgreSQL nothing of it is left in an instance's data directory
        if shared:
            assert not (tmp_path / "b").exists()
    finally:
        one.close()
        two.close()
