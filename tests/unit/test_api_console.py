"""What the staff console reads beyond the core API: residents, device health by building, the
operators' figures (the same as /metrics), and the console's own files."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alerts import AlertStore
from ingest.journal import Journal
from ingest.metrics import DEAD_LETTERS, MESSAGES
from ingest.payloads import DeadLetter, Reading, decode
from jiayuan.api import create_app
from jiayuan.api.residents import summarize
from jiayuan.context import AppContext
from registry import Building, Device, Registry, Resident, Staff
from rules.transitions import Transition
from tests.staff import ADMIN, app_context, bearer

NOW = time.time()
DAY = NOW - 3 * 3600  # the caller's day started three hours ago


def msg(device: str, kind: str, stream: str, at: float, **body: Any) -> Reading | DeadLetter:
    topic = f"community/y/{kind}/{device}/{stream}"
    return decode(topic, json.dumps({"ts": int(at * 1000), **body}).encode(), at + 1)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    registry = Registry(
        community="y",
        buildings=[
            Building(building="B1", compound="C01", name="一号楼"),
            Building(building="B2", compound="C01"),
        ],
        devices=[
            Device(
                device_id="wr-1",
                kind="wearable",
                compound="C01",
                building="B1",
                unit="1-1-101",
                resident_id="r-1",
            ),
            Device(
                device_id="wr-2",
                kind="wearable",
                compound="C01",
                building="B2",
                unit="2-1-201",
                resident_id="r-2",
            ),
            Device(device_id="smk-1", kind="smoke", compound="C01", building="B1", unit="1-1-101"),
            Device(device_id="gate-C01-main", kind="gate", compound="C01"),
        ],
        residents=[
            Resident(resident_id="r-1", building="B1", unit="1-1-101", caretakers=("cg-1",)),
            Resident(resident_id="r-2", building="B2", unit="2-1-201", caretakers=("cg-2", "cg-1")),
            Resident(resident_id="r-3", building="B2", unit="2-1-202", caretakers=("cg-2",)),
        ],
        staff=[
            Staff(staff_id="cg-1", name="A", role="caretaker"),
            Staff(staff_id="cg-2", name="B", role="caretaker"),
        ],
    )
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    journal.sync_registry(registry)
    decoded = [
        msg("wr-1", "wearable", "status", DAY - 7200, state="online"),
        msg("wr-1", "wearable", "telemetry", DAY - 600, heart_rate=60, steps=900, seq=1),
        msg(
            "wr-1", "wearable", "telemetry", DAY + 60, heart_rate=70, steps=1000, seq=2, battery=15
        ),
        msg(
            "wr-1", "wearable", "telemetry", DAY + 120, heart_rate=75, steps=1200, seq=3, worn=True
        ),
        msg("wr-1", "wearable", "telemetry", DAY + 180, steps=50, seq=4),  # restarted
        msg("wr-1", "wearable", "event", DAY + 200, event="fall", seq=5),
        msg("wr-1", "wearable", "telemetry", DAY + 240, spo2=97, seq=6),
        msg("smk-1", "smoke", "status", DAY, state="offline"),
        msg("stray-1", "wearable", "telemetry", DAY, heart_rate=66),
    ]
    journal.write_batch([r for r in decoded if isinstance(r, Reading)], [])
    store = AlertStore(tmp_path / "alerts.db")
    store.apply(
        Transition(
            action="fire",
            rule_id="wearable_fall",
            device_id="wr-1",
            kind="wearable",
            severity="critical",
            signal="alarm",
            route="caretaker",
            at=DAY + 200,
            summary="Fall detected",
            labels={"building": "B1", "resident_id": "r-1"},
        )
    )
    with app_context(tmp_path, journal, store, registry) as c:
        yield c


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), headers=ADMIN) as c:
        yield c


def day_start() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(DAY))


def test_a_caretaker_sees_their_residents_with_open_alerts_first(
    ctx: AppContext, client: TestClient
) -> None:
    cg1 = bearer(ctx, "cg-1")
    page = client.get(
        "/api/residents", params={"caretaker": "cg-1", "day_start": day_start()}, headers=cg1
    ).json()
    assert page["total"] == 2
    first, second = page["items"]
    assert (first["resident_id"], first["open_alerts"], second["resident_id"]) == ("r-1", 1, "r-2")
    assert first["compound"] == "C01" and first["device_id"] == "wr-1"
    assert first["caretakers"] == ["cg-1"] and second["caretakers"] == ["cg-2", "cg-1"]
    latest = first["latest"]
    assert latest["heart_rate"]["value"] == 75 and latest["spo2"]["value"] == 97
    assert latest["battery"]["value"] == 15 and latest["worn"]["value"] is True
    assert first["activity"]["steps"] == 100 + 200 + 50  # from 900 before the day, then reset
    assert first["activity"]["readings"] == 5 and first["activity"]["events"] == {"fall": 1}
    assert second["device_id"] == "wr-2" and second["latest"] == {}
    assert second["last_seen"] is None and second["activity"]["steps"] is None
    theirs = client.get("/api/residents", params={"caretaker": "cg-2"}, headers=cg1).json()
    assert [r["resident_id"] for r in theirs["items"]] == ["r-2"]  # r-3 is not cg-1's
    # the admin sees every resident, and of their wearables only the state, never the vitals
    other = client.get("/api/residents", params={"caretaker": "cg-2"}).json()
    assert [r["resident_id"] for r in other["items"]] == ["r-2", "r-3"]
    everyone = client.get("/api/residents", params={"day_start": day_start()}).json()
    r1 = next(r for r in everyone["items"] if r["resident_id"] == "r-1")
    assert r1["latest"] == {"battery": {"value": 15, "at": r1["last_seen"]}}
    assert r1["activity"] is None and r1["open_alerts"] == 1
    assert client.get("/api/residents", params={"building": "B2"}).json()["total"] == 2
    assert client.get("/api/residents", params={"caretaker": "bad id"}).status_code == 422


def test_one_resident_with_their_open_alerts(ctx: AppContext, client: TestClient) -> None:
    cg1 = bearer(ctx, "cg-1")
    r = client.get("/api/residents/r-1", params={"day_start": day_start()}, headers=cg1).json()
    assert r["online"] is True and r["unit"] == "1-1-101"
    assert [a["rule_id"] for a in r["alerts"]] == ["wearable_fall"]
    assert r["latest"]["heart_rate"]["value"] == 75
    assert client.get("/api/residents/r-3", headers=cg1).status_code == 404  # cg-2's
    missing = client.get("/api/residents/r-404")
    assert missing.status_code == 404 and "r-404" in missing.json()["detail"]


def test_day_activity_counts_increases_and_restarts() -> None:
    rows = [
        {"ts": 10.0, "stream": "telemetry", "event": None, "values": {"steps": 5}},
        {"ts": 20.0, "stream": "telemetry", "event": None, "values": {"steps": 8, "worn": False}},
        {"ts": 30.0, "stream": "event", "event": "sos", "values": {"event": "sos"}},
    ]
    latest, activity = summarize(rows, day_start=0.0)
    assert activity.steps == 3 and activity.readings == 3 and activity.events == {"sos": 1}
    assert latest["worn"].value is False and latest["steps"].value == 8
    _, none = summarize([], day_start=0.0)
    assert none.steps is None and none.readings == 0


def test_fleet_summary_counts_health_by_building(client: TestClient) -> None:
    s = client.get("/api/fleet/summary").json()
    assert (s["registered"], s["unregistered"]) == (4, 1)
    places = {(p["compound"], p["building"]): p for p in s["places"]}
    assert list(places) == [("C01", None), ("C01", "B1"), ("C01", "B2")]
    b1 = places[("C01", "B1")]
    assert b1["name"] == "一号楼" and b1["kinds"] == {"wearable": 1, "smoke": 1}
    assert (b1["online"], b1["offline"], b1["low_battery"], b1["never_seen"]) == (1, 1, 1, 0)
    assert places[("C01", None)]["never_seen"] == 1
    assert places[("C01", "B2")]["never_seen"] == 1


def metric(text: str, name: str) -> float:
    return sum(
        float(m)
        for m in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    )


def test_ops_summary_reads_the_same_figures_as_metrics(client: TestClient) -> None:
    MESSAGES.labels(kind="wearable", stream="telemetry").inc(3)
    DEAD_LETTERS.labels(reason="not_json").inc()
    ops = client.get("/api/ops/summary").json()
    text = client.get("/metrics").text
    assert ops["messages_received_total"] == metric(text, "jiayuan_messages_received_total") >= 3
    assert ops["dead_letters_total"] == metric(text, "jiayuan_dead_letters_total") >= 1
    assert ops["dead_letters"]["not_json"] >= 1 and ops["dead_letters"]["too_large"] >= 0
    assert ops["messages_received"]["wearable/telemetry"] >= 3
    assert ops["alerts"]["firing"] == metric(text, 'jiayuan_alerts{status="firing"}') == 1
    assert ops["at_epoch"] == pytest.approx(time.time(), abs=60)


def test_the_console_is_served_at_the_root(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (
        "/console/app.js" in page.text
        and "default-src 'self'" in (page.headers["content-security-policy"])
    )
    js = client.get("/console/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for name in re.findall(r'from "\./([\w.]+)"', js.text):
        assert client.get(f"/console/{name}").status_code == 200, name
    assert client.get("/console/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/console/nope.js").status_code == 404
    assert client.get("/console/..%2Fapp.py").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]
