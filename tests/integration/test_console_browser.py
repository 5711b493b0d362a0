"""The staff console in a real browser: Debian's headless Chromium driven by Playwright, against
the real Mosquitto and ``jiayuan run``, signed in as a caretaker (through the sign-in page, or
through the API before the page opens). Screenshots go to ``artifacts/screenshots/``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

from jiayuan.devbroker import Broker
from jiayuan.launch import ServiceProcess
from registry import Building, Device, Registry, Resident, Staff, write_registry
from tests.mqtt import Publisher, wait_for

pytestmark = pytest.mark.network

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
WAIT_MS = 20_000
CARETAKER = "care-C01-01"
PASSWORD = "duty-room-2024"
OPERATOR = "ops-1"
WEARABLE, RESIDENT = "wr-00001", "r-00001"
SMOKE = "smk-C01-B1-1-0101"


def registry() -> Registry:
    return Registry(
        "y",
        buildings=[
            Building(building="B1", compound="C01"),
            Building(building="B2", compound="C01"),
        ],
        devices=[
            Device(
                device_id=WEARABLE,
                kind="wearable",
                compound="C01",
                building="B1",
                unit="1-1-101",
                floor=1,
                resident_id=RESIDENT,
            ),
            Device(
                device_id="wr-00002",
                kind="wearable",
                compound="C01",
                building="B2",
                unit="2-1-302",
                floor=3,
                resident_id="r-00002",
            ),
            Device(device_id=SMOKE, kind="smoke", compound="C01", building="B1", unit="1-1-101"),
            Device(device_id="gate-C01-main", kind="gate", compound="C01", name="C01 main gate"),
        ],
        residents=[
            Resident(resident_id=RESIDENT, building="B1", unit="1-1-101", caretakers=(CARETAKER,)),
            Resident(
                resident_id="r-00002",
                building="B2",
                unit="2-1-302",
                caretakers=("care-C01-02", CARETAKER),
            ),
        ],
        staff=[
            Staff(staff_id=CARETAKER, name="Caretaker C01 1", role="caretaker"),
            Staff(staff_id="care-C01-02", name="Caretaker C01 2", role="caretaker"),
            Staff(staff_id="sec-ctl-1", name="Control room", role="security"),
            Staff(staff_id=OPERATOR, name="Operator", role="operator"),
        ],
    )


def seed(pub: Publisher) -> None:
    """Two hours of a wearable's and a smoke detector's readings, statuses, one bad message
    and a device nobody registered."""
    now_ms = int(time.time() * 1000)
    base = "community/y/wearable/" + WEARABLE
    pub.publish(f"{base}/status", json.dumps({"state": "online", "fw": "2.1.0"}))
    for i in range(120):
        at = now_ms - (120 - i) * 60_000
        hr = 68 + (i * 7) % 19
        body = {
            "ts": at,
            "seq": i,
            "heart_rate": hr,
            "spo2": 96 + i % 3,
            "battery": 81 - i // 30,
            "steps": 40 * i,
            "worn": True,
            "skin_temp_c": 33.4,
        }
        pub.publish(f"{base}/telemetry", json.dumps(body))
    for i in range(24):
        at = now_ms - (120 - 5 * i) * 60_000
        body = {"ts": at, "seq": i, "obscuration_pct_m": 0.2 + (i % 4) / 10, "battery": 90}
        pub.publish(f"community/y/smoke/{SMOKE}/telemetry", json.dumps(body))
    pub.publish(f"community/y/smoke/{SMOKE}/status", json.dumps({"state": "online"}))
    pub.publish("community/y/wearable/wr-stray/telemetry", json.dumps({"heart_rate": 70}))
    pub.publish(f"{base}/telemetry", b'{"heart_rate": 400}')
    pub.wait_acked()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def service(broker: Broker, tmp_path: Path) -> Iterator[ServiceProcess]:
    write_registry(registry(), tmp_path / "registry")
    svc = ServiceProcess(tmp_path / "service", broker.port, registry=tmp_path / "registry")
    svc.start()
    for staff_id in (CARETAKER, OPERATOR):  # `jiayuan staff password`, as an admin would
        svc.set_password(staff_id, PASSWORD)
    yield svc
    svc.stop()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    pub = Publisher(broker, client_id="console-test-devices")
    yield pub
    pub.close()


class Problems:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page: Page) -> None:
        self.items: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.items.append(f"pageerror: {e}"))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.items.append(f"console: {msg.text} at {msg.location}")


def fall(pub: Publisher, device: str = WEARABLE, seq: int = 1000) -> None:
    pub.publish(
        f"community/y/wearable/{device}/event",
        json.dumps({"event": "fall", "seq": seq, "ts": int(time.time() * 1000)}),
    )
    pub.wait_acked()


def sign_in(context: BrowserContext, svc: ServiceProcess, staff_id: str = CARETAKER) -> None:
    """Sign in through the API: the context keeps the session cookie for its pages."""
    r = context.request.post(
        svc.url + "/api/auth/login", data={"staff_id": staff_id, "password": PASSWORD}
    )
    assert r.ok, r.text()


def open_alert_of(svc: ServiceProcess, device: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = svc.get(f"/api/alerts?device_id={device}&status=firing")["items"]
    return items[0] if items else {}


def test_a_fall_appears_live_and_is_acknowledged_by_clicking(
    browser: Browser, service: ServiceProcess, publisher: Publisher
) -> None:
    seed(publisher)
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    page = context.new_page()
    problems = Problems(page)
    page.goto(service.url + "/")
    # nobody is signed in: the sign-in page, and a wrong password is refused with a reason
    login = page.locator("form.login")
    expect(login).to_be_visible(timeout=WAIT_MS)
    login.locator("input[name=staff_id]").fill(CARETAKER)
    login.locator("input[name=password]").fill("not the password")
    login.locator("[data-act=sign-in]").click()
    expect(login.locator(".error")).to_contain_text("工号或密码错误", timeout=WAIT_MS)
    login.locator("input[name=password]").fill(PASSWORD)
    page.screenshot(path=SHOTS / "desk-sign-in.png")
    login.locator("[data-act=sign-in]").click()
    expect(page.locator(".conn.up")).to_be_visible(timeout=WAIT_MS)  # the stream is open
    expect(page.locator(".board")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("[data-ctl=staff]")).to_contain_text(CARETAKER)  # who is signed in
    assert page.locator("article.alert").count() == 0

    fall(publisher)  # through the broker, to the open page: no reload
    card = page.locator("article.alert", has_text="跌倒")
    expect(card).to_be_visible(timeout=WAIT_MS)
    expect(card).to_have_attribute("data-status", "firing")
    expect(card).to_contain_text("1号楼")  # building B1, as people say it
    expect(page.locator("#banner")).to_contain_text("1", timeout=WAIT_MS)
    expect(page).to_have_title("(1) 家园", timeout=WAIT_MS)
    alert_id = int(card.get_attribute("data-alert-id") or 0)
    page.screenshot(path=SHOTS / "desk-board-firing.png")

    # The dialog asks for no staff id: the name is the signed-in caretaker's.
    card.locator("[data-act=resolve]").click()
    dialog = page.locator("dialog[open]")
    expect(dialog.locator(".acting-as")).to_contain_text(CARETAKER)
    assert dialog.locator("input[name=by]").count() == 0
    dialog.get_by_role("button", name="取消").click()
    expect(page.locator("dialog[open]")).to_have_count(0)

    card.locator("[data-act=ack]").click()
    dialog = page.locator("dialog[open]")
    expect(dialog).to_be_visible()
    dialog.locator("textarea[name=note]").fill("正在前往 1-1-101")
    page.screenshot(path=SHOTS / "desk-ack-dialog.png")
    dialog.locator("[data-act=submit]").click()
    expect(page.locator(f"article.alert[data-alert-id='{alert_id}']")).to_have_attribute(
        "data-status", "acknowledged", timeout=WAIT_MS
    )
    expect(page).to_have_title("家园 · 值班台", timeout=WAIT_MS)

    got = service.get(f"/api/alerts/{alert_id}")
    assert got["status"] == "acknowledged"
    assert got["acknowledged_by"] == CARETAKER
    assert got["history"][-1]["note"] == "正在前往 1-1-101"
    page.screenshot(path=SHOTS / "desk-board-acknowledged.png")

    # The alert's own page: where, since when, history and the heart rate around it.
    page.locator(f"article.alert[data-alert-id='{alert_id}'] h3 a").click()
    expect(page.locator(".alert-head h2")).to_have_text("跌倒", timeout=WAIT_MS)
    # raised, acknowledged (and, with staff alerting on, whom it was sent to)
    expect(page.locator(".timeline")).to_contain_text("正在前往 1-1-101", timeout=WAIT_MS)
    expect(page.locator(".timeline li", has_text="Caretaker C01 1").first).to_be_visible()
    expect(page.locator(".chart svg polyline").first).to_be_visible(timeout=WAIT_MS)
    page.locator(".alert-head [data-act=resolve]").click()
    dialog = page.locator("dialog[open]")
    dialog.locator("textarea[name=note]").fill("已到场，人员安全")
    dialog.locator("[data-act=submit]").click()
    expect(page.locator(".alert-head")).to_have_class(
        re.compile(r"\bst-resolved\b"), timeout=WAIT_MS
    )
    page.screenshot(path=SHOTS / "desk-alert-page.png", full_page=True)
    wait_for(lambda: service.get(f"/api/alerts/{alert_id}")["resolved_by"] == CARETAKER)
    # the browser's own lines for the 401s above: not signed in yet, then the wrong password
    refused = [p for p in problems.items if "401" in p]
    assert 1 <= len(refused) <= 2
    assert [p for p in problems.items if p not in refused] == []
    # signing out ends the session and shows the sign-in page again
    page.locator("[data-ctl=sign-out]").click()
    expect(page.locator("form.login")).to_be_visible(timeout=WAIT_MS)
    assert service.get("/api/audit?action=auth.logout")["items"][0]["actor"] == CARETAKER
    context.close()


PAGES = [
    ("board", "#/", ".board"),
    ("alert", "#/alerts/{alert}", ".alert-head"),
    ("devices", "#/devices", ".place"),
    ("device", f"#/devices/{WEARABLE}", ".chart svg"),
    ("residents", "#/residents", ".resident"),
    ("resident", f"#/residents/{RESIDENT}", ".vitals .vital"),
    ("ops", "#/ops", ".tiles .tile"),  # the operator's
]


def test_every_page_fits_a_phone_without_errors(
    browser: Browser, service: ServiceProcess, publisher: Publisher
) -> None:
    seed(publisher)
    fall(publisher)
    publisher.publish(f"community/y/smoke/{SMOKE}/event", json.dumps({"event": "alarm", "seq": 99}))
    publisher.wait_acked()
    wait_for(lambda: open_alert_of(service, WEARABLE), timeout=30)
    alert_id = open_alert_of(service, WEARABLE)["id"]
    phone: dict[str, Any] = {
        "viewport": {"width": 360, "height": 740},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
        "locale": "zh-CN",
    }
    for staff_id in (CARETAKER, OPERATOR):  # the caretaker's pages, then the operator's
        pages = [p for p in PAGES if (p[0] == "ops") == (staff_id == OPERATOR)]
        context = browser.new_context(**phone)
        sign_in(context, service, staff_id)
        page = context.new_page()
        problems = Problems(page)
        page.goto(service.url + "/")
        for lang in ("zh", "en"):
            for name, path, ready in pages:
                page.goto(service.url + "/" + path.format(alert=alert_id))
                expect(page.locator(ready).first).to_be_visible(timeout=WAIT_MS)
                expect(page.locator(".loading")).to_have_count(0, timeout=WAIT_MS)
                width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                assert width[0] <= width[1], f"{name} ({lang}) overflows: {width}"
                page.screenshot(path=SHOTS / f"phone-{lang}-{name}.png", full_page=True)
            if lang == "zh":
                expect(page.locator("nav")).to_contain_text("报警")
                page.locator("[data-ctl=lang]").click()
                expect(page.locator("nav")).to_contain_text("Alerts", timeout=WAIT_MS)
        page.reload()
        expect(page.locator("nav")).to_contain_text("Alerts", timeout=WAIT_MS)  # remembered
        nav = page.locator("nav").inner_text()
        assert ("Operations" in nav or "Ops" in nav) == (staff_id == OPERATOR), nav
        assert ("Residents" in nav) == (staff_id == CARETAKER), nav
        page.evaluate("localStorage.removeItem('jy.lang')")
        assert problems.items == []
        context.close()


def test_the_board_reconnects_after_a_restart_and_shows_what_came_meanwhile(
    browser: Browser, service: ServiceProcess, publisher: Publisher
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    sign_in(context, service)
    page = context.new_page()
    problems = Problems(page)
    page.goto(service.url + "/")
    expect(page.locator(".conn.up")).to_be_visible(timeout=WAIT_MS)
    service.stop()
    expect(page.locator(".conn.down")).to_be_visible(timeout=WAIT_MS)
    fall(publisher)  # kept by the broker for the service's persistent session
    service.start()
    expect(page.locator(".conn.up")).to_be_visible(timeout=60_000)
    expect(page.locator("article.alert", has_text="跌倒")).to_be_visible(timeout=WAIT_MS)
    expect(page).to_have_title("(1) 家园", timeout=WAIT_MS)
    page.screenshot(path=SHOTS / "desk-board-after-restart.png")
    # while the service was down the browser could not reach it: those lines are expected
    unexpected = [p for p in problems.items if "ERR_CONNECTION_REFUSED" not in p]
    assert unexpected == []
    context.close()
