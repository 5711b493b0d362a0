"""The console's duty coverage page in a real browser (Debian's Chromium via Playwright, the real
Mosquitto and ``jiayuan run``): a manager reads, in words, the hours where nobody would be paged
for the test community's roster; a guard is not offered the page. Fixtures and helpers are the
console browser test's.

On SQLite only: the page reads nothing but ``/api/duty/coverage``, which is worked out from the
registry, the escalation chains and the rules (``alerts.coverage.check``), never from the journal
or the alert store; signing in on PostgreSQL's staff store is the console tests' of
test_communities.py and test_console_incidents.py."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from devtools.launch import ServiceProcess
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

    # on a 360-px phone the page fits its width
    phone = {
        **DESK,
        "viewport": {"width": 360, "height": 740},
        "is_mobile": True,
        "has_touch": True,
    }
    context, page, problems = open_page(browser, service, MANAGER, phone, "#/duty")
    expect(page.locator("[data-field=duty-holes]")).to_contain_text("运维", timeout=WAIT_MS)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the duty page overflows a phone: {width}"
    page.screenshot(path=SHOTS / "phone-manager-duty.png", full_page=True)
    assert problems.items == []
    context.close()

    context, page, problems = open_page(browser, service, GUARD, DESK)
    expect(page.locator("nav")).to_contain_text("报警", timeout=WAIT_MS)
    expect(page.locator("nav a[href='#/duty']")).to_have_count(0)
    assert "值班覆盖" not in page.locator("nav").inner_text()
    assert problems.items == []
    context.close()
