"""Two communities in one installation (``JIAYUAN_COMMUNITIES``), through the whole service
(`jiayuan run` as a child process, the real Mosquitto, a real HTTP receiver for the pages): a fall
in community h pages h's caretaker, never y's; each community's smoke alarm pages its own guard;
a guard or a manager of y never sees h's alerts, devices or residents, and is refused h by name;
the district manager sees both and filters; a topic of a third community is a counted dead
letter, ``unknown_community``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.receiver import Receiver
from registry import write_registry
from registry.models import Building, Device, Registry, Resident
from tests.alerting import staff
from tests.integration.test_console_browser import (
    CARDS,
    DESK,
    PASSWORD,
    PHONE,
    SHOTS,
    WAIT_MS,
    browser,
    open_page,
)
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network
__all__ = ["browser"]  # the browser fixture, shared with the console's own tests


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(port=0).start()
    yield rx
    rx.stop()


def community(c: str, rx: Receiver, *extra_staff: tuple[str, str]) -> Registry:
    """Community ``c``: one building, a resident with her wearable ``w{c}-1`` and her caretaker
    ``care-{c}``, a smoke detector ``smk-{c}1``, a guard ``guard-{c}``, a manager ``mgr-{c}``."""

    def url(sid: str) -> str:
        return f"json://127.0.0.1:{rx.port}/notify/{sid}"

    people = [("care", "caretaker"), ("guard", "security"), ("mgr", "manager")]
    return Registry(
        c,
        buildings=[Building(building=f"B{c}", compound=f"C{c}")],
        devices=[
            Device(device_id=f"w{c}-1", kind="wearable", compound=f"C{c}", building=f"B{c}",
                   unit="1-1-101", resident_id=f"r{c}-1"),
            Device(device_id=f"smk-{c}1", kind="smoke", compound=f"C{c}", building=f"B{c}",
                   unit="1-1-101", floor=1),
        ],
        residents=[
            Resident(resident_id=f"r{c}-1", building=f"B{c}", unit="1-1-101",
                     caretakers=(f"care-{c}",)),
        ],
        staff=[
            staff(sid, role, channels=(url(sid),))
            for sid, role in [(f"{p}-{c}", role) for p, role in people] + list(extra_staff)
        ],
    )  # fmt: skip


def shown(page: Page) -> set[int]:
    """The alerts of the console board's cards (an incident's card: all of its alerts)."""
    cards = page.locator(CARDS)
    found: set[int] = set()
    for i in range(cards.count()):
        found |= {int(x) for x in (cards.nth(i).get_attribute("data-alert-ids") or "").split(",")}
    return found


def ids(page: dict[str, Any], key: str = "device_id") -> set[str]:
    return {item[key] for item in page["items"]}


def paged(svc: ServiceProcess, alert_id: int) -> set[str]:
    """Everyone the alert's paging steps named (its history)."""
    history = svc.get(f"/api/alerts/{alert_id}")["history"]
    return {p["staff_id"] for h in history if h.get("kind") == "page" for p in h["people"]}


@pytest.fixture
def two(
    broker: Broker, tmp_path: Path, receiver: Receiver, stores: Stores
) -> Iterator[ServiceProcess]:
    """The service over communities y and h (the district manager ``dm`` is h's), after a fall
    in h, a smoke alarm in each, and a reading on a topic of community q; on each store (a
    district's installation keeps them in PostgreSQL)."""
    write_registry(community("y", receiver), tmp_path / "y")
    write_registry(community("h", receiver, ("dm", "district_manager")), tmp_path / "h")
    svc = ServiceProcess(
        tmp_path / "service",
        broker,
        communities=f"y={tmp_path / 'y'},h={tmp_path / 'h'}",
        **stores.settings,
    ).start()
    pub = Publisher(broker)
    try:
        pub.publish("community/h/wearable/wh-1/event", json.dumps({"event": "fall", "seq": 1}))
        pub.publish("community/y/smoke/smk-y1/event", json.dumps({"event": "alarm", "seq": 1}))
        pub.publish("community/h/smoke/smk-h1/event", json.dumps({"event": "alarm", "seq": 1}))
        pub.publish("community/q/wearable/wq-1/telemetry", json.dumps({"heart_rate": 70}))
        pub.wait_acked()
        wait_for(lambda: len(svc.get("/api/alerts")["items"]) == 3)
        yield svc
    finally:
        svc.stop()
        pub.close()


