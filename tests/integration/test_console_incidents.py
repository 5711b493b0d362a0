"""The console on the incidents backend (issue 10): tests that need the service's incidents,
titles and structured paging history, so they pass only once the ``incidents`` branch is merged.
The lead enables them at merge by renaming this file ``test_console_incidents.py``.

Contract relied on: ``AlertOut.incident_id``; ``GET /api/incidents`` and ``/api/incidents/{id}``
(``alert_ids``); ``AlertOut.title`` in the console's language or ``title_zh``/``title_en``;
``AlertOut.related_devices`` (device id, building, unit, floor) for a confirmed fire.

The fixtures and helpers are the console's browser tests' (real Mosquitto, real ``jiayuan run``,
Debian Chromium), with the service on each store: the incidents and their alerts are the
store's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.receiver import Receiver
from registry import write_registry
from tests.integration import test_console_browser as console
from tests.integration.test_console_browser import (
    CARDS,
    CARETAKER,
    DESK,
    GUARD,
    MANAGER,
    OPERATOR,
    PASSWORD,
    PHONE,
    SHOTS,
    SMOKE,
    SMOKE_2,
    WAIT_MS,
    firing,
    open_page,
    smoke_event,
)
from tests.mqtt import Publisher, wait_for
from tests.stores import Stores

# the browser tests' fixtures
browser, receiver, publisher = console.browser, console.receiver, console.publisher


@pytest.fixture
def service(
    broker: Broker, receiver: Receiver, tmp_path: Path, stores: Stores
) -> Iterator[ServiceProcess]:
    """The browser tests' service (test_console_browser's), on each store."""
    notify = f"json://127.0.0.1:{receiver.port}/notify"
    write_registry(console.registry(notify), tmp_path / "registry")
    svc = ServiceProcess(
        tmp_path / "service", broker.port, registry=tmp_path / "registry", **stores.settings
    ).start()
    try:
        for staff_id in (CARETAKER, OPERATOR, GUARD, MANAGER):  # `jiayuan staff password`
            svc.set_password(staff_id, PASSWORD)
        yield svc
    finally:
        svc.stop()


CJK = re.compile(r"[\u3400-\u9fff]")


def confirmed_fire(svc: ServiceProcess, pub: Publisher) -> dict[str, Any]:
    smoke_event(pub, SMOKE, "alarm", seq=500)
    smoke_event(pub, SMOKE_2, "alarm", seq=500)
    wait_for(lambda: firing(svc, "fire_confirmed") and len(firing(svc, "smoke_alarm")) == 2)
    # each joins the building's fire incident as the service takes it in
    wait_for(
        lambda: all(
            a["incident_id"] is not None
            for a in firing(svc, "fire_confirmed") + firing(svc, "smoke_alarm")
        )
    )
    return firing(svc, "fire_confirmed")[0]


def test_the_alerts_of_one_incident_are_one_card_by_the_services_incident(
    browser: Browser, service: ServiceProcess, publisher: Publisher
) -> None:
    fire = confirmed_fire(service, publisher)
    assert fire["incident_id"] is not None
    incident = service.get(f"/api/incidents/{fire['incident_id']}")
    smoke_ids = {a["id"] for a in firing(service, "smoke_alarm")}
    assert smoke_ids | {fire["id"]} <= set(incident["alert_ids"])
    listed = service.get("/api/incidents")["items"]
    assert [i["id"] for i in listed if fire["id"] in i["alert_ids"]] == [fire["incident_id"]]
    context, page, problems = open_page(browser, service, GUARD, DESK)
    cards = page.locator(CARDS)
    expect(cards).to_have_count(1, timeout=WAIT_MS)
    expect(cards.first).to_have_attribute("data-incident-id", str(fire["incident_id"]))
    shown = {int(x) for x in (cards.first.get_attribute("data-alert-ids") or "").split(",")}
    assert shown == set(incident["alert_ids"])
    assert problems.items == []
    context.close()


def test_the_confirmed_fire_page_lists_its_detectors_with_working_links_and_a_chinese_title(
    browser: Browser, service: ServiceProcess, publisher: Publisher
) -> None:
    fire = confirmed_fire(service, publisher)
    related = {d["device_id"] for d in fire["related_devices"]}
    assert related == {SMOKE, SMOKE_2}
    for options, where in (
        (DESK, "desk"),
        (PHONE | {"viewport": {"width": 390, "height": 844}}, "phone"),
    ):
        context, page, problems = open_page(
            browser, service, GUARD, options, f"#/alerts/{fire['id']}"
        )
        head = page.locator(".alert-head")
        title = head.locator("h2")
        expect(title).to_contain_text("火警", timeout=WAIT_MS)
        assert not re.search(r"[A-Za-z]{3,}", title.inner_text()), title.inner_text()
        links = head.locator("[data-field=devices] a")
        expect(links).to_have_count(2)
        assert set(links.all_inner_texts()) == related
        expect(head).to_contain_text("1号楼")
        expect(head).to_contain_text("1层")
        expect(page.locator(".loading")).to_have_count(0, timeout=WAIT_MS)
        page.screenshot(path=SHOTS / f"{where}-guard-confirmed-fire.png", full_page=True)
        for device in sorted(related):  # each link opens its detector's page, not an error
            page.locator(f"[data-field=devices] a[href='#/devices/{device}']").click()
            expect(page.locator("main h2")).to_contain_text(device, timeout=WAIT_MS)
            expect(page.locator("main .notice.error")).to_have_count(0)
            page.go_back()
            expect(page.locator(".alert-head")).to_be_visible(timeout=WAIT_MS)
        assert problems.items == []
        context.close()


@pytest.mark.parametrize("stores", ["sqlite"], indirect=True)  # the words, not the store
def test_every_alert_title_on_the_chinese_board_is_chinese(
    browser: Browser, service: ServiceProcess, publisher: Publisher
) -> None:
    confirmed_fire(service, publisher)
    context, page, problems = open_page(browser, service, GUARD, DESK)
    expect(page.locator(CARDS)).to_have_count(1, timeout=WAIT_MS)
    for text in page.locator(f"{CARDS} h3, {CARDS} .members a").all_inner_texts():
        assert CJK.search(text), text
    assert problems.items == []
    context.close()
