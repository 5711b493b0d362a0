"""Who may change which staff records through the API (a manager may not make themselves an
admin or a caretaker, nor point a colleague's pages at their own URL), and a removed staff
member's sessions, tokens and password gone for good (a new hire given the same id starts with
none)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from jiayuan.api import create_app
from jiayuan.auth.audit import AuditLog
from jiayuan.auth.manage import note_registry
from jiayuan.auth.store import AuthStore
from jiayuan.broker.live import BrokerAccounts
from jiayuan.context import AppContext
from registry import Registry
from tests.alerting import community
from tests.mqtt import wait_for
from tests.staff import ADMIN, auth_store, bearer, set_password
from tests.unit.api_world import world

STAFF = "/api/registry/staff"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    with ExitStack() as stack:
        yield world(tmp_path, stack)


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def record(client: TestClient, sid: str) -> dict[str, Any]:
    r = client.get(f"{STAFF}/{sid}", headers=ADMIN)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def refused_entries(ctx: AppContext) -> list[str]:
    assert ctx.auth is not None
    items, _ = AuditLog(ctx.auth).page(outcome="refused", action="registry.")
    return [f"{e.actor} {e.action} {e.target}" for e in items]


def test_a_manager_cannot_make_themselves_admin_or_a_caretaker(
    ctx: AppContext, client: TestClient
) -> None:
    mgr = bearer(ctx, "mgr-1")
    me = record(client, "mgr-1")
    for role in ("admin", "caretaker"):
        r = client.put(f"{STAFF}/mgr-1", headers=mgr, json={**me, "role": role})
        assert r.status_code == 403, r.text
        assert "your own staff record" in r.json()["detail"]
    # nor another manager, nor an admin's record, nor make anyone a manager
    other = record(client, "mgr-2")
    r = client.put(f"{STAFF}/mgr-2", headers=mgr, json={**other, "role": "caretaker"})
    assert r.status_code == 403 and "manager's staff record" in r.json()["detail"]
    ops = record(client, "ops-1")
    r = client.put(f"{STAFF}/ops-1", headers=mgr, json={**ops, "role": "admin"})
    assert r.status_code == 403 and "admin's staff record" in r.json()["detail"]
    r = client.put(
        f"{STAFF}/new-boss", headers=mgr, json={**ops, "staff_id": "new-boss", "role": "manager"}
    )
    assert r.status_code == 403
    assert client.delete(f"{STAFF}/mgr-2", headers=mgr).status_code == 403
    assert client.delete(f"{STAFF}/mgr-1", headers=mgr).status_code == 403
    shift = {"days": [0, 1], "start": "08:00:00", "end": "12:00:00"}
    assert client.post(f"{STAFF}/mgr-1/shifts", headers=mgr, json=shift).status_code == 403
    assert client.put(f"{STAFF}/mgr-2/shifts", headers=mgr, json=[]).status_code == 403
    assert ctx.registry.staff["mgr-1"].role == "manager"
    assert len(ctx.registry.staff["mgr-2"].shifts) == 2
    assert client.get("/api/audit", headers=mgr).status_code == 403
    assert "mgr-1 registry.staff_change mgr-1" in refused_entries(ctx)


def test_a_manager_keeps_the_roster_but_not_where_people_are_paged(
    ctx: AppContext, client: TestClient
) -> None:
    mgr = bearer(ctx, "mgr-1")
    care = record(client, "care-1")
    # places and shifts of a caretaker: a manager's everyday work
    r = client.put(f"{STAFF}/care-1", headers=mgr, json={**care, "buildings": ["B01", "B02"]})
    assert r.status_code == 200, r.text
    shift = {"days": [5, 6], "start": "20:00:00", "end": "23:00:00"}
    assert client.post(f"{STAFF}/care-1/shifts", headers=mgr, json=shift).status_code == 201
    hire = {**care, "staff_id": "care-9", "channels": [], "shifts": []}
    assert client.put(f"{STAFF}/care-9", headers=mgr, json=hire).status_code == 200
    assert client.delete(f"{STAFF}/care-9", headers=mgr).status_code == 200
    # where a caretaker is paged (health alerts): an admin's to set
    care = record(client, "care-1")
    r = client.put(f"{STAFF}/care-1", headers=mgr, json={**care, "channels": ["json://evil"]})
    assert r.status_code == 403 and "channels of care-1" in r.json()["detail"]
    hire = {**hire, "channels": ["json://evil"]}
    assert client.put(f"{STAFF}/care-9", headers=mgr, json=hire).status_code == 403
    assert ctx.registry.staff["care-1"].channels == ("fake://care-1",)
    assert "care-9" not in ctx.registry.staff
    # an admin may
    r = client.put(f"{STAFF}/care-1", headers=ADMIN, json={**care, "channels": ["json://new"]})
    assert r.status_code == 200 and ctx.registry.staff["care-1"].channels == ("json://new",)
    r = client.put(f"{STAFF}/mgr-1", headers=ADMIN, json={**record(client, "mgr-1"), "name": "M"})
    assert r.status_code == 200


def test_a_managers_import_may_not_change_what_an_admin_keeps(
    ctx: AppContext, client: TestClient
) -> None:
    mgr = bearer(ctx, "mgr-1")
    staff = [s.model_dump(mode="json", exclude_defaults=True) for s in ctx.registry.staff.values()]
    for s in staff:
        if s["staff_id"] == "mgr-1":
            s["role"] = "admin"
    body = yaml.safe_dump(staff, allow_unicode=True).encode()
    headers = {**mgr, "Content-Type": "application/octet-stream"}
    params = {"name": "staff.yaml"}
    preview = client.post("/api/registry/import", params=params, content=body, headers=headers)
    assert preview.status_code == 200, preview.text
    assert preview.json()["changes"] == "staff +0 -0 ~1", preview.text
    params["apply"] = preview.json()["version"]
    r = client.post("/api/registry/import", params=params, content=body, headers=headers)
    assert r.status_code == 403 and "your own staff record" in r.json()["detail"], r.text
    assert ctx.registry.staff["mgr-1"].role == "manager"
    assert "mgr-1 registry.import staff.yaml" in refused_entries(ctx)


def test_a_removed_staff_members_access_is_gone_for_a_new_hire_of_the_same_id(
    ctx: AppContext, client: TestClient
) -> None:
    old = bearer(ctx, "ops-1")
    set_password(ctx, "ops-1", "a long enough passphrase 1")
    r = client.post(
        "/api/auth/login", json={"staff_id": "ops-1", "password": "a long enough passphrase 1"}
    )
    assert r.status_code == 200, r.text
    session = dict(client.cookies)
    client.cookies.clear()
    rec = record(client, "ops-1")
    assert client.delete(f"{STAFF}/ops-1", headers=ADMIN).status_code == 200
    store = auth_store(ctx)
    assert store.password_hash("ops-1") is None
    assert all(t.revoked_at is not None for t in store.tokens("ops-1"))
    hire = {**rec, "name": "new hire"}
    assert client.put(f"{STAFF}/ops-1", headers=ADMIN, json=hire).status_code == 200
    assert client.get("/api/auth/me", headers=old).status_code == 401
    client.cookies.update(session)
    assert client.get("/api/auth/me").status_code == 401
    client.cookies.clear()
    r = client.post(
        "/api/auth/login", json={"staff_id": "ops-1", "password": "a long enough passphrase 1"}
    )
    assert r.status_code == 401
    (entry,), _ = AuditLog(store).page(action="credential.forget")
    assert entry.target == "ops-1" and entry.detail["tokens_revoked"] == 1
    assert entry.detail["password_removed"] is True and entry.detail["sessions_ended"] == 1


def test_staff_removed_while_the_service_was_stopped_lose_their_access_at_start(
    auth_at: Path | str,
) -> None:
    store = AuthStore.open(auth_at)
    try:
        reg = community()
        note_registry(store, reg)
        store.create_token("ops-1", "script", 3600.0, "test")
        store.set_password_hash("ops-1", "x", "test")
        without = Registry(
            reg.community,
            buildings=list(reg.buildings.values()),
            devices=list(reg.devices.values()),
            residents=list(reg.residents.values()),
            staff=[s for s in reg.staff.values() if s.staff_id != "ops-1"],
        )
        note_registry(store, without)  # the files edited, then a start
        assert store.password_hash("ops-1") is None
        assert [t.revoked_by for t in store.tokens("ops-1")] == ["system"]
        note_registry(store, reg)  # the same id again: a new hire, with nothing of the old one
        assert store.password_hash("ops-1") is None and store.token("x") is None
        assert [t.revoked_at is not None for t in store.tokens("ops-1")] == [True]
    finally:
        store.close()


WAIT = (
    "import os, sys, time; open(sys.argv[2], 'a').close();"
    " [time.sleep(0.05) for _ in iter(lambda: os.path.exists(sys.argv[1]), True)]"
)


def test_changes_behind_a_slow_broker_reload_do_not_keep_an_alert_from_being_acknowledged(
    ctx: AppContext, client: TestClient, tmp_path: Path
) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    admin = ctx.registry_admin
    assert admin is not None
    admin.broker = BrokerAccounts(
        tmp_path / "accounts", reload_command=f'{sys.executable} -c "{WAIT}" {release} {started}'
    )
    device = {"kind": "gate", "compound": "C01"}
    answers: list[int] = []

    def add(i: int) -> None:
        r = client.put(
            f"/api/registry/devices/g-{i}", headers=ADMIN, json=device | {"device_id": f"g-{i}"}
        )
        answers.append(r.status_code)

    alert = client.get("/api/alerts", headers=ADMIN).json()["items"][0]["id"]
    # more changes than the API has worker threads (40), the first one's reload stuck
    changes = [threading.Thread(target=add, args=(i,)) for i in range(45)]
    acked: list[int] = []
    ack = threading.Thread(
        target=lambda: acked.append(
            client.post(f"/api/alerts/{alert}/ack", headers=ADMIN, json={}).status_code
        )
    )
    try:
        for t in changes:
            t.start()
        wait_for(started.exists, timeout=60)
        ack.start()
        ack.join(timeout=60)
        assert acked == [200]  # while the reload is still stuck
    finally:
        release.touch()
        for t in changes:
            t.join(timeout=120)
    assert answers == [200] * 45
