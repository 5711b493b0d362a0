"""``GET /api/devices/{id}/baseline`` (health data: the wearer's caretakers only) and
``POST /api/rules/backtest`` (managers and admins), over a real journal with its rollups."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from alerts import AlertStore
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.rollups import RollupWorker
from jiayuan.api import create_app
from jiayuan.context import AppContext
from registry import Building, Device, Registry, Resident, Staff
from rules.model import builtin_pack, load_rules
from tests.staff import ADMIN, app_context, bearer

NOW = time.time() // 3600 * 3600
DAYS = 9


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    registry = Registry(
        community="y",
        buildings=[Building(building="b3", compound="c1")],
        devices=[
            Device(device_id="w-1", kind="wearable", compound="c1", building="b3",
                   unit="3-2-501", resident_id="r-1"),
            Device(device_id="w-2", kind="wearable", compound="c1", building="b3",
                   unit="3-2-502", resident_id="r-2"),
            Device(device_id="g-1", kind="gate", compound="c1", building="b3"),
        ],
        residents=[
            Resident(resident_id="r-1", building="b3", unit="3-2-501", caretakers=("cg-7",)),
            Resident(resident_id="r-2", building="b3", unit="3-2-502", caretakers=("cg-8",)),
        ],
        staff=[
            Staff(staff_id="cg-7", name="Wang", role="caretaker"),
            Staff(staff_id="cg-8", name="Zhou", role="caretaker"),
            Staff(staff_id="g-2", name="Li", role="security"),
            Staff(staff_id="mgr-1", name="Zhao", role="manager"),
        ],
    )  # fmt: skip
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    journal.sync_registry(registry)
    readings: list[Reading] = []
    seq = 0
    for h in range(DAYS * 24):  # w-1: 60 bpm at night, 80 by day; every 10 minutes
        for k in range(6):
            t = NOW - DAYS * 86_400 + h * 3600 + k * 600
            local_hour = int((t / 3600 + 8) % 24)  # Asia/Shanghai
            seq += 1
            hr = 80 if 8 <= local_hour < 20 else 60
            r = decode(
                "community/y/wearable/w-1/telemetry",
                json.dumps({"ts": int(t * 1000), "seq": seq, "heart_rate": hr}).encode(),
                t + 1,
            )
            assert isinstance(r, Reading)
            readings.append(r)
    for i in range(12):  # night door openings: one night
        t = NOW - 2 * 86_400 + i * 60
        r = decode(
            "community/y/gate/g-1/event",
            json.dumps({"ts": int(t * 1000), "seq": 1000 + i, "event": "granted"}).encode(),
            t + 1,
        )
        assert isinstance(r, Reading)
        readings.append(r)
    readings.sort(key=lambda r: r.received)
    journal.write_batch(readings, [])
    rollups = RollupWorker(journal.path)
    db = rollups.open()
    while rollups.step(db):
        pass
    db.close()
    store = AlertStore(tmp_path / "alerts.db")
    with app_context(tmp_path, journal, store, registry) as c:
        yield c


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), headers=ADMIN) as c:
        yield c


def test_the_baseline_is_shown_to_the_wearers_caretaker(
    ctx: AppContext, client: TestClient
) -> None:
    r = client.get(
        "/api/devices/w-1/baseline",
        params={"metric": "heart_rate", "min_days": 7},
        headers=bearer(ctx, "cg-7"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timezone"] == "Asia/Shanghai" and len(body["hours"]) == 24
    by_hour = {h["hour"]: h for h in body["hours"]}
    assert by_hour[3]["median"] == 60 and by_hour[14]["median"] == 80
    assert by_hour[14]["days"] >= 7 and by_hour[14]["spread"] == 0
    strict = client.get(
        "/api/devices/w-1/baseline",
        params={"metric": "heart_rate", "days": 14, "min_days": 14},
        headers=bearer(ctx, "cg-7"),
    ).json()
    assert all(h["median"] is None for h in strict["hours"])  # nine days are not enough


@pytest.mark.parametrize(("staff", "status"), [("cg-8", 404), ("g-2", 404), ("mgr-1", 403)])
def test_the_baseline_is_health_data_for_no_one_else(
    ctx: AppContext, client: TestClient, staff: str, status: int
) -> None:
    r = client.get(
        "/api/devices/w-1/baseline",
        params={"metric": "heart_rate"},
        headers=bearer(ctx, staff),
    )
    assert r.status_code == status, r.text
    assert "heart" not in r.text and "median" not in r.text


def test_a_manager_backtests_a_rule_file(ctx: AppContext, client: TestClient) -> None:
    night = next(r for r in load_rules([builtin_pack()]) if r.id == "gate_opened_at_night")
    tried = night.model_dump(by_alias=True, exclude_defaults=True)
    tried["active"] = {"hours": "00:00-24:00"}  # all day: still one alert (never resolved)
    tried["id"] = "gate_opened_any_time"
    body = {
        "rules": yaml.safe_dump({"rules": [tried]}),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 3 * 86_400)),
        "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW)),
    }
    r = client.post("/api/rules/backtest", json=body, headers=bearer(ctx, "mgr-1"))
    assert r.status_code == 200, r.text
    out = {x["rule_id"]: x for x in r.json()["rules"]}
    assert out["gate_opened_any_time"]["tried"] == 1
    assert out["gate_opened_any_time"]["in_force"] is None
    assert out["wearable_fall"]["in_force"] == 0 and out["wearable_fall"]["tried"] is None
    assert r.json()["rows"] > 0
    refused = client.post("/api/rules/backtest", json=body, headers=bearer(ctx, "cg-7"))
    assert refused.status_code == 403
    bad = client.post(
        "/api/rules/backtest",
        json={**body, "rules": yaml.safe_dump({"rules": [{**tried, "verify": {"within": 5}}]})},
    )
    assert bad.status_code == 422
    assert "rules: rule 'gate_opened_any_time' (#1): field 'verify" in bad.text


def test_a_manager_reads_the_rules_in_force_and_a_guard_is_refused(
    ctx: AppContext, client: TestClient
) -> None:
    r = client.get("/api/rules", headers=bearer(ctx, "mgr-1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timezone"] == "Asia/Shanghai"
    rules = {x["id"]: x for x in body["rules"]}
    high = rules["wearable_heart_rate_high"]
    assert high["definition"]["above"] == 120 and high["definition"]["for"] == 600
    assert high["definition"]["route"] == "caretaker"
    assert high["title_zh"] == "心率持续偏高"  # as its alerts are named
    assert high["editable"] == ["above", "below", "clear", "for"]
    assert rules["wearable_heart_rate_above_baseline"]["editable"] == [
        "baseline.above_by",
        "baseline.clear_by",
    ]
    assert rules["gate_opened_at_night"]["definition"]["active"]["hours"]
    assert rules["wearable_fall"]["definition"]["verify"]["within"] == 30
    for staff in ("g-2", "cg-7"):
        refused = client.get("/api/rules", headers=bearer(ctx, staff))
        assert refused.status_code == 403, refused.text


def _range(days: int) -> dict[str, str]:
    return {
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - days * 86_400)),
        "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW)),
    }


def test_a_lower_threshold_is_backtested_beside_the_rules_in_force(
    ctx: AppContext, client: TestClient
) -> None:
    # w-1 is at 80 bpm every day from 08:00 to 20:00: above 75 that is one alert a day
    change = {"rule_id": "wearable_heart_rate_high", "above": 75, "clear": 70}
    r = client.post(
        "/api/rules/backtest",
        json={"changes": [change], **_range(4)},
        headers=bearer(ctx, "mgr-1"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    out = {x["rule_id"]: x for x in body["rules"]}
    high = out["wearable_heart_rate_high"]
    assert high["in_force"] == 0 and high["raised"] == 0
    assert high["tried"] is not None and 3 <= high["tried"] <= 5
    assert sum(tried for tried, _ in high["per_day"].values()) == high["tried"]
    assert set(high["per_day"]) <= set(body["days"]) and high["raised_per_day"] == {}
    assert out["wearable_fall"]["tried"] is None  # only the rule changed is tried
    assert body["timezone"] == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"changes": [{"rule_id": "nope", "above": 1}]}, "rule_id", "no rule in force"),
        (
            {"changes": [{"rule_id": "wearable_fall", "above": 1}]},
            "above",
            "wearable_fall (event) has no 'above'",
        ),
        (
            {"changes": [{"rule_id": "wearable_heart_rate_high", "above": 100, "clear": 130}]},
            "changes",
            "clear level 130 must be at or below the trigger",
        ),
        (
            {"changes": [{"rule_id": "wearable_heart_rate_high", "for": 8 * 86_400}]},
            "for",
            "less than or equal to 604800",
        ),
        ({"rules": "rules: []", "changes": [{"rule_id": "wearable_fall"}]}, "", "exactly one"),
        ({}, "", "exactly one"),
    ],
)
def test_a_bad_change_is_refused_with_what_is_wrong(
    ctx: AppContext, client: TestClient, body: dict[str, object], where: str, says: str
) -> None:
    r = client.post(
        "/api/rules/backtest",
        content=json.dumps({**body, **_range(2)}),
        headers={**bearer(ctx, "mgr-1"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert where in r.text and says in r.text


def test_a_backtest_longer_than_a_month_is_refused(ctx: AppContext, client: TestClient) -> None:
    change = {"rule_id": "wearable_heart_rate_high", "above": 100}
    r = client.post(
        "/api/rules/backtest",
        json={"changes": [change], **_range(32)},
        headers=bearer(ctx, "mgr-1"),
    )
    assert r.status_code == 422 and "at most 31 days" in r.text
