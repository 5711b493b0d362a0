"""Commissioning and registry imports in the console, in a real browser (Debian's Chromium via
Playwright, the real Mosquitto and ``jiayuan run``): an operator sees a wearable nobody
registered with what it sent (its wearer's health values withheld), registers it to a resident
with the form, and its next SOS is paged to that resident's caretaker; a manager previews a
spreadsheet's diff and applies it. Fixtures and helpers are the console browser test's."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import Browser, expect

from devtools.launch import ServiceProcess
from devtools.receiver import Receiver
from tests.integration.test_console_browser import (
    CARETAKER,
    DESK,
    GUARD,
    MANAGER,
    OPERATOR,
    PHONE,
    RESIDENT,
    SHOTS,
    WAIT_MS,
    browser,
    open_page,
    publisher,
    receiver,
    service,
)
from tests.mqtt import Publisher, wait_for

__all__ = ["browser", "publisher", "receiver", "service"]  # the fixtures this module uses

STRAY = "wr-found-1"


def test_an_operator_sees_an_unregistered_wearable_registers_it_and_its_sos_is_paged(
    browser: Browser, service: ServiceProcess, publisher: Publisher, receiver: Receiver
) -> None:
    base = f"community/y/wearable/{STRAY}"
    publisher.publish(f"{base}/telemetry", json.dumps({"heart_rate": 77, "battery": 58, "seq": 1}))
    # journaled before the event is sent: the event comes on the urgent session, which may
    # otherwise be read (and stamped) before the telemetry session's pass. The broker's PUBACK
    # to the publisher does not say the service has read it (CI once showed the telemetry as
    # what the device sent last)
    publisher.wait_acked()
    unregistered = "/api/devices/unregistered"
    wait_for(lambda: [d["messages"] for d in service.get(unregistered)["items"]] == [1])
    publisher.publish(f"{base}/event", json.dumps({"event": "worn", "seq": 2}))
    publisher.wait_acked()

    context, page, problems = open_page(browser, service, OPERATOR, DESK, "#/commission")
    expect(page.locator("nav a[href='#/commission']")).to_have_text("设备登记", timeout=WAIT_MS)
    row = page.locator(f"li.unregistered-device[data-device={STRAY}]")
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row).to_contain_text("手环")
    # the journal has both readings when the list first shows it, but the device's battery
    # (its row in ``devices``, written at most every second: ingest/seen.py) may come later:
    # the page fetches the list again while it is open
    expect(row).to_contain_text("2 条数据", timeout=WAIT_MS)
    sent = row.locator("[data-field=last-sent]")
    expect(sent).to_contain_text("戴上", timeout=WAIT_MS)  # the event it sent last
    expect(row).to_contain_text("电量 58%", timeout=WAIT_MS)  # from its telemetry before
    expect(row).not_to_contain_text("77")  # its wearer's heart rate is not shown
    expect(row).not_to_contain_text("null")  # an absent part is left out, not written out
    assert page.locator("#import").count() == 0  # imports are the managers'
    page.screenshot(path=SHOTS / "desk-operator-commission.png", full_page=True)

    # what it sends while the operator looks at the page shows without a reload
    publisher.publish(f"{base}/telemetry", json.dumps({"heart_rate": 78, "battery": 57, "seq": 3}))
    publisher.wait_acked()
    expect(row).to_contain_text("电量 57%", timeout=WAIT_MS)
    expect(row).to_contain_text("3 条数据", timeout=WAIT_MS)
    expect(row).not_to_contain_text("78")

    row.locator("[data-act=register]").click()
    form = row.locator("form.register-form")
    form.locator("input[name=compound]").fill("C01")
    form.locator("input[name=building]").fill("B1")
    form.locator("input[name=unit]").fill("1-1-101")
    form.locator("input[name=resident_id]").fill("r-404")
    form.locator("[data-act=register-submit]").click()
    expect(form.locator(".error")).to_contain_text("unknown resident 'r-404'", timeout=WAIT_MS)
    # the browser reports the refused request (409) on its console: that one, and only it
    assert [p for p in problems.items if "409 (Conflict)" not in p] == []
    problems.items.clear()
    form.locator("input[name=resident_id]").fill(RESIDENT)
    form.locator("[data-act=register-submit]").click()
    expect(row.locator("[data-field=registered]")).to_contain_text(
        "已登记到 C01 · B1 · 1-1-101", timeout=WAIT_MS
    )
    assert service.get(f"/api/devices/{STRAY}")["registered"] is True
    entries = service.get("/api/audit?action=device.register")["items"]
    assert [(e["actor"], e["outcome"]) for e in entries] == [
        (OPERATOR, "ok"),
        (OPERATOR, "refused"),  # the wearer that does not exist
    ]

    # its next SOS is its wearer's caretaker's
    publisher.publish(f"{base}/event", json.dumps({"event": "sos", "seq": 4}))
    publisher.wait_acked()
    receiver.wait_for(lambda ms: any(m.recipient == CARETAKER for m in ms))
    (alert,) = service.get(f"/api/alerts?device_id={STRAY}&rule_id=wearable_sos")["items"]
    assert alert["labels"]["building"] == "B1"

    page.reload()
    expect(page.locator(".commission h2")).to_have_text("设备登记", timeout=WAIT_MS)
    expect(page.locator(f"li.unregistered-device[data-device={STRAY}]")).to_have_count(0)
    page.locator("[data-ctl=lang]").click()
    expect(page.locator(".commission h2")).to_have_text("Commissioning", timeout=WAIT_MS)
    assert problems.items == []
    context.close()

    # a guard is not offered the page
    context, page, problems = open_page(browser, service, GUARD, DESK)
    expect(page.locator("nav")).to_contain_text("报警", timeout=WAIT_MS)
    expect(page.locator("nav a[href='#/commission']")).to_have_count(0)
    assert problems.items == []
    context.close()


def test_a_manager_previews_a_spreadsheets_diff_and_applies_it(
    browser: Browser, service: ServiceProcess, tmp_path: Path
) -> None:
    sheet = tmp_path / "buildings.csv"
    rows = [f"B{b},C01,{'8号楼' if b == 8 else ''}" for b in range(1, 9)]
    sheet.write_text("楼栋,小区,名称\n" + "\n".join(rows) + "\n", encoding="utf-8")

    context, page, problems = open_page(browser, service, MANAGER, DESK, "#/commission")
    imp = page.locator("#import")
    expect(imp).to_be_visible(timeout=WAIT_MS)
    imp.locator("input[type=file]").set_input_files(sheet)
    imp.locator("[data-act=preview-import]").click()
    diff = imp.locator("[data-field=diff]")
    expect(diff).to_contain_text("楼栋：新增 1，删除 0，修改 0", timeout=WAIT_MS)
    expect(diff).to_contain_text("+ B8")
    expect(diff).to_contain_text("name=8号楼")
    assert service.get("/api/registry/summary")["buildings"] == 7  # a preview changes nothing
    page.screenshot(path=SHOTS / "desk-manager-import-preview.png", full_page=True)

    imp.locator("[data-act=apply-import]").click()
    expect(imp.locator("[data-field=applied]")).to_contain_text(
        "已应用：buildings +1 -0 ~0", timeout=WAIT_MS
    )
    assert service.get("/api/registry/summary")["buildings"] == 8
    expect(imp).not_to_contain_text("null")  # no new broker accounts: nothing written out
    (entry,) = service.get("/api/audit?action=registry.import")["items"]
    assert entry["actor"] == MANAGER and entry["target"] == "buildings.csv"

    # the same file again: nothing to apply
    imp.locator("[data-act=preview-import]").click()
    expect(imp).to_contain_text("与当前登记一致，没有改动", timeout=WAIT_MS)
    expect(imp).not_to_contain_text("null")
    assert problems.items == []
    context.close()

    # on a phone the page fits its width
    context, page, problems = open_page(browser, service, MANAGER, PHONE, "#/commission")
    expect(page.locator("#import")).to_be_visible(timeout=WAIT_MS)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the commissioning page overflows a phone: {width}"
    page.screenshot(path=SHOTS / "phone-manager-commission.png", full_page=True)
    assert problems.items == []
    context.close()
