"""Escalation on the demo community's roster (simulators/staffing.py): at every hour of a week,
every step of every chain that pages anyone reaches someone new, and an urgent alert always
reaches someone; the coverage check names the holes of a roster that has some (the command,
the API, and the warning at start)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from alerts.coverage import check, holes, rule_samples, samples
from alerts.dispatch import Config, Dispatcher
from alerts.escalation import load_chains
from alerts.lifecycle import AlertStore
from alerts.model import Alert
from alerts.planning import plan, urgent
from alerts.routing import Router
from jiayuan.auth.demo_staff import logins
from jiayuan.cli import main
from registry import write_registry
from registry.models import Building, Device, Registry, Resident
from simulators.fleet import build_fleet
from tests.alerting import RULES, TZ, FakeClock, FakeSender, dispatcher, fire, notes, settle, staff
from tests.staffworld import world

MONDAY = datetime(2026, 11, 23, 0, 0, tzinfo=TZ)
DEMO = build_fleet(seed=1).registry


def sample_alert(reg: Registry, rule_id: str, severity: str, building: str) -> Alert:
    rule = next((r for r in RULES if r.id == rule_id), None)
    b = reg.buildings[building]
    labels = {"community": "y", "compound": b.compound, "building": building}
    resident = next(r for r in sorted(reg.residents.values(), key=lambda r: r.resident_id)
                    if r.building == building)  # fmt: skip
    labels["resident_id"] = resident.resident_id
    return Alert(
        id=1, fingerprint="x", rule_id=rule_id, device_id="x",
        kind=rule.kind if rule else "smoke", severity=severity,  # type: ignore[arg-type]
        signal=rule.signal if rule else "alarm", route=rule.route if rule else "security",
        summary="", status="firing", labels=labels, started_at=0.0, last_match_at=0.0,
        raised_at=0.0, updated_at=0.0,
    )  # fmt: skip


def test_every_step_reaches_someone_new_at_every_hour_of_a_week_of_the_demo_roster() -> None:
    chains = load_chains()
    router = Router(DEMO, TZ)
    kinds = [(c, k) for c, k in samples(rule_samples(RULES), chains) if k.kind != "gate"]
    buildings = sorted(DEMO.buildings)[::7]  # one in seven: several compounds
    steps_taken = 0
    for hour in range(7 * 24):
        start = (MONDAY + timedelta(hours=hour, minutes=10)).timestamp()
        for chain_id, kind in kinds:
            chain = chains.by_id[chain_id]
            for building in buildings:
                a = sample_alert(DEMO, kind.rule_id, kind.severity, building)
                paged: set[str] = set()
                step, t = 0, start
                while step < len(chain.steps):
                    resolve = partial(router.resolve, alert=a, now=t)
                    p = plan(chain, step, resolve, paged, urgent=urgent(a))
                    where = f"{chain_id} at {building}, {datetime.fromtimestamp(t, TZ):%a %H:%M}"
                    if step == 0 and urgent(a):
                        assert p.targets, f"an urgent alert reached nobody: {where}"
                    if p.targets and p.step < len(chain.steps):
                        assert p.step == 0 or p.new, f"step {p.step + 1} repeats people: {where}"
                        steps_taken += 1
                    paged |= {tg.staff_id for tg in p.targets}
                    if p.step + 1 >= len(chain.steps):
                        break
                    step = p.step + 1
                    t = max(t, start + chain.steps[step].after)
    assert steps_taken > 7 * 24 * len(buildings) * len(kinds)  # more than first pages alone


def test_a_fall_at_1910_reaches_someone_new_at_each_step_with_the_demo_roster(
    tmp_path: Path,
) -> None:
    clock, sender = (
        FakeClock((MONDAY + timedelta(days=2, hours=19, minutes=10)).timestamp()),
        (FakeSender()),
    )
    resident = DEMO.residents[sorted(DEMO.residents)[0]]
    device = next(d for d in DEMO.devices.values() if d.resident_id == resident.resident_id)
    with dispatcher(tmp_path / "alerts.db", clock, sender, registry=DEMO) as d:
        labels = {"community": "y", "compound": device.compound,
                  "building": resident.building, "unit": resident.unit,
                  "resident_id": resident.resident_id}  # fmt: skip
        t = fire("wearable_fall", device.device_id, clock())
        from dataclasses import replace

        change = d.store.apply(replace(t, labels=labels))
        assert change is not None
        settle(d)

        def reached() -> list[str]:
            return [u.rsplit("/", 1)[-1] for u, _, _ in sender.sent]

        first = reached()
        night = resident.caretakers[-1]  # the primaries are off duty at 19:10
        assert first == [night]
        for _ in range(3 * 60):  # three minutes, as the scheduler polls
            clock.advance(1)
            d.poll()
        settle(d)
        second = reached()[1:]
        assert second and set(second) - {night}, "the second step reached nobody new"
        history = notes(d, change.alert.id, "escalated")
        assert any("everyone on duty already paged" in n for n in history)
        assert reached().count(night) <= 2


def small_roster() -> Registry:
    """One building; a guard on days only, no control room, a manager on office hours."""
    return Registry(
        "y",
        buildings=[Building(building="B01", compound="C01")],
        devices=[Device(device_id="smk-1", kind="smoke", compound="C01", building="B01",
                        unit="1-1-101", floor=1)],
        residents=[Resident(resident_id="r-1", building="B01", unit="1-1-101",
                            caretakers=("care-1",))],
        staff=[
            staff("care-1", "caretaker", ("daily 00:00-24:00",), buildings=("B01",)),
            staff("sec-1", "security", ("daily 08:00-20:00",), buildings=("B01",),
                  compounds=("C01",)),
            staff("mgr-1", "manager", ("Mon-Fri 09:00-17:00",)),
            staff("ops-1", "operator"),
        ],
    )  # fmt: skip


def test_the_coverage_check_names_the_holes_of_a_roster_that_has_some(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    reg = small_roster()
    lines = check(reg, load_chains(), TZ, RULES, week_of=MONDAY)
    found = {(line.chain_id, line.place, h.label) for line, h in holes(lines)}
    # security alarms: nobody from 20:00 to 08:00 on weeknights (the manager works days)
    assert ("security-urgent", "B01", "Mon 00:00–Mon 08:00") in found
    assert ("security-urgent", "B01", "Mon 20:00–Tue 08:00") in found
    assert ("fire", "B01", "Fri 20:00–Mon 00:00") not in found  # the caretaker is always on
    fire_spans = next(x for x in lines if x.chain_id == "fire" and x.place == "B01").spans
    assert all(s.first for s in fire_spans)
    day = next(x for x in lines if x.chain_id == "security-urgent" and x.place == "B01").spans
    assert any(s.first == ("sec-1",) and s.label == "Mon 08:00–Mon 20:00" for s in day)
    # the command says the same, and fails
    write_registry(reg, tmp_path / "reg")
    assert main(["duty", "check", "--registry", str(tmp_path / "reg"), "--holes-only"]) == 1
    out = capsys.readouterr().out
    assert "HOLE Mon 20:00–Tue 08:00: nobody would be paged" in out
    assert "security-urgent (security, e.g. smoke_tamper) at B01:" in out
    assert "security-urgent (security, e.g. gate_forced) at entrance:C01:" in out
    # and the service warns at start
    caplog.set_level(logging.WARNING, logger="alerts.dispatch")
    store = AlertStore(tmp_path / "alerts.db")
    d = Dispatcher(store, reg, RULES, Config(sender=FakeSender()))
    d.start()
    try:
        d._warn_holes()  # the start runs it on a thread; here, to its end
        assert any(
            "duty coverage: nobody would be paged for security alerts (chain security-urgent"
            in r.getMessage()
            for r in caplog.records
        )
    finally:
        d.stop()
        store.close()


def test_the_demo_roster_has_someone_for_every_urgent_chain_at_every_hour() -> None:
    lines = check(DEMO, load_chains(), TZ, RULES, week_of=MONDAY)
    urgent_holes = {(line.chain_id, h.label) for line, h in holes(lines)
                    if line.chain_id not in ("operator", "caretaker-other")}  # fmt: skip
    assert urgent_holes == set()


def test_the_coverage_api_is_for_the_desk_and_names_holes(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        reg = small_roster()
        store = AlertStore(tmp_path / "coverage.db")
        w.ctx.alerting = Dispatcher(store, reg, RULES, Config(sender=FakeSender()))
        try:
            with w.client() as c:
                r = c.get("/api/duty/coverage?holes_only=true", headers=w.token("mgr"))
                assert r.status_code == 200, r.text
                body = r.json()
                line = next(x for x in body["items"] if x["chain_id"] == "security-urgent")
                assert {"start": "Mon 20:00", "end": "Tue 08:00", "residents": 0} in line["holes"]
                assert body["holes"] >= len(line["holes"])
                r = c.get("/api/duty/coverage", headers=w.token("guard"))
                assert r.status_code == 403
        finally:
            w.ctx.alerting.stop()
            store.close()


def test_the_demo_prints_a_guard_and_a_caretaker_on_duty_at_every_hour_of_the_week(
    tmp_path: Path,
) -> None:
    from alerts.routing import on_duty
    from jiayuan.auth.demo_staff import banner

    for hour in range(7 * 24):
        at = MONDAY + timedelta(hours=hour, minutes=30)
        shown = logins(DEMO, at.timestamp(), TZ)
        text = banner(shown, "token", "http://127.0.0.1:8080", tmp_path / "logins.txt")
        for role in ("security", "caretaker"):
            first = next(x for x in shown if x.role == role)
            assert first.on_duty and on_duty(DEMO.staff[first.staff_id], at), (role, at)
            assert f"{first.staff_id}" in text and "ON DUTY NOW" in text
        # a caretaker on duty who has residents of their own: their falls reach them first
        care = next(x for x in shown if x.role == "caretaker" and x.on_duty)
        assert any(care.staff_id in r.caretakers for r in DEMO.residents.values())
