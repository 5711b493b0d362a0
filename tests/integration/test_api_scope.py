"""Who sees what, on the real API: a caretaker sees their own residents only — in every listing,
every detail, and the live stream; health data only reaches the wearer's caretakers; roles are
refused what they may not use; the name on an action is the caller's; every audited action
leaves its entry. On both stores: the journal, alert store and staff access in SQLite files or
in one PostgreSQL database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jiayuan.auth.manage import note_registry, set_password
from registry import Registry, Staff
from tests.alerting import sse
from tests.staff import ADMIN
from tests.staffworld import PASSWORD, World, registry, world
from tests.stores import Stores


@pytest.fixture
def w(tmp_path: Path, stores: Stores) -> Iterator[World]:
    with world(tmp_path, database=stores.url) as made:
        yield made


def ids(items: list[dict[str, Any]], key: str = "device_id") -> list[str]:
    return sorted(i[key] for i in items)


def test_a_caretaker_cannot_list_or_read_another_caretakers_resident(w: World) -> None:
    mine, theirs = w.fire("w-1"), w.fire("w-2")
    smoke = w.fire("s-2", "smoke_alarm", kind="smoke", route="security")
    a = w.token("care-a")
    with w.client(headers=a) as c:
        assert ids(c.get("/api/devices").json()["items"]) == ["s-1", "w-1"]
        assert c.get("/api/devices", params={"building": "B2"}).json() == {"items": [], "total": 0}
        assert ids(c.get("/api/alerts").json()["items"]) == ["w-1"]
        assert c.get("/api/alerts", params={"device_id": "w-2"}).json()["total"] == 0
        assert ids(c.get("/api/residents").json()["items"], "resident_id") == ["r-1"]
        assert c.get("/api/residents", params={"caretaker": "care-b"}).json()["total"] == 0
        fleet = c.get("/api/fleet/summary").json()
        assert fleet["registered"] == 2 and fleet["unregistered"] == 0
        for path in ("/api/devices/w-2", "/api/devices/w-2/readings", "/api/devices/s-2",
                     "/api/devices/g-1", f"/api/alerts/{theirs}", f"/api/alerts/{smoke}",
                     f"/api/alerts/{theirs}/deliveries", "/api/residents/r-2"):  # fmt: skip
            r = c.get(path)
            assert r.status_code == 404, path  # not 403: their existence is not confirmed
        for action in ("ack", "resolve"):
            assert c.post(f"/api/alerts/{theirs}/{action}", json={}).status_code == 404
        assert w.ctx.alerts.get(theirs).status == "firing"
        assert c.get(f"/api/alerts/{mine}").json()["value"] == 1.0  # their resident: shown
        readings = c.get("/api/devices/w-1/readings").json()["items"]
        assert readings[0]["values"]["heart_rate"] == 71
        resident = c.get("/api/residents/r-1").json()
        assert resident["latest"]["heart_rate"]["value"] == 71


def test_the_live_stream_never_carries_another_caretakers_resident(w: World) -> None:
    earlier = w.fire("w-2", "sos")  # replayed on reconnect: must be skipped too
    with w.client(headers=w.token("care-a")) as c, c.stream(
        "GET", "/api/stream", headers={"Last-Event-ID": str(0)}
    ) as r:  # fmt: skip
        events = sse(r.iter_lines())
        assert next(events) == {"comment": "connected"}
        w.fire("w-2")
        w.fire("g-1", "gate_forced", kind="gate", route="security")
        w.fire("w-1")
        seen = next(e for e in events if e.get("event") == "alert")
        data = json.loads(seen["data"])
        assert data["alert"]["device_id"] == "w-1" and data["alert"]["value"] == 1.0
        assert int(seen["id"]) > earlier


def test_a_stream_ends_when_its_session_does(w: World) -> None:
    with w.client() as c:
        c.post("/api/auth/login", json={"staff_id": "care-a", "password": PASSWORD})
        sid = c.cookies.get("jiayuan_session") or ""
        with c.stream("GET", "/api/stream") as r:
            lines = r.iter_lines()
            assert next(lines).startswith("retry")
            w.auth.end_session(sid)  # signed out elsewhere (or expired, or the password changed)
            rest = list(lines)  # the server closes the stream at its next check
        assert not any(line.startswith("data:") for line in rest)


def test_health_data_reaches_only_the_wearers_caretakers(w: World) -> None:
    aid = w.fire("w-1", value=131.0)
    with w.client() as c:
        for who in ("adm", "mgr", "ops"):
            h = w.token(who)
            r = c.get("/api/devices/w-1/readings", headers=h)
            assert r.status_code == 403 and "health data" in r.json()["detail"], who
            assert c.get("/api/devices/w-1", headers=h).json()["battery"] == 80  # the device
            assert c.get(f"/api/alerts/{aid}", headers=h).json()["value"] is None, who
        assert c.get("/api/devices/s-1/readings", headers=w.token("ops")).status_code == 200
        everyone = c.get("/api/residents", headers=w.token("mgr")).json()["items"]
        assert all(set(r["latest"]) <= {"battery"} and r["activity"] is None for r in everyone)
        assert c.get(f"/api/alerts/{aid}", headers=w.token("care-a")).json()["value"] == 131.0
        assert c.get(f"/api/alerts/{aid}", headers=w.token("care-b")).status_code == 404


def test_security_staff_see_gates_smoke_and_the_security_route(w: World) -> None:
    fall = w.fire("w-1")
    forced = w.fire("g-1", "gate_forced", kind="gate", route="security")
    smoke = w.fire("s-2", "smoke_alarm", kind="smoke", route="security")
    with w.client(headers=w.token("guard")) as c:
        assert ids(c.get("/api/devices").json()["items"]) == ["g-1", "s-1", "s-2"]
        assert ids(c.get("/api/alerts").json()["items"]) == ["g-1", "s-2"]
        assert c.get(f"/api/alerts/{fall}").status_code == 404
        assert c.get("/api/devices/w-1").status_code == 404
        gate = c.get("/api/devices/g-1/readings").json()["items"]
        assert gate[0]["event"] == "granted"
        assert c.post(f"/api/alerts/{forced}/ack", json={}).json()["acknowledged_by"] == "guard"
        assert c.get(f"/api/alerts/{smoke}").status_code == 200
        assert c.get("/api/residents").status_code == 403


@pytest.mark.parametrize(
    ("staff_id", "path", "code"),
    [
        ("care-a", "/api/dead-letters", 403),
        ("care-a", "/api/ops/summary", 403),
        ("care-a", "/metrics", 403),
        ("care-a", "/api/audit", 403),
        ("care-a", "/api/escalation/chains", 403),
        ("care-a", "/api/deliveries", 403),
        ("care-a", "/api/registry/summary", 403),
        ("guard", "/api/silences", 503),  # may read them (no alerting in this app)
        ("guard", "/api/dead-letters/counts", 403),
        ("mgr", "/api/dead-letters", 403),
        ("mgr", "/api/audit", 403),
        ("mgr", "/metrics", 403),
        ("ops", "/metrics", 200),
        ("ops", "/api/residents", 403),
        ("ops", "/api/audit", 403),
        ("adm", "/api/audit", 200),
        ("adm", "/api/dead-letters", 200),
    ],
)
def test_roles_are_refused_what_they_may_not_use(
    w: World, staff_id: str, path: str, code: int
) -> None:
    with w.client(headers=w.token(staff_id)) as c:
        assert c.get(path).status_code == code


def test_silences_are_set_only_by_admins_managers_and_operators(w: World) -> None:
    body = {"kind": "gate", "duration": "1h", "reason": "new readers"}
    with w.client() as c:
        r = c.post("/api/silences", json=body, headers=w.token("guard"))
        assert r.status_code == 403
        r = c.post("/api/silences", json=body, headers=w.token("care-a"))
        assert r.status_code == 403


def test_the_name_on_an_ack_comes_from_the_credentials_never_the_body(w: World) -> None:
    aid = w.fire("w-1")
    with w.client(headers=w.token("care-a")) as c:
        r = c.post(f"/api/alerts/{aid}/ack", json={"by": "care-b", "note": "not me"})
        assert r.status_code == 422 and "'care-b' is not you" in r.text
        r = c.post(f"/api/alerts/{aid}/ack", json={"by": "adm"})
        assert r.status_code == 422
        assert w.ctx.alerts.get(aid).status == "firing"
        r = c.post(f"/api/alerts/{aid}/ack", json={"by": "care-a", "note": "coming"})
        assert r.status_code == 200 and r.json()["acknowledged_by"] == "care-a"
        r = c.post(f"/api/alerts/{aid}/resolve", json={"note": "fine"})
        assert r.json()["resolved_by"] == "care-a"
        assert [h["by"] for h in r.json()["history"]] == ["rule", "care-a", "care-a"]


def test_each_audited_action_leaves_its_entry(tmp_path: Path, auth_at: Path | str) -> None:
    with world(tmp_path, auth_at=auth_at) as w:
        each_audited_action_leaves_its_entry(w)


def each_audited_action_leaves_its_entry(w: World) -> None:
    aid = w.fire("w-1")
    with w.client() as c:
        c.post("/api/auth/login", json={"staff_id": "care-a", "password": "wrong guess!"})
        c.post("/api/auth/login", json={"staff_id": "care-a", "password": PASSWORD})
        csrf = {"X-CSRF-Token": c.get("/api/auth/me").json()["csrf_token"]}
        c.post(f"/api/alerts/{aid}/ack", json={}, headers=csrf)
        c.post(f"/api/alerts/{aid}/resolve", json={}, headers=csrf)
        made = c.post("/api/auth/tokens", json={"name": "script"}, headers=csrf).json()
        c.delete(f"/api/auth/tokens/{made['id']}", headers=csrf)
        c.post("/api/auth/logout", headers=csrf)
    set_password(w.auth, w.ctx.registry, "care-b", "a new long password", "cli:root")
    note_registry(w.auth, w.ctx.registry)  # first start: everyone is new
    changed = Registry(
        "y",
        staff=[*registry().staff.values(), Staff(staff_id="care-c", name="C", role="caretaker")],
    )
    detail = note_registry(w.auth, changed)
    assert detail is not None and detail["staff_added"] == ["care-c"]
    assert note_registry(w.auth, changed) is None  # nothing new: no entry
    with w.client(headers=ADMIN) as c:
        page = c.get("/api/audit", params={"limit": 100}).json()
        got = [(e["actor"], e["action"], e["target"], e["outcome"]) for e in page["items"]]
        assert got[::-1] == [
            ("anonymous", "auth.login_failed", "care-a", "refused"),
            ("care-a", "auth.login", "care-a", "ok"),
            ("care-a", "alert.acknowledge", str(aid), "ok"),
            ("care-a", "alert.resolve", str(aid), "ok"),
            ("care-a", "token.create", "care-a", "ok"),
            ("care-a", "token.revoke", "care-a", "ok"),
            ("care-a", "auth.logout", "care-a", "ok"),
            ("cli:root", "credential.set", "care-b", "ok"),
            ("system", "registry.changed", "y", "ok"),
            ("system", "registry.changed", "y", "ok"),
        ]
        assert all(e["ip"] for e in page["items"]) and PASSWORD not in json.dumps(page)
        mine = c.get("/api/audit", params={"actor": "care-a", "action": "auth."}).json()
        assert [e["action"] for e in mine["items"]] == ["auth.logout", "auth.login"]
        assert c.get("/api/audit", params={"until": "2000-01-01T00:00:00Z"}).json()["total"] == 0
        one = c.get("/api/audit", params={"limit": 1, "offset": 1}).json()
        assert one["total"] == 10 and len(one["items"]) == 1