def test_two_communities_page_and_show_only_their_own(
    two: ServiceProcess, receiver: Receiver
) -> None:
    svc = two
    wait_for(lambda: len(svc.get("/api/alerts")["items"]) == 3)
    by_device = {a["device_id"]: a for a in svc.get("/api/alerts")["items"]}
    assert {d: a["labels"]["community"] for d, a in by_device.items()} == {
        "wh-1": "h",
        "smk-y1": "y",
        "smk-h1": "h",
    }
    # each smoke alarm pages its own community's guard and the resident's caretaker
    wait_for(lambda: paged(svc, by_device["smk-y1"]["id"]) == {"guard-y", "care-y"})
    wait_for(lambda: paged(svc, by_device["smk-h1"]["id"]) == {"guard-h", "care-h"})
    # the fall (after its 30 s to be cancelled) pages h's caretaker, nobody of y
    wait_for(lambda: paged(svc, by_device["wh-1"]["id"]), timeout=120)
    assert paged(svc, by_device["wh-1"]["id"]) == {"care-h"}
    receiver.wait_for(lambda ms: len(ms) >= 5)
    for m in receiver.messages():  # every page names a place of its own community
        assert ("Cy小区" if m.recipient.endswith("-y") else "Ch小区") in m.message, m

    guard_y, mgr_y, dm = (svc.token_for(s) for s in ("guard-y", "mgr-y", "dm"))
    # a guard of y: y's smoke alarm only, in the list, one by one and by filter
    assert ids(svc.get("/api/alerts", token=guard_y)) == {"smk-y1"}
    r = svc.request("GET", f"/api/alerts/{by_device['smk-h1']['id']}", token=guard_y)
    assert r.status_code == 404
    r = svc.request("GET", "/api/alerts?community=h", token=guard_y)
    assert r.status_code == 403 and "'h'" in r.json()["detail"]
    # a manager of y: everything of y, nothing of h
    assert ids(svc.get("/api/alerts", token=mgr_y)) == {"smk-y1"}
    assert ids(svc.get("/api/devices", token=mgr_y)) == {"wy-1", "smk-y1"}
    assert ids(svc.get("/api/residents", token=mgr_y), "resident_id") == {"ry-1"}
    assert ids(svc.get("/api/incidents", token=mgr_y), "building") <= {"By"}
    assert svc.request("GET", "/api/devices/wh-1", token=mgr_y).status_code == 404
    duty = svc.get("/api/duty/coverage", token=mgr_y)["items"]  # y's places, y's staff
    assert duty and {line["community"] for line in duty} == {"y"}
    assert not any(
        p.startswith(("care-h", "guard-h"))
        for line in duty
        for s in line["spans"]
        for p in s["first"]
    )
    assert svc.request("GET", "/api/residents?community=h", token=mgr_y).status_code == 403
    # the district manager: both, and each by filter
    assert ids(svc.get("/api/alerts", token=dm)) == {"wh-1", "smk-y1", "smk-h1"}
    assert ids(svc.get("/api/alerts?community=y", token=dm)) == {"smk-y1"}
    assert ids(svc.get("/api/alerts?community=h", token=dm)) == {"wh-1", "smk-h1"}
    assert ids(svc.get("/api/devices?community=h", token=dm)) == {"wh-1", "smk-h1"}
    assert ids(svc.get("/api/residents", token=dm), "resident_id") == {"ry-1", "rh-1"}
    # the weekly review covers the whole installation: the district manager's only
    assert svc.request("GET", "/api/review", token=mgr_y).status_code == 403
    assert svc.request("GET", "/api/review", token=dm).status_code == 200
    duty = svc.get("/api/duty/coverage?community=h", token=dm)["items"]
    assert duty and {line["community"] for line in duty} == {"h"}
    r = svc.request("GET", "/api/alerts?community=q", token=dm)
    assert r.status_code == 404 and "'q'" in r.json()["detail"]
    # a topic of a community not installed: a dead letter, counted
    wait_for(lambda: svc.get("/api/dead-letters/counts")["counts"]["unknown_community"] == 1)
    (dead,) = svc.get("/api/dead-letters?reason=unknown_community")["items"]
    assert dead["topic"] == "community/q/wearable/wq-1/telemetry"
    assert not svc.get("/api/dead-letters?community=y")["items"]
    metrics = svc.get_text("/metrics")
    assert 'jiayuan_dead_letters_total{reason="unknown_community"} 1.0' in metrics


