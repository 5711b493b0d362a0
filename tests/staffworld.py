"""A small community for the staff-access tests: two caretakers each with one resident (a
wearable, a smoke detector at home), a gate, a guard, a manager, an operator and an admin —
every one with a password — over a real journal, alert store and ``auth.db``, and the real app.

The auth store's clock is a fake one (``world.clock``) so tokens and sessions can expire without
waiting; sign-in limits count failures, not time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from alerts import AlertStore
from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from ingest.journal_store import JournalStore
from ingest.payloads import DeadLetter, Reading, decode
from jiayuan.api import create_app
from jiayuan.auth.store import AuthStore
from jiayuan.context import AppContext
from jiayuan.settings import Settings
from registry import Building, Device, Registry, Resident, Staff
from rules.transitions import Transition
from tests.alerting import FakeClock
from tests.staff import ADMIN_TOKEN, CHEAP, set_password

PASSWORD = "correct horse battery"
STAFF = {
    "care-a": "caretaker",
    "care-b": "caretaker",
    "guard": "security",
    "mgr": "manager",
    "ops": "operator",
    "adm": "admin",
}
NOW = time.time()


def registry() -> Registry:
    def wearable(n: int, b: str, unit: str) -> Device:
        return Device(
            device_id=f"w-{n}", kind="wearable", compound="C1", building=b, unit=unit,
            resident_id=f"r-{n}",
        )  # fmt: skip

    return Registry(
        "y",
        buildings=[Building(building="B1", compound="C1"), Building(building="B2", compound="C1")],
        devices=[
            wearable(1, "B1", "1-1-101"),
            wearable(2, "B2", "2-1-201"),
            Device(device_id="s-1", kind="smoke", compound="C1", building="B1", unit="1-1-101"),
            Device(device_id="s-2", kind="smoke", compound="C1", building="B2", unit="2-1-201"),
            Device(device_id="g-1", kind="gate", compound="C1", name="main gate"),
        ],
        residents=[
            Resident(resident_id="r-1", building="B1", unit="1-1-101", caretakers=("care-a",)),
            Resident(resident_id="r-2", building="B2", unit="2-1-201", caretakers=("care-b",)),
        ],
        staff=[Staff(staff_id=s, name=f"{r} {s}", role=r) for s, r in STAFF.items()],
    )


def _msg(device: str, kind: str, stream: str, at: float, **body: Any) -> Reading | DeadLetter:
    topic = f"community/y/{kind}/{device}/{stream}"
    return decode(topic, json.dumps({"ts": int(at * 1000), **body}).encode(), at)


@dataclass
class World:
    ctx: AppContext
    app: FastAPI
    clock: FakeClock
    auth: AuthStore

    def fire(
        self,
        device: str,
        rule: str = "fall",
        *,
        kind: str = "wearable",
        route: Any = "caretaker",
        value: float | None = 1.0,
    ) -> int:
        reg = self.ctx.registry.devices[device]
        labels = {"building": reg.building or "", "compound": reg.compound}
        if reg.resident_id:
            labels["resident_id"] = reg.resident_id
        change = self.ctx.alerts.apply(Transition(
            action="fire", rule_id=rule, device_id=device, kind=kind, severity="critical",
            signal="alarm", route=route, at=NOW - 60, summary=rule, value=value, labels=labels,
        ))  # fmt: skip
        assert change is not None
        return change.alert.id

    def token(self, staff_id: str, ttl_s: float = 3600.0) -> dict[str, str]:
        token, _ = self.auth.create_token(staff_id, "test", ttl_s, "test")
        return {"Authorization": f"Bearer {token}"}

    @contextmanager
    def client(self, **kw: Any) -> Iterator[TestClient]:
        with TestClient(self.app, **kw) as c:
            yield c


@contextmanager
def world(
    tmp_path: Path,
    *,
    auth_at: Path | str | None = None,
    database: str | None = None,
    **settings: Any,
) -> Iterator[World]:
    """The world in ``tmp_path``; its auth store and audit trail at ``auth_at`` (the fixture's:
    a path or a PostgreSQL URL) when given, else ``tmp_path / "auth.db"``. ``database`` (the
    ``stores`` fixture's ``url``): journal, alert store and auth store all in that PostgreSQL
    database, as a district's service keeps them."""
    reg = registry()
    journal: JournalStore = (
        Journal(tmp_path / "journal.db", synchronous="NORMAL")
        if database is None
        else PgJournal(database)
    )
    journal.sync_registry(reg)
    decoded = [
        _msg("w-1", "wearable", "telemetry", NOW - 600, heart_rate=71, battery=80, seq=1),
        _msg("w-2", "wearable", "telemetry", NOW - 600, heart_rate=92, battery=60, seq=1),
        _msg("s-1", "smoke", "telemetry", NOW - 600, obscuration_pct_m=0.1, seq=1),
        _msg("s-2", "smoke", "telemetry", NOW - 600, obscuration_pct_m=0.2, seq=1),
        _msg("g-1", "gate", "event", NOW - 600, event="granted", credential="c-9", seq=1),
    ]
    journal.write_batch([r for r in decoded if isinstance(r, Reading)], [])
    journal.flush()  # last seen, battery
    store = AlertStore.open(tmp_path / "alerts.db" if database is None else database)
    clock = FakeClock(NOW)
    auth_at = auth_at or database
    auth = AuthStore.open(tmp_path / "auth.db" if auth_at is None else auth_at, clock=clock)
    base: dict[str, Any] = {"data_dir": tmp_path, "admin_token": ADMIN_TOKEN}
    if database is not None:
        base["database_url"] = database
    ctx = AppContext(
        settings=Settings(**(base | settings)), journal=journal, alerts=store, registry=reg,
        auth=auth,
    )  # fmt: skip
    for staff_id in STAFF:
        set_password(ctx, staff_id, PASSWORD)
    app = create_app(ctx, keepalive_s=0.05)
    try:
        yield World(ctx, app, clock, auth)
    finally:
        auth.close()
        store.close()
        journal.close()


__all__ = ["CHEAP", "PASSWORD", "STAFF", "World", "world"]
