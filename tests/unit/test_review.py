"""The API of this issue over the staff-access world: the weekly review on a constructed week
(JSON and CSV, managers only), false alarms, incidents scoped like alerts, titles and a
confirmed fire's detectors on alerts, and history entries a console can put in plain words."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from alerts import AlertStore
from alerts.dispatch import Config, Dispatcher
from jiayuan.api.alerts import history_out
from rules.transitions import Transition
from tests.alerting import RULES, FakeClock, FakeSender, dispatcher, fire, settle
from tests.staffworld import world

TZ = ZoneInfo("Asia/Shanghai")
MON = datetime(2026, 11, 23, 9, 0, tzinfo=TZ).timestamp()  # 2026-W48


def raise_(store: AlertStore, rule: str, device: str, building: str, at: float) -> int:
    change = store.apply(
        Transition(
            action="fire", rule_id=rule, device_id=device, kind="smoke", severity="critical",
            signal="alarm", route="security", at=at, summary=rule,
            labels={"building": building, "compound": "C1"},
        )
    )  # fmt: skip
    assert change is not None
    return change.alert.id


@pytest.fixture
def week(alerts_at: Path | str) -> Iterator[tuple[AlertStore, FakeClock]]:
    """An alert store (on each backend) and its clock at the Monday of the week reviewed."""
    clock = FakeClock(MON)
    store = AlertStore(alerts_at, clock=clock)
    yield store, clock
    store.close()


def test_the_weekly_review_of_a_constructed_week(
    tmp_path: Path, week: tuple[AlertStore, FakeClock]
) -> None:
    store, clock = week
    acks, resolves = [60, 120, 300], [600, 1200, None]
    ids: list[int] = []
    for day, (ack, res) in enumerate(zip(acks, resolves, strict=True)):
        clock.t = MON + day * 86400
        a = raise_(store, "smoke_alarm", "s-1", "B1", clock.t)
        ids.append(a)
        clock.t += ack
        store.acknowledge(a, "guard")
        if res is not None:
            clock.t = MON + day * 86400 + res
            store.resolve(a, "guard", false_alarm=day == 0)
    store.add_note(ids[1], "system", "step 2/2 → mgr", "escalated", {"kind": "page"})
    store.add_note(ids[1], "system", "repeat 1 → mgr", "escalated", {"kind": "page"})
    store.add_note(ids[2], "system", "step 1/1: nobody", "unreached", {"kind": "unreached"})
    clock.t = MON + 3600
    raise_(store, "gate_forced", "s-2", "B2", clock.t)  # another building
    clock.t = MON - 86400
    raise_(store, "gate_tamper", "s-2", "B2", clock.t)  # the week before
    clock.t = MON + 7200
    store.apply(
        Transition(
            action="fire", rule_id="staff_unreachable", device_id="care-a", kind="staff",
            severity="major", signal="trouble", route="operator", at=clock.t, summary="x",
        )
    )  # fmt: skip
    with world(tmp_path) as w:
        w.ctx.alerts = store
        with w.client() as c:
            r = c.get("/api/review?week=2026-W48&building=B1", headers=w.token("mgr"))
            assert r.status_code == 200, r.text
            body = r.json()
            (smoke,) = body["kinds"]
            assert (smoke["rule_id"], smoke["title_zh"], smoke["raised"]) == (
                "smoke_alarm",
                "烟雾报警",
                3,
            )
            assert smoke["acknowledged"] == {"n": 3, "median_s": 120.0, "p90_s": 300.0}
            assert smoke["resolved"] == {"n": 2, "median_s": 900.0, "p90_s": 1200.0}
            assert (smoke["escalations"], smoke["unreached"], smoke["false_alarms"]) == (2, 1, 1)
            assert body["staff_unreachable"] == [{"staff_id": "care-a", "times": 1}]
            everything = c.get("/api/review?week=2026-W48", headers=w.token("mgr")).json()
            assert everything["total"]["raised"] == 5  # B2's gate and the staff trouble too
            assert c.get("/api/review?week=2026-W48", headers=w.token("guard")).status_code == 403
            assert c.get("/api/review?week=2026-48", headers=w.token("adm")).status_code == 422
            r = c.get("/api/review.csv?week=2026-W48&building=B1", headers=w.token("adm"))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(r.text)))
            row = next(x for x in rows if x["rule_id"] == "smoke_alarm")
            assert (row["ack_median_s"], row["resolve_p90_s"], row["false_alarms"]) == (
                "120",
                "1200",
                "1",
            )


def test_resolving_as_a_false_alarm_is_kept_on_the_alert(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        alert_id = w.fire("s-1", "smoke_alarm", kind="smoke", route="security", value=None)
        with w.client() as c:
            r = c.post(
                f"/api/alerts/{alert_id}/resolve",
                json={"note": "burnt toast", "false_alarm": True},
                headers=w.token("guard"),
            )
            assert r.status_code == 200, r.text
            assert r.json()["false_alarm"] is True
            assert r.json()["history"][-1]["kind"] == "false_alarm"


def test_incidents_are_scoped_like_alerts_and_alerts_carry_titles_and_detectors(
    tmp_path: Path,
) -> None:
    with world(tmp_path) as w:
        d = Dispatcher(w.ctx.alerts, w.ctx.registry, RULES, Config(sender=FakeSender()))
        d.start()
        try:
            fall = w.fire("w-1", "wearable_fall")
            settle(d)
            smoke_a = w.fire("s-1", "smoke_alarm", kind="smoke", route="security", value=None)
            smoke_b = w.fire("s-2", "smoke_alarm", kind="smoke", route="security", value=None)
            settle(d)
        finally:
            d.stop()
        # nobody in this world has a channel: those alerts reached nobody (one trouble a route)
        trouble = {a.device_id for a in w.ctx.alerts.find(rule_id="nobody_reached")[0]}
        assert trouble == {"caretaker", "security"}
        confirmed = w.ctx.alerts.apply(
            Transition(
                action="fire", rule_id="fire_confirmed", device_id="B1-F7", kind="smoke",
                severity="critical", signal="alarm", route="security", at=w.clock(),
                summary="Fire confirmed", labels={"building": "B1", "devices": "s-1,s-2"},
            )
        )  # fmt: skip
        assert confirmed is not None
        with w.client() as c:
            every = c.get("/api/incidents", headers=w.token("mgr")).json()
            assert every["total"] == 5  # the fall, two fires, two troubles
            by_building = {
                i["building"]: i for i in every["items"] if i["title_key"] != "nobody_reached"
            }
            b1 = by_building["B1"]
            assert b1["alert_ids"] == [smoke_a]
            assert (b1["status"], b1["severity"], b1["title_key"]) == (
                "firing",
                "critical",
                "smoke_alarm",
            )
            assert [a["id"] for a in b1["alerts"]] == [smoke_a]
            mine = c.get("/api/incidents", headers=w.token("care-a")).json()
            fall_incident = c.get(f"/api/alerts/{fall}", headers=w.token("care-a")).json()
            assert sorted(i["id"] for i in mine["items"]) == sorted(
                [b1["id"], fall_incident["incident_id"]]
            )
            other = by_building["B2"]["id"]
            assert c.get(f"/api/incidents/{other}", headers=w.token("care-a")).status_code == 404
            got = c.get(f"/api/incidents/{other}", headers=w.token("care-b")).json()
            assert got["alert_ids"] == [smoke_b] and got["title_zh"] == "烟雾报警"
            a = c.get(f"/api/alerts/{smoke_a}", headers=w.token("guard")).json()
            assert (a["incident_id"], a["title_zh"], a["title_en"]) == (
                b1["id"],
                "烟雾报警",
                "Smoke alarm",
            )
            f = c.get(f"/api/alerts/{confirmed.alert.id}", headers=w.token("guard")).json()
            assert f["title_zh"] == "火警确认"
            assert [(x["device_id"], x["building"], x["unit"]) for x in f["related_devices"]] == [
                ("s-1", "B1", "1-1-101"),
                ("s-2", "B2", "2-1-201"),
            ]
            acked = c.post(f"/api/incidents/{b1['id']}/ack", json={}, headers=w.token("mgr"))
            assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"


def test_paging_history_names_who_which_step_and_what_came_of_each_message(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        change = d.store.apply(fire("wearable_fall", "wr-1", clock()))
        assert change is not None
        settle(d)
        sender.wait(lambda: len(sender.sent) == 1)
        settle(d)
        history = [history_out(h) for h in d.store.get(change.alert.id).history]
        page = next(h for h in history if h.kind == "page")
        assert (page.step, page.steps, page.purpose) == (1, 4, "notify")
        (person,) = page.people
        assert (person.staff_id, person.name, person.outcome, person.new) == (
            "care-1",
            "caretaker care-1",
            "sent",
            True,
        )
        delivery = next(h for h in history if h.kind == "delivery")
        assert delivery.delivery is not None
        assert (delivery.delivery.staff_id, delivery.delivery.outcome) == ("care-1", "delivered")
        assert delivery.delivery.name == "caretaker care-1"
