"""The console's duty coverage page in a real browser (Debian's Chromium via Playwright, the real
Mosquitto and ``jiayuan run``): a manager reads, in words, the hours where nobody would be paged
for the test community's roster; a guard is not offered the page. Fixtures and helpers are the
console browser test's."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from jiayuan.launch import ServiceProcess
from tests.integration.test_console_browser import (
    DESK,
    GUARD,
    MANAGER,
    SHOTS,
    WAIT_MS,
    browser,
    open_page,
    receiver,
    service,
)

__all__ = ["browser", "receiver", "service"]  # the fixtures this module uses


def test_a_manager_reads_the_holes_of_the_roster_in_words_and_a_guard_has_no_such_page(
    browser: Browser, service: ServiceProcess
) -> None:
    # The test roster's operator has no notification channel: operations alerts page nobody.
    context, page, problems = open_page(browser, service, MANAGER, DESK, "#/duty")
    expect(page.locator("nav a[href='#/duty']")).to_have_text("值班覆盖", timeout=WAIT_MS)
    expect(page.locator(".duty h2")).to_have_text("值班覆盖")
    expect(page.locator(".loading")).to_have_count(0, timeout=WAIT_MS)
    holes = page.locator("[data-field=duty-holes]")
    expect(holes).to_contain_text("整周 运维：无人值班")
    expect(holes).to_contain_text("1号楼")
    expect(holes).not_to_contain_text("每个时段都有人值班")
    # who would be paged first: the caretaker with a channel, for the residents' alerts
    expect(page.locator("section[data-route=caretaker]")).to_contain_text("care-C01-01")
    page.screenshot(path=SHOTS / "desk-manager-duty.png", full_page=True)
    page.locator("[data-ctl=lang]").click()
    expect(holes).to_contain_text("All week Operations: nobody on duty", timeout=WAIT_MS)
    assert problems.items == []
    context.close()

    context, page, problems = open_page(browser, service, GUARD, DESK)
    expect(page.locator("nav")).to_contain_text("报警", timeout=WAIT_MS)
    expect(page.locator("nav a[href='#/duty']")).to_have_count(0)
    assert "值班覆盖" not in page.locator("nav").inner_text()
    assert problems.items == []
    context.close()
