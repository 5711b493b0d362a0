"""Silences and maintenance windows: muted alerts are recorded, not sent; a broad silence never
hides a critical alarm; expiring one pages what it held back. Through the store and the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alerts.dispatch import Dispatcher
from alerts.silences import SilenceRefused
from ingest.journal import Journal
from jiayuan.api import create_app
from jiayuan.api.times import rfc3339
from jiayuan.context import AppContext
from jiayuan.settings import Settings
from tests.alerting import T0, FakeClock, FakeSender, community, dispatcher, fire, notes, settle
from tests.staff import bearer


@pytest.fixture
def setup(
    alerts_at: Path | str,
) -> Iterator[tuple[Dispatcher, FakeClock, FakeSender]]:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        yield d, clock, sender


def test_a_broad_silence_that_could_hide_a_critical_alarm_is_refused(
    setup: tuple[Dispatcher, FakeClock, FakeSender],
) -> None:
    d, _, _ = setup
    common = {
        "starts_at": T0,
        "ends_at": T0 + 3600,
        "reason": "works",
        "author": "ops-1",
        "now": T0,
    }
    for matchers in (
        {"building": "B01"},
        {"kind": "smoke"},
        {"rule_id": "smoke_alarm"},
        {"kind": "wearable", "building": "B01"},
    ):
        with pytest.raises(SilenceRefused, match="name the device") as e:
            d.silences.create(**common, **matchers)  # type: ignore[arg-type]
        assert e.value.field == "device_id"
    with pytest.raises(SilenceRefused, match="at least one"):
        d.silences.create(**common)  # type: ignore[arg-type]
    assert d.silences.create(**common, kind="gate", building="B01")  # type: ignore[arg-type]
    assert d.silences.create(**common, rule_id="smoke_alarm", device_id="smk-101")  # type: ignore[arg-type]


def test_a_muted_alert_is_recorded_not_sent_and_paged_when_the_silence_is_expired(
    setup: tuple[Dispatcher, FakeClock, FakeSender],
) -> None:
    d, clock, sender = setup
    s = d.silences.create(
        starts_at=T0,
        ends_at=T0 + 7200,
        reason="replacing batteries",
        author="ops-1",
        now=T0,
        kind="smoke",
        rule_id="smoke_fault",
    )
    change = d.store.apply(fire("smoke_fault", "smk-101"))
    assert change is not None
    settle(d)
    clock.advance(60)  # a trouble waits to see whether it is one of many (noise)
    d.poll()
    settle(d)
    assert sender.sent == []
    muted = notes(d, change.alert.id, "muted")
    assert muted == [
        f"muted by silence {s.id} until 11-25 12:00 (replacing batteries; by "
        "ops-1): recorded, not sent"
    ]
    assert d.store.get(change.alert.id).status == "firing"
    clock.advance(600)
    d.poll()
    assert sender.sent == []  # still muted, and said once
    d.expire_silence(s.id, "ops-1")
    settle(d)
    assert [u for u, _, _ in sender.sent] == ["fake://ops-1"]
    assert f"silence {s.id} is over: paging now" in notes(d, change.alert.id)


def test_a_maintenance_window_mutes_only_while_it_runs_and_a_critical_alarm_never(
    setup: tuple[Dispatcher, FakeClock, FakeSender],
) -> None:
    d, clock, sender = setup
    d.silences.create(
        starts_at=T0 + 600,
        ends_at=T0 + 1200,
        reason="gate maintenance",
        author="ops-1",
        now=T0,
        kind="gate",
    )
    d.store.apply(fire("gate_held_open", "gate-C01-main"))
    settle(d)
    assert "fake://sec-C01" in {u for u, _, _ in sender.sent}  # the window has not started
    clock.advance(600)
    change = d.store.apply(fire("gate_tamper", "gate-C01-main", clock()))
    assert change is not None
    settle(d)
    assert notes(d, change.alert.id, "muted")
    # a silence naming the detector mutes its critical alarm; another detector still pages
    d.silences.create(
        starts_at=clock(),
        ends_at=clock() + 600,
        reason="alarm test",
        author="ops-1",
        now=clock(),
        device_id="smk-101",
        rule_id="smoke_alarm",
    )
    n = len(sender.sent)
    d.store.apply(fire("smoke_alarm", "smk-101", clock()))
    d.store.apply(fire("smoke_alarm", "smk-B02-3", clock()))
    settle(d)
    assert len(sender.sent) > n
    assert all("smk-101" not in b and "1-1-101" not in b for _, _, b in sender.sent[n:])


@pytest.fixture
def client(alerts_at: Path | str, tmp_path: Path) -> Iterator[tuple[TestClient, Dispatcher]]:
    clock, sender = FakeClock(), FakeSender()
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    with dispatcher(alerts_at, clock, sender) as d:
        ctx = AppContext(
            settings=Settings(data_dir=tmp_path),
            journal=journal,
            alerts=d.store,
            registry=community(),
            alerting=d,
        )
        with TestClient(create_app(ctx), headers=bearer(ctx, "ops-1")) as c:
            yield c, d
    journal.close()


def test_silences_through_the_api(client: tuple[TestClient, Dispatcher]) -> None:
    c, _ = client
    r = c.post(
        "/api/silences",
        json={"building": "B01", "duration": "2h", "reason": "power works", "author": "ops-1"},
    )
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "device_id"] and "never hides a fire" in err["msg"]
    r = c.post(
        "/api/silences",
        json={
            "kind": "gate",
            "building": "B01",
            "duration": "2h",
            "reason": "new readers",
            "author": "nobody",
        },
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "author"]
    r = c.post(
        "/api/silences",
        json={
            "kind": "gate",
            "building": "B01",
            "duration": "2h",
            "reason": "new readers",
            "author": "ops-1",
        },
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["state"] == "active" and made["ends_at"] == rfc3339(T0 + 7200)
    ahead = c.post(
        "/api/silences",
        json={
            "device_id": "smk-101",
            "starts_at": rfc3339(T0 + 86400),
            "ends_at": rfc3339(T0 + 90000),
            "reason": "detector swap",
            "author": "ops-1",
        },
    ).json()
    assert ahead["state"] == "pending"
    page = c.get("/api/silences").json()
    assert page["total"] == 2 and [s["id"] for s in page["items"]] == [ahead["id"], made["id"]]
    assert c.get("/api/silences", params={"state": "active"}).json()["total"] == 1
    r = c.post(f"/api/silences/{made['id']}/expire", json={"by": "ops-1"})
    assert r.status_code == 200 and r.json()["state"] == "expired"
    assert r.json()["expired_by"] == "ops-1"
    r = c.delete(f"/api/silences/{ahead['id']}", params={"by": "ops-1"})
    assert r.status_code == 200 and r.json()["state"] == "expired"
    assert c.get("/api/silences/999").status_code == 404
    assert c.post("/api/silences/999/expire", json={"by": "ops-1"}).status_code == 404
