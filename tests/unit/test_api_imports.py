"""The registry import (a spreadsheet previewed as a diff, applied only when the preview's
version is named back) and commissioning (unregistered devices listed with what they sent, one
registered to a place), through the API over a real journal, a real RegistryAdmin and registry
files in tmp_path. End to end with the service and Mosquitto: tests/integration/
test_commissioning.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ingest.payloads import Reading
from jiayuan.api import create_app
from jiayuan.auth.audit import AuditLog
from jiayuan.context import AppContext
from jiayuan.registry_admin import RegistryAdmin
from registry import load_registry
from tests.alerting import T0
from tests.mqtt import wait_for
from tests.staff import ADMIN, auth_store, bearer
from tests.unit.api_world import PUSH_INTEGRATION, msg, with_push, world
from tests.xlsx import workbook

IMPORT = "/api/registry/import"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    with ExitStack() as stack:
        yield world(tmp_path, stack)


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def admin_of(ctx: AppContext) -> RegistryAdmin:
    assert ctx.registry_admin is not None
    return ctx.registry_admin


DEVICES_CSV = (
    "device_id,kind,compound,building,unit,floor,resident_id,name\n"
    # wr-1..3 as they are; smk-101 moved to another unit; the other smoke detectors retired
    "wr-1,wearable,C01,B01,1-1-101,1,r-1,\n"
    "wr-2,wearable,C01,B01,1-1-102,1,r-2,\n"
    "wr-3,wearable,C02,B03,3-1-101,1,r-3,\n"
    "smk-101,smoke,C01,B01,1-1-103,1,,\n"
    "gate-C01-main,gate,C01,,,,,\n"
    "gate-C01-east,gate,C01,,,,,east gate\n"
)


def post(client: TestClient, name: str, body: bytes, **params: str) -> Any:
    return client.post(
        IMPORT,
        params={"name": name, **params},
        content=body,
        headers={**ADMIN, "Content-Type": "application/octet-stream"},
    )


def test_an_import_shows_its_diff_and_applies_only_the_version_previewed(
    ctx: AppContext, client: TestClient
) -> None:
    before = ctx.registry
    r = post(client, "devices.csv", DEVICES_CSV.encode())
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["applied"] is False
    assert preview["changes"] == "devices +1 -10 ~1"
    lines = preview["text"].splitlines()
    assert lines[0] == "devices: 1 added, 10 removed, 1 changed"
    assert "  + device gate-C01-east (kind=gate, compound=C01, name=east gate)" in lines
    assert "  - device smk-B02-3" in lines
    assert lines[-2:] == ["  ~ device smk-101", "      unit: 1-1-101 -> 1-1-103"]
    assert preview["diff"]["devices"]["changed"] == [
        {"id": "smk-101", "fields": [{"field": "unit", "before": "1-1-101", "after": "1-1-103"}]}
    ]
    assert ctx.registry is before  # a preview changes nothing

    r = post(client, "devices.csv", DEVICES_CSV.encode(), apply=preview["version"])
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True and r.json()["changes"] == "devices +1 -10 ~1"
    now = admin_of(ctx).current
    assert ctx.registry is now
    assert now.devices["smk-101"].unit == "1-1-103" and "smk-B02-3" not in now.devices
    assert now.residents == before.residents and now.staff == before.staff
    assert load_registry(registry_dir(ctx)).devices == now.devices  # written to the files
    entries, _ = AuditLog(auth_store(ctx)).page(action="registry.import")
    assert entries[0].outcome == "ok" and entries[0].target == "devices.csv"
    assert entries[0].detail["changes"] == "devices +1 -10 ~1"

    # residents' names travel in the preview (to managers and admins), never into the audit
    residents = "resident_id,building,unit,floor,caretakers,display_name\n" + "".join(
        f"{r.resident_id},{r.building},{r.unit},{r.floor or ''},{';'.join(r.caretakers)},"
        f"{'王秀英' if r.resident_id == 'r-1' else ''}\n"
        for r in now.residents.values()
    )
    shown = post(client, "residents.csv", residents.encode()).json()
    assert "王秀英" in shown["text"]
    assert post(client, "residents.csv", residents.encode(), apply=shown["version"]).is_success
    entries, _ = AuditLog(auth_store(ctx)).page(action="registry.import")
    assert entries[0].detail["changes"] == "residents +0 -0 ~1"
    assert "王秀英" not in json.dumps(entries[0].detail, ensure_ascii=False)

    # the same apply again: the registry is no longer the one previewed
    again = post(client, "devices.csv", DEVICES_CSV.encode(), apply=preview["version"])
    assert again.status_code == 409
    assert "the registry changed since this preview" in again.json()["detail"]


def test_a_change_between_preview_and_apply_refuses_the_apply(
    ctx: AppContext, client: TestClient
) -> None:
    preview = post(client, "devices.csv", DEVICES_CSV.encode()).json()
    moved = client.put(
        "/api/registry/devices/gate-C01-main",
        json={"device_id": "gate-C01-main", "kind": "gate", "compound": "C01", "name": "main"},
        headers=ADMIN,
    )
    assert moved.status_code == 200, moved.text
    r = post(client, "devices.csv", DEVICES_CSV.encode(), apply=preview["version"])
    assert r.status_code == 409
    assert "smk-B02-3" in admin_of(ctx).current.devices  # nothing of the import applied
    entries, _ = AuditLog(auth_store(ctx)).page(action="registry.import")
    assert [e.outcome for e in entries] == ["refused"]

    # a different file under the previewed version is refused the same way
    fresh = post(client, "devices.csv", DEVICES_CSV.encode()).json()
    other = DEVICES_CSV.replace("east gate", "west gate").encode()
    assert post(client, "devices.csv", other, apply=fresh["version"]).status_code == 409


def test_a_workbook_with_problems_is_answered_with_each_one(client: TestClient) -> None:
    body = workbook(
        staff=[
            ["staff_id", "name", "role", "shifts"],
            ["care-1", "Caretaker 1", "caretaker", "daily 08:00-17:00"],
            ["care-8", "Caretaker 8", "cook", "daily 08:00-17:00"],
            ["care-9", "Caretaker 9", "caretaker", "Mon-Fri 8-17"],
        ]
    )
    r = post(client, "registry.xlsx", body)
    assert r.status_code == 422
    problems = r.json()["detail"]["problems"]
    assert "registry.xlsx sheet staff row 3, field 'role': Input should be" in problems[0]
    assert problems[1].startswith("registry.xlsx sheet staff row 4, field 'shifts[1]': expected")
    # kept residents name caretakers the sheet no longer has
    assert "current residents r-1, field 'caretakers': unknown staff id 'care-2'" in problems


def test_only_admins_and_managers_import_and_bodies_are_bounded(
    ctx: AppContext, client: TestClient
) -> None:
    op = client.post(
        IMPORT, params={"name": "devices.csv"}, content=b"x", headers=bearer(ctx, "care-1")
    )
    assert op.status_code == 403
    big = post(client, "devices.csv", b"x" * (8 << 20 | 1))
    assert big.status_code == 413
    assert post(client, "../devices.csv", b"x").status_code == 422
    assert post(client, "devices.txt", b"x").status_code == 422
    assert post(client, "dev\x00ices.csv", b"x").status_code == 422
    assert post(client, "..", b"x").status_code == 422
    assert post(client, "devices.csv", b"").status_code == 422  # no body: no section emptied


# --- commissioning -------------------------------------------------------------------------------


def journal_write(ctx: AppContext, *readings: Any) -> None:
    ctx.journal.write_batch([r for r in readings if isinstance(r, Reading)], [])
    ctx.journal.flush()


def test_an_unregistered_device_is_listed_with_what_it_sent(
    ctx: AppContext, client: TestClient
) -> None:
    journal_write(
        ctx,
        msg("smk-new", "smoke", "telemetry", T0 + 10, obscuration_pct_m=0.2, battery=91),
        msg("smk-new", "smoke", "event", T0 + 20, event="test"),
    )
    r = client.get("/api/devices/unregistered", headers=ADMIN)
    assert r.status_code == 200, r.text
    items = {d["device_id"]: d for d in r.json()["items"]}
    assert set(items) == {"smk-new", "w-9"}  # w-9: a wearable the world's journal heard
    smk = items["smk-new"]
    assert smk["kind"] == "smoke" and smk["messages"] == 2 and smk["battery"] == 91
    assert smk["last"]["stream"] == "event" and smk["last"]["event"] == "test"
    assert smk["last"]["values"]["event"] == "test" and smk["last"]["withheld"] == []
    w9 = items["w-9"]  # a wearable's health values are withheld: nobody is its caretaker yet
    assert set(w9["last"]["values"]) == {"ts"} and w9["last"]["withheld"] == ["heart_rate"]
    assert "66" not in json.dumps(w9)
    assert smk["retired"] is False

    # a device retired from the registry that still reports is listed again, marked so
    assert client.request("DELETE", "/api/registry/devices/smk-101", headers=ADMIN).is_success
    listed = {
        d["device_id"]: d
        for d in client.get("/api/devices/unregistered", headers=ADMIN).json()["items"]
    }
    assert listed["smk-101"]["retired"] is True and listed["smk-101"]["kind"] == "smoke"


def test_a_device_a_platform_pushes_is_listed_and_registered_the_same_way(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        ctx = world(tmp_path, stack)
        platform = with_push(ctx, stack)
        client = stack.enter_context(TestClient(create_app(ctx)))
        body = {"message_id": "ctw-1", "topic": "community/y/smoke/nb-smk-7/event",
                "payload": {"event": "test"}}  # fmt: skip
        r = client.post(f"/api/push/{PUSH_INTEGRATION}", json=body, headers=platform)
        assert r.is_success, r.text

        def listed() -> dict[str, Any]:
            page = client.get("/api/devices/unregistered", headers=ADMIN).json()["items"]
            return {d["device_id"]: d for d in page}

        wait_for(lambda: "nb-smk-7" in listed())
        seen = listed()["nb-smk-7"]
        assert seen["kind"] == "smoke" and seen["last"]["event"] == "test"
        place = {"compound": "C01", "building": "B01", "unit": "1-1-101"}
        url = "/api/devices/unregistered/nb-smk-7/register"
        assert client.post(url, json=place, headers=ADMIN).is_success
        assert "nb-smk-7" not in listed()


def test_registering_a_device_puts_it_in_the_registry_at_its_place(
    ctx: AppContext, client: TestClient
) -> None:
    journal_write(ctx, msg("smk-new", "smoke", "event", T0 + 20, event="test"))
    url = "/api/devices/unregistered/smk-new/register"
    place = {"compound": "C01", "building": "B02", "unit": "2-1-901", "floor": 9}

    wrong = client.post(url, json={**place, "building": "B09"}, headers=ADMIN)
    assert wrong.status_code == 409
    assert "unknown building 'B09'" in json.dumps(wrong.json())

    r = client.post(url, json=place, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["changes"] == "devices +1 -0 ~0"
    d = admin_of(ctx).current.devices["smk-new"]
    assert (d.kind, d.building, d.unit, d.floor) == ("smoke", "B02", "2-1-901", 9)
    listed = client.get("/api/devices/unregistered", headers=ADMIN).json()["items"]
    assert "smk-new" not in {i["device_id"] for i in listed}
    assert client.get("/api/devices/smk-new", headers=ADMIN).json()["registered"] is True
    entries, _ = AuditLog(auth_store(ctx)).page(action="device.register")
    assert entries[0].actor == "admin-token" and entries[0].target == "smk-new"

    assert client.post(url, json=place, headers=ADMIN).status_code == 409  # already
    nobody = client.post("/api/devices/unregistered/smk-404/register", json=place, headers=ADMIN)
    assert nobody.status_code == 404


def test_a_wearable_is_registered_to_its_wearer(ctx: AppContext, client: TestClient) -> None:
    url = "/api/devices/unregistered/w-9/register"
    place = {"compound": "C01", "building": "B01", "unit": "1-1-101", "resident_id": "r-404"}
    assert client.post(url, json=place, headers=ADMIN).status_code == 409  # no such resident
    r = client.post(url, json={**place, "resident_id": "r-1"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert admin_of(ctx).current.resident_of("w-9") == ctx.registry.residents["r-1"]


def test_who_may_commission(ctx: AppContext, client: TestClient) -> None:
    assert client.get("/api/devices/unregistered", headers=bearer(ctx, "care-1")).status_code == 403
    assert (
        client.get("/api/devices/unregistered", headers=bearer(ctx, "sec-C01")).status_code == 403
    )


def registry_dir(ctx: AppContext) -> Path:
    source = admin_of(ctx).files.source
    assert source is not None
    return source


def test_a_file_with_very_many_problems_is_answered_with_the_first_hundred(
    client: TestClient,
) -> None:
    rows = "".join(f"d-{i},toaster,C01,B01\n" for i in range(250))
    r = post(client, "devices.csv", f"device_id,kind,compound,building\n{rows}".encode())
    assert r.status_code == 422
    problems = r.json()["detail"]["problems"]
    assert len(problems) == 101 and problems[-1] == "… and 150 more problems"
    assert problems[0].startswith("devices.csv row 2, field 'kind'")


def test_yaml_aliases_are_refused_before_they_multiply(client: TestClient) -> None:
    bomb = "- &d {device_id: d1, kind: smoke, compound: C01}\n" + "- *d\n" * 100_000
    r = post(client, "devices.yaml", bomb.encode())
    assert r.status_code == 422
    assert r.json()["detail"]["problems"] == [
        "devices.yaml line 1: YAML aliases (*name) are not allowed: write each record out"
    ]
    laughs = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n"
    r = post(client, "registry.yaml", laughs.encode())
    assert r.status_code == 422 and "aliases" in r.json()["detail"]["problems"][0]