def test_a_device_registered_in_two_communities_is_refused_at_start(
    tmp_path: Path, receiver: Receiver
) -> None:
    y, h = community("y", receiver), community("h", receiver)
    h.devices["smk-y1"] = y.devices["smk-y1"]  # the same detector in both
    h.buildings["By"] = y.buildings["By"]
    write_registry(y, tmp_path / "y")
    write_registry(h, tmp_path / "h")
    svc = ServiceProcess(
        tmp_path / "service", 1, communities=f"y={tmp_path / 'y'},h={tmp_path / 'h'}"
    )
    with pytest.raises(RuntimeError, match="exited"):
        svc.start(timeout=60)
    log = svc.log.read_text()
    assert "device 'smk-y1'" in log and str(tmp_path / "y") in log and str(tmp_path / "h") in log
    svc.stop()


def test_the_console_shows_a_guard_their_community_and_a_district_manager_both(
    two: ServiceProcess, browser: Browser
) -> None:
    svc = two
    for staff_id in ("guard-y", "dm"):
        svc.set_password(staff_id, PASSWORD)
    by_device = {a["device_id"]: a["id"] for a in svc.get("/api/alerts")["items"]}

    # a guard of y: y's smoke alarm, as in a one-community installation (no filter, no tag)
    context, page, problems = open_page(browser, svc, "guard-y", DESK)
    expect(page.locator(f"{CARDS}[data-alert-id='{by_device['smk-y1']}']")).to_be_visible(
        timeout=WAIT_MS
    )
    expect(page.locator(CARDS)).to_have_count(1)
    expect(page.locator("select[name=community]")).to_have_count(0)
    expect(page.locator("[data-field=community]")).to_have_count(0)
    assert problems.items == []
    context.close()

    # the district manager: every alert (h's fall and smoke alarm, in one flat, one incident's
    # card), each card naming its community, and a community filter
    context, page, problems = open_page(browser, svc, "dm", DESK)
    wait_for(lambda: shown(page) == set(by_device.values()))
    fall = page.locator(f"{CARDS}[data-alert-ids*='{by_device['wh-1']}']")
    expect(fall.locator("[data-field=community]")).to_have_text("h 社区")
    smoke_y = page.locator(f"{CARDS}[data-alert-id='{by_device['smk-y1']}']")
    expect(smoke_y.locator("[data-field=community]")).to_have_text("y 社区")
    outside = page.locator("[data-field=outside-filters]")
    expect(outside).to_be_hidden()
    page.locator("select[name=community]").select_option("h")
    wait_for(lambda: shown(page) == {by_device["wh-1"], by_device["smk-h1"]})
    # y's smoke alarm is hidden by the filter, and the board says so above the cards
    expect(outside).to_be_visible()
    expect(outside).to_contain_text("另有 1 条待确认的告警不在当前筛选内")
    assert outside.evaluate(
        "el => el.compareDocumentPosition(document.querySelector('.grid.alerts'))"
        " & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    page.screenshot(path=SHOTS / "desk-district-manager-community-h.png")
    page.locator("[data-ctl=clear-filters]").click()
    wait_for(lambda: shown(page) == set(by_device.values()))
    expect(outside).to_be_hidden()
    expect(page.locator("select[name=community]")).to_have_value("")
    assert problems.items == []
    context.close()

    # on a phone: the filters fold behind their button, the note stays in sight above the cards
    context, page, problems = open_page(browser, svc, "dm", PHONE)
    wait_for(lambda: shown(page) == set(by_device.values()))
    outside = page.locator("[data-field=outside-filters]")
    page.locator("[data-ctl=filters]").click()
    page.locator("select[name=community]").select_option("y")
    wait_for(lambda: shown(page) == {by_device["smk-y1"]})
    expect(outside).to_be_visible()
    expect(outside).to_contain_text("另有 2 条待确认的告警不在当前筛选内")
    expect(page.locator("[data-ctl=filters]")).to_contain_text("y 社区")
    page.screenshot(path=SHOTS / "phone-district-manager-community-y.png", full_page=True)
    assert problems.items == []
    context.close()
