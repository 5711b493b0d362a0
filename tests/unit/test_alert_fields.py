"""The alert's fields are defined once, in :class:`alerts.Alert`: the store's table, the row
reader, the API's model and the filters follow it, and these tests fail when one drifts (a field
added to the model but not to the table or the API, a filter the API offers that the store
does not take)."""

from __future__ import annotations

import inspect
import sqlite3
from contextlib import closing
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from alerts import Alert, AlertStore
from alerts import db as alerts_db
from alerts.model import SUBJECTS, AlertQuery
from alerts.noise import incident
from jiayuan.api import alerts as api
from rules.transitions import Transition
from tests.clock import FakeClock as Clock

T0 = 1_700_000_000.0
FIELDS = {f.name for f in fields(Alert)}


def test_the_alerts_table_holds_every_field_and_only_the_ranks_besides(tmp_path: Path) -> None:
    AlertStore(tmp_path / "alerts.db").close()
    with closing(sqlite3.connect(tmp_path / "alerts.db")) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(alerts)")}
    assert columns == FIELDS - {"history"} | set(alerts_db.DERIVED_COLUMNS)
    assert set(alerts_db.ALERT_FIELDS) == FIELDS - {"history"}


def test_the_api_shows_every_field_but_the_dispatchers() -> None:
    shown = set(api.AlertOut.model_fields)
    assert shown == FIELDS - api.NOT_SHOWN | api.API_ONLY
    assert set(api.AlertDetail.model_fields) == shown | {"history"}


def test_the_api_filters_are_the_stores() -> None:
    params = set(inspect.signature(api.list_alerts).parameters) - {"view"}
    store = set(inspect.signature(AlertStore.find).parameters) - {"self", "where"}
    assert params == set(AlertQuery.__annotations__) - {"open_only", "audience"} | store
    columns = FIELDS | set(alerts_db.DERIVED_COLUMNS)  # ``building``: of the labels
    labels = {"since", "until", "open_only", "audience", "community"}  # community: a label
    assert set(AlertQuery.__annotations__) - labels <= columns


def test_a_stored_alert_comes_back_with_every_field_and_the_api_shows_them(
    alerts_at: Path | str,
) -> None:
    clock = Clock(T0)
    store = AlertStore(alerts_at, clock=clock)
    try:
        labels = {"community": "y", "building": "b3", "resident_id": "r-9"}
        store.set_offline("w-1", True, T0 - 50)
        raised = store.apply(
            Transition(
                action="fire",
                rule_id="fall",
                device_id="w-1",
                kind="wearable",
                severity="critical",
                signal="alarm",
                route="caretaker",
                at=T0 - 60,
                summary="Fall detected",
                late=True,
                value=1.5,
                labels=labels,
                page_at=T0 + 30,
            )
        )
        assert raised is not None
        alert_id = raised.alert.id
        clock.advance(5)
        store.acknowledge(alert_id, "g-1")
        clock.advance(5)
        store.resolve(alert_id, "g-1", "nothing there", false_alarm=True)
        a = store.get(alert_id)
    finally:
        store.close()
    expected: dict[str, Any] = {
        "id": alert_id,
        "fingerprint": "fall:w-1",
        "rule_id": "fall",
        "device_id": "w-1",
        "kind": "wearable",
        "severity": "critical",
        "signal": "alarm",
        "route": "caretaker",
        "summary": "Fall detected",
        "status": "resolved",
        "labels": labels,
        "started_at": T0 - 60,
        "last_match_at": T0 - 60,
        "raised_at": T0,
        "updated_at": T0 + 10,
        "ended_at": None,
        "acknowledged_at": T0 + 5,
        "acknowledged_by": "g-1",
        "resolved_at": T0 + 10,
        "resolved_by": "g-1",
        "late": True,
        "offline": True,
        "offline_since": T0 - 50,
        "match_count": 1,
        "value": 1.5,
        "incident_id": None,
        "false_alarm": True,
        "page_at": T0 + 30,
    }
    assert {name: getattr(a, name) for name in FIELDS - {"history"}} == expected
    assert [h.action for h in a.history] == ["raised", "acknowledged", "resolved"]
    out = api.alert_out(a).model_dump()
    for name in FIELDS - api.NOT_SHOWN:
        value = out[name]
        shown = value.timestamp() if isinstance(value, datetime) else value
        assert shown == expected[name], name


def test_an_alert_about_something_other_than_a_device_names_it_as_its_kind_says() -> None:
    """``device_id`` is the alert's subject; the service's own alerts document theirs."""
    member = Alert(
        id=1,
        fingerprint="gate_held_open:g-7",
        rule_id="gate_held_open",
        device_id="g-7",
        kind="gate",
        severity="minor",
        signal="trouble",
        route="operator",
        summary="",
        status="firing",
        labels={"community": "y", "building": "B02"},
        started_at=T0,
        last_match_at=T0,
        raised_at=T0,
        updated_at=T0,
    )
    trouble = incident(member, devices=5, now=T0)
    assert (trouble.kind, trouble.device_id) == ("building", "B02")
    assert trouble.kind in SUBJECTS and "building" in SUBJECTS[trouble.kind]
    assert {"staff", "building", "system"} <= SUBJECTS.keys()
