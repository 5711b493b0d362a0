"""The HTTP API over a real journal and alert store in tmp_path (FastAPI's TestClient),
called with the admin token or, for a wearable's readings, a token of the wearer's
caretaker. The attacks on it are in tests/integration/test_api_security.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alerts import AlertStore
from ingest.journal import Journal
from ingest.payloads import DeadLetter, Reading, decode
from jiayuan.api import create_app
from jiayuan.context import AppContext
from registry import Building, Device, Registry, Resident, Staff
from rules.transitions import Transition
from tests.clock import FakeClock as Clock
from tests.staff import ADMIN, app_context, bearer

T0 = 1_699_999_200.0  # 2023-11-14T22:00:00Z, on an hour boundary
T0_TEXT = "2023-11-14T22:00:00Z"


def msg(device: str, kind: str, stream: str, at: float, **body: Any) -> Reading | DeadLetter:
    topic = f"community/y/{kind}/{device}/{stream}"
    return decode(topic, json.dumps({"ts": int(at * 1000), **body}).encode(), at + 1)


def transition(device: str, rule: str, building: str = "b3", **kw: Any) -> Transition:
    base: dict[str, Any] = {
        "kind": "wearable",
        "severity": "major",
        "signal": "alarm",
        "route": "caretaker",
        "summary": "Heart rate high",
        "at": T0,
    }
    base.update(kw)
    return Transition(
        action="fire",
        rule_id=rule,
        device_id=device,
        labels={"building": building, "community": "y"},
        **base,
    )


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    registry = Registry(
        community="y",
        buildings=[Building(building="b1", compound="c1"), Building(building="b3", compound="c1")],
        devices=[
            Device(
                device_id="w-1",
                kind="wearable",
                compound="c1",
                building="b3",
                unit="3-2-501",
                resident_id="r-1",
            ),
            Device(device_id="s-1", kind="smoke", compound="c1", building="b1", unit="1-1-101"),
            Device(device_id="g-1", kind="gate", compound="c1", name="north gate"),
        ],
        residents=[
            Resident(resident_id="r-1", building="b3", unit="3-2-501", caretakers=("cg-7",))
        ],
        staff=[
            Staff(staff_id="cg-7", name="Wang", role="caretaker"),
            Staff(staff_id="g-2", name="Li", role="security"),
            Staff(staff_id="mgr-1", name="Zhao", role="manager"),
        ],
    )
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    journal.sync_registry(registry)
    decoded = [
        msg("w-1", "wearable", "telemetry", T0, heart_rate=70, seq=1),
        msg("w-1", "wearable", "telemetry", T0 + 30, heart_rate=72, seq=2),
        msg("w-1", "wearable", "telemetry", T0 + 60, heart_rate=80, seq=3),
        msg("w-1", "wearable", "telemetry", T0 + 90, heart_rate=90, steps=12, seq=4),
        msg("w-1", "wearable", "event", T0 + 100, event="fall", seq=5),
        msg("w-1", "wearable", "telemetry", T0 + 3600, heart_rate=100, seq=6),
        msg("w-1", "wearable", "status", T0, state="online", fw="1.2"),
        msg("s-1", "smoke", "telemetry", T0, obscuration_pct_m=0.1, battery=88),
        msg("w-9", "wearable", "telemetry", T0, heart_rate=66),  # heard, not registered
        msg("w-1", "wearable", "telemetry", T0, heart_rate=400),  # out of range
        decode("community/y/wearable/w-1/telemetry", b"{not json", T0 + 5),
        decode("community/y/toaster/t-1/telemetry", b"{}", T0 + 6),
    ]
    journal.write_batch(
        [r for r in decoded if isinstance(r, Reading)],
        [d for d in decoded if isinstance(d, DeadLetter)],
    )
    store = AlertStore(tmp_path / "alerts.db", clock=Clock(T0 + 7200))
    with app_context(tmp_path, journal, store, registry) as c:
        yield c


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), headers=ADMIN) as c:
        yield c


@pytest.fixture
def carer(ctx: AppContext) -> dict[str, str]:
    """Headers of cg-7, the caretaker of r-1 who wears w-1."""
    return bearer(ctx, "cg-7")


def detail(r: Any) -> str:
    return json.dumps(r.json()["detail"])


# ------------------------------------------------------------------ system


@pytest.mark.expect_errors('jiayuan_log_errors_total{logger="jiayuan.api.system"}')
def test_healthz_follows_the_service(ctx: AppContext, client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ctx.health = lambda: {"status": "degraded", "mqtt": "disconnected"}
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["mqtt"] == "disconnected"

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    ctx.health = broken
    assert client.get("/healthz").status_code == 503


def test_metrics_are_prometheus_text(ctx: AppContext, client: TestClient) -> None:
    ctx.alerts.apply(transition("w-1", "hr_high"))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'jiayuan_alerts{status="firing"} 1.0' in r.text
    assert "jiayuan_alert_changes_total" in r.text and "jiayuan_stream_clients" in r.text


def test_openapi_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in (
        "/healthz",
        "/metrics",
        "/api/devices",
        "/api/devices/{device_id}",
        "/api/devices/{device_id}/readings",
        "/api/alerts",
        "/api/alerts/{alert_id}",
        "/api/alerts/{alert_id}/ack",
        "/api/alerts/{alert_id}/resolve",
        "/api/dead-letters",
        "/api/dead-letters/counts",
        "/api/stream",
        "/api/registry/summary",
    ):
        assert p in paths, p
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------ devices and readings


def test_devices_list_filters_and_pages(client: TestClient) -> None:
    body = client.get("/api/devices").json()
    assert body["total"] == 4
    assert [d["device_id"] for d in body["items"]] == ["g-1", "s-1", "w-1", "w-9"]
    assert client.get("/api/devices", params={"kind": "wearable"}).json()["total"] == 2
    assert [
        d["device_id"]
        for d in client.get("/api/devices", params={"building": "b3"}).json()["items"]
    ] == ["w-1"]
    assert [
        d["device_id"]
        for d in client.get("/api/devices", params={"registered": "false"}).json()["items"]
    ] == ["w-9"]
    assert client.get("/api/devices", params={"online": "true"}).json()["total"] == 1
    page = client.get("/api/devices", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 4 and [d["device_id"] for d in page["items"]] == ["s-1", "w-1"]
    r = client.get("/api/devices", params={"limit": 0})
    assert r.status_code == 422 and "limit" in detail(r)
    assert client.get("/api/devices", params={"kind": "toaster"}).status_code == 422


def test_device_detail_has_times_in_utc_and_open_alerts(
    ctx: AppContext, client: TestClient
) -> None:
    ctx.alerts.apply(transition("w-1", "hr_high"))
    d = client.get("/api/devices/w-1").json()
    assert d["building"] == "b3" and d["registered"] is True and d["online"] is True
    assert d["state_since"] == T0_TEXT and d["fw"] == "1.2"
    assert d["last_seen"].endswith("Z")
    assert [a["rule_id"] for a in d["open_alerts"]] == ["hr_high"]
    r = client.get("/api/devices/nope")
    assert r.status_code == 404 and r.json() == {"detail": "device 'nope' not found"}


def test_readings_raw_and_aggregated(client: TestClient, carer: dict[str, str]) -> None:
    client.headers.update(carer)
    raw = client.get("/api/devices/w-1/readings").json()
    assert raw["step"] == "raw" and len(raw["items"]) == 7
    assert raw["items"][0]["ts"] == T0_TEXT
    hr = client.get("/api/devices/w-1/readings", params={"metric": "heart_rate"}).json()
    assert [i["values"] for i in hr["items"]] == [{"heart_rate": v} for v in (70, 72, 80, 90, 100)]
    window = client.get(
        "/api/devices/w-1/readings",
        params={
            "metric": "heart_rate",
            "since": "2023-11-15T06:00:30+08:00",
            "until": "2023-11-14T22:30:00Z",
        },
    ).json()
    assert [i["values"]["heart_rate"] for i in window["items"]] == [72, 80, 90]
    per_min = client.get(
        "/api/devices/w-1/readings", params={"metric": "heart_rate", "step": "1m"}
    ).json()
    assert [(b["ts"], b["min"], b["max"], b["mean"], b["count"]) for b in per_min["items"]] == [
        (T0_TEXT, 70, 72, 71, 2),
        ("2023-11-14T22:01:00Z", 80, 90, 85, 2),
        ("2023-11-14T23:00:00Z", 100, 100, 100, 1),
    ]
    per_hour = client.get(
        "/api/devices/w-1/readings", params={"metric": "heart_rate", "step": "1h"}
    ).json()
    assert [b["count"] for b in per_hour["items"]] == [4, 1]
    limited = client.get("/api/devices/w-1/readings", params={"limit": 2}).json()
    assert len(limited["items"]) == 2 and limited["truncated"] is True


def test_readings_refusals_name_the_problem(client: TestClient, carer: dict[str, str]) -> None:
    client.headers.update(carer)
    r = client.get("/api/devices/w-1/readings", params={"step": "1m"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "metric"]
    assert "metric is required" in detail(r)
    r = client.get("/api/devices/w-1/readings", params={"since": "2023-11-14T22:00:00"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"]
    assert "timezone" in detail(r)
    r = client.get(
        "/api/devices/w-1/readings",
        params={"since": "2023-11-14T23:00:00Z", "until": "2023-11-14T22:00:00Z"},
    )
    assert r.status_code == 422 and "until must be later than since" in detail(r)
    r = client.get("/api/devices/w-1/readings", params={"step": "5m", "metric": "heart_rate"})
    assert r.status_code == 422 and "step" in detail(r)
    r = client.get("/api/devices/w-1/readings", params={"metric": "$.a[0]"})
    assert r.status_code == 422 and "metric" in detail(r)
    r = client.get("/api/devices/ghost/readings")
    assert r.status_code == 404 and "'ghost'" in detail(r)


# ------------------------------------------------------------------ dead letters, registry


def test_dead_letters_and_counts(client: TestClient) -> None:
    body = client.get("/api/dead-letters").json()
    assert body["total"] == 3
    assert body["items"][0]["reason"] == "unknown_topic"  # newest first
    oor = client.get("/api/dead-letters", params={"reason": "out_of_range"}).json()
    assert oor["total"] == 1 and "heart_rate" in oor["items"][0]["detail"]
    assert oor["items"][0]["received"].endswith("Z")
    assert (
        client.get("/api/dead-letters", params={"since": "2023-11-14T22:00:05Z"}).json()["total"]
        == 2
    )
    assert len(client.get("/api/dead-letters", params={"limit": 1}).json()["items"]) == 1
    r = client.get("/api/dead-letters", params={"reason": "bad_mood"})
    assert r.status_code == 422 and "reason" in detail(r)
    counts = client.get("/api/dead-letters/counts").json()
    assert counts["total"] == 3 and counts["counts"]["not_json"] == 1
    assert counts["counts"]["too_large"] == 0


def test_registry_summary(client: TestClient) -> None:
    assert client.get("/api/registry/summary").json() == {
        "community": "y",
        "compounds": 1,
        "buildings": 2,
        "devices": {"wearable": 1, "smoke": 1, "gate": 1},
        "residents": 1,
        "staff": {"caretaker": 1, "security": 1, "manager": 1},
    }


# ------------------------------------------------------------------ alerts


def test_alerts_list_filters_and_pages(ctx: AppContext, client: TestClient) -> None:
    ctx.alerts.apply(transition("w-1", "hr_high"))
    ctx.alerts.apply(
        transition("s-1", "smoke", building="b1", kind="smoke", severity="critical", at=T0 + 60)
    )
    ctx.alerts.apply(transition("w-9", "battery", severity="warning", signal="trouble"))
    body = client.get("/api/alerts").json()
    assert body["total"] == 3
    assert [a["rule_id"] for a in body["items"]] == ["smoke", "hr_high", "battery"]
    first = body["items"][0]
    assert first["status"] == "firing" and first["started_at"] == "2023-11-14T22:01:00Z"
    assert first["raised_at"] == "2023-11-15T00:00:00Z" and first["acknowledged_at"] is None

    def ids(**params: Any) -> list[str]:
        return [a["device_id"] for a in client.get("/api/alerts", params=params).json()["items"]]

    assert ids(building="b1") == ["s-1"]
    assert ids(severity=["warning", "major"]) == ["w-1", "w-9"]
    assert ids(kind="smoke") == ["s-1"]
    assert ids(device_id="w-9") == ["w-9"]
    assert ids(status="resolved") == []
    assert ids(since="2023-11-14T22:00:30Z") == ["s-1"]
    assert ids(until="2023-11-14T22:00:30Z", sort="newest") == ["w-9", "w-1"]
    page = client.get("/api/alerts", params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 3 and [a["device_id"] for a in page["items"]] == ["w-1"]
    for bad in ({"limit": 501}, {"offset": -1}, {"status": "open"}, {"since": "yesterday"}):
        r = client.get("/api/alerts", params=bad)
        assert r.status_code == 422 and next(iter(bad)) in detail(r), bad


def test_ack_and_resolve_round_trip(ctx: AppContext, client: TestClient) -> None:
    change = ctx.alerts.apply(transition("w-1", "fall", severity="critical"))
    assert change is not None
    aid = change.alert.id
    cg7, mgr = bearer(ctx, "cg-7"), bearer(ctx, "mgr-1")
    r = client.post(f"/api/alerts/{aid}/ack", json={"note": "on my way"}, headers=cg7)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    got = client.get(f"/api/alerts/{aid}").json()
    assert (got["acknowledged_by"], got["acknowledged_at"]) == ("cg-7", "2023-11-15T00:00:00Z")
    assert [(h["action"], h["by"], h["note"]) for h in got["history"]] == [
        ("raised", "rule", ""),
        ("acknowledged", "cg-7", "on my way"),
    ]
    again = client.post(f"/api/alerts/{aid}/ack", json={"by": "cg-7"}, headers=cg7)
    assert again.status_code == 200 and len(again.json()["history"]) == 2  # idempotent
    r = client.post(f"/api/alerts/{aid}/ack", json={}, headers=mgr)
    assert r.status_code == 409
    assert r.json()["detail"] == (
        f"alert {aid} is already acknowledged by cg-7 at "
        "2023-11-15T00:00:00Z; it cannot be acknowledged"
    )
    r = client.post(f"/api/alerts/{aid}/resolve", json={"note": "false alarm"}, headers=mgr)
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert r.json()["resolved_by"] == "mgr-1" and r.json()["history"][-1]["note"] == "false alarm"
    assert client.get("/api/alerts", params={"status": "resolved"}).json()["total"] == 1
    r = client.post(f"/api/alerts/{aid}/ack", json={}, headers=cg7)
    assert r.status_code == 409 and "resolved by mgr-1" in detail(r)
    r = client.post(f"/api/alerts/{aid}/resolve", json={}, headers=cg7)
    assert r.status_code == 409 and "cannot be resolved" in detail(r)


def test_resolved_by_the_rule_is_a_conflict_that_says_so(
    ctx: AppContext, client: TestClient
) -> None:
    change = ctx.alerts.apply(transition("w-1", "hr_high"))
    assert change is not None
    ctx.alerts.apply(
        Transition(
            action="clear",
            rule_id="hr_high",
            device_id="w-1",
            kind="wearable",
            severity="major",
            signal="alarm",
            route="caretaker",
            at=T0 + 600,
            summary="Heart rate normal",
        )
    )
    r = client.post(f"/api/alerts/{change.alert.id}/resolve", json={})
    assert r.status_code == 409 and "by the rule" in detail(r)
    got = client.get(f"/api/alerts/{change.alert.id}").json()
    assert got["resolved_by"] == "rule" and got["ended_at"] == "2023-11-14T22:10:00Z"


def test_alert_refusals_name_the_problem(ctx: AppContext, client: TestClient) -> None:
    r = client.get("/api/alerts/404")
    assert r.status_code == 404 and r.json() == {"detail": "alert 404 not found"}
    r = client.post("/api/alerts/404/ack", json={})
    assert r.status_code == 404 and "alert 404" in detail(r)
    change = ctx.alerts.apply(transition("w-1", "hr_high"))
    assert change is not None
    url = f"/api/alerts/{change.alert.id}/ack"
    cases: list[tuple[Any, str]] = [
        ({"by": "nobody"}, "'nobody' is not you: you are signed in as 'admin-token'"),
        ({"by": "cg 7"}, "by"),
        ({"note": "x", "priority": 1}, "priority"),
        ({"by": "rule"}, "'rule' is not you"),
        ({"note": "x" * 2001}, "note"),
    ]
    for body, named in cases:
        r = client.post(url, json=body)
        assert r.status_code == 422 and named in detail(r), body
    assert client.get("/api/alerts/0").status_code == 422
    assert ctx.alerts.get(change.alert.id).status == "firing"


def test_the_name_on_an_acknowledgement_is_the_callers(ctx: AppContext, client: TestClient) -> None:
    change = ctx.alerts.apply(transition("w-1", "hr_high"))
    assert change is not None
    r = client.post(f"/api/alerts/{change.alert.id}/ack", json={"note": "seen"})
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "admin-token"
